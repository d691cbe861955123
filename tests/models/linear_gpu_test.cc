// models::Linear's fused backward (weight and bias gradients from one cuBLASLt GEMM, Note
// [weight and bias gradients in one GEMM]) against torch::linear under CUDA bf16 autocast, and
// both against the exact gradients of the same bf16 operands in fp64: the forward and the input
// gradient are autocast's, the weight and bias gradients at least as close to exact as ATen's
// bf16 ones (they are fp32 accumulators, ATen's are rounded to bf16). Then the same inside a
// captured CUDA graph, as the engine runs it. Then the bias-gradient kernel (Note [bias gradient
// kernel]): its column sums against fp64, and Linear with it against torch::linear.
#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/cuda_test.h"
#include "kernels/bias_grad.h"
#include "models/linear.h"
#include "models/switch_scope.h"

namespace mosaic::models {
namespace {

// max |a - b| / max |ref|: an error relative to the tensor's scale.
double ScaledError(const torch::Tensor& a, const torch::Tensor& ref) {
  const torch::Tensor r = ref.to(torch::kFloat64);
  return (a.to(torch::kFloat64) - r).abs().max().item<double>() /
         r.abs().max().clamp_min(1e-30).item<double>();
}

using FuseLinearGradScope = SwitchScope<FuseLinearGrad, SetFuseLinearGrad>;
using FuseBiasGradScope = SwitchScope<FuseBiasGrad, SetFuseBiasGrad>;

class CudaBf16Autocast {
 public:
  CudaBf16Autocast() {
    at::autocast::set_autocast_enabled(at::kCUDA, true);
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
  }
  ~CudaBf16Autocast() {
    at::autocast::set_autocast_enabled(at::kCUDA, false);
    at::autocast::clear_cache();
  }
};

struct Shape {
  std::vector<int64_t> x;  // (..., in)
  int64_t out;
  bool bias;
};

class LinearGpu : public mosaic::testing::CudaParamTest<Shape> {};

struct Grads {
  torch::Tensor y, dx, dw, db;
};

// Which of Linear's switches is on: none (torch::linear), the cuBLASLt weight and bias
// gradients, or the bias-gradient kernel.
enum class Switch { kNone, kLinearGrad, kBiasGrad };

// One forward and backward of Linear under `on` on fresh leaves; gy bf16-representable.
Grads RunLinear(Switch on, const torch::Tensor& x0, const torch::Tensor& w0,
                const torch::Tensor& b0, const torch::Tensor& gy) {
  FuseLinearGradScope linear(on == Switch::kLinearGrad);
  FuseBiasGradScope bias(on == Switch::kBiasGrad);
  torch::Tensor x = x0.clone().requires_grad_(), w = w0.clone().requires_grad_();
  torch::Tensor b = b0.defined() ? b0.clone().requires_grad_() : torch::Tensor();
  torch::Tensor y;
  {
    CudaBf16Autocast autocast;
    EXPECT_EQ(LinearGradFuses(x, w, b), on == Switch::kLinearGrad);
    EXPECT_EQ(BiasGradFuses(x, w, b), on == Switch::kBiasGrad);
    y = Linear(x, w, b);
  }
  (y.to(torch::kFloat32) * gy).sum().backward();
  return {y.detach(), x.grad(), w.grad(), b.defined() ? b.grad() : torch::Tensor()};
}

TEST_P(LinearGpu, GradientsAtLeastAsCloseToExactAsAutocastsAten) {
  const Shape sh = GetParam();
  torch::manual_seed(11);
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  const int64_t in = sh.x.back();
  const torch::Tensor x0 = torch::randn(sh.x, cuda);
  const torch::Tensor w0 = torch::randn({sh.out, in}, cuda) / std::sqrt(static_cast<double>(in));
  const torch::Tensor b0 = sh.bias ? torch::randn({sh.out}, cuda) : torch::Tensor();
  std::vector<int64_t> y_shape = sh.x;
  y_shape.back() = sh.out;
  const torch::Tensor gy = torch::randn(y_shape, cuda).to(torch::kBFloat16).to(torch::kFloat32);

  const Grads fused = RunLinear(Switch::kLinearGrad, x0, w0, b0, gy);
  const Grads aten = RunLinear(Switch::kNone, x0, w0, b0, gy);
  ASSERT_TRUE(fused.dw.defined());
  EXPECT_EQ(fused.y.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(fused.dw.scalar_type(), torch::kFloat32);
  // Forward and input gradient: the same bf16 GEMMs as autocast's (one rounding step at most).
  EXPECT_LE(ScaledError(fused.y, aten.y), 1.0 / 128);
  EXPECT_LE(ScaledError(fused.dx, aten.dx), 1.0 / 128);

  // Exact gradients of the bf16 operands autocast multiplies, in fp64.
  const torch::Tensor xb = x0.to(torch::kBFloat16).to(torch::kFloat64).reshape({-1, in});
  const torch::Tensor g = gy.to(torch::kFloat64).reshape({-1, sh.out});
  const torch::Tensor dw_exact = g.t().mm(xb);  // (out, in)
  const double fused_w = ScaledError(fused.dw, dw_exact), aten_w = ScaledError(aten.dw, dw_exact);
  EXPECT_LE(fused_w, 1e-5) << "fp32 accumulators";
  EXPECT_LE(fused_w, aten_w + 1e-6);
  if (sh.bias) {
    const torch::Tensor db_exact = g.sum(0);
    const double fused_b = ScaledError(fused.db, db_exact),
                 aten_b = ScaledError(aten.db, db_exact);
    EXPECT_LE(fused_b, 1e-5);
    EXPECT_LE(fused_b, aten_b + 1e-6);
  } else {
    EXPECT_FALSE(fused.db.defined());
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, LinearGpu,
    ::testing::Values(Shape{{4, 197, 768}, 2304, true},   // ViT-B qkv
                      Shape{{4, 197, 3072}, 768, true},   // ViT-B fc2
                      Shape{{8, 77, 512}, 2048, true},    // text fc1
                      Shape{{300, 64}, 24, true},         // small, 2-D
                      Shape{{2, 33, 256}, 1024, false}),  // SwiGLU-style, no bias
    [](const ::testing::TestParamInfo<Shape>& info) {
      std::string name;
      for (int64_t d : info.param.x) name += std::to_string(d) + "x";
      return name + std::to_string(info.param.out) + (info.param.bias ? "" : "_nobias");
    });

TEST(LinearGpuLimits, OddWidthsAndFp32RunsTakeTorchLinear) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA GPU";
  FuseLinearGradScope scope(true);
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  const torch::Tensor x = torch::randn({5, 32}, cuda), w = torch::randn({24, 32}, cuda);
  const torch::Tensor b = torch::randn({24}, cuda);
  EXPECT_FALSE(LinearGradFuses(x, w, b)) << "no autocast: fp32 training";
  CudaBf16Autocast autocast;
  EXPECT_TRUE(LinearGradFuses(x, w, b));
  const torch::Tensor w_odd = torch::randn({21, 32}, cuda);
  EXPECT_FALSE(LinearGradFuses(x, w_odd, torch::randn({21}, cuda))) << "21 outputs";
  EXPECT_FALSE(LinearGradFuses(x, w.to(torch::kBFloat16), b)) << "bf16 weights";
  EXPECT_FALSE(LinearGradFuses(x.narrow(0, 0, 1), w, b)) << "one row: ATen's kernels";
  EXPECT_FALSE(LinearGradFuses(x.narrow(0, 0, 0), w, b)) << "no rows";
}

// Linear((2, 197, 768) -> out) forward + backward under whichever switch is on: once eager on a
// side stream (also the warm-up: cuBLASLt's algorithms are chosen outside the capture), then
// captured once and replayed, as the engine's backward graphs run it.
struct EagerAndReplayed {
  Grads eager, replayed;
};

EagerAndReplayed RunEagerThenReplayed(int64_t out, uint64_t seed) {
  torch::manual_seed(seed);
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  const torch::Tensor x0 = torch::randn({2, 197, 768}, cuda);
  const torch::Tensor w0 = torch::randn({out, 768}, cuda) / std::sqrt(768.0);
  const torch::Tensor b0 = torch::randn({out}, cuda);
  const torch::Tensor gy = torch::randn({2, 197, out}, cuda).to(torch::kBFloat16);
  torch::Tensor x = x0.clone().requires_grad_(), w = w0.clone().requires_grad_();
  torch::Tensor b = b0.clone().requires_grad_();
  auto step = [&] {
    CudaBf16Autocast autocast;
    torch::Tensor y = Linear(x, w, b);
    y.backward(gy);
  };
  auto grads = [&] { return Grads{{}, x.grad().clone(), w.grad().clone(), b.grad().clone()}; };
  c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool();
  EagerAndReplayed r;
  at::cuda::CUDAGraph graph;
  torch::cuda::synchronize();  // the side stream does not wait for the default one's clones
  {
    const c10::cuda::CUDAStreamGuard guard(side);
    step();
    torch::cuda::synchronize();
    r.eager = grads();
    for (torch::Tensor t : {x.grad(), w.grad(), b.grad()}) t.zero_();
    graph.capture_begin();
    step();  // accumulates into the grads allocated by the eager step
    graph.capture_end();
  }
  torch::cuda::synchronize();
  for (torch::Tensor t : {x.grad(), w.grad(), b.grad()}) t.zero_();
  graph.replay();
  torch::cuda::synchronize();
  r.replayed = grads();
  return r;
}

TEST(LinearGpuGraph, ReplayedCaptureGivesTheEagerGradients) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA GPU";
  FuseLinearGradScope scope(true);
  const EagerAndReplayed r = RunEagerThenReplayed(2304, 12);
  EXPECT_TRUE(torch::allclose(r.replayed.dw, r.eager.dw, 1e-5, 1e-4));
  EXPECT_TRUE(torch::allclose(r.replayed.db, r.eager.db, 1e-5, 1e-4));
  EXPECT_LE(ScaledError(r.replayed.dx, r.eager.dx), 1.0 / 128);
}

// The GELU MLP with its epilogues (FusedGeluMlp) and the unfused autocast MLP, both against the
// same MLP in fp64 on the bf16-rounded operands: the fused one no further from it (it rounds
// fewer intermediates: gelu'(z) is applied to fp32 accumulators), every output and gradient.
TEST(GeluMlpGpu, AsCloseToFp64AsTheUnfusedMlp) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA GPU";
  torch::manual_seed(13);
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  const int64_t C = 768, hidden = 3072;
  const torch::Tensor x0 = torch::randn({4, 197, C}, cuda);
  const torch::Tensor w10 = torch::randn({hidden, C}, cuda) / std::sqrt(double(C));
  const torch::Tensor b10 = 0.1 * torch::randn({hidden}, cuda);
  const torch::Tensor w20 = torch::randn({C, hidden}, cuda) / std::sqrt(double(hidden));
  const torch::Tensor b20 = 0.1 * torch::randn({C}, cuda);
  const torch::Tensor gy = torch::randn({4, 197, C}, cuda).to(torch::kBFloat16).to(torch::kFloat32);
  auto run = [&](int mode) {  // 0: fused, 1: unfused autocast, 2: fp64 reference
    FuseLinearGradScope scope(mode == 0);
    auto leaf = [&](const torch::Tensor& t) {
      torch::Tensor v = mode == 2 ? t.to(torch::kBFloat16).to(torch::kFloat64) : t.clone();
      return v.requires_grad_();
    };
    std::vector<torch::Tensor> p{leaf(x0), leaf(w10), leaf(b10), leaf(w20), leaf(b20)};
    torch::Tensor y;
    if (mode == 2) {
      y = torch::linear(at::gelu(torch::linear(p[0], p[1], p[2]), "tanh"), p[3], p[4]);
    } else {
      CudaBf16Autocast autocast;
      EXPECT_EQ(GeluMlpFuses(p[0], p[1], p[2], p[3], p[4]), mode == 0);
      y = mode == 0 ? FusedGeluMlp(p[0], p[1], p[2], p[3], p[4])
                    : torch::linear(at::gelu(torch::linear(p[0], p[1], p[2]), "tanh"), p[3], p[4]);
    }
    (y.to(torch::kFloat64) * gy.to(torch::kFloat64)).sum().backward();
    std::vector<torch::Tensor> out{y.detach()};
    for (const torch::Tensor& t : p) out.push_back(t.grad());
    return out;
  };
  const auto fused = run(0), aten = run(1), exact = run(2);
  const char* names[] = {"y", "dx", "dw1", "db1", "dw2", "db2"};
  for (size_t i = 0; i < exact.size(); ++i) {
    const double ef = ScaledError(fused[i], exact[i]), ea = ScaledError(aten[i], exact[i]);
    EXPECT_LE(ef, 1.25 * ea + 1e-3) << names[i] << ": fused " << ef << ", autocast " << ea;
    EXPECT_LE(ef, 2e-2) << names[i];
  }
}

// kernels::ColumnSumBf16 (Note [bias gradients as column sums]) against the fp64 column sums of
// the same bf16 values: at batch-128 CLIP sizes (vectorized, many slices), widths that are not
// multiples of 8 and a misaligned start (the scalar kernel), one row, no rows; and the same bits
// on a second run.
struct SumShape {
  int64_t rows, cols;
  int64_t offset = 0;  // elements dy starts into its buffer (1: not 16-byte aligned)
};

class BiasGradGpuKernel : public mosaic::testing::CudaParamTest<SumShape> {};

TEST_P(BiasGradGpuKernel, ColumnSumsMatchFp64AndRepeatBitForBit) {
  const SumShape sh = GetParam();
  torch::manual_seed(14);
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  const torch::Tensor buffer =
      torch::randn({sh.rows * sh.cols + sh.offset}, cuda).to(torch::kBFloat16);
  const torch::Tensor dy = buffer.narrow(0, sh.offset, sh.rows * sh.cols).view({sh.rows, sh.cols});
  const int slices = kernels::ColumnSumSlices(
      sh.rows, static_cast<int>(sh.cols),
      at::cuda::getCurrentDeviceProperties()->multiProcessorCount);
  ASSERT_GE(slices, 1);
  auto sum = [&] {
    torch::Tensor db = torch::full({sh.cols}, 7.0f, cuda);  // overwritten, not added to
    torch::Tensor ws = torch::empty({slices, sh.cols}, cuda);
    EXPECT_EQ(kernels::ColumnSumBf16(reinterpret_cast<const __nv_bfloat16*>(dy.data_ptr()),
                                     db.data_ptr<float>(), ws.data_ptr<float>(), sh.rows,
                                     static_cast<int>(sh.cols), slices,
                                     at::cuda::getCurrentCUDAStream()),
              cudaSuccess);
    return db;
  };
  const torch::Tensor a = sum(), b = sum();
  const torch::Tensor exact = dy.to(torch::kFloat64).sum(0);
  if (sh.rows == 0) {
    EXPECT_EQ(a.abs().max().item<float>(), 0.0f);
  } else {
    EXPECT_LE(ScaledError(a, exact), 1e-5) << slices << " slices";
  }
  EXPECT_TRUE(torch::equal(a, b)) << "not deterministic";
}

INSTANTIATE_TEST_SUITE_P(Shapes, BiasGradGpuKernel,
                         ::testing::Values(SumShape{128 * 197, 3072}, SumShape{128 * 197, 768},
                                           SumShape{128 * 77, 2048}, SumShape{1000, 100},
                                           SumShape{37, 16, 1}, SumShape{1, 24},
                                           SumShape{7, 3}, SumShape{0, 16},
                                           SumShape{3, 2304 + 8}),
                         [](const ::testing::TestParamInfo<SumShape>& info) {
                           return std::to_string(info.param.rows) + "x" +
                                  std::to_string(info.param.cols) +
                                  (info.param.offset ? "_misaligned" : "");
                         });

// Linear with the bias-gradient kernel (Note [bias gradient kernel]) against torch::linear under
// the same autocast: forward, input and weight gradients autocast's (bf16 GEMMs), the bias
// gradient at least as close to the exact sum as ATen's bf16 one.
TEST_P(LinearGpu, BiasGradKernelKeepsAutocastsGemms) {
  const Shape sh = GetParam();
  torch::manual_seed(15);
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  const int64_t in = sh.x.back();
  const torch::Tensor x0 = torch::randn(sh.x, cuda);
  const torch::Tensor w0 = torch::randn({sh.out, in}, cuda) / std::sqrt(static_cast<double>(in));
  const torch::Tensor b0 = torch::randn({sh.out}, cuda);
  if (!sh.bias) {  // nothing for the kernel to do: torch::linear itself
    FuseBiasGradScope scope(true);
    CudaBf16Autocast autocast;
    EXPECT_FALSE(BiasGradFuses(x0, w0, {}));
    EXPECT_TRUE(torch::equal(Linear(x0, w0, {}), torch::linear(x0, w0, {})));
    return;
  }
  std::vector<int64_t> y_shape = sh.x;
  y_shape.back() = sh.out;
  const torch::Tensor gy = torch::randn(y_shape, cuda).to(torch::kBFloat16).to(torch::kFloat32);
  const Grads k = RunLinear(Switch::kBiasGrad, x0, w0, b0, gy);
  const Grads aten = RunLinear(Switch::kNone, x0, w0, b0, gy);
  EXPECT_EQ(k.y.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(k.dw.scalar_type(), torch::kFloat32);
  EXPECT_EQ(k.db.scalar_type(), torch::kFloat32);
  EXPECT_LE(ScaledError(k.y, aten.y), 1.0 / 128);
  EXPECT_LE(ScaledError(k.dx, aten.dx), 1.0 / 128);
  EXPECT_LE(ScaledError(k.dw, aten.dw), 1.0 / 128);
  const torch::Tensor db_exact = gy.to(torch::kFloat64).reshape({-1, sh.out}).sum(0);
  const double kb = ScaledError(k.db, db_exact), ab = ScaledError(aten.db, db_exact);
  EXPECT_LE(kb, 1e-5);
  EXPECT_LE(kb, ab + 1e-6);
}

TEST(BiasGradGpuLimits, TakenOnlyUnderBf16AutocastWithABias) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA GPU";
  FuseBiasGradScope scope(true);
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  const torch::Tensor x = torch::randn({5, 32}, cuda), w = torch::randn({21, 32}, cuda);
  const torch::Tensor b = torch::randn({21}, cuda);
  EXPECT_FALSE(BiasGradFuses(x, w, b)) << "no autocast: fp32 training";
  CudaBf16Autocast autocast;
  EXPECT_TRUE(BiasGradFuses(x, w, b)) << "any width: the kernel has a scalar form";
  EXPECT_FALSE(BiasGradFuses(x, w, {})) << "no bias";
  EXPECT_FALSE(BiasGradFuses(x.narrow(0, 0, 0), w, b)) << "no rows";
  EXPECT_FALSE(BiasGradFuses(x.cpu(), w, b)) << "CPU input";
  FuseLinearGradScope linear(true);
  EXPECT_FALSE(BiasGradFuses(x, w, b)) << "--fused-linear-grad on: this switch is ignored";
}

// The bias-gradient kernel replayed from a captured graph: its column sums are deterministic, so
// the bias gradient replays bit for bit.
TEST(BiasGradGpuGraph, ReplayedCaptureGivesTheEagerGradients) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA GPU";
  FuseBiasGradScope scope(true);
  const EagerAndReplayed r = RunEagerThenReplayed(3072, 16);
  EXPECT_TRUE(torch::equal(r.replayed.db, r.eager.db));
  EXPECT_TRUE(torch::allclose(r.replayed.dw, r.eager.dw, 1e-5, 1e-4));
  EXPECT_LE(ScaledError(r.replayed.dx, r.eager.dx), 1.0 / 128);
}

// Every kernel path computes its gradients without history: asked for a second derivative
// (create_graph), each refuses instead of returning a wrong one.
TEST(LinearGpuLimits, DoubleBackwardIsRefusedOnEveryKernelPath) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA GPU";
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  const torch::Tensor x = torch::randn({4, 32}, cuda).requires_grad_();
  const torch::Tensor w = torch::randn({32, 32}, cuda).requires_grad_();
  const torch::Tensor b = torch::randn({32}, cuda).requires_grad_();
  auto second_derivative = [&](const torch::Tensor& y) {
    const torch::Tensor loss = (y.to(torch::kFloat32) * y.to(torch::kFloat32)).sum();
    torch::autograd::grad({loss}, {x}, {}, /*retain_graph=*/true, /*create_graph=*/true);
  };
  for (Switch on : {Switch::kLinearGrad, Switch::kBiasGrad}) {
    FuseLinearGradScope linear(on == Switch::kLinearGrad);
    FuseBiasGradScope bias(on == Switch::kBiasGrad);
    torch::Tensor y;
    {
      CudaBf16Autocast autocast;
      ASSERT_TRUE(on == Switch::kLinearGrad ? LinearGradFuses(x, w, b) : BiasGradFuses(x, w, b));
      y = Linear(x, w, b);
    }
    EXPECT_THROW(second_derivative(y), c10::Error) << static_cast<int>(on);
  }
  FuseLinearGradScope linear(true);
  torch::Tensor y;
  {
    CudaBf16Autocast autocast;
    ASSERT_TRUE(GeluMlpFuses(x, w, b, w, b));
    y = FusedGeluMlp(x, w, b, w, b);
  }
  EXPECT_THROW(second_derivative(y), c10::Error) << "FusedGeluMlp";
}

}  // namespace
}  // namespace mosaic::models
