// Profile: measured (or synthetic) time of each module and phase under SM quotas, with the
// work it does (FLOPs) and the memory traffic it makes (bytes), and optionally measured pairs
// of tasks running at the same time (for fitting the colocation slowdown).
//
//   {"model": "clip-b16", "device": "h100-sxm", "precision": "bf16", "micro_batch_size": 32,
//    "source": "measured", "driver": "580.159", "torch": "2.11.0+cu130",
//    "entries": [
//      {"module": "vision", "phase": "fwd", "flops": 1.4e12, "bytes": 2.1e10,
//       "points": [{"sms": 16, "time_us": 31800}, ..., {"sms": 132, "time_us": 5770}]}],
//    "pairs": [
//      {"a": {"module": "vision", "phase": "fwd", "sms": 104},
//       "b": {"module": "text", "phase": "fwd", "sms": 28},
//       "time_a_us": 6900, "time_b_us": 2700}],
//    "step_overhead": {"zero_grad_us": 2400, "optimizer_us": 2390}}   (optional, measured)
//
// `sms: 0` in a pair member means a shared stream on the whole GPU.
#pragma once

#include <string>
#include <vector>

#include "core/json_reader.h"
#include "core/status.h"
#include "core/task_graph.h"
#include "core/units.h"

namespace mosaic {

struct ProfilePoint {
  SmCount sms{0};
  TimeUs time{0};
};

struct ProfileEntry {
  std::string module;
  TaskPhase phase = TaskPhase::kForward;
  Flops flops{0};                    // per micro-batch
  Bytes bytes{0};                    // DRAM traffic per micro-batch
  Bytes activation_bytes{0};         // memory held from forward to backward per micro-batch (fwd)
  std::vector<ProfilePoint> points;  // strictly increasing sms
};

struct PairMember {
  std::string module;
  TaskPhase phase = TaskPhase::kForward;
  SmCount sms{0};  // 0: shared stream on the whole GPU
};

struct ColocationSample {
  PairMember a, b;
  TimeUs time_a{0};  // a's time while b runs beside it
  TimeUs time_b{0};
};

// The executor's work outside the plan's tasks, measured on the GPU for this model (optional;
// Note [executor overhead] in perfmodel/perf_model.cc). Each value < 0 means not measured: the
// model then uses the law from the device spec's "executor" constants.
struct StepOverhead {
  double zero_grad_us = -1;  // zeroing every gradient from the host, before the first task
  double optimizer_us = -1;  // gradient clipping + fused AdamW over all parameters, after
};

struct Profile {
  std::string model;
  std::string device;
  std::string precision;
  int micro_batch_size = 0;
  std::string source;  // "measured" or "synthetic"
  std::string driver;  // informational, measured profiles
  std::string torch;
  std::string created;
  // The fused kernels the model ran with while measured (cli/fused_kernels.h): "none", or names
  // from {"add-norm", "vectorized-norm", "linear-grad", "bias-grad", "patch-gemm"} joined by '+'.
  // A profile without the key was measured without them (every profile before the key existed:
  // `mosaic profile` did not apply them).
  // A plan for a run with other kernels is planned from other task times: `mosaic bench|train`
  // warn.
  std::string fused_kernels = "none";
  std::vector<ProfileEntry> entries;
  std::vector<ColocationSample> pairs;
  StepOverhead step_overhead;  // "step_overhead": {"zero_grad_us": .., "optimizer_us": ..}

  // The entry for (module, phase), or nullptr.
  const ProfileEntry* Find(const std::string& module, TaskPhase phase) const;
};

StatusOr<Profile> ParseProfile(const Json& doc);
StatusOr<Profile> LoadProfile(const std::string& path);
Json ToJson(const Profile& profile);

}  // namespace mosaic
