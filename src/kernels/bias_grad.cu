// Column sums for bias gradients; see bias_grad.h.
#include "kernels/bias_grad.h"

#include <algorithm>
#include <cstdint>

namespace mosaic::kernels {

// Note [bias gradients as column sums]
// Under bf16 autocast a linear layer's bias gradient is ATen's sum over the rows of dy (bf16),
// then a cast to the fp32 master bias. In the kernel breakdown of clip-b16 at batch 128 on the
// H200 (bench/results/diagnosis, 2026-12-06, graph temporal) those reductions are 97 calls and
// 3.39 ms a step, about 35% of HBM bandwidth for the bytes they read (~1.2 ms of reading at the
// bandwidth). Here one kernel reads dy once at full width: a block takes 256 columns (a lane 8
// adjacent bf16 values, one 16-byte load, where cols is a multiple of 8 and dy 16-byte aligned;
// else one column a thread) and one slice of the rows; its 8 warps stride the slice's rows,
// summing in fp32 registers; the warps' sums meet in shared memory and are written, in warp
// order, to the slice's row of a workspace. A second kernel adds the slices in order. Nothing
// is atomic, so the result is the same bits every run (ATen's own reduction is deterministic
// too; the order differs, so the two agree to fp32 rounding). The slices are chosen to give
// about four blocks per SM.

namespace {

constexpr int kThreads = 256;  // 8 warps
constexpr int kWarps = kThreads / 32;
constexpr int kTileCols = 256;  // columns per block

struct alignas(16) Bf16x8 {
  __nv_bfloat162 v[4];
};

__device__ void SliceRows(int64_t rows, int slices, int slice, int64_t* begin, int64_t* end) {
  const int64_t per = (rows + slices - 1) / slices;
  const int64_t b = per * slice, e = b + per;
  *begin = b < rows ? b : rows;
  *end = e < rows ? e : rows;
}

// Vectorized: lane l of every warp owns columns tile*256 + 8 l .. + 7.
__global__ void __launch_bounds__(kThreads)
    ColumnSumPartialVecKernel(const __nv_bfloat16* __restrict__ dy, float* __restrict__ partial,
                              int64_t rows, int cols) {
  __shared__ float sums[kWarps][kTileCols];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int c0 = blockIdx.x * kTileCols + 8 * lane;
  int64_t begin, end;
  SliceRows(rows, gridDim.y, blockIdx.y, &begin, &end);
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  if (c0 < cols) {
#pragma unroll 4
    for (int64_t r = begin + warp; r < end; r += kWarps) {
      const Bf16x8 v = *reinterpret_cast<const Bf16x8*>(dy + r * cols + c0);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const float2 f = __bfloat1622float2(v.v[k]);
        acc[2 * k] += f.x;
        acc[2 * k + 1] += f.y;
      }
    }
  }
#pragma unroll
  for (int k = 0; k < 8; ++k)
    sums[warp][8 * lane + k] = acc[k];
  __syncthreads();
  const int c = blockIdx.x * kTileCols + threadIdx.x;
  if (c < cols) {
    float s = 0;
    for (int w = 0; w < kWarps; ++w)
      s += sums[w][threadIdx.x];
    partial[int64_t(blockIdx.y) * cols + c] = s;
  }
}

// Scalar: thread t owns column tile*256 + t and strides the slice's rows alone.
__global__ void __launch_bounds__(kThreads)
    ColumnSumPartialKernel(const __nv_bfloat16* __restrict__ dy, float* __restrict__ partial,
                           int64_t rows, int cols) {
  const int c = blockIdx.x * kTileCols + threadIdx.x;
  if (c >= cols) return;
  int64_t begin, end;
  SliceRows(rows, gridDim.y, blockIdx.y, &begin, &end);
  float s = 0;
  for (int64_t r = begin; r < end; ++r)
    s += __bfloat162float(dy[r * cols + c]);
  partial[int64_t(blockIdx.y) * cols + c] = s;
}

__global__ void SumSlicesKernel(const float* __restrict__ partial, float* __restrict__ out,
                                int slices, int cols) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  float s = 0;
  for (int k = 0; k < slices; ++k)
    s += partial[int64_t(k) * cols + c];
  out[c] = s;
}

}  // namespace

int ColumnSumSlices(int64_t rows, int cols, int sms) {
  if (rows <= 0 || cols <= 0) return 1;
  const int64_t tiles = (cols + kTileCols - 1) / kTileCols;
  const int64_t want = std::max<int64_t>(1, (4 * int64_t(std::max(sms, 1)) + tiles - 1) / tiles);
  // At least 8 rows a slice (one per warp), and at most 1024 slices (the workspace, the second
  // kernel's loop).
  return static_cast<int>(std::clamp<int64_t>(std::min(want, (rows + 7) / 8), 1, 1024));
}

cudaError_t ColumnSumBf16(const __nv_bfloat16* dy, float* db, float* workspace, int64_t rows,
                          int cols, int slices, cudaStream_t stream) {
  if (rows < 0 || cols < 0 || slices < 1 || slices > 65535) return cudaErrorInvalidValue;
  if (cols == 0) return cudaSuccess;
  if (rows == 0) return cudaMemsetAsync(db, 0, sizeof(float) * size_t(cols), stream);
  const dim3 grid(static_cast<unsigned>((cols + kTileCols - 1) / kTileCols),
                  static_cast<unsigned>(slices));
  const bool vec = cols % 8 == 0 && reinterpret_cast<uintptr_t>(dy) % 16 == 0;
  if (vec) {
    ColumnSumPartialVecKernel<<<grid, kThreads, 0, stream>>>(dy, workspace, rows, cols);
  } else {
    ColumnSumPartialKernel<<<grid, kThreads, 0, stream>>>(dy, workspace, rows, cols);
  }
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  SumSlicesKernel<<<(cols + 255) / 256, 256, 0, stream>>>(workspace, db, slices, cols);
  return cudaGetLastError();
}

}  // namespace mosaic::kernels
