// TaskGraph: the DAG of one training step. A task is one module, one phase (forward, backward
// or optimizer), one micro-batch; its id reads "vision.fwd.0", "llm.bwd.3", "text.opt".
//
// Edges (Note [task graph edges]):
//  - data: X.fwd.m -> Y.fwd.m for each model edge X -> Y; Y.bwd.m -> X.bwd.m (reverse);
//    X.fwd.m -> X.bwd.m; every X.bwd.m -> X.opt.
//  - batch-level modules: a contrastive loss sees the whole batch, so it has one forward and
//    one backward task (micro-batch 0) that wait for / release every micro-batch.
//  - buffers: a module with B activation buffers holds at most B micro-batches between
//    forward and backward, so X.fwd.(m+B) waits for X.bwd.m.
//
//   MOSAIC_ASSIGN_OR_RETURN(TaskGraph g, BuildTaskGraph(model, /*micro_batches=*/4, {}));
//   for (const Task& t : g.tasks()) ... g.predecessors(t.index) ...
#pragma once

#include <map>
#include <string>
#include <vector>

#include "core/model_spec.h"
#include "core/status.h"

namespace mosaic {

enum class TaskPhase { kForward, kBackward, kOptimizer };
const char* ToString(TaskPhase p);  // "fwd", "bwd", "opt"

struct TaskId {
  std::string module;
  TaskPhase phase = TaskPhase::kForward;
  int micro_batch = 0;  // 0 for optimizer and batch-level tasks

  std::string ToString() const;  // "vision.fwd.0", "vision.opt"
  bool operator==(const TaskId& o) const {
    return module == o.module && phase == o.phase && micro_batch == o.micro_batch;
  }
  bool operator<(const TaskId& o) const;
};
// Parses "vision.fwd.0" / "vision.bwd.3" / "vision.opt".
StatusOr<TaskId> ParseTaskId(const std::string& text);

enum class EdgeKind { kData, kBuffer };

struct Task {
  int index = 0;
  TaskId id;
  int module_index = 0;  // into ModelSpec::modules
};

struct TaskEdge {
  int from = 0;
  int to = 0;
  EdgeKind kind = EdgeKind::kData;
};

class TaskGraph {
 public:
  const std::vector<Task>& tasks() const { return tasks_; }
  const std::vector<TaskEdge>& edges() const { return edges_; }
  size_t size() const { return tasks_.size(); }
  // Edge indices into edges() entering / leaving task `t`.
  const std::vector<int>& in_edges(int t) const { return in_[t]; }
  const std::vector<int>& out_edges(int t) const { return out_[t]; }
  // Index of the task with this id, or -1.
  int Find(const TaskId& id) const;
  int Find(const std::string& id) const;
  int micro_batches() const { return micro_batches_; }
  // Activation buffers of module `m` (index into ModelSpec::modules).
  int buffers(int module_index) const { return buffers_[module_index]; }
  bool is_batch_level(int module_index) const { return batch_level_[module_index]; }

 private:
  friend StatusOr<TaskGraph> BuildTaskGraph(const ModelSpec&, int,
                                            const std::map<std::string, int>&);
  void AddEdge(int from, int to, EdgeKind kind);

  std::vector<Task> tasks_;
  std::vector<TaskEdge> edges_;
  std::vector<std::vector<int>> in_, out_;
  std::map<std::string, int> by_id_;
  std::vector<int> buffers_;
  std::vector<bool> batch_level_;
  int micro_batches_ = 1;
};

// Builds the step's DAG. `buffers` maps module name to activation buffers (absent: one per
// micro-batch, i.e. no limit). Fails on an unknown module or a count outside 1..micro_batches.
StatusOr<TaskGraph> BuildTaskGraph(const ModelSpec& model, int micro_batches,
                                   const std::map<std::string, int>& buffers);

}  // namespace mosaic
