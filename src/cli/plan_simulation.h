// Loading a plan with its model, device and profile, validating it and simulating it: shared by
// `mosaic simulate` and `mosaic show`.
//
//   MOSAIC_ASSIGN_OR_RETURN(PlanSimulation s, SimulatePlanFile("plan.json", flags));
//   s.result.step;  MakeTimeline(s.result, s.program, s.graph, s.inputs.model, "title");
#pragma once

#include <string>

#include "cli/planning_inputs.h"
#include "core/cost.h"
#include "core/file_io.h"
#include "core/plan.h"
#include "perfmodel/synthetic_profile.h"
#include "sim/timeline.h"

namespace mosaic::cli {

// Model and device default to the plan's own names, looked up under flags.configs.
inline StatusOr<PlanSimulation> SimulatePlanFile(const std::string& path, PlanningFlags flags) {
  MOSAIC_ASSIGN_OR_RETURN(Plan plan, LoadPlan(path));
  if (flags.model.empty()) flags.model = plan.model;
  if (flags.device.empty()) flags.device = plan.device;
  MOSAIC_ASSIGN_OR_RETURN(PlanningInputs inputs, LoadPlanningInputs(flags));
  MOSAIC_RETURN_IF_ERROR(ValidatePlan(plan, inputs.model, inputs.device).WithPrefix(path));
  return SimulatePlan(plan, inputs, flags.world_size);
}

inline Json SimulationToJson(const PlanSimulation& s) {
  Json doc;
  doc["plan"] = s.plan.name;
  doc["model"] = s.inputs.model.name;
  doc["device"] = s.inputs.device.name;
  doc["profile"] = s.inputs.profile_from;
  doc["step_us"] = s.result.step.value();
  doc["utilization"] = s.result.utilization;
  doc["peak_activation_bytes"] = s.result.peak_activation.value();
  const PlanMemory mem = EstimatePlanMemory(s);
  doc["memory"] = {{"static_bytes", mem.static_bytes},
                   {"activation_bytes", mem.activation_bytes},
                   {"budget_bytes", mem.budget_bytes},
                   {"fits", mem.fits}};
  doc["events"] = s.result.events;
  // Note [executor overhead] (perfmodel/perf_model.cc): the engine's per-step work around the
  // tasks, and the sizes its law is written in.
  double parameters = 0;
  int tensors = 0;
  for (size_t m = 0; m < s.inputs.model.modules.size(); ++m) {
    if (!s.inputs.model.modules[m].has_parameters()) continue;
    parameters += EstimateModuleCost(s.inputs.model, static_cast<int>(m), 1).parameters;
    tensors += EstimateParameterTensors(s.inputs.model.modules[m]);
  }
  doc["overhead"] = {{"before_us", s.result.overhead_before.value()},
                     {"after_us", s.result.overhead_after.value()},
                     {"parameters", parameters},
                     {"parameter_tensors", tensors}};
  Json tasks = Json::array();
  for (const Task& t : s.graph.tasks()) {
    const TaskTiming& tt = s.result.tasks[t.index];
    const SimPartition& p = s.program.phases[tt.phase].partitions[tt.partition];
    tasks.push_back({{"task", t.id.ToString()},
                     {"phase", s.program.phases[tt.phase].name},
                     {"partition", p.id},
                     {"start_us", tt.start.value()},
                     {"end_us", tt.end.value()},
                     {"sms", tt.sms}});
  }
  doc["tasks"] = tasks;
  return doc;
}

}  // namespace mosaic::cli
