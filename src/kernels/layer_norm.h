// Fused residual add + LayerNorm, forward and backward, for rows of `cols` contiguous values
// (Note [fused add + layer norm] in layer_norm.cu).
//
//   // h = x + delta (fp32), y = LayerNorm(h) * weight + bias (bf16), mean/rstd per row (fp32)
//   cudaError_t e = AddLayerNormForward(x, delta, weight, bias, h, y, mean, rstd, rows, cols,
//                                       1e-5f, stream);
//   // dh = dh_in + d LayerNorm / dh (dy); dweight += sum dy * xhat; dbias += sum dy
//   e = AddLayerNormBackward(dy, dh_in, h, mean, rstd, weight, dh, dweight, dbias, rows, cols,
//                            stream);
//
// Shapes: x, delta, h, y, dy, dh_in, dh: (rows, cols); weight, bias, dweight, dbias: (cols);
// mean, rstd: (rows). No pointer may alias another, except dh == dh_in.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace mosaic::kernels {

// The widest row the backward's per-block weight/bias sums fit in shared memory for.
constexpr int kMaxLayerNormCols = 6144;
static_assert(2 * kMaxLayerNormCols * sizeof(float) <= 48 * 1024,
              "the backward's dynamic shared memory must fit the default 48 KiB per block");

// `delta` may be null: then y = LayerNorm(x) and `h` is not written (may be null).
// `vectorized` false forces the scalar kernels (one element per lane and load), which the
// vectorized ones replace where the width and alignment allow (Note [vectorized rows in
// registers]); tests and benchmarks compare the two.
cudaError_t AddLayerNormForward(const float* x, const __nv_bfloat16* delta, const float* weight,
                                const float* bias, float* h, __nv_bfloat16* y, float* mean,
                                float* rstd, int64_t rows, int cols, float eps,
                                cudaStream_t stream, bool vectorized = true);

// `h` is LayerNorm's input (h of the forward, or x when it had no delta). `dh_in` may be null
// (no gradient reached h from elsewhere). dweight and dbias are accumulated into (+=): zero
// them first for a fresh gradient. The order of the float additions into them varies from run
// to run (atomics), so they are reproducible to rounding, not bit for bit.
cudaError_t AddLayerNormBackward(const __nv_bfloat16* dy, const float* dh_in, const float* h,
                                 const float* mean, const float* rstd, const float* weight,
                                 float* dh, float* dweight, float* dbias, int64_t rows, int cols,
                                 cudaStream_t stream, bool vectorized = true);

}  // namespace mosaic::kernels
