// One check macro for CUDA runtime and driver calls: a failure becomes a Status that names the
// call, the error and the file:line it came from. Destructors, which cannot return a Status,
// use MOSAIC_CUDA_WARN (one line on stderr).
//
//   Status Record(cudaEvent_t e, cudaStream_t s) {
//     MOSAIC_CUDA_RETURN_IF_ERROR(cudaEventRecord(e, s));
//     return Status::Ok();
//   }
#pragma once

#include <cuda.h>
#include <cuda_runtime_api.h>

#include "core/status.h"

namespace mosaic::engine {

inline bool CudaSucceeded(cudaError_t e) {
  return e == cudaSuccess;
}
inline bool CudaSucceeded(CUresult e) {
  return e == CUDA_SUCCESS;
}

// "cudaEventRecord(e, s) failed: invalid resource handle (src/engine/x.cc:12)".
Status CudaFailure(cudaError_t e, const char* expr, const char* file, int line);
Status CudaFailure(CUresult e, const char* expr, const char* file, int line);

}  // namespace mosaic::engine

#define MOSAIC_CUDA_RETURN_IF_ERROR(expr)                                                \
  do {                                                                                   \
    auto mosaic_cuda_err_ = (expr);                                                      \
    if (!::mosaic::engine::CudaSucceeded(mosaic_cuda_err_))                              \
      return ::mosaic::engine::CudaFailure(mosaic_cuda_err_, #expr, __FILE__, __LINE__); \
  } while (0)

#define MOSAIC_CUDA_WARN(expr)                                                                   \
  do {                                                                                           \
    auto mosaic_cuda_err_ = (expr);                                                              \
    if (!::mosaic::engine::CudaSucceeded(mosaic_cuda_err_))                                      \
      ::mosaic::engine::WarnOnce(                                                                \
          ::mosaic::engine::CudaFailure(mosaic_cuda_err_, #expr, __FILE__, __LINE__).message()); \
  } while (0)

namespace mosaic::engine {
// Prints "mosaic: warning: <message>" to stderr the first time a given message is seen.
void WarnOnce(const std::string& message);
}  // namespace mosaic::engine
