// `mosaic simulate`: runs a plan through the simulator and prints the predicted timeline
// summary; optionally writes a Chrome/Perfetto trace, an SVG Gantt chart and the result JSON.
//
//   mosaic simulate --plan plan.json
//   mosaic simulate plan.json --trace step.trace.json --svg step.svg
#include <cstdio>
#include <iostream>

#include "cli/commands.h"
#include "cli/plan_simulation.h"
#include "cli/planning_inputs.h"
#include "core/file_io.h"

namespace mosaic::cli {

namespace {

struct SimulateFlags {
  PlanningFlags in;
  std::string plan;
  std::string trace;
  std::string svg;
  std::string json;
};

int Run(const SimulateFlags& f) {
  StatusOr<PlanSimulation> s = SimulatePlanFile(f.plan, f.in);
  if (!s.ok()) return ReportError("simulate", s.status());
  const SimResult& r = s->result;
  std::printf("%s: %s on %s, %d micro-batch(es), profile: %s\n", f.plan.c_str(),
              s->inputs.model.name.c_str(), s->inputs.device.name.c_str(), s->plan.micro_batches,
              s->inputs.profile_from.c_str());
  std::printf(
      "predicted step %.3f ms, SM-time utilization %.1f%%, peak activations %.2f GiB, "
      "%lld events\n",
      r.step.value() / 1000, r.utilization * 100,
      r.peak_activation.value() / (1024.0 * 1024 * 1024), static_cast<long long>(r.events));
  const PlanMemory mem = EstimatePlanMemory(*s);
  if (mem.budget_bytes > 0) {
    const Status fits = CheckPlanMemory(*s);
    std::printf("memory: %s of %s (90%% of the device) %s\n",
                GibText(mem.static_bytes + mem.activation_bytes).c_str(),
                GibText(mem.budget_bytes).c_str(),
                fits.ok() ? "fits" : ("DOES NOT FIT: " + fits.message()).c_str());
  }
  if (r.overhead_before.value() > 0 || r.overhead_after.value() > 0) {
    std::printf(
        "executor: gradients zeroed %.3f ms before the tasks, clipping + AdamW %.3f ms "
        "after them\n",
        r.overhead_before.value() / 1000, r.overhead_after.value() / 1000);
  }
  double start = r.overhead_before.value();
  for (size_t i = 0; i < s->program.phases.size(); ++i) {
    const SimPhase& ph = s->program.phases[i];
    const double end = r.phase_end[i].value();
    std::printf("  phase %-10s %9.3f .. %9.3f ms\n", ph.name.c_str(), start / 1000, end / 1000);
    for (size_t j = 0; j < ph.partitions.size(); ++j) {
      const SimPartition& p = ph.partitions[j];
      std::string where = p.kind == PartitionKind::kDedicated ? std::to_string(p.sms) + " SMs"
                          : p.priority != 0 ? "shared/p" + std::to_string(p.priority)
                                            : std::string("shared");  // a column: kept short
      double span = end - start;
      std::printf("    %-20s %-9s %3zu tasks, busy %9.3f ms (%3.0f%%)\n", p.id.c_str(),
                  where.c_str(), p.tasks.size(), r.busy[i][j].value() / 1000,
                  span > 0 ? 100 * r.busy[i][j].value() / span : 0.0);
    }
    start = end;
  }
  if (s->plan.predicted_step) {
    std::printf("the planner predicted %.3f ms for this plan\n",
                s->plan.predicted_step->value() / 1000);
  }
  Timeline tl =
      MakeTimeline(r, s->program, s->graph, s->inputs.model,
                   s->plan.name + ": " + s->inputs.model.name + " on " + s->inputs.device.name);
  if (!f.trace.empty()) {
    Status st = WriteJsonFile(f.trace, ToChromeTrace(tl));
    if (!st.ok()) return ReportError("simulate", st);
    std::printf("wrote %s (open in ui.perfetto.dev)\n", f.trace.c_str());
  }
  if (!f.svg.empty()) {
    Status st = WriteFileAtomic(f.svg, RenderGanttSvg(tl));
    if (!st.ok()) return ReportError("simulate", st);
    std::printf("wrote %s\n", f.svg.c_str());
  }
  if (!f.json.empty()) {
    Status st = WriteJsonFile(f.json, SimulationToJson(*s));
    if (!st.ok()) return ReportError("simulate", st);
    std::printf("wrote %s\n", f.json.c_str());
  }
  return kExitOk;
}

}  // namespace

void AddSimulateCommand(CLI::App& app) {
  auto* sub = app.add_subcommand("simulate", "Predict a plan's step timeline with the simulator");
  auto f = std::make_shared<SimulateFlags>();
  sub->add_option("--plan,plan", f->plan, "Plan file (JSON), e.g. from `mosaic plan`")
      ->required()
      ->envname("MOSAIC_PLAN");
  f->in.device.clear();  // default: the plan's own device
  AddPlanningFlags(sub, &f->in, /*model_required=*/false);
  sub->get_option("--model")->description(
      "Model spec file or zoo name (default: the plan's \"model\" in configs/models/)");
  sub->get_option("--device")
      ->description(
          "Device spec file or zoo name (default: the plan's \"device\" in configs/devices/)");
  sub->add_option("--trace", f->trace, "Write a Chrome/Perfetto trace (JSON) of the timeline");
  sub->add_option("--svg", f->svg, "Write an SVG Gantt chart of the timeline");
  sub->add_option("--json", f->json, "Write the per-task timeline and totals as JSON");
  SetCommand(sub, [f] { return Run(*f); });
}

}  // namespace mosaic::cli
