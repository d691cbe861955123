// The plans every model has without a planner: temporal (one stream, tasks one after another),
// shared streams (one plain stream per module, the hardware scheduler shares the GPU), and
// partitioned (groups of modules on dedicated SM quotas; optionally the backward on shared
// streams in a second phase). Used as baselines by the benchmark, `mosaic train --plan
// temporal-graph`, and the tests.
//
//   MOSAIC_ASSIGN_OR_RETURN(Plan p, PartitionedPlan(spec, 1, {{{"vision"}, 104}, {{"text"}, 28}},
//                                                  /*backward_shared=*/true));
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "core/model_spec.h"
#include "core/plan.h"
#include "core/status.h"
#include "core/task_graph.h"

namespace mosaic::engine {

// A topological order of the step's tasks (Kahn's algorithm, smallest task index first).
std::vector<TaskId> TopologicalTasks(const TaskGraph& graph);

// `device` names the DeviceSpec the plan is for (ValidatePlan checks it).
StatusOr<Plan> TemporalPlan(const ModelSpec& spec, int micro_batches,
                            const std::string& device = "h100-sxm");
StatusOr<Plan> SharedStreamsPlan(const ModelSpec& spec, int micro_batches,
                                 const std::string& device = "h100-sxm");

// One dedicated partition per group {modules, sms}; a loss module not named joins the group of
// its first producer. backward_shared: a second phase runs backward and optimizer tasks on one
// shared stream per group (needs no activation-buffer limit).
struct ModuleGroup {
  std::vector<std::string> modules;
  int sms = 0;
};
StatusOr<Plan> PartitionedPlan(const ModelSpec& spec, int micro_batches,
                               const std::vector<ModuleGroup>& groups, bool backward_shared,
                               const std::string& device = "h100-sxm");

}  // namespace mosaic::engine
