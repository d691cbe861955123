// Multi-GPU placement: how to lay a model out over N GPUs of one kind (Note [multi-GPU
// layouts] in multi_gpu.cc; docs/planning.md section 9). Every figure is simulated: per-GPU
// step times come from the single-GPU planner and the perf model, communication from CommModel.
//
//   MultiGpuOptions options;
//   options.gpus = 64;
//   MOSAIC_ASSIGN_OR_RETURN(MultiGpuReport r, PlanMultiGpu(model, device, profile, options));
//   const MultiGpuLayout& best = r.layouts[0];  // best first (shortest step, same global batch)
//   best.step_us; best.samples_per_s; best.scaling_efficiency;  // vs one GPU
//   r.plans;  // one single-GPU plan per group of the best layout
#pragma once

#include <string>
#include <vector>

#include "core/device_spec.h"
#include "core/model_spec.h"
#include "core/plan.h"
#include "core/profile.h"
#include "core/status.h"
#include "core/units.h"
#include "planner/planner.h"

namespace mosaic {

// Communication between GPUs of one host (Note [communication model]): a link of `bandwidth`
// (per direction) and a per-message `latency`, taken from the device spec's interconnect.
class CommModel {
 public:
  // Bandwidth and latency of `device.interconnect`; devices without one get 25 GB/s and 10 us
  // (a PCIe-class guess, the same the single-GPU --world-size model uses).
  static CommModel FromDevice(const DeviceSpec& device);
  CommModel(BytesPerSec bandwidth, TimeUs latency) : bandwidth_(bandwidth), latency_(latency) {}

  // One ring all-reduce of `bytes` over `gpus`: 2 (N-1)/N * bytes / bw + 2 (N-1) * latency;
  // 0 for one GPU.
  TimeUs RingAllReduce(Bytes bytes, int gpus) const;
  // Gradients all-reduced in buckets of `bucket` bytes (the last one smaller), one ring each:
  // the bandwidth term of the whole, plus 2 (N-1) latencies per bucket.
  TimeUs BucketedAllReduce(Bytes bytes, Bytes bucket, int gpus) const;
  // One point-to-point transfer of `bytes`: bytes / bw + latency.
  TimeUs SendRecv(Bytes bytes) const;

  // Calibration hooks: a measured time of one all-reduce (of `bytes` over `gpus`) or of one
  // send/recv rescales the bandwidth so that the model reproduces it (the latency is kept).
  // The scale on the spec's bandwidth is bounded to [kMinScale, kMaxScale]; a measurement
  // at or below the latency term alone sets the upper bound. Invalid inputs (non-positive
  // bytes or time, fewer than 2 GPUs) are InvalidArgument and change nothing.
  static constexpr double kMinScale = 0.05;
  static constexpr double kMaxScale = 2.0;
  Status CalibrateAllReduce(Bytes bytes, int gpus, TimeUs measured);
  Status CalibrateSendRecv(Bytes bytes, TimeUs measured);

  BytesPerSec bandwidth() const { return BytesPerSec(bandwidth_.value() * scale_); }
  BytesPerSec spec_bandwidth() const { return bandwidth_; }
  TimeUs latency() const { return latency_; }
  double bandwidth_scale() const { return scale_; }

 private:
  Status Calibrate(double bandwidth_term_us_at_spec, double latency_term_us, TimeUs measured);
  BytesPerSec bandwidth_{0};
  TimeUs latency_{0};
  double scale_ = 1.0;
};

enum class LayoutKind { kColocated, kDisaggregated, kHybrid };
const char* ToString(LayoutKind k);

// One group of identical GPUs in a layout: the modules each of them holds, data parallel
// inside the group.
struct GpuGroup {
  std::string name;  // "all", "encoders", "llm"
  std::vector<std::string> modules;
  int gpus = 0;
  int micro_batches_per_gpu = 0;  // per step
  TimeUs compute{0};              // per GPU per step, without optimizer and communication
  TimeUs optimizer{0};
  TimeUs allreduce{0};          // gradient all-reduce inside the group (bucketed ring)
  TimeUs exposed_allreduce{0};  // the part not hidden behind backward
  TimeUs comm_sm_cost{0};       // compute slowed by the SMs the overlapped all-reduce holds
  TimeUs link{0};               // activation / gradient transfers per GPU per step
};

struct MultiGpuLayout {
  std::string name;  // "colocated data-parallel", "disaggregated 24+40"
  LayoutKind kind = LayoutKind::kColocated;
  std::vector<GpuGroup> groups;
  TimeUs step{0};  // predicted (simulated) step time for the global batch
  double samples_per_s = 0;
  double scaling_efficiency = 0;   // samples/s over (gpus x one GPU's samples/s)
  std::string GroupsText() const;  // "24 enc + 40 llm"
};

struct MultiGpuOptions {
  int gpus = 1;                     // N >= 1
  PlannerOptions planner;           // for the single-GPU plans (perf.world_size must stay 1)
  Bytes bucket{25 << 20};           // gradient bucket (DDP's default 25 MiB)
  int comm_sms = -1;                // SMs the overlapped all-reduce holds; -1: one SM granule
  const CommModel* comm = nullptr;  // calibrated link; null: from the device spec
  int max_layouts = 6;              // alternatives kept in the report
};

struct MultiGpuReport {
  int gpus = 1;
  int global_batch = 0;  // samples per step over all GPUs (the model's batch per GPU x N)
  TimeUs single_gpu_step{0};
  double single_gpu_samples_per_s = 0;
  std::vector<MultiGpuLayout> layouts;  // best first
  PlanReport single_gpu;                // the single-GPU planner's report (all modules)
  std::vector<Plan> plans;              // one per group of layouts[0], in group order
  CommModel comm{BytesPerSec(0), TimeUs(0)};
};

StatusOr<MultiGpuReport> PlanMultiGpu(const ModelSpec& model, const DeviceSpec& device,
                                      const Profile& profile, const MultiGpuOptions& options);

}  // namespace mosaic
