// The bias gradient of a linear layer, db = column sums of dy, from bf16 rows straight into fp32,
// deterministically (Note [bias gradients as column sums] in bias_grad.cu).
//
//   const int slices = ColumnSumSlices(rows, cols, sms);
//   // workspace: slices * cols floats
//   cudaError_t e = ColumnSumBf16(dy, db, workspace, rows, cols, slices, stream);
//   // db (cols) = sum over the rows of dy, overwritten
//
// Shapes (row-major, contiguous): dy (rows, cols) bf16; db (cols) fp32; workspace (slices, cols)
// fp32. Host-side calls only launch kernels (legal under CUDA graph capture).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace mosaic::kernels {

// How many row slices ColumnSumBf16 splits `rows` into on a GPU of `sms` SMs (>= 1): the rows
// of the workspace it needs.
int ColumnSumSlices(int64_t rows, int cols, int sms);

// db[c] = sum over r of dy[r][c], in fp32; each slice of rows summed in fixed order into
// workspace[slice], then the slices in order: the same bits every run. cudaErrorInvalidValue on
// negative sizes or slices < 1; rows == 0 writes zeros.
cudaError_t ColumnSumBf16(const __nv_bfloat16* dy, float* db, float* workspace, int64_t rows,
                          int cols, int slices, cudaStream_t stream);

}  // namespace mosaic::kernels
