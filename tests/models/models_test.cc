// Every architecture: output shapes for each pooling, parameter counts (by hand and against
// core/cost.h), gradients against finite differences in double, and the semantics of masks,
// causality and pooling (padding and future tokens must not leak).
#include <gtest/gtest.h>

#include "core/cost.h"
#include "models/audio.h"
#include "models/llm.h"
#include "models/projector.h"
#include "models/switch_scope.h"
#include "models/text.h"
#include "models/vit.h"
#include "test_util.h"

namespace mosaic::models {
namespace {

using namespace mosaic::models::testing;  // NOLINT
using Shape = std::vector<int64_t>;

// Parameters counted by core/cost.h for one module (parameters do not depend on the inputs).
double CostParameters(const ModuleSpec& m) {
  ModelSpec spec;
  spec.name = "one";
  spec.batch_size = 1;
  spec.modules = {m};
  return EstimateModuleCost(spec, 0, 1).parameters;
}

int64_t Count(torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters())
    n += p.numel();
  return n;
}

TEST(VitTest, ShapesForEachPooling) {
  torch::Tensor images = torch::randn({3, 3, 8, 8});
  EXPECT_EQ(VisionTransformer(TinyVit(Pooling::kCls, 6))(images).sizes(), Shape({3, 6}));
  EXPECT_EQ(VisionTransformer(TinyVit(Pooling::kMean))(images).sizes(), Shape({3, 8}));
  EXPECT_EQ(VisionTransformer(TinyVit(Pooling::kNone))(images).sizes(), Shape({3, 4, 8}));
  EXPECT_EQ(VisionTransformer(TinyVit(Pooling::kNone, 5))(images).sizes(), Shape({3, 4, 5}));
  ModuleSpec gray = TinyVit(Pooling::kCls);
  gray.channels = 1;
  EXPECT_EQ(VisionTransformer(gray)(torch::randn({2, 1, 8, 8})).sizes(), Shape({2, 8}));
  EXPECT_THROW(VisionTransformer(TinyVit(Pooling::kCls))(torch::randn({2, 3, 12, 12})), c10::Error);
}

TEST(VitTest, ParameterCount) {
  ModuleSpec m = TinyVit(Pooling::kCls, 6);
  VisionTransformer vit(m);
  // blocks 2 x (qkv 216 + out 72 + fc1 144 + fc2 136 + 2 LN 32) + conv 392 + class token 8
  // + positions 5 x 8 + ln_pre, ln_post 32 + proj 48.
  EXPECT_EQ(Count(*vit), 1720);
  EXPECT_EQ(double(Count(*vit)), CostParameters(m));
  EXPECT_FALSE(VisionTransformer(TinyVit(Pooling::kMean))->class_token.defined());
}

// LLaVA's options: feature_layer k is the output of the first k blocks without ln_post, -1
// the last block's (so ln_post of it is the default output), and drop_cls keeps the patches.
TEST(VitTest, FeatureLayerAndDropClass) {
  torch::manual_seed(3);
  ModuleSpec m = TinyVit(Pooling::kNone);
  m.drop_cls = true;
  VisionTransformer full(m);
  EXPECT_TRUE(full->class_token.defined());
  EXPECT_EQ(double(Count(*full)), CostParameters(m));
  torch::Tensor images = torch::randn({2, 3, 8, 8});
  torch::Tensor out = full(images);
  EXPECT_EQ(out.sizes(), Shape({2, 4, 8}));  // 4 patches, the class token dropped
  // The same weights read at -1 (the last block), 1 (= -2 at depth 2: the first block).
  for (int layer : {-1, 1, -2}) {
    ModuleSpec inner = m;
    inner.feature_layer = layer;
    VisionTransformer vit(inner);
    torch::NoGradGuard no_grad;
    for (auto& p : vit->named_parameters())
      p.value().copy_(full->named_parameters()[p.key()]);
    torch::Tensor x = torch::cat(
        {vit->class_token.expand({2, 1, 8}), full->patch_embed(images).flatten(2).transpose(1, 2)},
        1);
    x = full->ln_pre(x + full->positions);
    const int blocks = layer == -1 ? 2 : 1;
    for (int i = 0; i < blocks; ++i)
      x = full->blocks->layers[i]->as<TransformerBlockImpl>()->forward(x);
    torch::Tensor got = vit(images);
    EXPECT_TRUE(torch::allclose(got, x.narrow(1, 1, 4), 1e-6, 1e-6)) << layer;
    if (layer == -1) {
      EXPECT_TRUE(torch::allclose(full->ln_post(got), out, 1e-6, 1e-6));
    }
  }
  ModuleSpec bad = m;
  bad.feature_layer = 3;
  EXPECT_THROW(VisionTransformer{bad}, c10::Error);
  // Only the blocks that run are counted as compute.
  ModuleSpec half = m;
  half.feature_layer = 1;
  ModelSpec a, b;
  a.batch_size = b.batch_size = 1;
  a.modules = {m};
  b.modules = {half};
  EXPECT_LT(EstimateModuleCost(b, 0, 1).forward_flops.value(),
            EstimateModuleCost(a, 0, 1).forward_flops.value());
  EXPECT_EQ(EstimateModuleCost(b, 0, 1).parameters, EstimateModuleCost(a, 0, 1).parameters);
}

TEST(VitTest, GradientsMatchFiniteDifferences) {
  torch::manual_seed(10);
  VisionTransformer vit(TinyVit(Pooling::kCls, 6));
  vit->to(torch::kDouble);
  torch::Tensor images = torch::randn({2, 3, 8, 8}, torch::kDouble);
  ExpectGradientsMatchFiniteDifferences(*vit, [&] { return Probe(vit(images)); });
}

// Note [patch embedding as one GEMM]: with SetPatchGemm(true) the same parameters give the
// conv's output and gradients (in double, to rounding), with and without a patch bias, with
// three channels and one; the switch is restored after.
TEST(VitTest, PatchGemmEqualsTheConv) {
  for (bool bias : {true, false}) {
    for (int64_t channels : {3, 1}) {
      torch::manual_seed(11);
      ModuleSpec m = TinyVit(Pooling::kCls, 6);
      m.patch_bias = bias;
      m.channels = channels;
      VisionTransformer vit(m);
      vit->to(torch::kDouble);
      const int64_t side = m.image_size;
      const torch::Tensor images = torch::randn({2, channels, side, side}, torch::kDouble);
      auto run = [&](bool gemm) {
        const SwitchScope<PatchGemm, SetPatchGemm> scope(gemm);
        vit->zero_grad();
        const torch::Tensor patches = vit->EmbedPatches(images);  // (B, N, C)
        // The path taken: the conv's output is a transposed view, the GEMM's a fresh tensor.
        EXPECT_EQ(patches.is_contiguous(), gemm);
        const torch::Tensor y = vit(images);
        (y * y).sum().backward();
        std::vector<torch::Tensor> out{patches.detach().clone(), y.detach().clone(),
                                       vit->patch_embed->weight.grad().clone()};
        if (bias) out.push_back(vit->patch_embed->bias.grad().clone());
        return out;
      };
      const auto conv = run(false), gemm = run(true);
      ASSERT_EQ(conv[0].sizes(), Shape({2, (side / m.patch_size) * (side / m.patch_size), 8}));
      for (size_t i = 0; i < conv.size(); ++i) {
        EXPECT_TRUE(torch::allclose(gemm[i], conv[i], 1e-10, 1e-12))
            << "output " << i << ", bias " << bias << ", channels " << channels << ": "
            << (gemm[i] - conv[i]).abs().max().item<double>();
      }
      // Nonzero patches: a wrong pixel order inside a patch would not compare equal.
      EXPECT_GT(conv[0].abs().max().item<double>(), 1e-3);
    }
  }
  const SwitchScope<PatchGemm, SetPatchGemm> gemm(true);
  VisionTransformer vit(TinyVit(Pooling::kCls));
  try {
    vit->EmbedPatches(torch::randn({2, 3, 10, 8}));
    ADD_FAILURE() << "10 rows do not split into patches of 4";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("multiples of the patch 4"), std::string::npos)
        << e.what();
  }
}

TEST(TextTest, ShapesForEachPooling) {
  torch::Tensor tokens = torch::randint(0, 11, {3, 6}, torch::kLong);
  EXPECT_EQ(TextTransformer(TinyText(Pooling::kCls, true, 5))(tokens).sizes(), Shape({3, 5}));
  EXPECT_EQ(TextTransformer(TinyText(Pooling::kMean, false))(tokens).sizes(), Shape({3, 8}));
  EXPECT_EQ(TextTransformer(TinyText(Pooling::kNone, true))(tokens).sizes(), Shape({3, 6, 8}));
  // Shorter sequences are fine; longer than seq_len are not.
  EXPECT_EQ(TextTransformer(TinyText(Pooling::kCls, true))(tokens.narrow(1, 0, 4)).sizes(),
            Shape({3, 8}));
  EXPECT_THROW(TextTransformer(TinyText(Pooling::kCls, true))(torch::zeros({1, 7}, torch::kLong)),
               c10::Error);
}

TEST(TextTest, ParameterCountMatchesCost) {
  ModuleSpec m = TinyText(Pooling::kCls, true, 5);
  TextTransformer text(m);
  EXPECT_EQ(double(Count(*text)), CostParameters(m));
}

// The pooled feature of a padded row equals that of the same text without padding.
void ExpectPaddingIgnored(const ModuleSpec& spec) {
  torch::manual_seed(11);
  TextTransformer text(spec);
  torch::Tensor tokens = torch::randint(1, 11, {2, 6}, torch::kLong);
  torch::Tensor mask = torch::ones({2, 6}, torch::kBool);
  mask[0].narrow(0, 4, 2).fill_(false);  // row 0: 4 real tokens
  torch::Tensor padded = text(tokens, mask);
  torch::Tensor alone = text(tokens.narrow(0, 0, 1).narrow(1, 0, 4));
  EXPECT_TRUE(torch::allclose(padded[0], alone[0], 1e-5, 1e-5)) << ToString(spec.pool);
  // Changing the padding changes nothing.
  torch::Tensor other = tokens.clone();
  other[0][5] = 3;
  other[0][4] = 7;
  EXPECT_TRUE(torch::allclose(text(other, mask), padded, 1e-6, 1e-6));
}

TEST(TextTest, PaddingIsIgnored) {
  ExpectPaddingIgnored(TinyText(Pooling::kCls, true, 5));
  ExpectPaddingIgnored(TinyText(Pooling::kMean, false));
  ExpectPaddingIgnored(TinyText(Pooling::kCls, false));
}

TEST(TextTest, CausalTowerPoolsAtEndOfText) {
  torch::manual_seed(12);
  TextTransformer text(TinyText(Pooling::kNone, true));
  TextTransformer pooled(TinyText(Pooling::kCls, true));
  torch::NoGradGuard g;
  for (size_t i = 0; i < text->parameters().size(); ++i)
    pooled->parameters()[i].copy_(text->parameters()[i]);
  torch::Tensor tokens = torch::randint(0, 11, {2, 6}, torch::kLong);
  EXPECT_TRUE(torch::allclose(pooled(tokens), text(tokens).select(1, 5), 1e-6, 1e-6));
}

TEST(TextTest, GradientsMatchFiniteDifferences) {
  torch::manual_seed(13);
  for (bool causal : {true, false}) {
    TextTransformer text(TinyText(causal ? Pooling::kCls : Pooling::kMean, causal, 5));
    text->to(torch::kDouble);
    torch::Tensor tokens = torch::randint(0, 11, {2, 6}, torch::kLong);
    torch::Tensor mask = torch::ones({2, 6}, torch::kBool);
    mask[1][5] = false;
    ExpectGradientsMatchFiniteDifferences(*text, [&] { return Probe(text(tokens, mask)); });
  }
}

TEST(LlmTest, ShapesAndParameterCount) {
  ModuleSpec m = TinyLlm();
  CausalLm llm(m);
  torch::Tensor tokens = torch::randint(0, 13, {2, 6}, torch::kLong);
  EXPECT_EQ(llm(torch::randn({2, 3, 16}), tokens).sizes(), Shape({2, 6, 13}));
  EXPECT_EQ(llm(torch::Tensor(), tokens).sizes(), Shape({2, 6, 13}));
  EXPECT_THROW(llm(torch::randn({2, 3, 8}), tokens), c10::Error);
  // blocks 2 x (qkv 16 x 32 + out 256 + gate_up 16 x 48 + down 24 x 16 + 2 RMSNorm 32)
  // + embedding 208 + head 208 + final RMSNorm 16.
  EXPECT_EQ(Count(*llm), 2 * (512 + 256 + 768 + 384 + 32) + 208 + 208 + 16);
  EXPECT_EQ(double(Count(*llm)), CostParameters(m));
  EXPECT_EQ(DefaultSwiGluHidden(2048), 5632);
}

TEST(LlmTest, CausalAndConditionedOnThePrefix) {
  torch::manual_seed(14);
  CausalLm llm(TinyLlm());
  torch::Tensor prefix = torch::randn({1, 3, 16});
  torch::Tensor tokens = torch::randint(0, 13, {1, 6}, torch::kLong);
  torch::Tensor changed = tokens.clone();
  changed[0][4] = (tokens[0][4].item<int64_t>() + 1) % 13;
  torch::Tensor a = llm(prefix, tokens), b = llm(prefix, changed);
  EXPECT_TRUE(torch::allclose(a.narrow(1, 0, 4), b.narrow(1, 0, 4), 1e-6, 1e-6));
  EXPECT_FALSE(torch::allclose(a.narrow(1, 4, 2), b.narrow(1, 4, 2), 1e-6, 1e-6));
  torch::Tensor c = llm(prefix + 1, tokens);
  EXPECT_FALSE(torch::allclose(a.narrow(1, 0, 1), c.narrow(1, 0, 1), 1e-6, 1e-6));
}

TEST(LlmTest, GradientsMatchFiniteDifferences) {
  torch::manual_seed(15);
  CausalLm llm(TinyLlm());
  llm->to(torch::kDouble);
  torch::Tensor prefix = torch::randn({2, 3, 16}, torch::kDouble).requires_grad_();
  torch::Tensor tokens = torch::randint(0, 13, {2, 6}, torch::kLong);
  ExpectGradientsMatchFiniteDifferences(*llm, [&] { return Probe(llm(prefix, tokens)); });
  // The prefix (the projector's output) gets its gradient too.
  ASSERT_TRUE(prefix.grad().defined());
  EXPECT_GT(prefix.grad().abs().sum().item<double>(), 0);
}

TEST(ProjectorTest, ShapesCountsAndGradients) {
  ModuleSpec mlp2 = TinyProjector(ProjectorKind::kMlp2, 8, 12, 16);
  ModuleSpec linear = TinyProjector(ProjectorKind::kLinear, 8, 0, 16);
  Projector p2(mlp2), p1(linear);
  EXPECT_EQ(p2(torch::randn({2, 4, 8})).sizes(), Shape({2, 4, 16}));
  EXPECT_EQ(p1(torch::randn({2, 8})).sizes(), Shape({2, 16}));
  EXPECT_EQ(double(Count(*p2)), CostParameters(mlp2));
  EXPECT_EQ(double(Count(*p1)), CostParameters(linear));
  // mlp2 = fc2(gelu_tanh(fc1(x))), by hand.
  torch::Tensor x = torch::randn({3, 8});
  torch::Tensor h = torch::gelu(torch::matmul(x, p2->fc1->weight.t()) + p2->fc1->bias, "tanh");
  EXPECT_TRUE(
      torch::allclose(p2(x), torch::matmul(h, p2->fc2->weight.t()) + p2->fc2->bias, 1e-5, 1e-5));
  p2->to(torch::kDouble);
  torch::Tensor xd = torch::randn({2, 4, 8}, torch::kDouble);
  ExpectGradientsMatchFiniteDifferences(*p2, [&] { return Probe(p2(xd)); });
}

TEST(AudioTest, ShapesCountAndGradients) {
  ModuleSpec m = TinyAudio(Pooling::kMean, 6);
  AudioEncoder audio(m);
  torch::Tensor mels = torch::randn({2, 5, 10});
  EXPECT_EQ(audio(mels).sizes(), Shape({2, 6}));
  EXPECT_EQ(AudioEncoder(TinyAudio(Pooling::kNone))(mels).sizes(), Shape({2, 5, 8}));
  EXPECT_EQ(audio(mels.narrow(2, 0, 6)).sizes(), Shape({2, 6}));
  EXPECT_THROW(audio(torch::randn({2, 4, 10})), c10::Error);
  EXPECT_EQ(double(Count(*audio)), CostParameters(m));
  // Positions start as the sinusoidal table.
  EXPECT_TRUE(torch::allclose(audio->positions[0], SinusoidalPositions(5, 8, torch::kCPU)));
  torch::manual_seed(16);
  audio->to(torch::kDouble);
  torch::Tensor md = torch::randn({2, 5, 10}, torch::kDouble);
  ExpectGradientsMatchFiniteDifferences(*audio, [&] { return Probe(audio(md)); });
}

TEST(AudioTest, FrontEndIsTwoConvsWithGeluSecondStrideTwo) {
  torch::manual_seed(17);
  ModuleSpec m = TinyAudio(Pooling::kNone);
  m.depth = 0;
  AudioEncoder audio(m);
  torch::Tensor mels = torch::randn({1, 5, 10});
  torch::Tensor x =
      torch::gelu(torch::conv1d(mels, audio->conv1->weight, audio->conv1->bias, 1, 1), "tanh");
  x = torch::gelu(torch::conv1d(x, audio->conv2->weight, audio->conv2->bias, 2, 1), "tanh");
  x = x.transpose(1, 2) + audio->positions;  // (1, 5, 8)
  x = torch::layer_norm(x, {8}, audio->ln_post->weight, audio->ln_post->bias);
  EXPECT_TRUE(torch::allclose(audio(mels), x, 1e-5, 1e-5));
}

// Whisper's options (src/interop): exact GELU on the convs and the MLP, the k rows of the qkv
// bias held at zero (exactly zero gradient, so AdamW never moves them), frozen positions, and the
// final LayerNorm before the mean.
TEST(AudioTest, WhisperOptions) {
  torch::manual_seed(18);
  ModuleSpec m = TinyAudio(Pooling::kMean);
  m.activation = Activation::kGelu;
  m.key_bias = false;
  m.freeze_positions = true;
  m.norm_before_pool = true;
  AudioEncoder audio(m);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : audio->named_parameters(/*recurse=*/true))
      if (p.key().find("bias") != std::string::npos) p.value().normal_();
  }
  EXPECT_FALSE(audio->positions.requires_grad());
  torch::Tensor mels = torch::randn({2, 5, 10});
  // By hand: exact GELU, LayerNorm on every position, then the mean.
  ModuleSpec none = m;
  none.pool = Pooling::kNone;
  none.depth = 0;
  AudioEncoder front(none);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : front->named_parameters(/*recurse=*/true))
      p.value().copy_(audio->named_parameters(/*recurse=*/true)[p.key()]);
  }
  torch::Tensor x =
      torch::gelu(torch::conv1d(mels, front->conv1->weight, front->conv1->bias, 1, 1));
  x = torch::gelu(torch::conv1d(x, front->conv2->weight, front->conv2->bias, 2, 1));
  x = torch::layer_norm(x.transpose(1, 2) + front->positions, {8}, front->ln_post->weight,
                        front->ln_post->bias);
  EXPECT_TRUE(torch::allclose(front(mels), x, 1e-5, 1e-5));
  ModuleSpec after = none;
  after.pool = Pooling::kMean;
  AudioEncoder pooled(after);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : pooled->named_parameters(/*recurse=*/true))
      p.value().copy_(front->named_parameters(/*recurse=*/true)[p.key()]);
  }
  EXPECT_TRUE(torch::allclose(pooled(mels), x.mean(1), 1e-5, 1e-5));
  // The k rows of the bias get an exactly-zero gradient (the forward uses zeros in their place).
  Probe(audio(mels)).backward();
  const torch::Tensor& qkv_bias =
      audio->blocks->layers[0]->as<TransformerBlockImpl>()->attn->qkv->bias;
  EXPECT_EQ(qkv_bias.grad().narrow(0, 8, 8).count_nonzero().item<int64_t>(), 0);
  EXPECT_GT(qkv_bias.grad().narrow(0, 0, 8).abs().sum().item<double>(), 0);
  EXPECT_FALSE(audio->positions.grad().defined());
  torch::Tensor before = audio(mels).detach();
  {
    torch::NoGradGuard no_grad;
    qkv_bias.narrow(0, 8, 8).add_(1.0);  // whatever they hold, the forward uses zeros
  }
  EXPECT_TRUE(torch::equal(audio(mels).detach(), before));
  // Mosaic's default order differs: the mean, then the LayerNorm.
  ModuleSpec mosaic = m;
  mosaic.norm_before_pool = false;
  AudioEncoder other(mosaic);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : other->named_parameters(/*recurse=*/true))
      p.value().copy_(audio->named_parameters(/*recurse=*/true)[p.key()]);
  }
  EXPECT_FALSE(torch::allclose(other(mels), before, 1e-3, 1e-3));
}

}  // namespace
}  // namespace mosaic::models
