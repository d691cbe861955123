// The fused residual add + LayerNorm (models/fused_norm.h) against its ATen path on the GPU, at
// the zoo's shapes (rows = batch x tokens): CLIP ViT-B/16 at batch 128 (25216 x 768), its text
// tower (128 x 77 = 9856 x 512) and llava-small's ViT-L/14-336 at batch 8 (4616 x 1024),
// forward and forward+backward; CUDA event time per iteration (manual time), median of the
// repetitions. Skips without a GPU.
//
//   build/bench/fused_norm_benchmark --benchmark_repetitions=5
//     --benchmark_report_aggregates_only=true --benchmark_out=R.json  (one line)
#include <ATen/cuda/CUDAContext.h>
#include <benchmark/benchmark.h>
#include <cuda_runtime_api.h>

#include "models/fused_norm.h"

namespace {

using mosaic::models::AddLayerNorm;
using mosaic::models::NormPath;

void BM_AddLayerNorm(benchmark::State& state) {
  if (!torch::cuda::is_available()) {
    state.SkipWithError("no CUDA GPU");
    return;
  }
  // kernel 0: ATen's ops (the unfused path), 1: the fused kernels (vectorized where the shape
  // allows), 2: the fused kernels' scalar forms (the first version, for the A/B)
  constexpr NormPath kPaths[] = {NormPath::kAten, NormPath::kKernel, NormPath::kScalarKernel};
  const NormPath path = kPaths[state.range(0)];
  const bool backward = state.range(1) != 0;
  constexpr int64_t kShapes[][2] = {{128 * 197, 768}, {128 * 77, 512}, {8 * 577, 1024}};
  const int64_t rows = kShapes[state.range(2)][0], C = kShapes[state.range(2)][1];
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  torch::Tensor x = torch::randn({rows, C}, cuda).requires_grad_(backward);
  torch::Tensor d = torch::randn({rows, C}, cuda).to(torch::kBFloat16).requires_grad_(backward);
  torch::Tensor w = torch::ones({C}, cuda).requires_grad_(backward);
  torch::Tensor b = torch::zeros({C}, cuda).requires_grad_(backward);
  const torch::Tensor gh = torch::randn({rows, C}, cuda);
  const torch::Tensor gy = torch::randn({rows, C}, cuda).to(torch::kBFloat16);
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  const std::vector<torch::Tensor> inputs = {x, d, w, b};
  auto once = [&] {
    auto [h, y] = AddLayerNorm(x, d, w, b, 1e-5, path);
    // autograd::grad, not backward: no accumulation into .grad is timed.
    if (backward) torch::autograd::grad({h, y}, inputs, {gh, gy});
  };
  for (int i = 0; i < 3; ++i)
    once();  // warmup
  for (auto _ : state) {
    const cudaStream_t s = at::cuda::getCurrentCUDAStream();
    cudaEventRecord(start, s);
    once();
    cudaEventRecord(stop, s);
    cudaEventSynchronize(stop);
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    state.SetIterationTime(ms / 1e3);
  }
  // HBM bytes the fused path moves (Note [fused add + layer norm]): forward 12 per element;
  // backward 14 in the kernel plus 6 for the delta gradient's cast to bf16.
  state.SetBytesProcessed(state.iterations() * rows * C * (backward ? 32 : 12));
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
}
BENCHMARK(BM_AddLayerNorm)
    ->ArgNames({"kernel", "backward", "shape"})
    ->ArgsProduct({{0, 1, 2}, {0, 1}, {0, 1, 2}})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
