// models::Linear off CUDA: torch::linear itself (the fused backward and the bias-gradient kernel
// are CUDA-only; their gpu tests are linear_gpu_test.cc), with the settings on or off, under CPU
// autocast or not.
#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>

#include "models/linear.h"

namespace mosaic::models {
namespace {

TEST(LinearCpu, IsTorchLinearOffCuda) {
  const bool previous = FuseLinearGrad(), previous_bias = FuseBiasGrad();
  SetFuseLinearGrad(true);
  SetFuseBiasGrad(true);
  torch::manual_seed(1);
  const torch::Tensor x = torch::randn({3, 5, 16}), w = torch::randn({8, 16});
  const torch::Tensor b = torch::randn({8});
  for (bool autocast : {false, true}) {
    at::autocast::set_autocast_enabled(at::kCPU, autocast);
    at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
    EXPECT_FALSE(LinearGradFuses(x, w, b));
    EXPECT_FALSE(BiasGradFuses(x, w, b));
    const torch::Tensor y = Linear(x, w, b), ref = torch::linear(x, w, b);
    EXPECT_EQ(y.scalar_type(), ref.scalar_type());
    EXPECT_TRUE(torch::equal(y, ref));
    EXPECT_TRUE(torch::equal(Linear(x, w, {}), torch::linear(x, w, {})));
    EXPECT_FALSE(GeluMlpFuses(x, torch::randn({24, 16}), torch::randn({24}),
                              torch::randn({16, 24}), torch::randn({16})));
  }
  at::autocast::set_autocast_enabled(at::kCPU, false);
  SetFuseLinearGrad(previous);
  SetFuseBiasGrad(previous_bias);
  EXPECT_EQ(FuseLinearGrad(), previous);
  EXPECT_EQ(FuseBiasGrad(), previous_bias);
}

}  // namespace
}  // namespace mosaic::models
