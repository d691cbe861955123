// Timeline: a simulated (or traced) step as lanes of bars, and its two drawings: a
// Chrome/Perfetto trace (JSON, open in ui.perfetto.dev or chrome://tracing) and an SVG Gantt
// chart (one lane per partition, bars colored by module, a time axis in ms).
//
//   Timeline tl = MakeTimeline(result, program, graph, model, "clip-b16 on h100-sxm");
//   MOSAIC_RETURN_IF_ERROR(WriteJsonFile("trace.json", ToChromeTrace(tl)));
//   MOSAIC_RETURN_IF_ERROR(WriteFileAtomic("step.svg", RenderGanttSvg(tl)));
//   MOSAIC_ASSIGN_OR_RETURN(Timeline again, TimelineFromChromeTrace(doc));  // same lanes/bars
#pragma once

#include <string>
#include <vector>

#include "core/json_reader.h"
#include "core/model_spec.h"
#include "core/status.h"
#include "core/task_graph.h"
#include "sim/simulator.h"

namespace mosaic {

struct TimelineLane {
  std::string phase;      // phase name
  std::string partition;  // partition id
  std::string detail;     // "dedicated 104 SMs" / "shared stream"
};

struct TimelineBar {
  int lane = 0;
  std::string task;    // "vision.fwd.0"
  std::string module;  // color key
  double start_us = 0, end_us = 0;
  double sms = 0;
};

struct Timeline {
  std::string title;
  std::vector<TimelineLane> lanes;
  std::vector<TimelineBar> bars;
  std::vector<std::string> modules;  // legend order (model order)
  std::vector<double> phase_end_us;  // one per phase, in order
  std::vector<std::string> phase_names;
  double step_us = 0;
  double utilization = 0;
};

Timeline MakeTimeline(const SimResult& result, const SimProgram& program, const TaskGraph& graph,
                      const ModelSpec& model, const std::string& title);

// Chrome trace event format: one complete ("X") event per task, pid = phase, tid = lane, plus
// metadata naming processes/threads, and a "mosaic" object with what the SVG needs.
Json ToChromeTrace(const Timeline& timeline);
StatusOr<Timeline> TimelineFromChromeTrace(const Json& doc);

std::string RenderGanttSvg(const Timeline& timeline);

}  // namespace mosaic
