// The fused add + LayerNorm CUDA kernels against AddLayerNorm's ATen path (itself checked
// against autograd through at::layer_norm in fused_norm_test.cc), at CLIP ViT-B/16 batch-128
// size and at widths that are not multiples of 32: values and every gradient. Then a fused
// ViT-B stack under bf16 autocast against the unfused one, both against fp32.
#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/cuda_test.h"
#include "common/tensor_compare.h"
#include "kernels/layer_norm.h"
#include "models/blocks.h"
#include "models/fused_norm.h"

namespace mosaic::models {
namespace {

using testing::MaxRelError;

struct Shape {
  int64_t rows, cols;
  bool with_delta = true;
  bool h_grad = true;    // false: only y is differentiated (no dh_in)
  bool strided = false;  // x a transposed view, weight and bias every other element of a buffer
  bool offset = false;   // x starts one element into its buffer (not 16-byte aligned)
};

class FusedNormGpu : public mosaic::testing::CudaParamTest<Shape> {};

// The kernels (vectorized where the shape allows, and the scalar ones forced) against the ATen
// path.
TEST_P(FusedNormGpu, KernelsMatchTheAtenPath) {
  const Shape sh = GetParam();
  const int64_t rows = sh.rows, C = sh.cols;
  torch::manual_seed(5);
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  // Leaves: x (maybe a transposed view: clone keeps its strides), delta, and the buffers that
  // weight and bias are taken from (every other element when strided).
  const torch::Tensor x0 =
      sh.strided ? torch::randn({C, rows}, cuda).t()
                 : torch::randn({rows * C + (sh.offset ? 1 : 0)}, cuda);
  const torch::Tensor d0 = torch::randn({rows, C}, cuda).to(torch::kBFloat16);
  const int64_t step = sh.strided ? 2 : 1;
  const torch::Tensor w0 = 1 + 0.1 * torch::randn({C * step}, cuda);
  const torch::Tensor b0 = 0.1 * torch::randn({C * step}, cuda);
  const torch::Tensor gy = torch::randn({rows, C}, cuda).to(torch::kBFloat16);
  const torch::Tensor gh = torch::randn({rows, C}, cuda);
  const NormPath paths[] = {NormPath::kKernel, NormPath::kScalarKernel, NormPath::kAten};
  std::vector<std::vector<torch::Tensor>> leaves(3);
  std::vector<std::pair<torch::Tensor, torch::Tensor>> out;
  for (int k = 0; k < 3; ++k) {
    leaves[k] = {x0.clone().requires_grad_(), d0.clone().requires_grad_(),
                 w0.clone().requires_grad_(), b0.clone().requires_grad_()};
    const auto& l = leaves[k];
    // (rows, C): the transposed leaf, or a view into the flat one (from element 1 with offset)
    const torch::Tensor x = sh.strided ? l[0] : l[0].narrow(0, sh.offset ? 1 : 0, rows * C)
                                                     .view({rows, C});
    ASSERT_EQ(x.is_contiguous(), !sh.strided);
    const torch::Tensor w = l[2].slice(0, 0, C * step, step), b = l[3].slice(0, 0, C * step, step);
    out.push_back(AddLayerNorm(x, sh.with_delta ? l[1] : torch::Tensor(), w, b, 1e-5,
                               paths[k]));
    if (sh.h_grad) {
      torch::autograd::backward({out[k].first, out[k].second}, {gh, gy});
    } else {
      torch::autograd::backward({out[k].second}, {gy});
    }
  }
  const auto& ref = leaves[2];
  for (int k = 0; k < 2; ++k) {
    SCOPED_TRACE(k == 0 ? "kernel" : "scalar kernel");
    EXPECT_TRUE(torch::equal(out[k].first, out[2].first));            // h: the same fp32 add
    EXPECT_LE(MaxRelError(out[k].second, out[2].second), 1.0 / 128);  // y: one bf16 step
    // Gradients: fp32 sums in other orders (row sums over C; dweight/dbias over all rows).
    EXPECT_LT(MaxRelError(leaves[k][0].grad(), ref[0].grad()), 1e-4);
    for (int p : {2, 3}) {
      const double scale = ref[p].grad().abs().max().item<double>();
      EXPECT_LT((leaves[k][p].grad() - ref[p].grad()).abs().max().item<double>(), 1e-5 * scale)
          << (p == 2 ? "weight" : "bias");
    }
    if (sh.with_delta) {
      EXPECT_LE(MaxRelError(leaves[k][1].grad(), ref[1].grad()), 1.0 / 128);
    }
  }
}

// Which kernels a shape takes (Note [vectorized rows in registers]): widths that are multiples
// of 4 take the vectorized forward up to 2048 and the vectorized backward up to 768, in groups
// of 128 columns per warp pass (1, 2, 3, 4, 6, 8, 12 or 16 of them); the rest, and x one
// element into its buffer (misaligned; h is x without a delta, so the backward too), the
// scalar ones.
// 25216 x 768: CLIP ViT-B/16 at batch 128, and the shape with the most rows per backward
// block, so the one that runs the grid-stride loop longest; 100: one group, lanes 25-31
// empty; 16: lanes without elements; 384: 3 groups; 644: 6 groups, the last partly filled;
// 1028: 9 groups in a 12-group forward; 1024, 1280, 2048:
// vectorized forward, scalar backward; 4096, 33, 6144 (the widest row, 48 KiB of shared
// memory): scalar both ways.
INSTANTIATE_TEST_SUITE_P(Shapes, FusedNormGpu,
                         ::testing::Values(Shape{128 * 197, 768}, Shape{1000, 100},
                                           Shape{77, 512, false}, Shape{3, 4096}, Shape{5, 33},
                                           Shape{64, 6144}, Shape{7, 16},
                                           Shape{300, 768, true, false},
                                           Shape{300, 768, false, false},
                                           Shape{257, 96, true, true, true},
                                           Shape{8 * 577, 1024}, Shape{50, 1280},
                                           Shape{9, 2048}, Shape{33, 1028},
                                           Shape{300, 384}, Shape{300, 644},
                                           Shape{300, 768, true, true, false, true},
                                           Shape{300, 768, false, true, false, true}),
                         [](const auto& info) {
                           const Shape& s = info.param;
                           return std::to_string(s.rows) + "x" + std::to_string(s.cols) +
                                  (s.with_delta ? "" : "_nodelta") +
                                  (s.h_grad ? "" : "_ygradonly") + (s.strided ? "_strided" : "") +
                                  (s.offset ? "_offset" : "");
                         });

TEST(FusedNormGpuLimits, TooWideARowIsRefusedNotRun) {
  EXPECT_EQ(
      kernels::AddLayerNormBackward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                    nullptr, nullptr, 1, kernels::kMaxLayerNormCols + 1, nullptr),
      cudaErrorInvalidValue);
}

// ||a - b|| / ||b|| over the whole tensor, in double.
double RelNormError(const torch::Tensor& a, const torch::Tensor& b) {
  const torch::Tensor af = a.to(torch::kFloat64), bf = b.to(torch::kFloat64);
  return ((af - bf).norm() / bf.norm().clamp_min(1e-30)).item<double>();
}

struct StackResult {
  torch::Tensor out;
  std::vector<torch::Tensor> grads;  // every parameter, then x
  bool fused = false;                // an AddLayerNorm node is in the graph
};

StackResult RunViTStack(TransformerStack& stack, const torch::Tensor& x0, const torch::Tensor& w,
                        bool fuse, bool bf16) {
  const FuseAddNormScope scope(fuse);
  at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
  at::autocast::set_autocast_enabled(at::kCUDA, bf16);
  const torch::Tensor x = x0.clone().requires_grad_();
  StackResult r;
  r.out = stack(x);
  if (const auto node = r.out.grad_fn()) {  // the stack's last add: h + pending when fused
    for (const auto& e : node->next_edges())
      r.fused |= e.function && e.function->name().find("AddLayerNormFn") != std::string::npos;
  }
  std::vector<torch::Tensor> wrt = stack->parameters();
  wrt.push_back(x);
  r.grads = torch::autograd::grad({(r.out.to(torch::kFloat32) * w).sum()}, wrt);
  at::autocast::set_autocast_enabled(at::kCUDA, false);
  at::autocast::clear_cache();
  return r;
}

// Note [add + norm fusion in the stack] on the GPU: two ViT-B/16 blocks at batch 8, the fused
// stack (kernels) against the unfused one under the same autocast, both measured against the
// fp32 stack. The fused kernels round LayerNorm's output to bf16 from their own fp32 arithmetic,
// so the two bf16 runs differ by bf16 noise; the fused one must be no further from fp32 than
// the unfused one is, give or take a quarter (the noise of bf16 itself).
TEST(FusedAddNormStackGpu, AsCloseToFp32AsTheUnfusedStack) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA GPU";
  torch::manual_seed(7);
  TransformerStack stack(BlockOptions(768, 12), 2);
  stack->to(torch::kCUDA);
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  const torch::Tensor x = torch::randn({8, 197, 768}, cuda), w = torch::randn({8, 197, 768}, cuda);
  const StackResult ref = RunViTStack(stack, x, w, /*fuse=*/false, /*bf16=*/false);
  const StackResult plain = RunViTStack(stack, x, w, /*fuse=*/false, /*bf16=*/true);
  EXPECT_FALSE(plain.fused);
  const bool vectorized = VectorizedAddNorm();
  for (bool vec : {false, true}) {  // the kernels' scalar forms, then their vectorized ones
    SCOPED_TRACE(vec ? "vectorized kernels" : "scalar kernels");
    SetVectorizedAddNorm(vec);
    const StackResult fused = RunViTStack(stack, x, w, /*fuse=*/true, /*bf16=*/true);
    ASSERT_TRUE(fused.fused) << "the fused stack did not take AddLayerNorm";
    const double out_plain = RelNormError(plain.out, ref.out);
    const double out_fused = RelNormError(fused.out, ref.out);
    EXPECT_LE(out_fused, 1.25 * out_plain + 1e-4) << "plain " << out_plain;
    ASSERT_EQ(fused.grads.size(), ref.grads.size());
    for (size_t i = 0; i < ref.grads.size(); ++i) {
      const double gp = RelNormError(plain.grads[i], ref.grads[i]);
      const double gf = RelNormError(fused.grads[i], ref.grads[i]);
      EXPECT_LE(gf, 1.25 * gp + 1e-4) << "gradient " << i << ": plain " << gp;
      EXPECT_LT(gf, 5e-2) << "gradient " << i;  // bf16 training's own error is ~1e-2
    }
  }
  SetVectorizedAddNorm(vectorized);
}

}  // namespace
}  // namespace mosaic::models
