// Fused residual add + LayerNorm; see layer_norm.h.
#include "kernels/layer_norm.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

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

// Note [vectorized rows in registers]
// The kernels above read a row with one 4-byte load per lane and element, re-read it from
// L1/L2 for each later pass, and the backward adds every element's weight and bias terms into
// shared memory with two atomics, all eight warps of a block on the same addresses: on the
// H200 at 25216 x 768 the backward ran at ~30% of HBM bandwidth, the forward at ~60%
// (bench/results/diagnosis, 2026-12-06). Where a row is a multiple of 4 wide (and at most
// 128 * 16) and the pointers are 16-byte aligned (8 for bf16), the kernels below instead give
// each lane kVec groups of 4 consecutive columns (columns 4 (lane + 32 i) .. + 3, i < kVec),
// load them with one 16-byte (fp32) or 8-byte (bf16) access, keep the row in registers for
// every pass, and keep the weight and bias sums of all the rows a warp visits in registers,
// adding them to shared memory once per warp and to global memory once per block. The
// arithmetic per element is the one above, in the same order; only the order of the float
// sums (row sums, and the weight/bias sums over rows) differs.
constexpr int kMaxVec = 16;  // rows of up to 2048 columns

struct alignas(8) Bf16x4 {  // alignas: one 8-byte access, not two 4-byte ones
  __nv_bfloat162 lo, hi;
};

__device__ float4 Bf16x4ToFloat4(Bf16x4 v) {
  const float2 lo = __bfloat1622float2(v.lo), hi = __bfloat1622float2(v.hi);
  return make_float4(lo.x, lo.y, hi.x, hi.y);
}

__device__ float4 LoadBf16x4(const __nv_bfloat16* p) {
  return Bf16x4ToFloat4(*reinterpret_cast<const Bf16x4*>(p));
}

__device__ void StoreBf16x4(__nv_bfloat16* p, float4 v) {
  *reinterpret_cast<Bf16x4*>(p) = Bf16x4{__floats2bfloat162_rn(v.x, v.y),
                                          __floats2bfloat162_rn(v.z, v.w)};
}

__device__ float4 Load4(const float* p) { return *reinterpret_cast<const float4*>(p); }
__device__ void Store4(float* p, float4 v) { *reinterpret_cast<float4*>(p) = v; }
__device__ float Sum4(float4 v) { return (v.x + v.y) + (v.z + v.w); }

template <int kVec>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    AddLayerNormForwardVecKernel(const float* __restrict__ x,
                                 const __nv_bfloat16* __restrict__ delta,
                                 const float* __restrict__ weight, const float* __restrict__ bias,
                                 float* __restrict__ h, __nv_bfloat16* __restrict__ y,
                                 float* __restrict__ mean, float* __restrict__ rstd,
                                 int64_t rows, int cols, float eps) {
  const int lane = threadIdx.x % 32;
  const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (row >= rows) return;
  const int64_t base = row * cols;
  float4 v[kVec];  // the row's (x + delta) at this lane's columns
  float sum = 0;
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    const int c = 4 * (lane + 32 * i);
    v[i] = make_float4(0, 0, 0, 0);
    if (c < cols) {
      v[i] = Load4(x + base + c);
      if (delta) {
        const float4 d = LoadBf16x4(delta + base + c);
        v[i] = make_float4(v[i].x + d.x, v[i].y + d.y, v[i].z + d.z, v[i].w + d.w);
        Store4(h + base + c, v[i]);
      }
      sum += Sum4(v[i]);
    }
  }
  const float m = WarpSum(sum) / cols;
  float sq = 0;
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    if (4 * (lane + 32 * i) < cols) {
      const float4 d = make_float4(v[i].x - m, v[i].y - m, v[i].z - m, v[i].w - m);
      sq += (d.x * d.x + d.y * d.y) + (d.z * d.z + d.w * d.w);
    }
  }
  const float s = rsqrtf(WarpSum(sq) / cols + eps);
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    const int c = 4 * (lane + 32 * i);
    if (c < cols) {
      const float4 w = Load4(weight + c), b = Load4(bias + c);
      StoreBf16x4(y + base + c, make_float4((v[i].x - m) * s * w.x + b.x,
                                            (v[i].y - m) * s * w.y + b.y,
                                            (v[i].z - m) * s * w.z + b.z,
                                            (v[i].w - m) * s * w.w + b.w));
    }
  }
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = s;
  }
}

template <int kVec>
__global__ void __launch_bounds__(kWarpsPerBlock * 32, 2)
    AddLayerNormBackwardVecKernel(const __nv_bfloat16* __restrict__ dy, const float* dh_in,
                                  const float* __restrict__ h, const float* __restrict__ mean,
                                  const float* __restrict__ rstd,
                                  const float* __restrict__ weight, float* dh,
                                  float* __restrict__ dweight, float* __restrict__ dbias,
                                  int64_t rows, int cols) {
  extern __shared__ float sums[];  // [0, cols): dweight; [cols, 2 cols): dbias
  for (int c = threadIdx.x; c < 2 * cols; c += blockDim.x)
    sums[c] = 0;
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  float4 sw[kVec], sb[kVec];  // this warp's weight and bias sums over its rows
#pragma unroll
  for (int i = 0; i < kVec; ++i)
    sw[i] = sb[i] = make_float4(0, 0, 0, 0);
  for (int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + warp; row < rows;
       row += int64_t(gridDim.x) * kWarpsPerBlock) {
    const int64_t base = row * cols;
    const float m = mean[row], s = rstd[row];
    float4 xh[kVec];   // xhat at this lane's columns
    Bf16x4 dyb[kVec];  // dy there, as loaded (half the registers of floats)
    float g_sum = 0, gx_sum = 0;
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      const int c = 4 * (lane + 32 * i);
      xh[i] = make_float4(0, 0, 0, 0);
      if (c < cols) {
        const float4 hv = Load4(h + base + c), w = Load4(weight + c);
        dyb[i] = *reinterpret_cast<const Bf16x4*>(dy + base + c);
        const float4 d = Bf16x4ToFloat4(dyb[i]);
        xh[i] = make_float4((hv.x - m) * s, (hv.y - m) * s, (hv.z - m) * s, (hv.w - m) * s);
        const float4 g = make_float4(d.x * w.x, d.y * w.y, d.z * w.z, d.w * w.w);
        g_sum += Sum4(g);
        gx_sum += (g.x * xh[i].x + g.y * xh[i].y) + (g.z * xh[i].z + g.w * xh[i].w);
      }
    }
    const float g_mean = WarpSum(g_sum) / cols;
    const float gx_mean = WarpSum(gx_sum) / cols;
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      const int c = 4 * (lane + 32 * i);
      if (c < cols) {
        const float4 w = Load4(weight + c), d = Bf16x4ToFloat4(dyb[i]);
        float4 dx = make_float4(s * (d.x * w.x - g_mean - xh[i].x * gx_mean),
                                s * (d.y * w.y - g_mean - xh[i].y * gx_mean),
                                s * (d.z * w.z - g_mean - xh[i].z * gx_mean),
                                s * (d.w * w.w - g_mean - xh[i].w * gx_mean));
        if (dh_in) {
          const float4 in = Load4(dh_in + base + c);
          dx = make_float4(in.x + dx.x, in.y + dx.y, in.z + dx.z, in.w + dx.w);
        }
        Store4(dh + base + c, dx);
        sw[i].x += d.x * xh[i].x;
        sw[i].y += d.y * xh[i].y;
        sw[i].z += d.z * xh[i].z;
        sw[i].w += d.w * xh[i].w;
        sb[i].x += d.x;
        sb[i].y += d.y;
        sb[i].z += d.z;
        sb[i].w += d.w;
      }
    }
  }
  __syncthreads();  // sums zeroed
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    const int c = 4 * (lane + 32 * i);
    if (c < cols) {
      const float w4[4] = {sw[i].x, sw[i].y, sw[i].z, sw[i].w};
      const float b4[4] = {sb[i].x, sb[i].y, sb[i].z, sb[i].w};
      for (int k = 0; k < 4; ++k) {
        atomicAdd(&sums[c + k], w4[k]);
        atomicAdd(&sums[cols + c + k], b4[k]);
      }
    }
  }
  __syncthreads();
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    atomicAdd(&dweight[c], sums[c]);
    atomicAdd(&dbias[c], sums[cols + c]);
  }
}

// The vector widths instantiated: a row of `cols` takes the smallest covering it.
constexpr int kVecs[] = {1, 2, 3, 4, 6, 8, 12, 16};
// The backward keeps twice the registers per column (xhat, dy, and the weight and bias sums):
// past 6 groups (768 columns) it spills at two blocks per SM, so wider rows take the scalar
// backward.
constexpr int kMaxBackwardVec = 6;

// The kVec a row of `cols` takes (at most max_vec), or 0 for the scalar kernels: a width that
// is not a multiple of 4, too wide, or a misaligned pointer (null ones are unused).
int VecFor(int cols, int max_vec, std::initializer_list<const void*> fp32,
           std::initializer_list<const void*> bf16) {
  if (cols % 4 != 0) return 0;
  for (const void* p : fp32)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return 0;
  for (const void* p : bf16)
    if (reinterpret_cast<uintptr_t>(p) % 8 != 0) return 0;
  const int groups = (cols + 127) / 128;
  for (int v : kVecs)
    if (groups <= v) return v <= max_vec ? v : 0;
  return 0;
}

// Calls f(std::integral_constant<int, kVec>{}) for a kVec from VecFor(..., kMax, ...); only
// widths up to kMax are instantiated.
template <int kMax, typename F>
cudaError_t WithVec(int vec, F&& f) {
  switch (vec) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 4: return f(std::integral_constant<int, 4>{});
    case 6: return f(std::integral_constant<int, 6>{});
    default: break;
  }
  if constexpr (kMax >= 16) {
    switch (vec) {
      case 8: return f(std::integral_constant<int, 8>{});
      case 12: return f(std::integral_constant<int, 12>{});
      case 16: return f(std::integral_constant<int, 16>{});
      default: break;
    }
  }
  return cudaErrorInvalidValue;
}

int SmCount(cudaError_t* e) {
  int device = 0, sms = 0;
  *e = cudaGetDevice(&device);
  if (*e == cudaSuccess) *e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  return sms;
}

}  // namespace

cudaError_t AddLayerNormForward(const float* x, const __nv_bfloat16* delta, const float* weight,
                                const float* bias, float* h, __nv_bfloat16* y, float* mean,
                                float* rstd, int64_t rows, int cols, float eps,
                                cudaStream_t stream, bool vectorized) {
  if (rows < 0 || cols <= 0 || (delta && !h) || Blocks(rows) > 0x7fffffff)
    return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>(Blocks(rows));
  const int vec = !vectorized ? 0 : VecFor(cols, kMaxVec, {x, weight, bias, h}, {delta, y});
  if (vec > 0) {
    return WithVec<kMaxVec>(vec, [&](auto v) {
      AddLayerNormForwardVecKernel<decltype(v)::value><<<blocks, kWarpsPerBlock * 32, 0, stream>>>(
          x, delta, weight, bias, h, y, mean, rstd, rows, cols, eps);
      return cudaGetLastError();
    });
  }
  AddLayerNormForwardKernel<<<blocks, kWarpsPerBlock * 32, 0, stream>>>(
      x, delta, weight, bias, h, y, mean, rstd, rows, cols, eps);
  return cudaGetLastError();
}

cudaError_t AddLayerNormBackward(const __nv_bfloat16* dy, const float* dh_in, const float* h,
                                 const float* mean, const float* rstd, const float* weight,
                                 float* dh, float* dweight, float* dbias, int64_t rows, int cols,
                                 cudaStream_t stream, bool vectorized) {
  if (rows < 0 || cols <= 0 || cols > kMaxLayerNormCols) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  cudaError_t e = cudaSuccess;
  const int sms = SmCount(&e);
  if (e != cudaSuccess) return e;
  // Enough blocks to fill the GPU a few times over; each loops over its share of the rows, so
  // the per-block sums are added to dweight/dbias only grid-size times.
  const int64_t blocks = std::min<int64_t>(Blocks(rows), int64_t(sms) * 4);
  const size_t shared = 2 * size_t(cols) * sizeof(float);
  const int vec = !vectorized ? 0 : VecFor(cols, kMaxBackwardVec, {dh_in, h, weight, dh}, {dy});
  if (vec > 0) {
    return WithVec<kMaxBackwardVec>(vec, [&](auto v) {
      const auto kernel = AddLayerNormBackwardVecKernel<decltype(v)::value>;
      // One wave of resident blocks: every block's sums reach dweight/dbias once, after all
      // the rows it visits (Note [vectorized rows in registers]).
      // (Asked once per width, at its widest row: registers, not shared memory, bound it. A
      // failed query is not kept: it is asked again next time, and its error cleared.)
      static std::atomic<int> cached_per_sm{0};
      int per_sm = cached_per_sm.load();
      if (per_sm == 0) {
        const size_t widest = 2 * size_t(128 * decltype(v)::value) * sizeof(float);
        if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kWarpsPerBlock * 32,
                                                          widest) == cudaSuccess &&
            per_sm > 0) {
          cached_per_sm.store(per_sm);
        } else {
          (void)cudaGetLastError();
          per_sm = 1;
        }
      }
      const int64_t grid = std::min<int64_t>(Blocks(rows), int64_t(sms) * per_sm);
      kernel<<<static_cast<unsigned>(grid), kWarpsPerBlock * 32, shared, stream>>>(
          dy, dh_in, h, mean, rstd, weight, dh, dweight, dbias, rows, cols);
      return cudaGetLastError();
    });
  }
  AddLayerNormBackwardKernel<<<static_cast<unsigned>(blocks), kWarpsPerBlock * 32, shared,
                               stream>>>(dy, dh_in, h, mean, rstd, weight, dh, dweight, dbias,
                                         rows, cols);
  return cudaGetLastError();
}

}  // namespace mosaic::kernels
