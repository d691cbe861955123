// The %smid probe kernel and the stream mark (sm_probe.h). The engine's only CUDA source.
#include "engine/cuda_check.h"
#include "engine/sm_probe.h"

namespace mosaic::engine {
namespace {

__global__ void SmIdKernel(int* out, long long spin_cycles) {
  unsigned smid;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(smid));
  // Spin so that blocks stay resident and spread over every SM the stream may use.
  const long long start = clock64();
  while (clock64() - start < spin_cycles) {
  }
  if (threadIdx.x == 0) out[blockIdx.x] = static_cast<int>(smid);
}

}  // namespace

// Outside the anonymous namespace and extern "C", so that its name in a trace is exactly
// kStreamMarkKernel.
extern "C" __global__ void MosaicStreamMark() {}

Status LaunchStreamMark(cudaStream_t stream) {
  MosaicStreamMark<<<1, 1, 0, stream>>>();
  MOSAIC_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

Status LaunchSmProbe(cudaStream_t stream, int blocks, int* out, long long spin_cycles) {
  SmIdKernel<<<blocks, 32, 0, stream>>>(out, spin_cycles);
  MOSAIC_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return Status::Ok();
}

StatusOr<std::set<int>> ProbeSms(cudaStream_t stream, int blocks) {
  int* d = nullptr;
  MOSAIC_CUDA_RETURN_IF_ERROR(cudaMalloc(&d, sizeof(int) * blocks));
  std::vector<int> h(blocks, -1);
  Status s = LaunchSmProbe(stream, blocks, d);
  if (s.ok()) {
    const cudaError_t e =
        cudaMemcpyAsync(h.data(), d, sizeof(int) * blocks, cudaMemcpyDeviceToHost, stream);
    const cudaError_t e2 = e == cudaSuccess ? cudaStreamSynchronize(stream) : e;
    if (e2 != cudaSuccess) s = CudaFailure(e2, "probe copy", __FILE__, __LINE__);
  }
  cudaFree(d);
  if (!s.ok()) return s;
  return std::set<int>(h.begin(), h.end());
}

}  // namespace mosaic::engine
