// Timelines, Chrome traces and SVG Gantt charts; see timeline.h.
#include "sim/timeline.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>

namespace mosaic {

Timeline MakeTimeline(const SimResult& result, const SimProgram& program, const TaskGraph& graph,
                      const ModelSpec& model, const std::string& title) {
  Timeline tl;
  tl.title = title;
  tl.step_us = result.step.value();
  tl.utilization = result.utilization;
  for (const auto& m : model.modules)
    tl.modules.push_back(m.name);
  std::map<std::pair<int, int>, int> lane_of;
  for (size_t i = 0; i < program.phases.size(); ++i) {
    tl.phase_names.push_back(program.phases[i].name);
    tl.phase_end_us.push_back(i < result.phase_end.size() ? result.phase_end[i].value() : 0);
    for (size_t j = 0; j < program.phases[i].partitions.size(); ++j) {
      const SimPartition& p = program.phases[i].partitions[j];
      lane_of[{int(i), int(j)}] = static_cast<int>(tl.lanes.size());
      tl.lanes.push_back({program.phases[i].name, p.id, PlaceText(p.kind, p.sms, p.priority)});
    }
  }
  for (const Task& t : graph.tasks()) {
    if (t.index >= static_cast<int>(result.tasks.size())) break;
    const TaskTiming& tt = result.tasks[t.index];
    if (tt.phase < 0) continue;
    tl.bars.push_back({lane_of[{tt.phase, tt.partition}], t.id.ToString(), t.id.module,
                       tt.start.value(), tt.end.value(), tt.sms});
  }
  std::stable_sort(tl.bars.begin(), tl.bars.end(), [](const TimelineBar& a, const TimelineBar& b) {
    return a.start_us < b.start_us;
  });
  return tl;
}

Json ToChromeTrace(const Timeline& tl) {
  Json events = Json::array();
  std::map<std::string, int> pid_of;
  for (size_t i = 0; i < tl.phase_names.size(); ++i) {
    pid_of[tl.phase_names[i]] = static_cast<int>(i);
    events.push_back({{"name", "process_name"},
                      {"ph", "M"},
                      {"pid", int(i)},
                      {"args", {{"name", "phase " + tl.phase_names[i]}}}});
  }
  for (size_t l = 0; l < tl.lanes.size(); ++l) {
    const TimelineLane& lane = tl.lanes[l];
    events.push_back({{"name", "thread_name"},
                      {"ph", "M"},
                      {"pid", pid_of[lane.phase]},
                      {"tid", int(l)},
                      {"args", {{"name", lane.partition + " (" + lane.detail + ")"}}}});
  }
  for (const TimelineBar& b : tl.bars) {
    events.push_back({{"name", b.task},
                      {"cat", b.module},
                      {"ph", "X"},
                      {"ts", b.start_us},
                      {"dur", b.end_us - b.start_us},
                      {"pid", pid_of[tl.lanes[b.lane].phase]},
                      {"tid", b.lane},
                      {"args", {{"module", b.module}, {"sms", b.sms}}}});
  }
  Json lanes = Json::array();
  for (const TimelineLane& lane : tl.lanes)
    lanes.push_back(
        {{"phase", lane.phase}, {"partition", lane.partition}, {"detail", lane.detail}});
  Json doc;
  doc["traceEvents"] = events;
  doc["displayTimeUnit"] = "ms";
  doc["mosaic"] = {
      {"title", tl.title},     {"step_us", tl.step_us},    {"utilization", tl.utilization},
      {"modules", tl.modules}, {"phases", tl.phase_names}, {"phase_end_us", tl.phase_end_us},
      {"lanes", lanes}};
  return doc;
}

StatusOr<Timeline> TimelineFromChromeTrace(const Json& doc) {
  if (!doc.is_object() || !doc.contains("traceEvents") || !doc["traceEvents"].is_array())
    return InvalidArgument("not a Chrome trace: no traceEvents array");
  if (!doc.contains("mosaic") || !doc["mosaic"].is_object())
    return InvalidArgument(
        "trace has no \"mosaic\" section (only traces written by `mosaic simulate --trace` or "
        "`mosaic show --trace` can be drawn)");
  Timeline tl;
  try {
    const Json& m = doc["mosaic"];
    tl.title = m.value("title", "");
    tl.step_us = m.value("step_us", 0.0);
    tl.utilization = m.value("utilization", 0.0);
    tl.modules = m.value("modules", std::vector<std::string>{});
    tl.phase_names = m.value("phases", std::vector<std::string>{});
    tl.phase_end_us = m.value("phase_end_us", std::vector<double>{});
    for (const Json& l : m.at("lanes"))
      tl.lanes.push_back({l.at("phase").get<std::string>(), l.at("partition").get<std::string>(),
                          l.value("detail", "")});
    for (const Json& e : doc["traceEvents"]) {
      if (e.value("ph", "") != "X") continue;
      TimelineBar b;
      b.lane = e.at("tid").get<int>();
      if (b.lane < 0 || b.lane >= static_cast<int>(tl.lanes.size()))
        return InvalidArgument("trace event " + e.value("name", "?") + ": tid " +
                               std::to_string(b.lane) + " names no lane");
      b.task = e.at("name").get<std::string>();
      b.module = e.value("cat", "");
      b.start_us = e.at("ts").get<double>();
      b.end_us = b.start_us + e.at("dur").get<double>();
      if (e.contains("args")) b.sms = e["args"].value("sms", 0.0);
      tl.bars.push_back(b);
    }
  } catch (const std::exception& ex) {  // nlohmann type errors stay inside this library
    return InvalidArgument(std::string("malformed trace: ") + ex.what());
  }
  return tl;
}

namespace {

// Tableau 10: distinguishable, readable with white text.
const char* kPalette[] = {"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2",
                          "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};

std::string Escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<')
      o += "&lt;";
    else if (c == '>')
      o += "&gt;";
    else if (c == '&')
      o += "&amp;";
    else if (c == '"')
      o += "&quot;";
    else
      o += c;
  }
  return o;
}

std::string Fmt(const char* fmt, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

// A round tick step (1, 2 or 5 times a power of ten) giving about `target` ticks.
double TickStep(double span, int target) {
  double raw = span / std::max(1, target);
  double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double k : {1.0, 2.0, 5.0, 10.0})
    if (k * p >= raw) return k * p;
  return 10 * p;
}

}  // namespace

std::string RenderGanttSvg(const Timeline& tl) {
  // The label column fits the longest lane name (bold 12 px: about 7.6 px per character).
  auto lane_name = [&](const TimelineLane& lane) {
    std::string name = (tl.phase_names.size() > 1 ? lane.phase + " / " : "") + lane.partition;
    if (name.size() > 48) name = name.substr(0, 45) + "...";
    return name;
  };
  size_t longest = 0;
  for (const auto& lane : tl.lanes)
    longest = std::max(longest, lane_name(lane).size());
  const double label_w = std::max(150.0, 30 + 7.6 * longest), right = 30, top = 74, lane_h = 30,
               lane_gap = 8, phase_gap = 14;
  const double plot_w = 1000;
  const double width = label_w + plot_w + right;
  double span = tl.step_us;
  for (const auto& b : tl.bars)
    span = std::max(span, b.end_us);
  if (span <= 0) span = 1;
  // Lane y positions, with a gap between phases.
  std::vector<double> lane_y(tl.lanes.size());
  double y = top;
  for (size_t l = 0; l < tl.lanes.size(); ++l) {
    if (l > 0 && tl.lanes[l].phase != tl.lanes[l - 1].phase) y += phase_gap;
    lane_y[l] = y;
    y += lane_h + lane_gap;
  }
  const double plot_bottom = y;
  const double legend_y = plot_bottom + 44;
  const double height = legend_y + 30;
  auto X = [&](double us) { return label_w + plot_w * us / span; };
  std::map<std::string, std::string> color;
  std::vector<std::string> modules = tl.modules;
  for (const auto& b : tl.bars)
    if (std::find(modules.begin(), modules.end(), b.module) == modules.end())
      modules.push_back(b.module);
  for (size_t i = 0; i < modules.size(); ++i)
    color[modules[i]] = kPalette[i % 10];

  std::ostringstream o;
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
    << "\" viewBox=\"0 0 " << width << " " << height
    << "\" font-family=\"Helvetica, Arial, sans-serif\">\n";
  o << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  o << "<text x=\"16\" y=\"26\" font-size=\"17\" font-weight=\"bold\">" << Escape(tl.title)
    << "</text>\n";
  o << "<text x=\"16\" y=\"45\" font-size=\"12\" fill=\"#555\">step " << Fmt("%.3f", span / 1000)
    << " ms"
    << (tl.utilization > 0 ? ", SM-time utilization " + Fmt("%.0f", tl.utilization * 100) + "%"
                           : "")
    << ", " << tl.bars.size() << " tasks, " << tl.lanes.size() << " partitions</text>\n";
  // Grid and axis.
  const double step = TickStep(span / 1000, 10);
  for (double t = 0; t <= span / 1000 + 1e-9; t += step) {
    double x = X(t * 1000);
    o << "<line x1=\"" << x << "\" y1=\"" << top - 4 << "\" x2=\"" << x << "\" y2=\"" << plot_bottom
      << "\" stroke=\"#e6e6e6\"/>\n";
    o << "<text x=\"" << x << "\" y=\"" << plot_bottom + 16
      << "\" font-size=\"11\" text-anchor=\"middle\" fill=\"#333\">"
      << Fmt(step < 0.01  ? "%.3f"
             : step < 0.1 ? "%.2f"
             : step < 1   ? "%.1f"
                          : "%.0f",
             t)
      << "</text>\n";
  }
  o << "<line x1=\"" << label_w << "\" y1=\"" << plot_bottom << "\" x2=\"" << label_w + plot_w
    << "\" y2=\"" << plot_bottom << "\" stroke=\"#333\"/>\n";
  o << "<text x=\"" << label_w + plot_w / 2 << "\" y=\"" << plot_bottom + 32
    << "\" font-size=\"12\" text-anchor=\"middle\" fill=\"#333\">time (ms)</text>\n";
  // Phase boundaries.
  double phase_start = 0;
  for (size_t i = 0; i < tl.phase_names.size() && i < tl.phase_end_us.size(); ++i) {
    double x0 = X(phase_start), x1 = X(tl.phase_end_us[i]);
    if (tl.phase_names.size() > 1) {
      o << "<text x=\"" << (x0 + x1) / 2 << "\" y=\"" << top - 8
        << "\" font-size=\"12\" text-anchor=\"middle\" fill=\"#555\" font-style=\"italic\">"
        << Escape(tl.phase_names[i]) << "</text>\n";
      if (i + 1 < tl.phase_names.size())
        o << "<line x1=\"" << x1 << "\" y1=\"" << top - 4 << "\" x2=\"" << x1 << "\" y2=\""
          << plot_bottom << "\" stroke=\"#999\" stroke-dasharray=\"4 3\"/>\n";
    }
    phase_start = tl.phase_end_us[i];
  }
  // Lanes.
  for (size_t l = 0; l < tl.lanes.size(); ++l) {
    const TimelineLane& lane = tl.lanes[l];
    double ly = lane_y[l];
    o << "<rect x=\"" << label_w << "\" y=\"" << ly << "\" width=\"" << plot_w << "\" height=\""
      << lane_h << "\" fill=\"#f7f7f7\"/>\n";
    std::string name = lane_name(lane);
    o << "<text x=\"" << label_w - 10 << "\" y=\"" << ly + 13
      << "\" font-size=\"12\" text-anchor=\"end\" font-weight=\"bold\">" << Escape(name)
      << "</text>\n";
    o << "<text x=\"" << label_w - 10 << "\" y=\"" << ly + 26
      << "\" font-size=\"10\" text-anchor=\"end\" fill=\"#666\">" << Escape(lane.detail)
      << "</text>\n";
  }
  // Bars.
  for (const TimelineBar& b : tl.bars) {
    double x0 = X(b.start_us), x1 = X(b.end_us), ly = lane_y[b.lane];
    double w = std::max(0.8, x1 - x0);
    o << "<g><title>" << Escape(b.task) << ": " << Fmt("%.3f", b.start_us / 1000) << " - "
      << Fmt("%.3f", b.end_us / 1000) << " ms"
      << (b.sms > 0 ? ", " + Fmt("%.0f", b.sms) + " SMs" : "") << "</title><rect x=\"" << x0
      << "\" y=\"" << ly + 2 << "\" width=\"" << w << "\" height=\"" << lane_h - 4
      << "\" rx=\"3\" fill=\"" << color[b.module] << "\" stroke=\"white\" stroke-width=\"1\"/>";
    // Label: the whole id if it fits, else without the module (the color says it), else none.
    std::string label = b.task;
    if (label.size() * 6.2 + 8 > w) label = b.task.substr(b.module.size() + 1);
    if (label.size() * 6.2 + 8 <= w)
      o << "<text x=\"" << (x0 + x1) / 2 << "\" y=\"" << ly + lane_h / 2 + 4
        << "\" font-size=\"11\" text-anchor=\"middle\" fill=\"white\">" << Escape(label)
        << "</text>";
    o << "</g>\n";
  }
  // Legend.
  double lx = label_w;
  for (const std::string& m : modules) {
    o << "<rect x=\"" << lx << "\" y=\"" << legend_y - 11
      << "\" width=\"14\" height=\"14\" rx=\"2\" fill=\"" << color[m] << "\"/><text x=\"" << lx + 19
      << "\" y=\"" << legend_y << "\" font-size=\"12\">" << Escape(m) << "</text>\n";
    lx += 34 + 7.0 * m.size();
  }
  o << "</svg>\n";
  return o.str();
}

}  // namespace mosaic
