// AddLayerNorm's ATen path (the formulas the CUDA kernels compute, Note [fused add + layer norm])
// against autograd through at::layer_norm: values and the gradients of x, delta, weight and bias;
// and the fused TransformerStack (Note [add + norm fusion in the stack]) against the unfused one.
#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "common/autograd_graph.h"
#include "common/tensor_compare.h"
#include "models/blocks.h"
#include "models/fused_norm.h"
#include "models/linear.h"
#include "models/vit.h"

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

// The names a profile records (core/profile.h fused_kernels) follow the switches; the CPU takes
// the ATen path whatever they say, and the scalar kernels refuse CPU tensors as the kernels do.
TEST(AddLayerNorm, FusedKernelNamesFollowTheSwitches) {
  const bool vectorized = VectorizedAddNorm();
  {
    const FuseAddNormScope off(false);
    SetVectorizedAddNorm(true);
    EXPECT_EQ(FusedKernelsInUse().find("norm"), std::string::npos) << FusedKernelsInUse();
  }
  {
    const FuseAddNormScope on(true);
    SetVectorizedAddNorm(false);
    EXPECT_EQ(FusedKernelsInUse().substr(0, 8), "add-norm");
    EXPECT_EQ(FusedKernelsInUse().find("vectorized-norm"), std::string::npos);
    SetVectorizedAddNorm(true);
    EXPECT_EQ(FusedKernelsInUse().substr(0, 24), "add-norm+vectorized-norm");
    const torch::Tensor x = torch::randn({3, 8}), w = torch::ones({8}), b = torch::zeros({8});
    const auto [h, y] = AddLayerNorm(x, {}, w, b, 1e-5);  // kAuto: ATen on the CPU
    EXPECT_TRUE(torch::allclose(y.to(torch::kFloat32),
                                at::layer_norm(x, {8}, w, b, 1e-5).to(torch::kBFloat16).to(
                                    torch::kFloat32)));
    EXPECT_THROW(AddLayerNorm(x, {}, w, b, 1e-5, NormPath::kScalarKernel), c10::Error);
    const bool bias = FuseBiasGrad(), linear = FuseLinearGrad();
    SetFuseLinearGrad(false);
    SetFuseBiasGrad(true);
    EXPECT_EQ(FusedKernelsInUse(), "add-norm+vectorized-norm+bias-grad");
    SetFuseLinearGrad(true);  // the cuBLASLt path takes the bias gradient itself
    EXPECT_EQ(FusedKernelsInUse(), "add-norm+vectorized-norm+linear-grad");
    SetFuseBiasGrad(bias);
    SetFuseLinearGrad(linear);
    const bool patch = PatchGemm();
    SetPatchGemm(true);
    const std::string names = FusedKernelsInUse();
    EXPECT_EQ(names.substr(names.size() - 11), "+patch-gemm") << names;
    SetPatchGemm(patch);
  }
  SetVectorizedAddNorm(vectorized);
}

// bf16 autocast on the CPU for a scope: the fused stack's precondition, reachable without a GPU.
class CpuAutocastBf16 {
 public:
  CpuAutocastBf16()
      : enabled_(at::autocast::is_autocast_enabled(at::kCPU)),
        dtype_(at::autocast::get_autocast_dtype(at::kCPU)) {
    at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
    at::autocast::set_autocast_enabled(at::kCPU, true);
  }
  ~CpuAutocastBf16() {
    at::autocast::set_autocast_enabled(at::kCPU, enabled_);
    at::autocast::set_autocast_dtype(at::kCPU, dtype_);
    at::autocast::clear_cache();
  }

 private:
  bool enabled_;
  at::ScalarType dtype_;
};

// How many AddLayerNorm nodes the autograd graph behind `t` has.
int CountAddLayerNormNodes(const torch::Tensor& t) {
  int count = 0;
  for (const std::string& name : mosaic::testing::GraphNodeNames(t))
    if (name.find("AddLayerNormFn") != std::string::npos) ++count;
  return count;
}

struct StackRun {
  torch::Tensor out;                // (B, T, C)
  std::vector<torch::Tensor> grads; // of every parameter, then of x
  int fused_nodes = 0;
};

// One forward + backward of `stack` on x with loss sum(out * w).
StackRun RunStack(TransformerStack& stack, const torch::Tensor& x0, const torch::Tensor& mask,
                  const torch::Tensor& w, bool fuse, bool autocast) {
  const FuseAddNormScope scope(fuse);
  std::optional<CpuAutocastBf16> cast;
  if (autocast) cast.emplace();
  const torch::Tensor x = x0.clone().requires_grad_();
  StackRun run;
  run.out = stack(x, mask);
  run.fused_nodes = CountAddLayerNormNodes(run.out);
  std::vector<torch::Tensor> wrt = stack->parameters();
  wrt.push_back(x);
  run.grads = torch::autograd::grad({(run.out.to(torch::kFloat32) * w).sum()}, wrt);
  return run;
}

TEST(FusedAddNormStack, MatchesTheUnfusedStackUnderBf16Autocast) {
  torch::manual_seed(5);
  const int64_t depth = 3, C = 48;  // C not a multiple of 32
  TransformerStack stack(BlockOptions(C, 4).causal(true), depth);
  for (auto& p : stack->parameters()) {  // LayerNorm weights and biases away from 1 and 0
    torch::NoGradGuard no_grad;
    if (p.dim() == 1) p.add_(0.1 * torch::randn_like(p));
  }
  const torch::Tensor x = torch::randn({2, 7, C});
  const torch::Tensor mask =
      torch::tensor({1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1}, torch::kBool).view({2, 7});
  const torch::Tensor w = torch::randn({2, 7, C});
  const StackRun plain = RunStack(stack, x, mask, w, /*fuse=*/false, /*autocast=*/true);
  const StackRun fused = RunStack(stack, x, mask, w, /*fuse=*/true, /*autocast=*/true);
  EXPECT_EQ(plain.fused_nodes, 0);
  EXPECT_EQ(fused.fused_nodes, 2 * depth);  // ln1 and ln2 of every block
  // The forward computes the same fp32 sums and LayerNorms (native_layer_norm both ways) and
  // rounds to bf16 where the unfused path's matmul casts: bit for bit the same.
  EXPECT_EQ(fused.out.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::equal(fused.out, plain.out)) << MaxRelError(fused.out, plain.out);
  // The backward's LayerNorm gradient is the kernel's formula, not ATen's: fp32 rounding
  // differences only (at most 3.1e-7 with this seed). A bf16 cast of a branch gradient could
  // turn one into a bf16 step (1/128); with this seed none does, so the bound stays tight.
  ASSERT_EQ(fused.grads.size(), plain.grads.size());
  for (size_t i = 0; i < plain.grads.size(); ++i) {
    EXPECT_LT(MaxRelError(fused.grads[i], plain.grads[i]), 1e-5) << "gradient " << i;
  }
}

TEST(FusedAddNormStack, Fp32TrainingAndRmsNormStacksStayUnfused) {
  torch::manual_seed(6);
  const torch::Tensor x = torch::randn({2, 5, 32}), w = torch::randn({2, 5, 32});
  TransformerStack ln_stack(BlockOptions(32, 4), 2);
  const StackRun plain = RunStack(ln_stack, x, {}, w, /*fuse=*/false, /*autocast=*/false);
  const StackRun fused = RunStack(ln_stack, x, {}, w, /*fuse=*/true, /*autocast=*/false);
  EXPECT_EQ(fused.fused_nodes, 0);  // no autocast: the branch outputs are fp32
  EXPECT_TRUE(torch::equal(fused.out, plain.out));
  for (size_t i = 0; i < plain.grads.size(); ++i)
    EXPECT_TRUE(torch::equal(fused.grads[i], plain.grads[i])) << "gradient " << i;
  TransformerStack rms_stack(BlockOptions(32, 4).norm(NormKind::kRmsNorm).mlp(MlpKind::kSwiGlu)
                                 .bias(false),
                             2);
  EXPECT_EQ(RunStack(rms_stack, x, {}, w, /*fuse=*/true, /*autocast=*/true).fused_nodes, 0);
}

TEST(FusedAddNormStack, TheSettingIsScoped) {
  EXPECT_FALSE(FuseAddNorm());  // off by default
  {
    const FuseAddNormScope on(true);
    EXPECT_TRUE(FuseAddNorm());
  }
  EXPECT_FALSE(FuseAddNorm());
}

}  // namespace
}  // namespace mosaic::models
