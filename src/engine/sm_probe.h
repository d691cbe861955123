// SmProbe: which SMs a stream's work really runs on (and a stream's mark in a kernel trace). Launches `blocks` blocks that each spin for
// a while and write the %smid they ran on; used by the gpu tests to prove partitions disjoint.
//
//   std::vector<int> sms;
//   MOSAIC_RETURN_IF_ERROR(LaunchSmProbe(stream, /*blocks=*/1024, device_buffer));
//   ... cudaMemcpy back, then DistinctSms(host) ...
#pragma once

#include <cuda_runtime_api.h>

#include <set>
#include <vector>

#include "core/status.h"

namespace mosaic::engine {

// Enqueues the probe on `stream`: out[b] = %smid of block b (out: `blocks` ints on the device).
Status LaunchSmProbe(cudaStream_t stream, int blocks, int* out, long long spin_cycles = 200000);

// Enqueues one empty one-thread kernel, MosaicStreamMark (kStreamMarkKernel), on `stream`: in a
// kernel trace it tells which CUPTI stream id `stream` has (MeasureSmUtilization).
Status LaunchStreamMark(cudaStream_t stream);
inline constexpr char kStreamMarkKernel[] = "MosaicStreamMark";

// Runs the probe on `stream`, waits for it, and returns the distinct SMs used.
StatusOr<std::set<int>> ProbeSms(cudaStream_t stream, int blocks);

}  // namespace mosaic::engine
