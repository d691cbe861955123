// Step timing: the measured side of the benchmark and of `mosaic train --plan auto`. Runs whole
// training steps (forward + backward through a PlanExecutor, gradient clipping, fused AdamW) of
// one plan on the GPU, each bracketed by CUDA events, and keeps every repetition, the peak of
// the allocator's memory and a measured Gantt (every task's start and end) of the median step.
//
//   StepTimingOptions o;  o.mode = ExecMode::kGraph;  o.steps = 20;
//   MOSAIC_ASSIGN_OR_RETURN(StepTimes t, TimeSteps(model, plan, batch, device, o));
//   t.median_ms;  t.step_ms;  t.peak_allocated_bytes;  t.trace;
//
//   // The plan the GPU runs fastest, timed `trial_steps` each (stable order on ties):
//   MOSAIC_ASSIGN_OR_RETURN(PlanTrial best, PickFastestPlan(model, candidates, batch, device, o));
#pragma once

#include <torch/torch.h>

#include <optional>
#include <string>
#include <vector>

#include "core/plan.h"
#include "core/status.h"
#include "engine/graphed_module.h"
#include "engine/plan_executor.h"
#include "models/multimodal_model.h"
#include "sim/timeline.h"

namespace mosaic::engine {

struct StepTimingOptions {
  ExecMode mode = ExecMode::kGraph;
  int warmup = 5;
  int steps = 20;
  bool use_green_contexts = true;
  double clip_grad = 1.0;
  double lr = 1e-6;           // fused AdamW's; tiny, so the model barely moves between modes
  bool record_trace = true;   // task events (ExecutorOptions::record_trace), median step kept
  // > 0: then this many more steps, of a new executor, under a kernel trace: the measured SM-time
  // utilization (MeasureSmUtilization). 0: not measured.
  int utilization_steps = 0;
};

// The SM-time utilization of a plan's steps as the GPU ran them (Note [measured SM-time
// utilization] in sim/sm_utilization.h), from a kernel trace (engine/kernel_trace.h).
struct MeasuredUtilization {
  double utilization = 0;      // busy SM-time / (SMs * the traced steps' measured time)
  double busy_sm_ms = 0;
  // The traced steps' measured time (CUDA events), summed. Tracing costs each kernel launch a
  // little host time, so window_ms / steps can exceed the untraced median (a host-bound eager
  // step most): the utilization is of the traced steps.
  double window_ms = 0;
  int steps = 0;
  int kernels = 0;             // kernels of the traced steps
  // Kernel time in no place the marks revealed (neither context nor stream; the whole GPU
  // assumed for it), as a fraction of all kernel time: 0 when every kernel was placed.
  double unplaced_kernel_fraction = 0;
  std::vector<int> place_sms;  // [0]: the whole GPU, then one per green context
  // Where the GPU time went: every kernel of the traced steps grouped by name, longest total
  // first, per step. blocks_per_call (the mean grid) tells one name's sizes apart: an
  // elementwise kernel over a (B, T, C) activation has B*T*C / its elements per block.
  struct KernelTotal {
    std::string name;
    double ms_per_step = 0;
    double calls_per_step = 0;
    double blocks_per_call = 0;
  };
  std::vector<KernelTotal> top_kernels;
  double kernel_ms_per_step = 0;  // all kernels' time per step (concurrent ones add up)
};

struct StepTimes {
  std::vector<double> step_ms;      // every timed step: forward + backward + clip + AdamW
  std::vector<double> fwd_bwd_ms;   // the same steps without the optimizer
  double median_ms = 0, p10_ms = 0, p90_ms = 0, fwd_bwd_median_ms = 0;
  double peak_allocated_bytes = 0;  // torch allocator peak over capture and steps
  double peak_reserved_bytes = 0;
  int misplaced_backwards = 0;      // PlanExecutor::misplaced_backwards
  std::vector<TaskSpan> trace;      // the median step's tasks (record_trace)
  // options.utilization_steps > 0: the measured utilization, or why it could not be measured.
  std::optional<MeasuredUtilization> utilization;
  std::string utilization_error;
};

// `model` must live on `device` (CUDA). Builds a PlanExecutor for `plan` (graphs captured), runs
// warmup + steps, destroys it and empties the allocator's cache.
StatusOr<StepTimes> TimeSteps(models::MultimodalModel model, const Plan& plan,
                              const models::Batch& batch, torch::Device device,
                              const StepTimingOptions& options);

// Builds a new executor for `plan` under a kernel trace (so that the kernels of graphs captured
// before the trace cannot be missed), runs min(max(options.warmup, 1), 3) warmup steps, then
// marks the stream of every partition (and the current one) with one tiny kernel each, one
// after another, to learn CUPTI's ids for each, then times `steps` steps and computes their
// utilization from the kernels after the marks. FailedPrecondition where kernels cannot be
// traced.
StatusOr<MeasuredUtilization> MeasureSmUtilization(models::MultimodalModel model, const Plan& plan,
                                                   const models::Batch& batch,
                                                   torch::Device device,
                                                   const StepTimingOptions& options, int steps);

struct PlanTrial {
  int index = -1;  // into the candidates
  std::vector<double> trial_median_ms;  // per candidate; 0 where it failed
  std::vector<std::string> failures;    // per candidate; "" where it ran
};

// Times each candidate for options.steps steps (after options.warmup) and returns the fastest
// by median. A candidate that fails (capture out of memory, ...) is skipped with its reason;
// all failing is an error.
StatusOr<PlanTrial> PickFastestPlan(models::MultimodalModel model,
                                    const std::vector<Plan>& candidates,
                                    const models::Batch& batch, torch::Device device,
                                    const StepTimingOptions& options);

// The median step of a trace as a Timeline (sim/timeline.h: one lane per partition of each
// phase, bars per task), drawn by `mosaic show` from ToChromeTrace(timeline).
Timeline MeasuredTimeline(const Plan& plan, const TaskGraph& graph, const ModelSpec& model,
                          const std::vector<TaskSpan>& trace, double step_ms,
                          const std::string& title);

// bf16 dense matmul throughput of the device (8192^3, median of 20), TFLOP/s: the MFU reference.
StatusOr<double> MeasureBf16PeakTflops(torch::Device device);

// The q-quantile (0..1) of `v` by the nearest-rank rule; 0 when empty.
double Quantile(std::vector<double> v, double q);

}  // namespace mosaic::engine
