// AddLayerNorm's ATen path (the formulas the CUDA kernels compute, Note [fused add + layer norm])
// against autograd through at::layer_norm: values and the gradients of x, delta, weight and bias.
#include <gtest/gtest.h>

#include "common/tensor_compare.h"
#include "models/fused_norm.h"

namespace mosaic::models {
namespace {

using testing::MaxRelError;

struct Case {
  bool with_delta;
  bool with_h_grad;
};

class AddLayerNormTest : public ::testing::TestWithParam<Case> {};

TEST_P(AddLayerNormTest, AtenPathMatchesAutogradThroughLayerNorm) {
  torch::manual_seed(3);
  const int64_t C = 40;  // not a multiple of 32: the kernel's lanes stride unevenly
  const torch::Tensor x0 = torch::randn({3, 5, C});
  // bf16 like a block's branch output; bf16-representable upstream gradient for y.
  const torch::Tensor d0 = torch::randn({3, 5, C}).to(torch::kBFloat16);
  const torch::Tensor w0 = 1 + 0.1 * torch::randn({C}), b0 = 0.1 * torch::randn({C});
  const torch::Tensor gy = torch::randn({3, 5, C}).to(torch::kBFloat16);
  const torch::Tensor gh = torch::randn({3, 5, C});
  const double eps = 1e-5;
  auto leaves = [&] {
    return std::vector<torch::Tensor>{x0.clone().requires_grad_(), d0.clone().requires_grad_(),
                                      w0.clone().requires_grad_(), b0.clone().requires_grad_()};
  };
  std::vector<torch::Tensor> a = leaves(), r = leaves();
  const torch::Tensor delta_a = GetParam().with_delta ? a[1] : torch::Tensor();
  auto [h, y] = AddLayerNorm(a[0], delta_a, a[2], a[3], eps, NormPath::kAten);
  const torch::Tensor h_ref = GetParam().with_delta ? r[0] + r[1].to(torch::kFloat32) : r[0];
  const torch::Tensor y_ref = at::layer_norm(h_ref, {C}, r[2], r[3], eps).to(torch::kBFloat16);
  EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(h.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::equal(h, h_ref));
  EXPECT_LE(MaxRelError(y, y_ref), 1.0 / 128);  // at most one bf16 rounding step apart
  auto loss = [&](const torch::Tensor& hh, const torch::Tensor& yy) {
    torch::Tensor l = (yy.to(torch::kFloat32) * gy.to(torch::kFloat32)).sum();
    return GetParam().with_h_grad ? l + (hh * gh).sum() : l;
  };
  loss(h, y).backward();
  loss(h_ref, y_ref).backward();
  EXPECT_LT(MaxRelError(a[0].grad(), r[0].grad()), 1e-5);
  EXPECT_LT(MaxRelError(a[2].grad(), r[2].grad()), 1e-5);
  EXPECT_LT(MaxRelError(a[3].grad(), r[3].grad()), 1e-5);
  if (GetParam().with_delta) {
    ASSERT_TRUE(a[1].grad().defined());
    EXPECT_EQ(a[1].grad().scalar_type(), torch::kBFloat16);
    EXPECT_LE(MaxRelError(a[1].grad(), r[1].grad()), 1.0 / 128);
  } else {
    EXPECT_FALSE(a[1].grad().defined());
  }
}

INSTANTIATE_TEST_SUITE_P(Paths, AddLayerNormTest,
                         ::testing::Values(Case{true, true}, Case{true, false}, Case{false, true},
                                           Case{false, false}),
                         [](const auto& info) {
                           return std::string(info.param.with_delta ? "delta" : "nodelta") +
                                  (info.param.with_h_grad ? "_hgrad" : "_ygradonly");
                         });

TEST(AddLayerNorm, DoubleBackwardIsRefusedNotWrong) {
  const torch::Tensor x = torch::randn({4, 8}).requires_grad_();
  const torch::Tensor w = torch::ones({8}).requires_grad_(), b = torch::zeros({8});
  auto [h, y] = AddLayerNorm(x, {}, w, b, 1e-5);
  const torch::Tensor loss = (y.to(torch::kFloat32) * torch::randn({4, 8})).sum();
  EXPECT_THROW(torch::autograd::grad({loss}, {x}, {}, /*retain_graph=*/true,
                                     /*create_graph=*/true),
               c10::Error);
}

TEST(AddLayerNorm, BadInputsAreClearErrors) {
  const torch::Tensor w = torch::ones({8}), b = torch::zeros({8});
  EXPECT_THROW(AddLayerNorm(torch::randn({2, 8}).to(torch::kBFloat16), {}, w, b, 1e-5),
               c10::Error);  // the residual must be fp32
  EXPECT_THROW(AddLayerNorm(torch::randn({2, 8}), torch::randn({2, 4}), w, b, 1e-5), c10::Error);
  EXPECT_THROW(AddLayerNorm(torch::randn({2, 8}), {}, torch::ones({4}), b, 1e-5), c10::Error);
  EXPECT_THROW(AddLayerNorm(torch::randn({2, 8}), {}, w.to(torch::kFloat64), b, 1e-5), c10::Error);
  // The kernel needs CUDA tensors: asked for it on the CPU, it says so.
  try {
    AddLayerNorm(torch::randn({2, 8}), {}, w, b, 1e-5, NormPath::kKernel);
    ADD_FAILURE() << "accepted CPU tensors for the CUDA kernel";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("the kernel needs CUDA"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace mosaic::models
