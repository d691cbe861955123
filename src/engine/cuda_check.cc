// Error formatting for MOSAIC_CUDA_RETURN_IF_ERROR / MOSAIC_CUDA_WARN (cuda_check.h).
#include "engine/cuda_check.h"

#include <iostream>
#include <mutex>
#include <set>
#include <string>

#include "engine/driver_api.h"

namespace mosaic::engine {
namespace {
std::string Where(const char* expr, const char* file, int line) {
  return std::string(expr) + " failed: %s (" + file + ":" + std::to_string(line) + ")";
}
Status Format(const std::string& pattern, const std::string& what, bool oom) {
  std::string m = pattern;
  m.replace(m.find("%s"), 2, what);
  return oom ? ResourceExhausted(m) : Internal(m);
}
}  // namespace

Status CudaFailure(cudaError_t e, const char* expr, const char* file, int line) {
  cudaGetLastError();  // clear a sticky launch error so later checks report their own
  return Format(Where(expr, file, line),
                std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e),
                e == cudaErrorMemoryAllocation);
}

Status CudaFailure(CUresult e, const char* expr, const char* file, int line) {
  return Format(Where(expr, file, line), DriverErrorName(e), e == CUDA_ERROR_OUT_OF_MEMORY);
}

void WarnOnce(const std::string& message) {
  static std::mutex mu;
  static std::set<std::string> seen;
  std::lock_guard<std::mutex> lock(mu);
  if (seen.insert(message).second) std::cerr << "mosaic: warning: " << message << "\n";
}

}  // namespace mosaic::engine
