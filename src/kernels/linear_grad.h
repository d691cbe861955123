// The weight and bias gradients of a linear layer y = x W^T + b in one cuBLASLt matmul, the bias
// gradient reduced in the GEMM's epilogue (CUBLASLT_EPILOGUE_BGRADB) instead of a separate pass
// over dy, and both written in fp32 (the master weights' dtype) straight from the fp32
// accumulators, so no bf16 -> fp32 cast of the gradients follows (Note [weight and bias
// gradients in one GEMM] in linear_grad.cc).
//
//   cublasStatus_t s = LinearWeightBiasGrad(handle, dy, x, dweight, dbias, rows, in, out,
//                                           workspace, workspace_bytes, stream);
//   // dweight (out, in) = dy^T x; dbias (out) = sum over rows of dy; both overwritten
//
// Shapes (row-major, contiguous): dy (rows, out) bf16, x (rows, in) bf16, dweight (out, in)
// fp32, dbias (out) fp32 or null (then no epilogue: the weight gradient alone).
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace mosaic::kernels {

// CUBLAS_STATUS_NOT_SUPPORTED when cuBLASLt has no algorithm for these sizes and alignments
// (the caller falls back to separate kernels); other statuses are cuBLAS errors.
// `workspace` may be null with workspace_bytes 0. Host-side, the algorithm for one
// (rows, in, out, bias) is chosen once per process and reused.
cublasStatus_t LinearWeightBiasGrad(cublasLtHandle_t handle, const __nv_bfloat16* dy,
                                    const __nv_bfloat16* x, float* dweight, float* dbias,
                                    int64_t rows, int64_t in, int64_t out, void* workspace,
                                    size_t workspace_bytes, cudaStream_t stream);

// The MLP's first layer with its bias and GELU (tanh) in the GEMM's epilogue, keeping the
// pre-activation for the backward (CUBLASLT_EPILOGUE_GELU_AUX_BIAS):
//   z (rows, hidden) = x W^T + b;  h = gelu_tanh(z)   (both bf16)
// x (rows, in), weight (hidden, in), bias (hidden), all bf16; hidden a multiple of 8.
cublasStatus_t LinearGeluForward(cublasLtHandle_t handle, const __nv_bfloat16* x,
                                 const __nv_bfloat16* weight, const __nv_bfloat16* bias,
                                 __nv_bfloat16* h, __nv_bfloat16* z, int64_t rows, int64_t in,
                                 int64_t hidden, void* workspace, size_t workspace_bytes,
                                 cudaStream_t stream);

// The second layer's input gradient through the GELU, with the first layer's bias gradient, in
// one GEMM (CUBLASLT_EPILOGUE_DGELU_BGRAD):
//   dz (rows, hidden) = (dy W2) * gelu_tanh'(z) (bf16);  dbias (hidden) = sum over rows of dz
// dy (rows, width), weight2 (width, hidden), z (rows, hidden) from LinearGeluForward, dz and
// dbias, all bf16 (the epilogue's bias gradient takes D's type).
cublasStatus_t GeluBackwardGemm(cublasLtHandle_t handle, const __nv_bfloat16* dy,
                                const __nv_bfloat16* weight2, const __nv_bfloat16* z,
                                __nv_bfloat16* dz, __nv_bfloat16* dbias, int64_t rows,
                                int64_t hidden, int64_t width, void* workspace,
                                size_t workspace_bytes, cudaStream_t stream);

}  // namespace mosaic::kernels
