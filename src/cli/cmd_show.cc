// `mosaic show`: draws a plan (simulated first) or a trace written by Mosaic as an SVG Gantt
// chart: one lane per partition, tasks colored by module, a time axis in ms.
//
//   mosaic show plan.json -o plan.svg --trace plan.trace.json
//   mosaic show step.trace.json -o step.svg
#include <cstdio>

#include "cli/commands.h"
#include "cli/plan_simulation.h"
#include "core/file_io.h"

namespace mosaic::cli {

namespace {

struct ShowFlags {
  PlanningFlags in;
  std::string input;
  std::string output;
  std::string trace;
};

std::string DefaultOutput(const std::string& input) {
  std::string base = input;
  if (base.size() > 5 && base.compare(base.size() - 5, 5, ".json") == 0)
    base.resize(base.size() - 5);
  return base + ".svg";
}

int Run(const ShowFlags& f) {
  StatusOr<Json> doc = LoadJsonFile(f.input);
  if (!doc.ok()) return ReportError("show", doc.status());
  Timeline tl;
  if (doc->is_object() && doc->contains("traceEvents")) {
    if (!f.trace.empty())
      return ReportError("show", InvalidArgument("--trace needs a plan as input; " + f.input +
                                                 " is already a trace"));
    StatusOr<Timeline> t = TimelineFromChromeTrace(*doc);
    if (!t.ok()) return ReportError("show", t.status().WithPrefix(f.input));
    tl = std::move(*t);
  } else if (doc->is_object() && doc->contains("phases")) {
    StatusOr<PlanSimulation> s = SimulatePlanFile(f.input, f.in);
    if (!s.ok()) return ReportError("show", s.status());
    tl = MakeTimeline(s->result, s->program, s->graph, s->inputs.model,
                      s->plan.name + ": " + s->inputs.model.name + " on " + s->inputs.device.name +
                          " (predicted)");
    if (!f.trace.empty()) {
      Status st = WriteJsonFile(f.trace, ToChromeTrace(tl));
      if (!st.ok()) return ReportError("show", st);
      std::printf("wrote %s (open in ui.perfetto.dev)\n", f.trace.c_str());
    }
  } else {
    return ReportError("show", InvalidArgument(f.input + ": neither a plan (no \"phases\") nor a "
                                                         "trace (no \"traceEvents\")"));
  }
  const std::string out = f.output.empty() ? DefaultOutput(f.input) : f.output;
  Status st = WriteFileAtomic(out, RenderGanttSvg(tl));
  if (!st.ok()) return ReportError("show", st);
  std::printf("wrote %s (%zu tasks on %zu partitions, step %.3f ms)\n", out.c_str(), tl.bars.size(),
              tl.lanes.size(), tl.step_us / 1000);
  return kExitOk;
}

}  // namespace

void AddShowCommand(CLI::App& app) {
  auto* sub = app.add_subcommand("show", "Draw a plan or a trace as an SVG Gantt chart");
  auto f = std::make_shared<ShowFlags>();
  sub->add_option("input", f->input, "A plan (simulated, then drawn) or a trace from Mosaic")
      ->required()
      ->check(CLI::ExistingFile);
  sub->add_option("--output,-o", f->output, "SVG file to write (default: the input's name .svg)");
  sub->add_option("--trace", f->trace,
                  "Also write the plan's simulated timeline as a Chrome/Perfetto trace (JSON)");
  f->in.device.clear();
  AddPlanningFlags(sub, &f->in, /*model_required=*/false);
  sub->get_option("--model")->description(
      "Model spec file or zoo name (default: the plan's \"model\" in configs/models/)");
  sub->get_option("--device")
      ->description(
          "Device spec file or zoo name (default: the plan's \"device\" in configs/devices/)");
  SetCommand(sub, [f] { return Run(*f); });
}

}  // namespace mosaic::cli
