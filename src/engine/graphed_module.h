// GraphedModule: one module of a MultimodalModel, run forward and backward as separate units so
// that the engine can put its forward and its backward on different partitions and keep several
// micro-batches in flight (one activation slot each).
//
// Graph mode (Note [graphed module]) is the make_graphed_callables recipe in C++: per slot,
// static inputs, a forward graph `y = m(x)` and a backward graph
// `grads = autograd::grad(y, params + x, gy)` that also adds the parameter gradients into
// persistent buffers (the parameters' .grad, zeroed by the executor at the start of a step).
// Both graphs are captured on a private stream of the slot in the forward partition's context:
// a graph keeps the SMs of the context it was captured in, wherever it is launched. The backward
// cannot be captured elsewhere (autograd runs a backward node on its forward's stream), and
// setting a kernel node's context afterwards does not move it (measured, docs/engine.md), so a
// backward planned on another partition than its forward runs on the forward's SMs
// (PlanExecutor::misplaced_backwards counts them). Destroying the module frees the graphs before
// their pools.
//
// Note [graph memory pools]: a graph's memory comes from a private pool of the caching
// allocator. Graphs captured one after another into ONE pool on ONE stream reuse each other's
// freed blocks exactly as eager code would, so the pool holds the peak of that sequence, not the
// sum of the graphs' peaks; that is safe only if the graphs then always run in their capture
// order, on that stream (the allocator only reuses a block on the stream that freed it). So a
// capture takes a stream and a pool: the executor gives every slot whose forward and backward
// run in the same partition the partition's shared stream and pool and captures them in the
// partition's task order; a slot whose forward and backward run in different places, or that
// serves several micro-batches (its graphs then run in another order than they were captured),
// gets a stream and a pool of its own (CaptureSlot).
//
// Eager mode runs the same module with autograd, no graphs: the CPU path, the temporal-eager
// baseline, and losses (which see whole batches or per micro-batch logits, and are cheap).
//
//   GraphedModule vision(model.get(), model->IndexOf("vision"), ExecMode::kGraph, device,
//                      Precision::kBf16);
//   vision.set_slots(2);
//   MOSAIC_RETURN_IF_ERROR(vision.CaptureSlot(0, {images}, {false}, std::move(capture_stream)));
//   // or, several slots and modules into one pool, in the order they will run:
//   //   CaptureForward(0, ..., lane.stream, lane.pool) ... CaptureBackward(0) ...
//   torch::Tensor y = vision.Forward(0, {images});     // on the current stream
//   vision.SetGradPart(0, 0, dloss_dy);                 // from the consumer
//   vision.Backward(0);                                 // grads accumulate into .grad
#pragma once

#include <ATen/cuda/CUDAGraph.h>
#include <cuda_runtime_api.h>
#include <torch/torch.h>

#include <memory>
#include <utility>
#include <vector>

#include "core/status.h"
#include "engine/partition.h"
#include "models/multimodal_model.h"

namespace mosaic::engine {

enum class ExecMode { kEager, kGraph };
const char* ToString(ExecMode m);

// Owns an instantiated graph.
class GraphExec {
 public:
  // Instantiates `graph` (which stays owned by the caller).
  static StatusOr<GraphExec> Create(cudaGraph_t graph);
  GraphExec() = default;
  GraphExec(GraphExec&& o) noexcept : exec_(o.exec_) { o.exec_ = nullptr; }
  GraphExec& operator=(GraphExec&& o) noexcept;
  GraphExec(const GraphExec&) = delete;
  GraphExec& operator=(const GraphExec&) = delete;
  ~GraphExec();
  Status Launch(cudaStream_t stream) const;
  bool valid() const { return exec_ != nullptr; }

 private:
  cudaGraphExec_t exec_ = nullptr;
};

class GraphedModule {
 public:
  GraphedModule(models::MultimodalModelImpl* model, int module_index, ExecMode mode,
                torch::Device device, Precision precision);
  ~GraphedModule();
  GraphedModule(const GraphedModule&) = delete;
  GraphedModule& operator=(const GraphedModule&) = delete;

  int index() const { return index_; }
  ExecMode mode() const { return mode_; }
  void set_slots(int n);
  int slots() const { return static_cast<int>(slots_.size()); }
  // Number of gradient contributions the backward sums (consumers of the output; 1 for a loss).
  void set_grad_parts(int n);

  // Graph mode: captures slot `slot` for inputs shaped like `example` (needs_grad[k]: input k
  // comes from another module and gets a gradient), forward then backward, into a memory pool of
  // its own. `capture_stream` becomes the slot's own; its context (a partition's green context,
  // or the whole GPU) is where both graphs will run.
  Status CaptureSlot(int slot, const std::vector<torch::Tensor>& example,
                     const std::vector<bool>& needs_grad, OwnedStream capture_stream);
  // The same in two steps, on a stream and into a pool that other captures may share (Note
  // [graph memory pools]): the forward, then later (other slots' captures may come between)
  // the backward, on the forward's stream and pool.
  Status CaptureForward(int slot, const std::vector<torch::Tensor>& example,
                        const std::vector<bool>& needs_grad,
                        std::shared_ptr<const OwnedStream> stream, at::cuda::MempoolId_t pool);
  Status CaptureBackward(int slot);

  // Runs the forward of `slot` on the current stream; returns its output (graph: the static
  // output, valid until the slot's next forward).
  StatusOr<torch::Tensor> Forward(int slot, const std::vector<torch::Tensor>& inputs,
                                  const std::vector<bool>& needs_grad);
  // Gradient contribution `part` to the slot's output (graph: copied into a static buffer).
  void SetGradPart(int slot, int part, const torch::Tensor& grad);
  // Graph mode: replays slot's forward / backward graph alone on `stream` (the profiler).
  Status LaunchForward(int slot, cudaStream_t stream) const;
  Status LaunchBackward(int slot, cudaStream_t stream) const;
  // Runs the backward of `slot` on the current stream with the sum of the parts as gradient.
  Status Backward(int slot);
  // Gradient of input k from the last backward of `slot` (undefined for inputs without grad).
  torch::Tensor grad_input(int slot, int k) const { return slots_.at(slot).grad_inputs.at(k); }
  // Gradients of the inputs that came from other modules (needs_grad), in input order; zeros
  // where the module did not use one.
  std::vector<torch::Tensor> ProducerGrads(int slot) const;
  torch::Tensor output(int slot) const { return slots_.at(slot).output; }

 private:
  struct Slot {
    std::vector<torch::Tensor> inputs;  // graph: static; eager: the last forward's
    std::vector<bool> needs_grad;
    torch::Tensor output;
    torch::Tensor grad_output;              // graph: static
    std::vector<torch::Tensor> grad_parts;  // graph: static (aliases grad_output if one)
    std::vector<torch::Tensor> grad_inputs;
    std::shared_ptr<const OwnedStream> capture_stream;  // may be shared (Note [graph memory pools])
    at::cuda::MempoolId_t pool{0, 0};
    // Each graph holds a use of the pool; the pool's memory is freed with its last graph.
    std::unique_ptr<at::cuda::CUDAGraph> fwd_graph, bwd_graph;
    GraphExec fwd_exec, bwd_exec;
  };
  std::vector<torch::Tensor> Trainable() const;
  // Parameters, then the inputs that get a gradient: what the backward differentiates for.
  std::vector<torch::Tensor> GradTargets(const Slot& s) const;
  torch::Tensor SumParts(Slot& s);
  // After a failed capture: ends a capture left open on the slot's stream, gives back the
  // pool use of a graph whose capture did not end, drops the slot's graphs and buffers.
  Status AbandonCapture(Slot& s, int slot, bool capture_open, const char* what,
                        const c10::Error& e);

  models::MultimodalModelImpl* model_;
  int index_;
  ExecMode mode_;
  torch::Device device_;
  Precision precision_;
  int grad_parts_ = 1;
  std::vector<Slot> slots_;
};

}  // namespace mosaic::engine
