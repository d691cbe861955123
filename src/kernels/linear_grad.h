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

}  // namespace mosaic::kernels
