// DeviceSpec: what the planner needs to know about one accelerator: how many SMs it has and in
// what units they can be split, its memory, and its peak compute and bandwidth.
// Loaded from configs/devices/*.json; JSON keys carry their units:
//
//   {"name": "h100-sxm", "kind": "gpu", "sm_count": 132, "sm_granularity": 8,
//    "sm_groups": 15, "memory_gib": 80, "peak_tflops_bf16": 989, "peak_tflops_fp32": 67,
//    "memory_bandwidth_gbps": 3350, "l2_cache_mib": 50, "launch_overhead_us": 4}
#pragma once

#include <optional>
#include <string>

#include "core/json_reader.h"
#include "core/status.h"
#include "core/units.h"

namespace mosaic {

enum class DeviceKind { kGpu, kCpu };

// What Mosaic's GPU engine (engine/plan_executor.cc, engine/step_timing.cc) does in a step
// besides the plan's tasks, as constants of the device it drives (Note [executor overhead] in
// perfmodel/perf_model.cc). Optional in the JSON ("executor": {...}); without it the model
// predicts the plan's tasks only, as before.
struct ExecutorSpec {
  // Gradients are zeroed one tensor at a time from the host before the first task: each costs
  // this much host time (plus its bytes at the efficiency below).
  double zero_grad_us_per_tensor = 0;
  // The loss runs eagerly (no graph): each of its kernels costs this much host time, and the
  // task takes the longer of its launches and its GPU work.
  double eager_op_us = 0;
  // Gradient clipping and fused AdamW run once, after the last phase, on the whole GPU: this
  // many DRAM bytes per parameter (clip 12: norm + scale; AdamW 28).
  double optimizer_bytes_per_param = 40;
  // Fraction of the datasheet DRAM bandwidth the zeroing and optimizer kernels reach.
  double bandwidth_efficiency = 1;
};
const char* ToString(DeviceKind k);

struct DeviceSpec {
  std::string name;
  DeviceKind kind = DeviceKind::kGpu;
  SmCount sm_count{0};        // CPU: cores
  SmCount sm_granularity{1};  // partitions come in multiples of this (H100 green contexts: 8)
  // Whole granules one split of the SMs yields; the SMs beyond them form one remainder group.
  // H100 (gpu-facts.md): 15 groups of 8 and a remainder of 12. Default sm_count/granularity.
  int sm_groups = 0;
  Bytes memory{0};
  FlopsPerSec peak_flops_bf16{0};  // dense datasheet peak
  FlopsPerSec peak_flops_fp32{0};
  FlopsPerSec measured_flops_bf16{0};  // measured dense matmul peak, 0 if unknown (for MFU)
  BytesPerSec memory_bandwidth{0};
  Bytes l2_cache{0};
  TimeUs launch_overhead{0};  // per kernel launch or graph node, as seen by the host
  // Between devices of one host (0 when unknown or single device).
  BytesPerSec link_bandwidth{0};
  TimeUs link_latency{0};
  // Executor overhead constants; absent: tasks only (no per-step work, optimizer in the plan).
  std::optional<ExecutorSpec> executor;

  // SMs left over after the split into whole granules (H100: 132 - 15*8 = 12).
  SmCount remainder() const {
    return SmCount(sm_count.value() - sm_groups * sm_granularity.value());
  }
  // Whether `sms` can be one dedicated partition: k granules (1 <= k <= sm_groups), or k >= 0
  // granules plus the remainder group.
  bool IsValidQuota(SmCount sms) const;
  FlopsPerSec peak_flops(bool bf16) const { return bf16 ? peak_flops_bf16 : peak_flops_fp32; }
};

StatusOr<DeviceSpec> ParseDeviceSpec(const Json& doc);
StatusOr<DeviceSpec> LoadDeviceSpec(const std::string& path);
Json ToJson(const DeviceSpec& spec);

}  // namespace mosaic
