// Shared blocks against hand-written references: SDPA attention vs softmax(QK^T/sqrt(d))V
// (bidirectional, causal, grouped-query, padded keys), fused bias+GELU vs unfused, rotary
// embedding properties, RMSNorm, and block gradients against finite differences.
#include "models/blocks.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/autograd_graph.h"
#include "test_util.h"

namespace mosaic::models {
namespace {

using testing::ExpectGradientsMatchFiniteDifferences;
using testing::Probe;

// softmax(Q K^T / sqrt(d) + mask) V with explicit loops over heads; kv heads are shared by
// groups of heads/kv_heads consecutive query heads.
torch::Tensor ReferenceAttention(SelfAttentionImpl& attn, const torch::Tensor& x,
                                 const torch::Tensor& key_mask) {
  const auto& o = attn.options();
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2), H = o.heads(), KV = o.kv_heads();
  const int64_t hd = C / H;
  torch::Tensor qkv = torch::matmul(x, attn.qkv->weight.t());
  if (attn.qkv->bias.defined()) qkv = qkv + attn.qkv->bias;
  torch::Tensor out = torch::zeros({B, T, C}, x.options());
  for (int64_t h = 0; h < H; ++h) {
    const int64_t g = h / (H / KV);
    torch::Tensor q = qkv.narrow(2, h * hd, hd);                  // (B, T, hd)
    torch::Tensor k = qkv.narrow(2, H * hd + g * hd, hd);         // (B, T, hd)
    torch::Tensor v = qkv.narrow(2, (H + KV) * hd + g * hd, hd);  // (B, T, hd)
    if (o.rope_theta() > 0) {
      auto [cos, sin] = RotaryCosSin(T, hd, o.rope_theta(), x.device());
      q = ApplyRotary(q.unsqueeze(1), cos, sin).squeeze(1);
      k = ApplyRotary(k.unsqueeze(1), cos, sin).squeeze(1);
    }
    torch::Tensor s = torch::bmm(q, k.transpose(1, 2)) / std::sqrt(double(hd));  // (B, T, T)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < T; ++i)
        for (int64_t j = 0; j < T; ++j) {
          bool keep = !(o.causal() && j > i);
          if (key_mask.defined() && !key_mask[b][j].item<bool>()) keep = false;
          if (!keep) s[b][i][j] = -INFINITY;
        }
    out.narrow(2, h * hd, hd).copy_(torch::bmm(torch::softmax(s, -1), v));
  }
  torch::Tensor y = torch::matmul(out, attn.out->weight.t());
  return attn.out->bias.defined() ? y + attn.out->bias : y;
}

struct AttentionCase {
  const char* name;
  bool causal;
  int64_t kv_heads;
  double rope;
  bool mask;
};

class AttentionTest : public ::testing::TestWithParam<AttentionCase> {};

TEST_P(AttentionTest, MatchesHandWrittenSoftmaxAttention) {
  const AttentionCase c = GetParam();
  torch::manual_seed(0);
  SelfAttention attn(
      AttentionOptions(16, 4).kv_heads(c.kv_heads).causal(c.causal).rope_theta(c.rope));
  attn->to(torch::kDouble);
  torch::Tensor x = torch::randn({2, 5, 16}, torch::kDouble);
  torch::Tensor mask;
  if (c.mask) mask = torch::tensor({1, 1, 1, 0, 0, 1, 1, 1, 1, 1}, torch::kBool).view({2, 5});
  torch::Tensor y = attn(x, mask);
  torch::Tensor ref = ReferenceAttention(*attn, x, mask);
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{2, 5, 16}));
  EXPECT_TRUE(torch::allclose(y, ref, 1e-10, 1e-10)) << (y - ref).abs().max();
  // A deliberately wrong reference (no 1/sqrt(d)) must not match: the check can fail.
  EXPECT_FALSE(torch::allclose(y, ReferenceAttention(*attn, x * 2, mask), 1e-6, 1e-6));
}

INSTANTIATE_TEST_SUITE_P(Cases, AttentionTest,
                         ::testing::Values(AttentionCase{"bidirectional", false, 0, 0, false},
                                           AttentionCase{"causal", true, 0, 0, false},
                                           AttentionCase{"padded_keys", false, 0, 0, true},
                                           AttentionCase{"causal_padded", true, 0, 0, true},
                                           AttentionCase{"gqa_rope_causal", true, 2, 10000, false},
                                           AttentionCase{"mqa", true, 1, 500000, false}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST_P(AttentionTest, GradientsMatchHandWrittenSoftmaxAttention) {
  const AttentionCase c = GetParam();
  torch::manual_seed(2);
  SelfAttention attn(
      AttentionOptions(16, 4).kv_heads(c.kv_heads).causal(c.causal).rope_theta(c.rope));
  attn->to(torch::kDouble);
  torch::Tensor mask;
  if (c.mask) mask = torch::tensor({1, 1, 1, 0, 0, 1, 1, 1, 1, 1}, torch::kBool).view({2, 5});
  torch::Tensor x = torch::randn({2, 5, 16}, torch::kDouble).requires_grad_();
  torch::Tensor w = torch::randn({2, 5, 16}, torch::kDouble);  // a loss weighting every output
  std::vector<torch::Tensor> wrt = attn->parameters();
  wrt.push_back(x);
  const auto got = torch::autograd::grad({(attn(x, mask) * w).sum()}, wrt);
  const auto want = torch::autograd::grad({(ReferenceAttention(*attn, x, mask) * w).sum()}, wrt);
  for (size_t i = 0; i < wrt.size(); ++i)
    EXPECT_TRUE(torch::allclose(got[i], want[i], 1e-10, 1e-10))
        << "gradient " << i << ": " << (got[i] - want[i]).abs().max();
}

using mosaic::testing::GraphNodeNames;

TEST(AttentionTest, QkvGradientIsOneCatNotThreeZeroFilledSlices) {
  // Note [one split for q, k, v]: the backward of q/k/v must not zero-fill the qkv output.
  for (double rope : {0.0, 10000.0}) {
    SelfAttention attn(AttentionOptions(16, 4).kv_heads(2).rope_theta(rope));
    const auto names = GraphNodeNames(attn(torch::randn({2, 5, 16}, torch::requires_grad())));
    EXPECT_EQ(names.count("SliceBackward0"), 0u) << "rope " << rope;
    EXPECT_EQ(names.count("SplitWithSizesBackward0"), 1u) << "rope " << rope;
    EXPECT_EQ(names.count("SplitBackward0"), rope > 0 ? 2u : 0u) << "rope " << rope;  // q, k
  }
}

TEST(AttentionTest, CausalOutputIgnoresTheFuture) {
  torch::manual_seed(1);
  SelfAttention attn(AttentionOptions(8, 2).causal(true));
  torch::Tensor x = torch::randn({1, 6, 8});
  torch::Tensor x2 = x.clone();
  x2.narrow(1, 4, 2).normal_();  // change positions 4 and 5
  torch::Tensor y = attn(x), y2 = attn(x2);
  EXPECT_TRUE(torch::allclose(y.narrow(1, 0, 4), y2.narrow(1, 0, 4)));
  EXPECT_FALSE(torch::allclose(y.narrow(1, 4, 2), y2.narrow(1, 4, 2)));
}

TEST(LinearGeluTest, AtenFusedOpOnCpuIsAddmmPlusExactGelu) {
  // Documents why Mosaic does not call _addmm_activation on the CPU (Note [bias+GELU epilogue]).
  torch::manual_seed(2);
  torch::Tensor x = torch::randn({7, 5}, torch::kDouble), w = torch::randn({3, 5}, torch::kDouble),
                b = torch::randn({3}, torch::kDouble);
  torch::Tensor fused = at::_addmm_activation(b, x, w.t(), 1, 1, /*use_gelu=*/true);
  EXPECT_TRUE(torch::allclose(fused, torch::gelu(torch::addmm(b, x, w.t())), 1e-12, 1e-12));
  EXPECT_FALSE(torch::allclose(fused, torch::gelu(torch::addmm(b, x, w.t()), "tanh"), 1e-6, 1e-6));
}

TEST(LinearGeluTest, AllEpiloguesComputeTheSameValuesAndGradients) {
  torch::manual_seed(3);
  torch::Tensor x0 = torch::randn({2, 4, 6}, torch::kDouble);
  torch::Tensor w0 = torch::randn({5, 6}, torch::kDouble), b0 = torch::randn({5}, torch::kDouble);
  // Reference: written out, gelu_tanh(z) = z/2 (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3))).
  auto reference = [](const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
    torch::Tensor z = torch::matmul(x, w.t()) + b;
    return 0.5 * z * (1 + torch::tanh(std::sqrt(2.0 / M_PI) * (z + 0.044715 * z.pow(3))));
  };
  std::vector<torch::Tensor> ref_grads;
  torch::Tensor ref_y;
  {
    auto x = x0.clone().requires_grad_(), w = w0.clone().requires_grad_(),
         b = b0.clone().requires_grad_();
    ref_y = reference(x, w, b);
    Probe(ref_y).backward();
    ref_grads = {x.grad(), w.grad(), b.grad()};
  }
  for (GeluEpilogue e : {GeluEpilogue::kAuto, GeluEpilogue::kFused, GeluEpilogue::kUnfused}) {
    auto x = x0.clone().requires_grad_(), w = w0.clone().requires_grad_(),
         b = b0.clone().requires_grad_();
    torch::Tensor y = LinearGelu(x, w, b, e);
    ASSERT_EQ(y.sizes(), ref_y.sizes());
    EXPECT_TRUE(torch::allclose(y, ref_y, 1e-12, 1e-12)) << int(e);
    Probe(y).backward();
    EXPECT_TRUE(torch::allclose(x.grad(), ref_grads[0], 1e-10, 1e-10)) << int(e);
    EXPECT_TRUE(torch::allclose(w.grad(), ref_grads[1], 1e-10, 1e-10)) << int(e);
    EXPECT_TRUE(torch::allclose(b.grad(), ref_grads[2], 1e-10, 1e-10)) << int(e);
    torch::NoGradGuard no_grad;  // the no-grad (fused) path too
    EXPECT_TRUE(torch::allclose(LinearGelu(x0, w0, b0, e), ref_y, 1e-12, 1e-12)) << int(e);
  }
}

TEST(RotaryTest, Properties) {
  const int64_t T = 9, hd = 8;
  auto [cos, sin] = RotaryCosSin(T, hd, 10000.0, torch::kCPU);
  ASSERT_EQ(cos.sizes(), (std::vector<int64_t>{T, hd}));
  torch::manual_seed(4);
  torch::Tensor q = torch::randn({1, 1, T, hd}), k = torch::randn({1, 1, T, hd});
  torch::Tensor rq = ApplyRotary(q, cos, sin), rk = ApplyRotary(k, cos, sin);
  // Position 0 is not rotated.
  EXPECT_TRUE(torch::allclose(rq.select(2, 0), q.select(2, 0)));
  // A rotation keeps norms.
  EXPECT_TRUE(torch::allclose(rq.norm(2, -1), q.norm(2, -1), 1e-5, 1e-5));
  // <R_m q, R_n k> depends on m - n only: the same vectors at (m, n) = (5, 2) and (3, 0).
  torch::Tensor qv = torch::randn({hd}), kv = torch::randn({hd});
  torch::Tensor Q = qv.expand({1, 1, T, hd}).contiguous(),
                K = kv.expand({1, 1, T, hd}).contiguous();
  torch::Tensor RQ = ApplyRotary(Q, cos, sin)[0][0], RK = ApplyRotary(K, cos, sin)[0][0];
  EXPECT_NEAR(RQ[5].dot(RK[2]).item<double>(), RQ[3].dot(RK[0]).item<double>(), 1e-4);
  EXPECT_GT(std::abs(RQ[5].dot(RK[2]).item<double>() - RQ[5].dot(RK[4]).item<double>()), 1e-4);
  // The pair (x_i, x_{i+hd/2}) turns by angle pos * theta^(-2i/hd): check i = 1 at position 3.
  const double angle = 3 * std::pow(10000.0, -2.0 / hd);
  const double a = q[0][0][3][1].item<double>(), b = q[0][0][3][1 + hd / 2].item<double>();
  EXPECT_NEAR(rq[0][0][3][1].item<double>(), a * std::cos(angle) - b * std::sin(angle), 1e-5);
  EXPECT_NEAR(rq[0][0][3][1 + hd / 2].item<double>(), b * std::cos(angle) + a * std::sin(angle),
              1e-5);
}

TEST(SinusoidalTest, Values) {
  torch::Tensor p = SinusoidalPositions(4, 6, torch::kCPU);  // half = 3, timescales 10000^(-i/2)
  ASSERT_EQ(p.sizes(), (std::vector<int64_t>{4, 6}));
  EXPECT_NEAR(p[2][1].item<double>(), std::sin(2 * std::pow(10000.0, -0.5)), 1e-6);
  EXPECT_NEAR(p[2][4].item<double>(), std::cos(2 * std::pow(10000.0, -0.5)), 1e-6);
  EXPECT_NEAR(p[0][3].item<double>(), 1.0, 1e-6);
}

TEST(RmsNormTest, MatchesFormula) {
  RmsNorm norm(4);
  {
    torch::NoGradGuard g;
    norm->weight.copy_(torch::tensor({1.0, 2.0, 0.5, -1.0}));
  }
  torch::Tensor x = torch::tensor({{1.0, -2.0, 3.0, 0.5}});
  const double rms = std::sqrt((1 + 4 + 9 + 0.25) / 4 + 1e-6);
  torch::Tensor want = torch::tensor({{1.0 / rms, -4.0 / rms, 1.5 / rms, -0.5 / rms}});
  EXPECT_TRUE(torch::allclose(norm(x), want, 1e-6, 1e-6));
}

TEST(SwiGluTest, MatchesFormula) {
  torch::manual_seed(5);
  SwiGluMlp mlp(4, 6);
  torch::Tensor x = torch::randn({3, 4});
  torch::Tensor gate = torch::matmul(x, mlp->gate_up->weight.narrow(0, 0, 6).t());
  torch::Tensor up = torch::matmul(x, mlp->gate_up->weight.narrow(0, 6, 6).t());
  torch::Tensor want = torch::matmul(gate * torch::sigmoid(gate) * up, mlp->down->weight.t());
  EXPECT_TRUE(torch::allclose(mlp(x), want, 1e-5, 1e-5));
}

TEST(BlockGradientTest, LayerNormGeluBlockMatchesFiniteDifferences) {
  torch::manual_seed(6);
  TransformerBlock block(BlockOptions(8, 2).mlp_dim(12).causal(true));
  block->to(torch::kDouble);
  torch::Tensor x = torch::randn({2, 4, 8}, torch::kDouble);
  torch::Tensor mask = torch::tensor({1, 1, 1, 0, 1, 1, 1, 1}, torch::kBool).view({2, 4});
  ExpectGradientsMatchFiniteDifferences(*block, [&] { return Probe(block(x, mask)); });
}

TEST(BlockGradientTest, LlamaBlockMatchesFiniteDifferences) {
  torch::manual_seed(7);
  TransformerBlock block(BlockOptions(8, 4)
                             .kv_heads(2)
                             .mlp_dim(12)
                             .causal(true)
                             .rope_theta(10000)
                             .norm(NormKind::kRmsNorm)
                             .mlp(MlpKind::kSwiGlu)
                             .bias(false));
  block->to(torch::kDouble);
  torch::Tensor x = torch::randn({2, 5, 8}, torch::kDouble);
  ExpectGradientsMatchFiniteDifferences(*block, [&] { return Probe(block(x)); });
}

TEST(BlockGradientTest, FusedEpilogueBlockMatchesFiniteDifferences) {
  torch::manual_seed(8);
  TransformerBlock block(BlockOptions(8, 2).mlp_dim(12).epilogue(GeluEpilogue::kFused));
  block->to(torch::kDouble);
  torch::Tensor x = torch::randn({2, 3, 8}, torch::kDouble);
  ExpectGradientsMatchFiniteDifferences(*block, [&] { return Probe(block(x)); });
}

}  // namespace
}  // namespace mosaic::models
