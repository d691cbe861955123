#include "core/task_graph.h"

#include <tuple>

namespace mosaic {

const char* ToString(TaskPhase p) {
  switch (p) {
    case TaskPhase::kForward:
      return "fwd";
    case TaskPhase::kBackward:
      return "bwd";
    case TaskPhase::kOptimizer:
      return "opt";
  }
  return "?";
}

std::string TaskId::ToString() const {
  if (phase == TaskPhase::kOptimizer) return module + ".opt";
  return module + "." + mosaic::ToString(phase) + "." + std::to_string(micro_batch);
}

bool TaskId::operator<(const TaskId& o) const {
  return std::tie(module, phase, micro_batch) < std::tie(o.module, o.phase, o.micro_batch);
}

StatusOr<TaskId> ParseTaskId(const std::string& text) {
  auto bad = [&](const std::string& why) {
    return InvalidArgument("\"" + text + "\" is not a task id (" + why +
                           "; expected MODULE.fwd.N, MODULE.bwd.N or MODULE.opt)");
  };
  size_t dot = text.find('.');
  if (dot == std::string::npos || dot == 0) return bad("no module name");
  TaskId id;
  id.module = text.substr(0, dot);
  std::string rest = text.substr(dot + 1);
  if (rest == "opt") {
    id.phase = TaskPhase::kOptimizer;
    return id;
  }
  size_t dot2 = rest.find('.');
  if (dot2 == std::string::npos) return bad("no micro-batch index");
  std::string phase = rest.substr(0, dot2), mb = rest.substr(dot2 + 1);
  if (phase == "fwd") {
    id.phase = TaskPhase::kForward;
  } else if (phase == "bwd") {
    id.phase = TaskPhase::kBackward;
  } else {
    return bad("unknown phase \"" + phase + "\"");
  }
  if (mb.empty() || mb.size() > 6 || mb.find_first_not_of("0123456789") != std::string::npos)
    return bad("micro-batch \"" + mb + "\" is not a small non-negative integer");
  id.micro_batch = std::stoi(mb);
  return id;
}

int TaskGraph::Find(const TaskId& id) const {
  return Find(id.ToString());
}

int TaskGraph::Find(const std::string& id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? -1 : it->second;
}

void TaskGraph::AddEdge(int from, int to, EdgeKind kind) {
  int e = static_cast<int>(edges_.size());
  edges_.push_back({from, to, kind});
  out_[from].push_back(e);
  in_[to].push_back(e);
}

StatusOr<TaskGraph> BuildTaskGraph(const ModelSpec& model, int micro_batches,
                                   const std::map<std::string, int>& buffers) {
  if (micro_batches <= 0)
    return InvalidArgument("micro_batches must be positive, got " + std::to_string(micro_batches));
  TaskGraph g;
  g.micro_batches_ = micro_batches;
  const int n = static_cast<int>(model.modules.size());
  g.buffers_.assign(n, micro_batches);
  g.batch_level_.assign(n, false);
  for (const auto& [name, count] : buffers) {
    int m = model.IndexOf(name);
    if (m < 0) return NotFound("activation_buffers: unknown module \"" + name + "\"");
    if (count < 1 || count > micro_batches) {
      return InvalidArgument("activation_buffers." + name + ": " + std::to_string(count) +
                             " is outside 1.." + std::to_string(micro_batches) +
                             " (the number of micro-batches)");
    }
    g.buffers_[m] = count;
  }
  for (int m = 0; m < n; ++m) {
    const ModuleSpec& s = model.modules[m];
    g.batch_level_[m] = s.is_loss() && s.loss == LossKind::kContrastive;
  }

  // Tasks, in a stable order: per module (declaration order) forward micro-batches, backward
  // micro-batches, then the optimizer task.
  auto add = [&](int m, TaskPhase phase, int mb) {
    Task t;
    t.index = static_cast<int>(g.tasks_.size());
    t.id = TaskId{model.modules[m].name, phase, mb};
    t.module_index = m;
    g.by_id_[t.id.ToString()] = t.index;
    g.tasks_.push_back(t);
  };
  for (int m = 0; m < n; ++m) {
    int count = g.batch_level_[m] ? 1 : micro_batches;
    for (int mb = 0; mb < count; ++mb)
      add(m, TaskPhase::kForward, mb);
    for (int mb = 0; mb < count; ++mb)
      add(m, TaskPhase::kBackward, mb);
    if (model.modules[m].has_parameters()) add(m, TaskPhase::kOptimizer, 0);
  }
  g.in_.assign(g.tasks_.size(), {});
  g.out_.assign(g.tasks_.size(), {});

  auto task = [&](int m, TaskPhase phase, int mb) {
    if (g.batch_level_[m] && phase != TaskPhase::kOptimizer) mb = 0;
    return g.Find(TaskId{model.modules[m].name, phase, mb});
  };
  // Data edges along the model's edges (Note [task graph edges] in task_graph.h).
  for (const auto& [from_name, to_name] : model.edges) {
    int a = model.IndexOf(from_name), b = model.IndexOf(to_name);
    if (a < 0 || b < 0) return NotFound("edge " + from_name + " -> " + to_name);
    for (int mb = 0; mb < micro_batches; ++mb) {
      int fa = task(a, TaskPhase::kForward, mb), fb = task(b, TaskPhase::kForward, mb);
      int ba = task(a, TaskPhase::kBackward, mb), bb = task(b, TaskPhase::kBackward, mb);
      // A batch-level consumer sees every micro-batch, but add each edge once per pair.
      if (g.batch_level_[a] && mb > 0) continue;
      g.AddEdge(fa, fb, EdgeKind::kData);
      g.AddEdge(bb, ba, EdgeKind::kData);
    }
  }
  for (int m = 0; m < n; ++m) {
    int count = g.batch_level_[m] ? 1 : micro_batches;
    int opt = model.modules[m].has_parameters() ? task(m, TaskPhase::kOptimizer, 0) : -1;
    for (int mb = 0; mb < count; ++mb) {
      int f = task(m, TaskPhase::kForward, mb), b = task(m, TaskPhase::kBackward, mb);
      g.AddEdge(f, b, EdgeKind::kData);
      if (opt >= 0) g.AddEdge(b, opt, EdgeKind::kData);
      int next = mb + g.buffers_[m];
      if (next < count) g.AddEdge(b, task(m, TaskPhase::kForward, next), EdgeKind::kBuffer);
    }
  }
  return g;
}

}  // namespace mosaic
