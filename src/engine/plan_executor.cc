// Running a plan's step (plan_executor.h).
#include "engine/plan_executor.h"

#include <ATen/ops/_foreach_mul.h>
#include <ATen/ops/_foreach_zero.h>
#include <ATen/ops/_foreach_norm.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>

#include <map>
#include <memory>
#include <tuple>
#include <utility>

#include "engine/cuda_check.h"

namespace mosaic::engine {
namespace {

// Whether `x` is one of the producer outputs handed to ModuleInputs; which producer.
int ProducerOf(const torch::Tensor& x, const std::vector<std::pair<int, torch::Tensor>>& outs) {
  if (!x.defined()) return -1;
  for (const auto& [q, t] : outs)
    if (t.defined() && x.is_same(t)) return q;
  return -1;
}

}  // namespace

StatusOr<std::vector<int>> IssueOrder(const Plan& plan, const TaskGraph& graph) {
  std::vector<int> order;
  std::vector<bool> issued(graph.size(), false);
  std::vector<int> phase_of(graph.size(), -1);
  for (size_t ph = 0; ph < plan.phases.size(); ++ph)
    for (const PartitionSpec& p : plan.phases[ph].partitions)
      for (const TaskId& id : p.tasks) {
        const int t = graph.Find(id);
        if (t < 0) return InvalidArgument("plan task \"" + id.ToString() + "\" is not in the step");
        if (phase_of[t] >= 0)
          return InvalidArgument("task \"" + id.ToString() + "\" is assigned twice");
        phase_of[t] = static_cast<int>(ph);
      }
  for (const Task& t : graph.tasks())
    if (phase_of[t.index] < 0)
      return InvalidArgument("task \"" + t.id.ToString() + "\" is in no partition of the plan");
  for (size_t ph = 0; ph < plan.phases.size(); ++ph) {
    const auto& parts = plan.phases[ph].partitions;
    std::vector<size_t> next(parts.size(), 0);
    size_t left = 0;
    for (const auto& p : parts)
      left += p.tasks.size();
    while (left > 0) {
      bool progress = false;
      for (size_t p = 0; p < parts.size(); ++p) {
        if (next[p] >= parts[p].tasks.size()) continue;
        const int t = graph.Find(parts[p].tasks[next[p]]);
        bool ready = true;
        for (int e : graph.in_edges(t)) {
          const int from = graph.edges()[e].from;
          if (phase_of[from] > static_cast<int>(ph)) {
            return InvalidArgument("task \"" + graph.tasks()[t].id.ToString() + "\" (phase " +
                                   std::to_string(ph) + ") depends on \"" +
                                   graph.tasks()[from].id.ToString() + "\" of a later phase");
          }
          ready = ready && issued[from];
        }
        if (!ready) continue;
        issued[t] = true;
        order.push_back(t);
        ++next[p];
        --left;
        progress = true;
      }
      if (!progress) {
        std::string stuck;
        for (size_t p = 0; p < parts.size(); ++p)
          if (next[p] < parts[p].tasks.size())
            stuck += (stuck.empty() ? "" : ", ") + parts[p].id + ":" +
                     parts[p].tasks[next[p]].ToString();
        return InvalidArgument("phase \"" + plan.phases[ph].name +
                               "\" deadlocks: no partition can run its next task (" + stuck + ")");
      }
    }
  }
  return order;
}

StatusOr<std::unique_ptr<PlanExecutor>> PlanExecutor::Create(models::MultimodalModel model,
                                                             const Plan& plan,
                                                             const models::Batch& example,
                                                             torch::Device device,
                                                             const ExecutorOptions& options) {
  std::unique_ptr<PlanExecutor> e(new PlanExecutor());
  e->model_ = model;
  e->plan_ = plan;
  // "cuda" without an index means the current device; streams and guards need the index.
  e->device_ = device.is_cuda() && !device.has_index()
                   ? torch::Device(torch::kCUDA, c10::cuda::current_device())
                   : device;
  device = e->device_;
  e->options_ = options;
  e->mode_ = device.is_cuda() ? options.mode : ExecMode::kEager;
  MOSAIC_ASSIGN_OR_RETURN(e->graph_, BuildTaskGraph(model->spec(), plan));
  MOSAIC_RETURN_IF_ERROR(e->Build(example));
  return e;
}

PlanExecutor::~PlanExecutor() {
  // Graphs and their pools go first; then the cached blocks go back to the device, so that the
  // next plan's captures find the memory (gpu-facts.md: re-capturing without this runs out).
  if (device_.is_cuda()) {
    c10::cuda::getCurrentCUDAStream(device_.index()).synchronize();
  }
  modules_.clear();
  loss_values_.clear();
  if (device_.is_cuda()) c10::cuda::CUDACachingAllocator::emptyCache();
}

Status PlanExecutor::Build(const models::Batch& example) {
  const ModelSpec& spec = model_->spec();
  const int M = plan_.micro_batches;
  if (example.size() % M != 0) {
    return InvalidArgument("batch of " + std::to_string(example.size()) +
                           " samples does not split into " + std::to_string(M) + " micro-batches");
  }
  place_.assign(graph_.size(), {-1, -1});
  for (size_t ph = 0; ph < plan_.phases.size(); ++ph)
    for (size_t p = 0; p < plan_.phases[ph].partitions.size(); ++p)
      for (const TaskId& id : plan_.phases[ph].partitions[p].tasks) {
        const int t = graph_.Find(id);
        if (t >= 0) place_[t] = {static_cast<int>(ph), static_cast<int>(p)};
      }
  MOSAIC_ASSIGN_OR_RETURN(std::vector<int> order, IssueOrder(plan_, graph_));
  order_.assign(plan_.phases.size(), {});
  for (int t : order)
    order_[place_[t].first].push_back(t);

  MOSAIC_ASSIGN_OR_RETURN(partitions_,
                          PartitionSet::Create(plan_, device_, {options_.use_green_contexts}));
  const int n = static_cast<int>(spec.modules.size());
  // Slots (Note [graph memory pools]): in graph mode, micro-batch m of module X whose forward
  // and backward run in the same partition gets a slot of its own, captured into that
  // partition's shared pool; otherwise it uses slot (m mod buffers, forward partition, backward
  // partition) with a pool of its own: micro-batches that share a slot are ordered by buffer
  // edges, and a slot's graphs are captured for one pair of partitions.
  slot_of_.assign(n, std::vector<int>(M, 0));
  slot_lane_.assign(n, {});
  modules_.clear();
  seeds_.assign(n, torch::Tensor());
  for (int i = 0; i < n; ++i) {
    const ModuleSpec& ms = spec.modules[i];
    const ExecMode mode = ms.is_loss() ? ExecMode::kEager : mode_;
    modules_.push_back(
        std::make_unique<GraphedModule>(model_.get(), i, mode, device_, spec.precision));
    GraphedModule& gm = *modules_.back();
    if (graph_.is_batch_level(i)) {
      gm.set_slots(1);
    } else if (mode == ExecMode::kEager) {
      gm.set_slots(M);
      for (int m = 0; m < M; ++m)
        slot_of_[i][m] = m;
    } else {
      std::map<std::tuple<int, std::pair<int, int>, std::pair<int, int>>, int> key_to_slot;
      int slots = 0;
      for (int m = 0; m < M; ++m) {
        const auto f = place_[graph_.Find(TaskId{ms.name, TaskPhase::kForward, m})];
        const auto b = place_[graph_.Find(TaskId{ms.name, TaskPhase::kBackward, m})];
        if (f == b && options_.share_graph_pools) {
          slot_of_[i][m] = slots++;
          slot_lane_[i].push_back(f);
          continue;
        }
        const auto key = std::make_tuple(m % graph_.buffers(i), f, b);
        auto it = key_to_slot.find(key);
        if (it == key_to_slot.end()) {
          it = key_to_slot.emplace(key, slots++).first;
          slot_lane_[i].push_back({-1, -1});  // a pool of its own
        }
        slot_of_[i][m] = it->second;
      }
      gm.set_slots(slots);
    }
    gm.set_grad_parts(ms.is_loss() ? 1 : static_cast<int>(spec.ConsumersOf(ms.name).size()));
    if (ms.is_loss()) {
      const double scale = graph_.is_batch_level(i) ? 1.0 : 1.0 / M;
      seeds_[i] = torch::full({}, scale, torch::TensorOptions().device(device_));
    }
  }

  if (mode_ == ExecMode::kGraph) {
    // Captures cannot free memory (cudaFree is not permitted while a stream captures): when the
    // allocator runs short during a capture it would try to release cached blocks and fail.
    // Hand the cache back first (gpu-facts.md: captures after other work ran out of memory).
    c10::cuda::getCurrentCUDAStream(device_.index()).synchronize();
    c10::cuda::CUDACachingAllocator::emptyCache();
    misplaced_backwards_ = 0;
    MOSAIC_RETURN_IF_ERROR(CaptureGraphs(example));
  }

  if (device_.is_cuda()) {
    task_done_.clear();
    task_start_.clear();
    const bool timing = options_.record_trace;
    for (size_t t = 0; t < graph_.size(); ++t) {
      MOSAIC_ASSIGN_OR_RETURN(CudaEvent ev, CudaEvent::Create(timing));
      task_done_.push_back(std::move(ev));
      if (timing) {
        MOSAIC_ASSIGN_OR_RETURN(CudaEvent start, CudaEvent::Create(true));
        task_start_.push_back(std::move(start));
      }
    }
    phase_done_.clear();
    phase_done_.resize(plan_.phases.size());
    for (size_t ph = 0; ph < plan_.phases.size(); ++ph)
      for (size_t p = 0; p < plan_.phases[ph].partitions.size(); ++p) {
        MOSAIC_ASSIGN_OR_RETURN(CudaEvent ev, CudaEvent::Create());
        phase_done_[ph].push_back(std::move(ev));
      }
    MOSAIC_ASSIGN_OR_RETURN(step_start_, CudaEvent::Create(timing));
  }
  if (misplaced_backwards_ > 0) {
    WarnOnce(std::to_string(misplaced_backwards_) +
             " backward graph(s) are planned on another partition than their forward and run on "
             "the forward's SMs (a CUDA graph keeps the context it was captured in)");
  }
  return Status::Ok();
}

// Captures every graph-mode slot in the issue order (Note [issue order]), so that each
// partition's shared pool sees its graphs in the order they will run (Note [graph memory
// pools]), and a producer's static output exists before its consumers' forwards are captured.
Status PlanExecutor::CaptureGraphs(const models::Batch& example) {
  const ModelSpec& spec = model_->spec();
  const int M = plan_.micro_batches;
  const int64_t mb = example.size() / M;
  struct Lane {
    std::shared_ptr<const OwnedStream> stream;
    at::cuda::MempoolId_t pool;
  };
  std::map<std::pair<int, int>, Lane> lanes;  // (phase, partition) -> its shared stream and pool
  const int n = static_cast<int>(spec.modules.size());
  std::vector<std::vector<bool>> fwd_done(n), bwd_done(n);
  for (int i = 0; i < n; ++i) {
    fwd_done[i].assign(modules_[i]->slots(), false);
    bwd_done[i].assign(modules_[i]->slots(), false);
  }
  shared_pool_slots_ = 0;
  for (const std::vector<int>& phase_order : order_) {
    for (const int t : phase_order) {
      const Task& task = graph_.tasks()[t];
      const int i = task.module_index;
      GraphedModule& gm = *modules_[i];
      if (gm.mode() != ExecMode::kGraph || graph_.is_batch_level(i) ||
          task.id.phase == TaskPhase::kOptimizer) {
        continue;
      }
      const int m = task.id.micro_batch;
      const int s = slot_of_[i][m];
      if (task.id.phase == TaskPhase::kBackward) {
        if (bwd_done[i][s]) continue;
        bwd_done[i][s] = true;
        MOSAIC_RETURN_IF_ERROR(gm.CaptureBackward(s));
        continue;
      }
      if (fwd_done[i][s]) continue;
      fwd_done[i][s] = true;
      const std::string& name = spec.modules[i].name;
      models::ModuleOutputs outputs;
      std::vector<std::pair<int, torch::Tensor>> outs;
      for (const std::string& q : spec.InputsOf(name)) {
        const int qi = spec.IndexOf(q);
        outputs[q] = modules_[qi]->output(slot_of_[qi][m]);
        outs.push_back({qi, outputs[q]});
      }
      const models::Batch micro = example.Slice(m * mb, mb);
      const std::vector<torch::Tensor> inputs = model_->ModuleInputs(i, micro, outputs);
      std::vector<bool> needs_grad;
      for (const torch::Tensor& x : inputs)
        needs_grad.push_back(ProducerOf(x, outs) >= 0);
      const auto fwd = place_[t];
      const auto bwd = place_[graph_.Find(TaskId{name, TaskPhase::kBackward, m})];
      if (partitions_->at(bwd.first, bwd.second).context !=
          partitions_->at(fwd.first, fwd.second).context) {
        ++misplaced_backwards_;
      }
      const std::pair<int, int> lane_key = slot_lane_[i][s];
      std::shared_ptr<const OwnedStream> stream;
      at::cuda::MempoolId_t pool;
      if (lane_key.first >= 0) {
        auto it = lanes.find(lane_key);
        if (it == lanes.end()) {
          MOSAIC_ASSIGN_OR_RETURN(OwnedStream cs,
                                  partitions_->CreateStreamLike(lane_key.first, lane_key.second));
          it = lanes.emplace(lane_key, Lane{std::make_shared<const OwnedStream>(std::move(cs)),
                                            at::cuda::graph_pool_handle()})
                   .first;
        }
        stream = it->second.stream;
        pool = it->second.pool;
        ++shared_pool_slots_;
      } else {
        MOSAIC_ASSIGN_OR_RETURN(OwnedStream cs, partitions_->CreateStreamLike(fwd.first, fwd.second));
        stream = std::make_shared<const OwnedStream>(std::move(cs));
        pool = at::cuda::graph_pool_handle();
      }
      MOSAIC_RETURN_IF_ERROR(gm.CaptureForward(s, inputs, needs_grad, std::move(stream), pool));
    }
  }
  graph_pools_ = static_cast<int>(lanes.size());
  for (int i = 0; i < n; ++i)
    for (const auto& lane : slot_lane_[i])
      if (lane.first < 0) ++graph_pools_;
  return Status::Ok();
}

Status PlanExecutor::RunTask(int t, const std::vector<models::Batch>& micro,
                             const models::Batch& whole) {
  const ModelSpec& spec = model_->spec();
  const Task& task = graph_.tasks()[t];
  const int i = task.module_index;
  const ModuleSpec& ms = spec.modules[i];
  GraphedModule& gm = *modules_[i];
  const bool batch_level = graph_.is_batch_level(i);
  const int M = plan_.micro_batches;
  const int m = task.id.micro_batch;
  const int slot = batch_level ? 0 : slot_of_[i][m];
  const std::vector<std::string> producers = spec.InputsOf(ms.name);

  switch (task.id.phase) {
    case TaskPhase::kOptimizer:
      return Status::Ok();  // the optimizer runs once, after the step (Step)
    case TaskPhase::kForward: {
      models::ModuleOutputs outputs;
      std::vector<std::pair<int, torch::Tensor>> outs;
      for (const std::string& q : producers) {
        const int qi = spec.IndexOf(q);
        if (batch_level) {
          std::vector<torch::Tensor> parts;
          for (int k = 0; k < M; ++k)
            parts.push_back(modules_[qi]->output(slot_of_[qi][k]));
          outputs[q] = M == 1 ? parts[0] : torch::cat(parts, 0);
        } else {
          outputs[q] = modules_[qi]->output(slot_of_[qi][m]);
        }
        outs.push_back({qi, outputs[q]});
      }
      const std::vector<torch::Tensor> inputs =
          model_->ModuleInputs(i, batch_level ? whole : micro[m], outputs);
      std::vector<bool> needs_grad;
      for (const torch::Tensor& x : inputs)
        needs_grad.push_back(ProducerOf(x, outs) >= 0);
      MOSAIC_ASSIGN_OR_RETURN(torch::Tensor y, gm.Forward(slot, inputs, needs_grad));
      if (ms.is_loss()) {
        loss_values_[t] = y.detach().to(torch::kFloat) * seeds_[i];
        gm.SetGradPart(slot, 0, seeds_[i]);
      }
      return Status::Ok();
    }
    case TaskPhase::kBackward: {
      MOSAIC_RETURN_IF_ERROR(gm.Backward(slot));
      // The inputs that came from producers, in edge order (ModuleInputs' convention).
      const std::vector<torch::Tensor> to_producers = gm.ProducerGrads(slot);
      if (to_producers.size() != producers.size())
        return Internal("backward of " + ms.name + ": " + std::to_string(to_producers.size()) +
                        " input gradients for " + std::to_string(producers.size()) + " producers");
      torch::NoGradGuard no_grad;
      for (size_t j = 0; j < producers.size(); ++j) {
        const int qi = spec.IndexOf(producers[j]);
        const std::vector<std::string> consumers = spec.ConsumersOf(producers[j]);
        const int part = static_cast<int>(std::find(consumers.begin(), consumers.end(), ms.name) -
                                          consumers.begin());
        if (batch_level) {
          const std::vector<torch::Tensor> chunks = to_producers[j].chunk(M, 0);
          for (int k = 0; k < M; ++k)
            modules_[qi]->SetGradPart(slot_of_[qi][k], part, chunks[k]);
        } else {
          modules_[qi]->SetGradPart(slot_of_[qi][m], part, to_producers[j]);
        }
      }
      return Status::Ok();
    }
  }
  return Internal("unknown task phase");
}

StatusOr<torch::Tensor> PlanExecutor::ForwardBackward(const models::Batch& batch) {
  const int M = plan_.micro_batches;
  if (batch.size() % M != 0) return InvalidArgument("batch does not split into micro-batches");
  const int64_t mb = batch.size() / M;
  std::vector<models::Batch> micro;
  for (int m = 0; m < M; ++m)
    micro.push_back(batch.Slice(m * mb, mb));
  loss_values_.assign(graph_.size(), torch::Tensor());
  executed_.clear();
  const bool gpu = device_.is_cuda();
  try {
    {
      // One multi-tensor kernel for every gradient: zeroing them one by one cost a host launch
      // per tensor (about 7 us each, 2 ms for clip-b16's ~300 tensors) with the GPU idle.
      torch::NoGradGuard no_grad;
      std::vector<torch::Tensor> grads;
      for (const torch::Tensor& p : model_->parameters())
        if (p.grad().defined()) grads.push_back(p.mutable_grad());
      if (!grads.empty()) at::_foreach_zero_(grads);
    }
    cudaStream_t caller = nullptr;
    if (gpu) {
      caller = c10::cuda::getCurrentCUDAStream(device_.index()).stream();
      MOSAIC_CUDA_RETURN_IF_ERROR(cudaEventRecord(step_start_.get(), caller));
    }
    for (size_t ph = 0; ph < order_.size(); ++ph) {
      const int nparts = partitions_->partitions(static_cast<int>(ph));
      if (gpu) {
        for (int p = 0; p < nparts; ++p) {
          cudaStream_t s = partitions_->at(ph, p).stream->stream();
          if (ph == 0) {
            MOSAIC_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(s, step_start_.get(), 0));
          } else {
            for (const CudaEvent& ev : phase_done_[ph - 1])
              MOSAIC_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(s, ev.get(), 0));
          }
        }
      }
      for (int t : order_[ph]) {
        const auto [tph, tp] = place_[t];
        if (gpu) {
          const c10::cuda::CUDAStream stream = *partitions_->at(tph, tp).stream;
          for (int e : graph_.in_edges(t)) {
            const int from = graph_.edges()[e].from;
            if (place_[from].first == tph && place_[from].second != tp)
              MOSAIC_CUDA_RETURN_IF_ERROR(
                  cudaStreamWaitEvent(stream.stream(), task_done_[from].get(), 0));
          }
          c10::cuda::CUDAStreamGuard guard(stream);
          if (!task_start_.empty())
            MOSAIC_CUDA_RETURN_IF_ERROR(cudaEventRecord(task_start_[t].get(), stream.stream()));
          MOSAIC_RETURN_IF_ERROR(RunTask(t, micro, batch));
          MOSAIC_CUDA_RETURN_IF_ERROR(cudaEventRecord(task_done_[t].get(), stream.stream()));
        } else {
          MOSAIC_RETURN_IF_ERROR(RunTask(t, micro, batch));
        }
        executed_.push_back(t);
      }
      if (gpu) {
        for (int p = 0; p < nparts; ++p)
          MOSAIC_CUDA_RETURN_IF_ERROR(
              cudaEventRecord(phase_done_[ph][p].get(), partitions_->at(ph, p).stream->stream()));
      }
    }
    if (gpu && !order_.empty()) {
      for (const CudaEvent& ev : phase_done_.back())
        MOSAIC_CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(caller, ev.get(), 0));
    }
    torch::Tensor loss = torch::zeros({}, torch::TensorOptions().device(device_));
    for (const torch::Tensor& v : loss_values_)
      if (v.defined()) loss = loss + v;
    return loss;
  } catch (const c10::Error& e) {
    return Internal(std::string("step: ") + e.what_without_backtrace());
  }
}

StatusOr<std::vector<TaskSpan>> PlanExecutor::LastStepTrace() const {
  if (task_start_.empty())
    return FailedPrecondition("no trace: the executor records one only on CUDA with record_trace");
  std::vector<TaskSpan> spans;
  for (int t : executed_) {
    MOSAIC_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(task_done_[t].get()));
    float start = 0, end = 0;
    MOSAIC_CUDA_RETURN_IF_ERROR(
        cudaEventElapsedTime(&start, step_start_.get(), task_start_[t].get()));
    MOSAIC_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&end, step_start_.get(), task_done_[t].get()));
    spans.push_back({t, start, end});
  }
  return spans;
}

Status PlanExecutor::ClipGradients() {
  if (options_.clip_grad <= 0) return Status::Ok();
  std::vector<torch::Tensor> grads;
  for (const torch::Tensor& p : model_->parameters())
    if (p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty()) return Status::Ok();
  // On the device, no host sync: coef = min(1, max_norm / (total_norm + 1e-6)).
  torch::NoGradGuard no_grad;
  const std::vector<torch::Tensor> norms = at::_foreach_norm(grads, 2);
  const torch::Tensor total = torch::stack(norms).norm();
  const torch::Tensor coef = (options_.clip_grad / (total + 1e-6)).clamp_max(1.0);
  at::_foreach_mul_(grads, coef);
  return Status::Ok();
}

StatusOr<torch::Tensor> PlanExecutor::Step(const models::Batch& batch,
                                           torch::optim::Optimizer* optimizer) {
  MOSAIC_ASSIGN_OR_RETURN(torch::Tensor loss, ForwardBackward(batch));
  MOSAIC_RETURN_IF_ERROR(ApplyOptimizer(optimizer));
  return loss;
}

Status PlanExecutor::ApplyOptimizer(torch::optim::Optimizer* optimizer) {
  try {
    MOSAIC_RETURN_IF_ERROR(ClipGradients());
    if (optimizer) optimizer->step();
  } catch (const c10::Error& e) {
    return Internal(std::string("optimizer step: ") + e.what_without_backtrace());
  }
  return Status::Ok();
}

}  // namespace mosaic::engine
