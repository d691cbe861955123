// Per-module forward/backward CUDA graphs and their eager twin (graphed_module.h).
#include "engine/graphed_module.h"

#include <ATen/autocast_mode.h>
#include <ATen/core/CachingHostAllocator.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <ATen/cuda/CUDAGraph.h>
#include <ATen/ops/_foreach_add.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <string>
#include <utility>

#include "engine/cuda_check.h"

namespace mosaic::engine {

const char* ToString(ExecMode m) {
  return m == ExecMode::kGraph ? "graph" : "eager";
}

StatusOr<GraphExec> GraphExec::Create(cudaGraph_t graph) {
  GraphExec e;
  MOSAIC_CUDA_RETURN_IF_ERROR(cudaGraphInstantiate(&e.exec_, graph, 0));
  return e;
}

GraphExec& GraphExec::operator=(GraphExec&& o) noexcept {
  if (this != &o) {
    if (exec_) MOSAIC_CUDA_WARN(cudaGraphExecDestroy(exec_));
    exec_ = o.exec_;
    o.exec_ = nullptr;
  }
  return *this;
}

GraphExec::~GraphExec() {
  if (exec_) MOSAIC_CUDA_WARN(cudaGraphExecDestroy(exec_));
}

Status GraphExec::Launch(cudaStream_t stream) const {
  MOSAIC_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(exec_, stream));
  return Status::Ok();
}

GraphedModule::GraphedModule(models::MultimodalModelImpl* model, int module_index, ExecMode mode,
                             torch::Device device, Precision precision)
    : model_(model), index_(module_index), mode_(mode), device_(device), precision_(precision) {
  if (mode_ == ExecMode::kGraph) {
    // Persistent gradient buffers that the backward graphs add into (Note [graphed module]).
    torch::NoGradGuard no_grad;
    for (torch::Tensor& p : Trainable()) {
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    }
  }
}

GraphedModule::~GraphedModule() {
  // Executables first, then the graphs (which return their pools), then the streams.
  for (Slot& s : slots_) {
    s.fwd_exec = GraphExec();
    s.bwd_exec = GraphExec();
    s.inputs.clear();
    s.output = s.grad_output = torch::Tensor();
    s.grad_parts.clear();
    s.grad_inputs.clear();
    s.fwd_graph.reset();
    s.bwd_graph.reset();
  }
}

void GraphedModule::set_slots(int n) {
  slots_.resize(n);
}

void GraphedModule::set_grad_parts(int n) {
  grad_parts_ = std::max(1, n);
}

std::vector<torch::Tensor> GraphedModule::Trainable() const {
  std::vector<torch::Tensor> out;
  for (const torch::Tensor& p : model_->ModuleParameters(index_))
    if (p.requires_grad()) out.push_back(p);
  return out;
}

std::vector<torch::Tensor> GraphedModule::GradTargets(const Slot& s) const {
  std::vector<torch::Tensor> wrt = Trainable();
  for (size_t k = 0; k < s.inputs.size(); ++k)
    if (s.needs_grad[k]) wrt.push_back(s.inputs[k]);
  return wrt;
}

Status GraphedModule::CaptureSlot(int slot, const std::vector<torch::Tensor>& example,
                                  const std::vector<bool>& needs_grad, OwnedStream capture_stream) {
  if (mode_ != ExecMode::kGraph) return Internal("CaptureSlot on an eager module");
  MOSAIC_RETURN_IF_ERROR(CaptureForward(
      slot, example, needs_grad, std::make_shared<const OwnedStream>(std::move(capture_stream)),
      at::cuda::graph_pool_handle()));
  return CaptureBackward(slot);
}

Status GraphedModule::CaptureForward(int slot, const std::vector<torch::Tensor>& example,
                                     const std::vector<bool>& needs_grad,
                                     std::shared_ptr<const OwnedStream> stream,
                                     at::cuda::MempoolId_t pool) {
  if (mode_ != ExecMode::kGraph) return Internal("CaptureForward on an eager module");
  Slot& s = slots_.at(slot);
  s.capture_stream = std::move(stream);
  s.pool = pool;
  const c10::cuda::CUDAStream cs =
      c10::cuda::getStreamFromExternal(s.capture_stream->get(), device_.index());
  bool capture_open = false;  // between a capture_begin and its capture_end
  try {
    c10::cuda::CUDAStreamGuard guard(cs);
    torch::AutoGradMode grad_mode(true);
    {
      torch::NoGradGuard no_grad;
      s.inputs.clear();
      s.needs_grad = needs_grad;
      for (size_t k = 0; k < example.size(); ++k) {
        torch::Tensor x = example[k].defined() ? example[k].detach().clone() : torch::Tensor();
        if (x.defined() && needs_grad[k]) x.requires_grad_(true);
        s.inputs.push_back(x);
      }
    }
    const std::vector<torch::Tensor> wrt = GradTargets(s);
    // Warm up on the capture stream: lazy initialisation (cuBLAS handles and workspaces,
    // kernel selection) must not happen inside the capture.
    for (int i = 0; i < 2; ++i) {
      torch::Tensor y;
      {
        models::AutocastGuard autocast(device_, precision_);
        y = model_->ForwardModule(index_, s.inputs);
      }
      torch::autograd::grad({y}, wrt, {torch::ones_like(y)}, false, false, true);
    }
    cs.synchronize();
    // The warm-up's cached blocks would sit beside the pool for good: hand them back.
    c10::cuda::CUDACachingAllocator::emptyCache();

    s.fwd_graph = std::make_unique<at::cuda::CUDAGraph>(/*keep_graph=*/true);
    {
      models::AutocastGuard autocast(device_, precision_);
      const bool cache = at::autocast::is_autocast_cache_enabled();
      at::autocast::set_autocast_cache_enabled(false);  // cached casts would outlive the graph
      capture_open = true;
      s.fwd_graph->capture_begin(pool);
      s.output = model_->ForwardModule(index_, s.inputs);
      s.fwd_graph->capture_end();
      capture_open = false;
      at::autocast::set_autocast_cache_enabled(cache);
    }
    s.grad_output = torch::zeros_like(s.output);
    s.grad_parts.assign(grad_parts_, torch::Tensor());
    s.grad_parts[0] = s.grad_output;
    for (int k = 1; k < grad_parts_; ++k)
      s.grad_parts[k] = torch::zeros_like(s.output);
  } catch (const c10::Error& e) {
    return AbandonCapture(s, slot, capture_open, "forward", e);
  }
  MOSAIC_ASSIGN_OR_RETURN(s.fwd_exec, GraphExec::Create(s.fwd_graph->raw_cuda_graph()));
  return Status::Ok();
}

Status GraphedModule::CaptureBackward(int slot) {
  Slot& s = slots_.at(slot);
  if (mode_ != ExecMode::kGraph || !s.fwd_graph || !s.output.defined())
    return Internal("CaptureBackward of slot " + std::to_string(slot) + " before its forward");
  const c10::cuda::CUDAStream cs =
      c10::cuda::getStreamFromExternal(s.capture_stream->get(), device_.index());
  bool capture_open = false;
  try {
    c10::cuda::CUDAStreamGuard guard(cs);
    torch::AutoGradMode grad_mode(true);
    const std::vector<torch::Tensor> wrt = GradTargets(s);
    const size_t n_params = wrt.size() - std::count(s.needs_grad.begin(), s.needs_grad.end(), true);
    s.bwd_graph = std::make_unique<at::cuda::CUDAGraph>(/*keep_graph=*/true);
    capture_open = true;
    s.bwd_graph->capture_begin(s.pool);
    // Not retaining the autograd graph frees the saved activations inside the capture, so the
    // captures after this one can reuse them (Note [graph memory pools]).
    std::vector<torch::Tensor> grads =
        torch::autograd::grad({s.output}, wrt, {s.grad_output}, false, false, true);
    {
      // One multi-tensor add (a few launches, each over many tensors) adds every parameter's
      // gradient into its buffer. One add per tensor was a captured kernel each, about 300 for
      // clip-b16, most of them on biases and norm weights too small to fill the GPU (the H200's
      // bs128 step ran 307 fp32 add kernels for 0.9 ms).
      torch::NoGradGuard no_grad;
      std::vector<torch::Tensor> params = Trainable(), into, from;
      for (size_t i = 0; i < n_params; ++i) {
        if (!grads[i].defined()) continue;
        into.push_back(params[i].mutable_grad());
        from.push_back(grads[i]);
      }
      if (!into.empty()) at::_foreach_add_(into, from);
    }
    s.grad_inputs.assign(s.inputs.size(), torch::Tensor());
    for (size_t k = 0, j = n_params; k < s.inputs.size(); ++k)
      if (s.needs_grad[k]) {
        s.grad_inputs[k] = grads[j].defined() ? grads[j] : torch::zeros_like(s.inputs[k]);
        ++j;
      }
    s.bwd_graph->capture_end();
    capture_open = false;
  } catch (const c10::Error& e) {
    return AbandonCapture(s, slot, capture_open, "backward", e);
  }
  MOSAIC_ASSIGN_OR_RETURN(s.bwd_exec, GraphExec::Create(s.bwd_graph->raw_cuda_graph()));
  return Status::Ok();
}

Status GraphedModule::AbandonCapture(Slot& s, int slot, bool capture_open, const char* what,
                                     const c10::Error& e) {
  // Leave no capture open (the stream would refuse all later work, and destroying a graph
  // mid-capture aborts): end it, drop the partial graph, then the half-made slot.
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(s.capture_stream->get(), &capturing) == cudaSuccess &&
      capturing != cudaStreamCaptureStatusNone) {
    cudaGraph_t partial = nullptr;
    cudaStreamEndCapture(s.capture_stream->get(), &partial);
    if (partial) cudaGraphDestroy(partial);
  }
  cudaGetLastError();
  // The allocator still routes this stream's allocations into the graph's pool and counts the
  // open capture as a user of it (capture_end would have undone both): undo them, or the pool's
  // memory stays reserved for good and every later capture runs short (measured: a failed
  // omni-small candidate left 20 GiB behind and the next four plans ran out of memory).
  if (capture_open) {
    c10::cuda::CUDACachingAllocator::endAllocateToPool(device_.index(), s.pool);
    c10::cuda::CUDACachingAllocator::releasePool(device_.index(), s.pool);
    try {  // the pinned host memory pool that capture_begin opened beside it
      at::getHostAllocator(at::kCUDA)->end_allocate_to_pool(s.pool);
      at::getHostAllocator(at::kCUDA)->release_pool(s.pool);
    } catch (const c10::Error&) {
    }
  }
  s.fwd_exec = GraphExec();
  s.bwd_exec = GraphExec();
  s.output = s.grad_output = torch::Tensor();  // the forward's autograd graph and activations
  s.grad_parts.clear();
  s.grad_inputs.clear();
  s.inputs.clear();
  // A graph whose capture ended gives its pool use back when destroyed; one that did not end
  // holds none (released above).
  s.fwd_graph.reset();
  s.bwd_graph.reset();
  c10::cuda::CUDACachingAllocator::emptyCache();
  return Internal("capturing the " + std::string(what) + " of " +
                  model_->spec().modules[index_].name + " slot " + std::to_string(slot) +
                  " as a CUDA graph: " + e.what_without_backtrace() +
                  " (an operation that syncs with the host, or allocates outside the graph's"
                  " pool, cannot be captured)");
}

StatusOr<torch::Tensor> GraphedModule::Forward(int slot, const std::vector<torch::Tensor>& inputs,
                                               const std::vector<bool>& needs_grad) {
  Slot& s = slots_.at(slot);
  try {
    if (mode_ == ExecMode::kGraph) {
      torch::NoGradGuard no_grad;
      for (size_t k = 0; k < inputs.size(); ++k)
        if (inputs[k].defined()) s.inputs[k].detach().copy_(inputs[k], /*non_blocking=*/true);
      MOSAIC_RETURN_IF_ERROR(
          s.fwd_exec.Launch(c10::cuda::getCurrentCUDAStream(device_.index()).stream()));
      return s.output;
    }
    torch::AutoGradMode grad_mode(true);
    s.inputs.clear();
    s.needs_grad = needs_grad;
    for (size_t k = 0; k < inputs.size(); ++k) {
      torch::Tensor x = inputs[k];
      if (x.defined() && needs_grad[k]) x = x.detach().requires_grad_(true);
      s.inputs.push_back(x);
    }
    models::AutocastGuard autocast(device_, precision_);
    s.output = model_->ForwardModule(index_, s.inputs);
    s.grad_parts.assign(grad_parts_, torch::Tensor());
    return s.output;
  } catch (const c10::Error& e) {
    return Internal("forward of " + model_->spec().modules[index_].name + ": " +
                    e.what_without_backtrace());
  }
}

Status GraphedModule::LaunchForward(int slot, cudaStream_t stream) const {
  return slots_.at(slot).fwd_exec.Launch(stream);
}

Status GraphedModule::LaunchBackward(int slot, cudaStream_t stream) const {
  return slots_.at(slot).bwd_exec.Launch(stream);
}

void GraphedModule::SetGradPart(int slot, int part, const torch::Tensor& grad) {
  Slot& s = slots_.at(slot);
  if (mode_ == ExecMode::kGraph) {
    torch::NoGradGuard no_grad;
    s.grad_parts.at(part).copy_(grad, /*non_blocking=*/true);
  } else {
    s.grad_parts.at(part) = grad;
  }
}

std::vector<torch::Tensor> GraphedModule::ProducerGrads(int slot) const {
  const Slot& s = slots_.at(slot);
  std::vector<torch::Tensor> out;
  for (size_t k = 0; k < s.inputs.size() && k < s.needs_grad.size(); ++k) {
    if (!s.needs_grad[k]) continue;
    torch::Tensor g = k < s.grad_inputs.size() ? s.grad_inputs[k] : torch::Tensor();
    out.push_back(g.defined() ? g : torch::zeros_like(s.inputs[k]));
  }
  return out;
}

torch::Tensor GraphedModule::SumParts(Slot& s) {
  torch::NoGradGuard no_grad;
  if (mode_ == ExecMode::kGraph) {
    for (size_t k = 1; k < s.grad_parts.size(); ++k)
      s.grad_output.add_(s.grad_parts[k]);
    return s.grad_output;
  }
  torch::Tensor sum;
  for (const torch::Tensor& g : s.grad_parts)
    if (g.defined()) sum = sum.defined() ? sum + g : g;
  return sum;
}

Status GraphedModule::Backward(int slot) {
  Slot& s = slots_.at(slot);
  try {
    torch::Tensor gy = SumParts(s);
    if (mode_ == ExecMode::kGraph) {
      return s.bwd_exec.Launch(c10::cuda::getCurrentCUDAStream(device_.index()).stream());
    }
    if (!gy.defined())
      return Internal("backward of " + model_->spec().modules[index_].name +
                      " before any gradient arrived");
    if (gy.sizes() != s.output.sizes()) gy = gy.expand_as(s.output);
    torch::autograd::backward({s.output}, {gy});
    s.grad_inputs.assign(s.inputs.size(), torch::Tensor());
    for (size_t k = 0; k < s.inputs.size(); ++k)
      if (s.inputs[k].defined() && s.inputs[k].requires_grad())
        s.grad_inputs[k] = s.inputs[k].grad();
    s.output = torch::Tensor();  // frees the autograd graph's activations
    return Status::Ok();
  } catch (const c10::Error& e) {
    return Internal("backward of " + model_->spec().modules[index_].name + ": " +
                    e.what_without_backtrace());
  }
}

}  // namespace mosaic::engine
