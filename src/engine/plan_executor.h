// PlanExecutor: runs the training steps of one plan (core/plan.h) on one device.
//
// On CUDA each partition of each phase is a stream (a green context's for dedicated ones,
// partition.h); a task is issued on its partition's stream in the partition's order; a
// dependency on a task of another partition of the same phase (TaskGraph edges: data, buffers)
// is a CUDA event; a phase starts when every partition of the previous one is done (events
// again). Module forwards and backwards are CUDA graphs (graphed_module.h) in graph mode,
// autograd in eager mode; losses always run eagerly between the graphs (a contrastive loss
// sees the whole batch). The host never waits for the GPU inside a step.
//
// On the CPU the same tasks run one at a time in the issue order (Note [issue order]) with the
// same math: that order, checked against every TaskGraph edge, is what the cpu tests verify.
//
//   MOSAIC_ASSIGN_OR_RETURN(auto exec, PlanExecutor::Create(model, plan, example_batch, device,
//                                                          {.mode = ExecMode::kGraph}));
//   for (step ...) {
//     MOSAIC_ASSIGN_OR_RETURN(torch::Tensor loss, exec->Step(batch, optimizer.get()));
//   }
//
// A new plan needs a new executor: destroy the old one first (its graphs and memory pools are
// freed, then the allocator's cache is emptied), then create the next.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "core/plan.h"
#include "core/status.h"
#include "core/task_graph.h"
#include "engine/graphed_module.h"
#include "engine/partition.h"
#include "models/multimodal_model.h"

namespace mosaic::engine {

struct ExecutorOptions {
  ExecMode mode = ExecMode::kGraph;  // the CPU always runs eagerly
  double clip_grad = 1.0;            // max global gradient norm; <= 0: no clipping
  bool use_green_contexts = true;    // false: dedicated partitions become plain streams
  // Record timing events around every task (a measured Gantt: LastStepTrace). Costs two event
  // records per task; off for timed runs.
  bool record_trace = false;
  // Graphs of one partition share its memory pool (Note [graph memory pools]); false: a pool per
  // slot (the ablation, and what the memory test compares against).
  bool share_graph_pools = true;
};

// One task of the last step as the GPU ran it: ms from the step's start.
struct TaskSpan {
  int task = 0;
  double start_ms = 0, end_ms = 0;
};

// Note [issue order]: the order in which the host issues a phase's tasks: round-robin over the
// phase's partitions, each taking its next task once every predecessor of that task has been
// issued. It is a topological order of the step that keeps each partition's own order, so an
// event is always recorded before a stream waits on it. Fails on a plan whose partition orders
// contradict the step's dependencies (a deadlock).
StatusOr<std::vector<int>> IssueOrder(const Plan& plan, const TaskGraph& graph);

class PlanExecutor {
 public:
  // Builds the partitions and, in graph mode, captures every slot of every module, using
  // `example` (a whole batch on `device`) for shapes. The plan must be valid for the model
  // (ValidatePlan).
  static StatusOr<std::unique_ptr<PlanExecutor>> Create(models::MultimodalModel model,
                                                        const Plan& plan,
                                                        const models::Batch& example,
                                                        torch::Device device,
                                                        const ExecutorOptions& options = {});
  ~PlanExecutor();

  // Zeroes the gradients, runs every task of the step (micro-batches of `batch`, which is on
  // the device) and leaves the gradients in the parameters' .grad. Returns the step's loss
  // (mean over micro-batches of per-micro-batch losses, plus batch-level losses) as a 0-d
  // device tensor, without waiting for it.
  StatusOr<torch::Tensor> ForwardBackward(const models::Batch& batch);
  // ForwardBackward, then ApplyOptimizer.
  StatusOr<torch::Tensor> Step(const models::Batch& batch, torch::optim::Optimizer* optimizer);
  // Gradient clipping (global norm, on the device) and `optimizer`'s step (if given) on the
  // current stream, after a ForwardBackward.
  Status ApplyOptimizer(torch::optim::Optimizer* optimizer);

  const TaskGraph& graph() const { return graph_; }
  const PartitionSet& partitions() const { return *partitions_; }
  // Task indices in the order the last step issued (CPU: ran) them.
  const std::vector<int>& executed() const { return executed_; }
  // (phase, partition) of task t.
  std::pair<int, int> placement(int t) const { return place_[t]; }
  ExecMode mode() const { return mode_; }
  // Graph-mode slots whose backward is planned in another place (green context or whole GPU)
  // than its forward: their backward graph runs where the forward was captured (graphed_module.h).
  int misplaced_backwards() const { return misplaced_backwards_; }
  // Graph mode: memory pools of the captured graphs, and how many slots share a partition's
  // pool (Note [graph memory pools] in graphed_module.h).
  int graph_pools() const { return graph_pools_; }
  int shared_pool_slots() const { return shared_pool_slots_; }
  // With options.record_trace on CUDA: every task's start and end in the last step, measured with
  // CUDA events (waits for the step to finish). Graph mode; eager tasks are timed the same way.
  StatusOr<std::vector<TaskSpan>> LastStepTrace() const;

 private:
  PlanExecutor() = default;
  Status Build(const models::Batch& example);
  Status CaptureGraphs(const models::Batch& example);
  Status RunTask(int t, const std::vector<models::Batch>& micro, const models::Batch& whole);
  Status ClipGradients();

  models::MultimodalModel model_{nullptr};
  Plan plan_;
  TaskGraph graph_;
  torch::Device device_{torch::kCPU};
  ExecMode mode_ = ExecMode::kEager;
  ExecutorOptions options_;
  std::unique_ptr<PartitionSet> partitions_;
  std::vector<std::unique_ptr<GraphedModule>> modules_;  // by spec index
  std::vector<std::vector<int>> slot_of_;                // [module][micro-batch]
  // [module][slot]: the (phase, partition) whose shared pool the slot's graphs use, or (-1, -1)
  // for a pool of its own.
  std::vector<std::vector<std::pair<int, int>>> slot_lane_;
  std::vector<std::pair<int, int>> place_;               // task -> (phase, partition)
  std::vector<std::vector<int>> order_;                  // phase -> issue order
  std::vector<CudaEvent> task_done_;                     // by task
  std::vector<CudaEvent> task_start_;                    // by task, record_trace only
  std::vector<std::vector<CudaEvent>> phase_done_;       // [phase][partition]
  CudaEvent step_start_;
  std::vector<torch::Tensor> loss_values_;  // by task (loss forwards only)
  std::vector<torch::Tensor> seeds_;        // by module: d(step loss)/d(module's loss)
  std::vector<int> executed_;
  int misplaced_backwards_ = 0;
  int graph_pools_ = 0;
  int shared_pool_slots_ = 0;
};

}  // namespace mosaic::engine
