// Measured SM-time utilization: how much of the GPU's SM-time a recorded kernel trace kept busy.
// The measured counterpart of SimResult::utilization (simulator.h), drawn from the kernels the
// GPU really ran (engine/kernel_trace.h records them with CUPTI through torch's profiler).
//
// Note [measured SM-time utilization]: a kernel keeps min(blocks, SMs of its place) SMs busy
// for its whole duration, where its place is the set of SMs its stream may use (a green
// context's, or the whole GPU). Concurrent kernels of one place add up to that place's SMs at
// most, and all places together to the GPU's. The busy SM-time is the integral of that over the
// trace; the utilization is it over (SMs * the window the trace covers, e.g. the traced steps'
// measured times). An estimate from the kernel timeline, not a hardware counter: a kernel's last
// wave of blocks counts as filling its SMs (flattering one kernel at a time), concurrent kernels'
// blocks add up until their place is full (flattering concurrent ones), and an SM waiting on
// memory counts as busy (as an SM-active counter would).
//
//   std::vector<KernelSpan> k = {{0, 10, /*place=*/0, /*blocks=*/264}, {10, 20, 1, 16}};
//   auto u = SmTimeUtilization(k, /*place_sms=*/{132, 64}, /*total_sms=*/132, /*window_us=*/20);
//   // u->busy_sm_us = 10 * 132 + 10 * 16;  u->utilization = 1480 / (132 * 20)
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"

namespace mosaic {

struct KernelSpan {
  double start_us = 0, end_us = 0;
  int place = 0;       // index into place_sms
  int64_t blocks = 0;  // thread blocks in the grid
};

struct SmUtilization {
  double busy_sm_us = 0;   // SM-microseconds kept busy
  double utilization = 0;  // busy_sm_us / (total_sms * window_us)
};

// Note [measured SM-time utilization]. InvalidArgument on a kernel that ends before it starts,
// has no blocks or names a place out of range, on a place with no SMs or more than the GPU's, and
// on a window that is not positive.
StatusOr<SmUtilization> SmTimeUtilization(const std::vector<KernelSpan>& kernels,
                                          const std::vector<int>& place_sms, int total_sms,
                                          double window_us);

}  // namespace mosaic
