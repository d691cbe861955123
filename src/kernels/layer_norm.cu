// Fused residual add + LayerNorm; see layer_norm.h.
#include "kernels/layer_norm.h"

#include <algorithm>

namespace mosaic::kernels {

// Note [fused add + layer norm]
// A transformer block under bf16 autocast runs, per LayerNorm, ATen's residual add (fp32 +
// bf16, 10 bytes per element), layer_norm in fp32 (8 bytes) and a cast of its output to bf16
// for the next matmul (6 bytes); the backward adds the gradient paths and reduces the weight
// and bias gradients in a separate kernel (GammaBetaBackward). Measured on the H200 for CLIP
// ViT-B/16 at batch 128 (bench/results/diagnosis), those kernels take ~15 ms of a 67 ms step
// where torch.compile's fused Triton kernels take a fraction. Here one kernel does the forward
// in one pass over HBM (read x fp32 and delta bf16, write h fp32 and y bf16: 12 bytes; the
// row is re-read from L1/L2 for the variance and the output) and one kernel the backward (read
// dy bf16, dh_in and h fp32, write dh fp32: 14 bytes), its weight and bias sums kept per block
// in shared memory and added to the output once per block.
//
// Math (fp32 throughout; xhat = (h - mean) * rstd, rstd = 1 / sqrt(var + eps), var biased):
//   forward:  y = xhat * w + b
//   backward: g = dy * w;  dh = dh_in + rstd * (g - mean(g) - xhat * mean(g * xhat))
//             dw += sum over rows of dy * xhat;  db += sum over rows of dy
// One warp per row; lanes stride the row by 32.

namespace {

constexpr int kWarpsPerBlock = 8;

__device__ float WarpSum(float v) {
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__global__ void AddLayerNormForwardKernel(const float* __restrict__ x,
                                          const __nv_bfloat16* __restrict__ delta,
                                          const float* __restrict__ weight,
                                          const float* __restrict__ bias, float* __restrict__ h,
                                          __nv_bfloat16* __restrict__ y, float* __restrict__ mean,
                                          float* __restrict__ rstd, int64_t rows, int cols,
                                          float eps) {
  const int lane = threadIdx.x % 32;
  const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (row >= rows) return;
  const float* xr = x + row * cols;
  // With a delta the row's sum is taken while h is written; the later passes read h back (each
  // lane reads only what it wrote, so program order makes it visible).
  const float* src = xr;
  float sum = 0;
  if (delta) {
    const __nv_bfloat16* dr = delta + row * cols;
    float* hr = h + row * cols;
    for (int c = lane; c < cols; c += 32) {
      const float v = xr[c] + __bfloat162float(dr[c]);
      hr[c] = v;
      sum += v;
    }
    src = hr;
  } else {
    for (int c = lane; c < cols; c += 32)
      sum += xr[c];
  }
  const float m = WarpSum(sum) / cols;
  float sq = 0;
  for (int c = lane; c < cols; c += 32) {
    const float d = src[c] - m;
    sq += d * d;
  }
  const float s = rsqrtf(WarpSum(sq) / cols + eps);
  __nv_bfloat16* yr = y + row * cols;
  for (int c = lane; c < cols; c += 32)
    yr[c] = __float2bfloat16((src[c] - m) * s * weight[c] + bias[c]);
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = s;
  }
}

__global__ void AddLayerNormBackwardKernel(const __nv_bfloat16* __restrict__ dy,
                                           const float* dh_in, const float* __restrict__ h,
                                           const float* __restrict__ mean,
                                           const float* __restrict__ rstd,
                                           const float* __restrict__ weight, float* dh,
                                           float* __restrict__ dweight,
                                           float* __restrict__ dbias, int64_t rows, int cols) {
  extern __shared__ float sums[];  // [0, cols): dweight; [cols, 2 cols): dbias
  float* sw = sums;
  float* sb = sums + cols;
  for (int c = threadIdx.x; c < 2 * cols; c += blockDim.x)
    sums[c] = 0;
  __syncthreads();
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  for (int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + warp; row < rows;
       row += int64_t(gridDim.x) * kWarpsPerBlock) {
    const float* hr = h + row * cols;
    const __nv_bfloat16* dyr = dy + row * cols;
    const float m = mean[row], s = rstd[row];
    float g_sum = 0, gx_sum = 0;
    for (int c = lane; c < cols; c += 32) {
      const float xhat = (hr[c] - m) * s;
      const float g = __bfloat162float(dyr[c]) * weight[c];
      g_sum += g;
      gx_sum += g * xhat;
    }
    const float g_mean = WarpSum(g_sum) / cols;
    const float gx_mean = WarpSum(gx_sum) / cols;
    const float* dinr = dh_in ? dh_in + row * cols : nullptr;
    float* dhr = dh + row * cols;
    for (int c = lane; c < cols; c += 32) {
      const float d = __bfloat162float(dyr[c]);
      const float xhat = (hr[c] - m) * s;
      const float dx = s * (d * weight[c] - g_mean - xhat * gx_mean);
      dhr[c] = dinr ? dinr[c] + dx : dx;
      atomicAdd(&sw[c], d * xhat);
      atomicAdd(&sb[c], d);
    }
  }
  __syncthreads();
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    atomicAdd(&dweight[c], sw[c]);
    atomicAdd(&dbias[c], sb[c]);
  }
}

int64_t Blocks(int64_t rows) { return (rows + kWarpsPerBlock - 1) / kWarpsPerBlock; }

}  // namespace

cudaError_t AddLayerNormForward(const float* x, const __nv_bfloat16* delta, const float* weight,
                                const float* bias, float* h, __nv_bfloat16* y, float* mean,
                                float* rstd, int64_t rows, int cols, float eps,
                                cudaStream_t stream) {
  if (rows < 0 || cols <= 0 || (delta && !h) || Blocks(rows) > 0x7fffffff)
    return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  AddLayerNormForwardKernel<<<static_cast<unsigned>(Blocks(rows)), kWarpsPerBlock * 32, 0,
                              stream>>>(x, delta, weight, bias, h, y, mean, rstd, rows, cols, eps);
  return cudaGetLastError();
}

cudaError_t AddLayerNormBackward(const __nv_bfloat16* dy, const float* dh_in, const float* h,
                                 const float* mean, const float* rstd, const float* weight,
                                 float* dh, float* dweight, float* dbias, int64_t rows, int cols,
                                 cudaStream_t stream) {
  if (rows < 0 || cols <= 0 || cols > kMaxLayerNormCols) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  int device = 0, sms = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (e != cudaSuccess) return e;
  // Enough blocks to fill the GPU a few times over; each loops over its share of the rows, so
  // the per-block sums are added to dweight/dbias only grid-size times.
  const int64_t blocks = std::min<int64_t>(Blocks(rows), int64_t(sms) * 4);
  const size_t shared = 2 * size_t(cols) * sizeof(float);
  AddLayerNormBackwardKernel<<<static_cast<unsigned>(blocks), kWarpsPerBlock * 32, shared,
                               stream>>>(dy, dh_in, h, mean, rstd, weight, dh, dweight, dbias,
                                         rows, cols);
  return cudaGetLastError();
}

}  // namespace mosaic::kernels
