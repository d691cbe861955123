// The fused add + LayerNorm CUDA kernels against AddLayerNorm's ATen path (itself checked
// against autograd through at::layer_norm in fused_norm_test.cc), at CLIP ViT-B/16 batch-128
// size and at widths that are not multiples of 32: values and every gradient.
#include <gtest/gtest.h>

#include "common/tensor_compare.h"
#include "kernels/layer_norm.h"
#include "models/fused_norm.h"

namespace mosaic::models {
namespace {

using testing::MaxRelError;

struct Shape {
  int64_t rows, cols;
  bool with_delta;
};

class FusedNormGpu : public ::testing::TestWithParam<Shape> {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA GPU";
  }
};

TEST_P(FusedNormGpu, KernelMatchesTheAtenPath) {
  const auto [rows, C, with_delta] = GetParam();
  torch::manual_seed(5);
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  const torch::Tensor x0 = torch::randn({rows, C}, cuda);
  const torch::Tensor d0 = torch::randn({rows, C}, cuda).to(torch::kBFloat16);
  const torch::Tensor w0 = 1 + 0.1 * torch::randn({C}, cuda), b0 = 0.1 * torch::randn({C}, cuda);
  const torch::Tensor gy = torch::randn({rows, C}, cuda).to(torch::kBFloat16);
  const torch::Tensor gh = torch::randn({rows, C}, cuda);
  std::vector<std::vector<torch::Tensor>> leaves(2);
  std::vector<std::pair<torch::Tensor, torch::Tensor>> out;
  for (int k = 0; k < 2; ++k) {
    leaves[k] = {x0.clone().requires_grad_(), d0.clone().requires_grad_(),
                 w0.clone().requires_grad_(), b0.clone().requires_grad_()};
    const auto& l = leaves[k];
    out.push_back(AddLayerNorm(l[0], with_delta ? l[1] : torch::Tensor(), l[2], l[3], 1e-5,
                               k == 0 ? NormPath::kKernel : NormPath::kAten));
    torch::autograd::backward({out[k].first, out[k].second}, {gh, gy});
  }
  EXPECT_TRUE(torch::equal(out[0].first, out[1].first));            // h: the same fp32 add
  EXPECT_LE(MaxRelError(out[0].second, out[1].second), 1.0 / 128);  // y: one bf16 step
  // Gradients: fp32 sums in other orders (row sums over C; dweight/dbias over all rows).
  EXPECT_LT(MaxRelError(leaves[0][0].grad(), leaves[1][0].grad()), 1e-4);
  const double wscale = leaves[1][2].grad().abs().max().item<double>();
  const double bscale = leaves[1][3].grad().abs().max().item<double>();
  EXPECT_LT((leaves[0][2].grad() - leaves[1][2].grad()).abs().max().item<double>(), 1e-5 * wscale);
  EXPECT_LT((leaves[0][3].grad() - leaves[1][3].grad()).abs().max().item<double>(), 1e-5 * bscale);
  if (with_delta) {
    EXPECT_LE(MaxRelError(leaves[0][1].grad(), leaves[1][1].grad()), 1.0 / 128);
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, FusedNormGpu,
                         ::testing::Values(Shape{128 * 197, 768, true}, Shape{1000, 100, true},
                                           Shape{77, 512, false}, Shape{3, 4096, true},
                                           Shape{5, 33, true}),
                         [](const auto& info) {
                           return std::to_string(info.param.rows) + "x" +
                                  std::to_string(info.param.cols) +
                                  (info.param.with_delta ? "" : "_nodelta");
                         });

TEST(FusedNormGpuLimits, TooWideARowIsRefusedNotRun) {
  EXPECT_EQ(
      kernels::AddLayerNormBackward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                    nullptr, nullptr, 1, kernels::kMaxLayerNormCols + 1, nullptr),
      cudaErrorInvalidValue);
}

}  // namespace
}  // namespace mosaic::models
