// KernelTrace: the kernels the GPU ran while it was on, each with its stream, grid and times,
// recorded by CUPTI through torch's (kineto) profiler, CUDA activities only. What
// TimeSteps' measured SM-time utilization is drawn from (sim/sm_utilization.h).
//
//   MOSAIC_ASSIGN_OR_RETURN(std::unique_ptr<KernelTrace> trace, KernelTrace::Start());
//   ... launch work, synchronize ...
//   MOSAIC_ASSIGN_OR_RETURN(std::vector<KernelRecord> k, trace->Stop());  // sorted by start
//
// One trace at a time per process (the profiler is global); destroying a running trace stops it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"

namespace mosaic::engine {

struct KernelRecord {
  double start_us = 0, end_us = 0;  // the profiler's clock, from the trace's first kernel
  int64_t stream = -1;              // CUPTI's stream id
  int64_t context = -1;             // CUPTI's context id (a green context has its own)
  int64_t device = -1;
  int64_t blocks = 0;               // grid.x * grid.y * grid.z
  std::string name;
};

class KernelTrace {
 public:
  // FailedPrecondition where the profiler cannot trace CUDA kernels (no CUPTI, already on).
  static StatusOr<std::unique_ptr<KernelTrace>> Start();
  ~KernelTrace();
  KernelTrace(const KernelTrace&) = delete;
  KernelTrace& operator=(const KernelTrace&) = delete;
  // Stops tracing (the caller synchronizes the device first) and returns the kernels.
  StatusOr<std::vector<KernelRecord>> Stop();

 private:
  KernelTrace() = default;
  bool running_ = false;
};

}  // namespace mosaic::engine
