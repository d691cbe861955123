#include "engine/step_timing.h"

#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <set>

#include "engine/cuda_check.h"
#include "engine/fused_adamw.h"
#include "engine/kernel_trace.h"
#include "engine/partition.h"
#include "engine/sm_probe.h"
#include "sim/sm_utilization.h"

namespace mosaic::engine {

double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double rank = std::ceil(q * static_cast<double>(v.size()));
  const size_t k = static_cast<size_t>(std::clamp(rank, 1.0, static_cast<double>(v.size())));
  return v[k - 1];
}

namespace {

// Elapsed ms between two recorded timing events (waits for the second).
StatusOr<double> ElapsedMs(const CudaEvent& a, const CudaEvent& b) {
  MOSAIC_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(b.get()));
  float ms = 0;
  MOSAIC_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, a.get(), b.get()));
  return static_cast<double>(ms);
}

ExecutorOptions TimingExecutorOptions(const StepTimingOptions& options, bool record_trace) {
  ExecutorOptions eo;
  eo.mode = options.mode;
  eo.clip_grad = options.clip_grad;
  eo.use_green_contexts = options.use_green_contexts;
  eo.record_trace = record_trace;
  return eo;
}

StatusOr<std::unique_ptr<FusedAdamW>> MakeAdamW(models::MultimodalModel model, double lr) {
  try {
    return std::make_unique<FusedAdamW>(model->parameters(), torch::optim::AdamWOptions(lr));
  } catch (const c10::Error& e) {
    return Internal(std::string("fused AdamW: ") + e.what_without_backtrace());
  }
}

// One training step bracketed by CUDA events on the caller's stream: forward + backward (one
// time), then gradient clipping and AdamW (the step's time).
struct StepMs {
  double step = 0, fwd_bwd = 0;
};

class StepClock {
 public:
  static StatusOr<StepClock> Create(cudaStream_t stream) {
    StepClock c;
    c.stream_ = stream;
    MOSAIC_ASSIGN_OR_RETURN(c.start_, CudaEvent::Create(true));
    MOSAIC_ASSIGN_OR_RETURN(c.fwd_bwd_, CudaEvent::Create(true));
    MOSAIC_ASSIGN_OR_RETURN(c.end_, CudaEvent::Create(true));
    return c;
  }
  StatusOr<StepMs> Run(PlanExecutor& exec, FusedAdamW* opt, const models::Batch& batch) {
    MOSAIC_CUDA_RETURN_IF_ERROR(cudaEventRecord(start_.get(), stream_));
    MOSAIC_ASSIGN_OR_RETURN(torch::Tensor loss, exec.ForwardBackward(batch));
    MOSAIC_CUDA_RETURN_IF_ERROR(cudaEventRecord(fwd_bwd_.get(), stream_));
    MOSAIC_RETURN_IF_ERROR(exec.ApplyOptimizer(opt));
    MOSAIC_CUDA_RETURN_IF_ERROR(cudaEventRecord(end_.get(), stream_));
    StepMs ms;
    MOSAIC_ASSIGN_OR_RETURN(ms.step, ElapsedMs(start_, end_));
    MOSAIC_ASSIGN_OR_RETURN(ms.fwd_bwd, ElapsedMs(start_, fwd_bwd_));
    return ms;
  }

 private:
  cudaStream_t stream_ = nullptr;
  CudaEvent start_, fwd_bwd_, end_;
};

}  // namespace

StatusOr<StepTimes> TimeSteps(models::MultimodalModel model, const Plan& plan,
                              const models::Batch& batch, torch::Device device,
                              const StepTimingOptions& options) {
  if (!device.is_cuda()) return InvalidArgument("step timing needs a CUDA device");
  if (options.steps < 1) return InvalidArgument("step timing needs at least one timed step");
  const c10::DeviceIndex dev = device.index() < 0 ? 0 : device.index();
  StepTimes out;
  c10::cuda::getCurrentCUDAStream(dev).synchronize();
  c10::cuda::CUDACachingAllocator::emptyCache();
  c10::cuda::CUDACachingAllocator::resetPeakStats(dev);
  std::vector<std::vector<TaskSpan>> traces;
  {
    MOSAIC_ASSIGN_OR_RETURN(
        std::unique_ptr<PlanExecutor> exec,
        PlanExecutor::Create(model, plan, batch, device,
                             TimingExecutorOptions(options, options.record_trace)));
    out.misplaced_backwards = exec->misplaced_backwards();
    MOSAIC_ASSIGN_OR_RETURN(std::unique_ptr<FusedAdamW> opt, MakeAdamW(model, options.lr));
    MOSAIC_ASSIGN_OR_RETURN(StepClock clock,
                            StepClock::Create(c10::cuda::getCurrentCUDAStream(dev).stream()));
    for (int i = 0; i < options.warmup + options.steps; ++i) {
      MOSAIC_ASSIGN_OR_RETURN(StepMs ms, clock.Run(*exec, opt.get(), batch));
      if (i < options.warmup) continue;
      out.step_ms.push_back(ms.step);
      out.fwd_bwd_ms.push_back(ms.fwd_bwd);
      if (options.record_trace) {
        MOSAIC_ASSIGN_OR_RETURN(std::vector<TaskSpan> spans, exec->LastStepTrace());
        traces.push_back(std::move(spans));
      }
    }
    c10::cuda::getCurrentCUDAStream(dev).synchronize();
  }
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(dev);
  const auto aggregate = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
  out.peak_allocated_bytes = static_cast<double>(stats.allocated_bytes[aggregate].peak);
  out.peak_reserved_bytes = static_cast<double>(stats.reserved_bytes[aggregate].peak);
  c10::cuda::CUDACachingAllocator::emptyCache();

  out.median_ms = Quantile(out.step_ms, 0.5);
  out.p10_ms = Quantile(out.step_ms, 0.1);
  out.p90_ms = Quantile(out.step_ms, 0.9);
  out.fwd_bwd_median_ms = Quantile(out.fwd_bwd_ms, 0.5);
  if (!traces.empty()) {
    // The trace of the step whose time is the median.
    size_t best = 0;
    for (size_t k = 1; k < out.step_ms.size(); ++k)
      if (std::abs(out.step_ms[k] - out.median_ms) < std::abs(out.step_ms[best] - out.median_ms))
        best = k;
    out.trace = traces[best];
  }
  if (options.utilization_steps > 0) {
    StatusOr<MeasuredUtilization> u =
        MeasureSmUtilization(model, plan, batch, device, options, options.utilization_steps);
    if (u.ok()) {
      out.utilization = *u;
    } else {
      out.utilization_error = u.status().message();
    }
  }
  return out;
}

StatusOr<MeasuredUtilization> MeasureSmUtilization(models::MultimodalModel model, const Plan& plan,
                                                   const models::Batch& batch, torch::Device device,
                                                   const StepTimingOptions& options, int steps) {
  if (!device.is_cuda()) return InvalidArgument("SM utilization needs a CUDA device");
  if (steps < 1) return InvalidArgument("SM utilization needs at least one traced step");
  const c10::DeviceIndex dev = device.index() < 0 ? 0 : device.index();
  int total_sms = 0;
  MOSAIC_CUDA_RETURN_IF_ERROR(
      cudaDeviceGetAttribute(&total_sms, cudaDevAttrMultiProcessorCount, dev));
  MOSAIC_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  MOSAIC_ASSIGN_OR_RETURN(std::unique_ptr<KernelTrace> trace, KernelTrace::Start());
  MeasuredUtilization u;
  u.steps = steps;
  u.place_sms = {total_sms};
  std::vector<c10::cuda::CUDAStream> marked;  // marker order
  std::vector<int> marked_place;
  {
    MOSAIC_ASSIGN_OR_RETURN(
        std::unique_ptr<PlanExecutor> exec,
        PlanExecutor::Create(model, plan, batch, device, TimingExecutorOptions(options, false)));
    MOSAIC_ASSIGN_OR_RETURN(std::unique_ptr<FusedAdamW> opt, MakeAdamW(model, options.lr));
    const c10::cuda::CUDAStream current = c10::cuda::getCurrentCUDAStream(dev);
    MOSAIC_ASSIGN_OR_RETURN(StepClock clock, StepClock::Create(current.stream()));
    for (int i = 0; i < std::max(1, std::min(options.warmup, 3)); ++i) {
      MOSAIC_RETURN_IF_ERROR(clock.Run(*exec, opt.get(), batch).status());
    }
    // Places: 0 is the whole GPU (the current stream, shared and fallback partitions), then
    // one per green context.
    marked.push_back(current);
    marked_place.push_back(0);
    std::map<const GreenContext*, int> place_of;
    const PartitionSet& parts = exec->partitions();
    for (int ph = 0; ph < parts.phases(); ++ph) {
      for (int p = 0; p < parts.partitions(ph); ++p) {
        const Partition& part = parts.at(ph, p);
        if (!part.stream) continue;
        int place = 0;
        if (part.green && part.context != nullptr) {
          auto [it, fresh] = place_of.emplace(part.context, static_cast<int>(u.place_sms.size()));
          if (fresh) u.place_sms.push_back(part.context->sms());
          place = it->second;
        }
        marked.push_back(*part.stream);
        marked_place.push_back(place);
      }
    }
    MOSAIC_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
    for (const c10::cuda::CUDAStream& m : marked) {
      MOSAIC_RETURN_IF_ERROR(LaunchStreamMark(m.stream()));
      MOSAIC_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(m.stream()));
    }
    for (int i = 0; i < steps; ++i) {
      MOSAIC_ASSIGN_OR_RETURN(StepMs ms, clock.Run(*exec, opt.get(), batch));
      u.window_ms += ms.step;
    }
    MOSAIC_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  }
  MOSAIC_ASSIGN_OR_RETURN(std::vector<KernelRecord> kernels, trace->Stop());
  c10::cuda::CUDACachingAllocator::emptyCache();
  // Only this device's kernels.
  kernels.erase(
      std::remove_if(kernels.begin(), kernels.end(),
                     [&](const KernelRecord& k) { return k.device >= 0 && k.device != dev; }),
      kernels.end());
  // The marks, in launch order (each synchronized before the next): CUPTI's stream ids. The
  // kernels after the last mark are the traced steps'.
  std::vector<size_t> marks;
  for (size_t i = 0; i < kernels.size(); ++i)
    if (kernels[i].name == kStreamMarkKernel) marks.push_back(i);
  if (marks.size() != marked.size())
    return FailedPrecondition("SM utilization: the kernel trace holds " +
                              std::to_string(marks.size()) + " stream marks, not " +
                              std::to_string(marked.size()) + " (kernels not traced)");
  // A kernel is placed by its context where the marks tell contexts apart (a graph captured in
  // a green context runs there wherever it is launched, graphed_module.h, and CUPTI reports that
  // context), else by its stream.
  std::map<int64_t, int> place_of_stream, place_of_context;
  std::set<int64_t> ambiguous_contexts;
  for (size_t m = 0; m < marks.size(); ++m) {
    const KernelRecord& k = kernels[marks[m]];
    auto [it, fresh] = place_of_stream.emplace(k.stream, marked_place[m]);
    if (!fresh && it->second != marked_place[m])
      return Internal("SM utilization: two partitions' streams have one CUPTI stream id");
    if (k.context < 0) continue;
    auto [c, cfresh] = place_of_context.emplace(k.context, marked_place[m]);
    if (!cfresh && c->second != marked_place[m]) ambiguous_contexts.insert(k.context);
  }
  for (int64_t c : ambiguous_contexts)
    place_of_context.erase(c);
  std::vector<KernelSpan> spans;
  double all_us = 0, unplaced_us = 0;
  struct NameTotal {
    double us = 0;
    int calls = 0;
    double blocks = 0;
  };
  std::map<std::string, NameTotal> by_name;
  for (size_t i = marks.back() + 1; i < kernels.size(); ++i) {
    const KernelRecord& k = kernels[i];
    int place = -1;
    if (auto c = place_of_context.find(k.context); c != place_of_context.end()) {
      place = c->second;
    } else if (auto st = place_of_stream.find(k.stream); st != place_of_stream.end()) {
      place = st->second;
    }
    const double us = k.end_us - k.start_us;
    all_us += us;
    if (place < 0) unplaced_us += us;
    const int64_t blocks = std::max<int64_t>(k.blocks, 1);
    spans.push_back({k.start_us, k.end_us, std::max(place, 0), blocks});
    NameTotal& t = by_name[k.name];
    t.us += us;
    ++t.calls;
    t.blocks += static_cast<double>(blocks);
  }
  if (spans.empty()) return FailedPrecondition("SM utilization: no kernels in the traced steps");
  std::vector<MeasuredUtilization::KernelTotal> totals;
  for (const auto& [name, t] : by_name)
    totals.push_back({name, t.us / 1000 / steps, static_cast<double>(t.calls) / steps,
                      t.blocks / t.calls});
  std::stable_sort(totals.begin(), totals.end(),
                   [](const auto& a, const auto& b) { return a.ms_per_step > b.ms_per_step; });
  u.top_kernels = std::move(totals);
  u.kernel_ms_per_step = all_us / 1000 / steps;
  MOSAIC_ASSIGN_OR_RETURN(SmUtilization su,
                          SmTimeUtilization(spans, u.place_sms, total_sms, u.window_ms * 1000));
  // Every stream joins the caller's before a step's end event, so the traced kernels lie inside
  // the steps and the busy SM-time cannot exceed SMs x the window; if it does, kernels ran
  // outside the steps (a stream not joined) and the number would be meaningless.
  if (su.utilization > 1 + 1e-6)
    return FailedPrecondition("SM utilization: the traced kernels keep " +
                              std::to_string(su.utilization * 100) +
                              "% of the window busy: kernels ran outside the traced steps");
  u.utilization = su.utilization;
  u.busy_sm_ms = su.busy_sm_us / 1000;
  u.kernels = static_cast<int>(spans.size());
  u.unplaced_kernel_fraction = all_us > 0 ? unplaced_us / all_us : 0;
  return u;
}

StatusOr<PlanTrial> PickFastestPlan(models::MultimodalModel model,
                                    const std::vector<Plan>& candidates, const models::Batch& batch,
                                    torch::Device device, const StepTimingOptions& options) {
  if (candidates.empty()) return InvalidArgument("no candidate plans to time");
  PlanTrial trial;
  StepTimingOptions o = options;
  o.record_trace = false;
  for (size_t k = 0; k < candidates.size(); ++k) {
    StatusOr<StepTimes> t = TimeSteps(model, candidates[k], batch, device, o);
    if (!t.ok()) {
      trial.trial_median_ms.push_back(0);
      trial.failures.push_back(t.status().message());
      c10::cuda::CUDACachingAllocator::emptyCache();
      continue;
    }
    trial.trial_median_ms.push_back(t->median_ms);
    trial.failures.push_back("");
    if (trial.index < 0 || t->median_ms < trial.trial_median_ms[trial.index])
      trial.index = static_cast<int>(k);
  }
  if (trial.index < 0) {
    std::string why;
    for (size_t k = 0; k < candidates.size(); ++k)
      why += (k ? "; " : "") + candidates[k].name + ": " + trial.failures[k];
    return FailedPrecondition("no candidate plan ran: " + why);
  }
  return trial;
}

Timeline MeasuredTimeline(const Plan& plan, const TaskGraph& graph, const ModelSpec& model,
                          const std::vector<TaskSpan>& trace, double step_ms,
                          const std::string& title) {
  Timeline tl;
  tl.title = title;
  tl.step_us = step_ms * 1000;
  for (const auto& m : model.modules)
    tl.modules.push_back(m.name);
  std::map<int, std::pair<int, int>> lane_and_sms;  // task -> (lane, sms)
  for (size_t ph = 0; ph < plan.phases.size(); ++ph) {
    const PhaseSpec& phase = plan.phases[ph];
    tl.phase_names.push_back(phase.name);
    tl.phase_end_us.push_back(0);
    for (const PartitionSpec& p : phase.partitions) {
      const int lane = static_cast<int>(tl.lanes.size());
      const bool dedicated = p.kind == PartitionKind::kDedicated;
      tl.lanes.push_back({phase.name, p.id, PlaceText(p.kind, p.sms.value(), p.priority)});
      for (const TaskId& id : p.tasks) {
        const int t = graph.Find(id);
        if (t >= 0) lane_and_sms[t] = {lane, dedicated ? p.sms.value() : 0};
      }
    }
  }
  for (const TaskSpan& s : trace) {
    auto it = lane_and_sms.find(s.task);
    if (it == lane_and_sms.end()) continue;
    const Task& task = graph.tasks()[s.task];
    tl.bars.push_back({it->second.first, task.id.ToString(), task.id.module, s.start_ms * 1000,
                       s.end_ms * 1000, static_cast<double>(it->second.second)});
  }
  // Each phase ends with its last task.
  for (const TimelineBar& b : tl.bars) {
    const std::string& phase = tl.lanes[b.lane].phase;
    for (size_t ph = 0; ph < tl.phase_names.size(); ++ph)
      if (tl.phase_names[ph] == phase)
        tl.phase_end_us[ph] = std::max(tl.phase_end_us[ph], b.end_us);
  }
  std::stable_sort(tl.bars.begin(), tl.bars.end(), [](const TimelineBar& a, const TimelineBar& b) {
    return a.start_us < b.start_us;
  });
  return tl;
}

StatusOr<double> MeasureBf16PeakTflops(torch::Device device) {
  if (!device.is_cuda()) return InvalidArgument("the bf16 peak is measured on a CUDA device");
  try {
    constexpr int64_t n = 8192;
    const auto opts = torch::TensorOptions().device(device).dtype(torch::kBFloat16);
    torch::Tensor a = torch::randn({n, n}, opts), b = torch::randn({n, n}, opts);
    torch::Tensor c = torch::empty({n, n}, opts);
    const cudaStream_t s = c10::cuda::getCurrentCUDAStream(device.index()).stream();
    std::vector<double> tflops;
    MOSAIC_ASSIGN_OR_RETURN(CudaEvent e0, CudaEvent::Create(true));
    MOSAIC_ASSIGN_OR_RETURN(CudaEvent e1, CudaEvent::Create(true));
    for (int i = 0; i < 25; ++i) {
      MOSAIC_CUDA_RETURN_IF_ERROR(cudaEventRecord(e0.get(), s));
      at::mm_out(c, a, b);
      MOSAIC_CUDA_RETURN_IF_ERROR(cudaEventRecord(e1.get(), s));
      MOSAIC_ASSIGN_OR_RETURN(double ms, ElapsedMs(e0, e1));
      if (i >= 5) tflops.push_back(2.0 * n * n * n / (ms * 1e-3) / 1e12);
    }
    return Quantile(tflops, 0.5);
  } catch (const c10::Error& e) {
    return Internal(std::string("bf16 peak: ") + e.what_without_backtrace());
  }
}

}  // namespace mosaic::engine
