// AdamW (one step against a hand computation), weight-decay groups, the warmup + cosine
// schedule, and dynamic loss scaling.
#include <gtest/gtest.h>

#include <cmath>

#include "train/optimizer.h"

namespace mosaic::train {
namespace {

TEST(WeightDecay, MatricesOnlyAndNeverEmbeddings) {
  EXPECT_TRUE(WantsWeightDecay("vision.blocks.0.attn.qkv.weight", torch::zeros({6, 2})));
  EXPECT_TRUE(WantsWeightDecay("llm.lm_head.weight", torch::zeros({8, 2})));
  EXPECT_FALSE(WantsWeightDecay("vision.blocks.0.attn.qkv.bias", torch::zeros({6})));
  EXPECT_FALSE(WantsWeightDecay("vision.blocks.0.ln1.weight", torch::zeros({2})));
  EXPECT_FALSE(WantsWeightDecay("loss.logit_scale", torch::zeros({})));
  EXPECT_FALSE(WantsWeightDecay("vision.class_token", torch::zeros({1, 1, 2})));
  EXPECT_FALSE(WantsWeightDecay("vision.positions", torch::zeros({1, 5, 2})));
  EXPECT_FALSE(WantsWeightDecay("text.token_embed.weight", torch::zeros({10, 2})));
}

// Two steps against the hand computation; `create_state_first`: the moments made up front
// (CreateAdamWState, what a graph plan does before capturing) change nothing.
void ExpectTwoStepsMatchAHandComputation(bool create_state_first) {
  torch::NoGradGuard no_grad;
  torch::OrderedDict<std::string, torch::Tensor> params;
  auto w = torch::tensor({{0.5, -1.0}, {2.0, 0.25}}, torch::kFloat64).requires_grad_(true);
  auto b = torch::tensor({0.1, -0.2}, torch::kFloat64).requires_grad_(true);
  params.insert("fc.weight", w);
  params.insert("fc.bias", b);
  AdamWConfig c;
  c.lr = 0.01;
  c.beta1 = 0.9;
  c.beta2 = 0.99;
  c.eps = 1e-8;
  c.weight_decay = 0.1;
  auto opt = MakeAdamW(params, c);
  ASSERT_TRUE(opt.ok()) << opt.status();
  ASSERT_EQ((*opt)->param_groups().size(), 2u);
  if (create_state_first) {
    EXPECT_EQ(CreateAdamWState(**opt), 2 * (4 + 2) * 8);  // exp_avg + exp_avg_sq, fp64
    EXPECT_EQ((*opt)->state().size(), 2u);
    EXPECT_EQ(CreateAdamWState(**opt), 0);  // every parameter has its state already
  }

  const std::vector<std::vector<double>> grads_w = {{0.3, -0.6, 0.9, 0.05}, {-0.1, 0.2, 0.4, 1.0}};
  const std::vector<std::vector<double>> grads_b = {{1.0, -2.0}, {0.5, 0.5}};
  // Hand computation in double: decoupled decay, bias-corrected moments.
  std::vector<double> pw = {0.5, -1.0, 2.0, 0.25}, pb = {0.1, -0.2};
  std::vector<double> mw(4, 0), vw(4, 0), mb(2, 0), vb(2, 0);
  auto hand = [&](std::vector<double>& p, std::vector<double>& m, std::vector<double>& v,
                  const std::vector<double>& g, double wd, int t) {
    for (size_t i = 0; i < p.size(); ++i) {
      p[i] *= 1 - c.lr * wd;
      m[i] = c.beta1 * m[i] + (1 - c.beta1) * g[i];
      v[i] = c.beta2 * v[i] + (1 - c.beta2) * g[i] * g[i];
      const double mhat = m[i] / (1 - std::pow(c.beta1, t));
      const double vhat = v[i] / (1 - std::pow(c.beta2, t));
      p[i] -= c.lr * mhat / (std::sqrt(vhat) + c.eps);
    }
  };
  for (int t = 1; t <= 2; ++t) {
    w.mutable_grad() = torch::tensor(grads_w[t - 1], torch::kFloat64).view({2, 2});
    b.mutable_grad() = torch::tensor(grads_b[t - 1], torch::kFloat64);
    (*opt)->step();
    hand(pw, mw, vw, grads_w[t - 1], c.weight_decay, t);
    hand(pb, mb, vb, grads_b[t - 1], 0.0, t);  // bias: no decay group
  }
  auto wf = w.flatten();
  for (int i = 0; i < 4; ++i)
    EXPECT_NEAR(wf[i].item<double>(), pw[i], 1e-12) << i;
  for (int i = 0; i < 2; ++i)
    EXPECT_NEAR(b[i].item<double>(), pb[i], 1e-12) << i;
  // The decay made a difference: without it the weight would be elsewhere.
  EXPECT_GT(std::abs(pw[2] - 2.0 + 2 * c.lr * 1.0), 1e-6);

  SetLearningRate(**opt, 0.5);
  for (auto& g : (*opt)->param_groups()) {
    EXPECT_EQ(static_cast<torch::optim::AdamWOptions&>(g.options()).lr(), 0.5);
  }
}

TEST(AdamW, TwoStepsMatchAHandComputation) {
  ExpectTwoStepsMatchAHandComputation(false);
}

TEST(AdamW, StateCreatedUpFrontChangesNothing) {
  ExpectTwoStepsMatchAHandComputation(true);
}

TEST(AdamW, NothingToTrainIsAnError) {
  torch::OrderedDict<std::string, torch::Tensor> params;
  params.insert("frozen", torch::zeros({2, 2}));
  EXPECT_FALSE(MakeAdamW(params, {}).ok());
}

TEST(Schedule, WarmupThenCosineToTheFloor) {
  ScheduleConfig c;
  c.peak_lr = 1e-3;
  c.warmup_steps = 10;
  c.total_steps = 110;
  c.final_lr_fraction = 0.1;
  WarmupCosine lr(c);
  EXPECT_DOUBLE_EQ(lr(0), 1e-4);
  EXPECT_DOUBLE_EQ(lr(4), 5e-4);
  EXPECT_DOUBLE_EQ(lr(9), 1e-3);
  EXPECT_DOUBLE_EQ(lr(10), 1e-3);                   // cosine starts at the peak
  EXPECT_NEAR(lr(60), 1e-4 + 0.9e-3 * 0.5, 1e-15);  // halfway: cos(pi/2) = 0
  EXPECT_NEAR(lr(110), 1e-4, 1e-15);                // the floor
  EXPECT_NEAR(lr(500), 1e-4, 1e-15);                // and it stays there
  for (int s = 11; s < 110; ++s)
    EXPECT_LT(lr(s), lr(s - 1)) << s;
  ScheduleConfig none = c;
  none.warmup_steps = 0;
  EXPECT_DOUBLE_EQ(WarmupCosine(none)(0), 1e-3);
}

TEST(LossScaler, SkipsOverflowsAndBacksOff) {
  LossScaler off(false, torch::kCPU);
  EXPECT_EQ(off.scale(), 1.0);
  auto p = torch::zeros({3}).requires_grad_(true);
  auto f32 = [](std::vector<float> v) { return torch::tensor(v, torch::kFloat32); };
  LossScaler s(true, torch::kCPU, 1024.0, /*growth_interval=*/2);
  EXPECT_EQ(s.Scale(torch::full({}, 2.0f)).item<double>(), 2048.0);
  p.mutable_grad() = f32({1024, 2048, -512});
  EXPECT_TRUE(s.Unscale({p}));
  EXPECT_TRUE(torch::allclose(p.grad(), f32({1, 2, -0.5})));
  s.Update();
  EXPECT_EQ(s.scale(), 1024.0);
  p.mutable_grad() = f32({1, std::numeric_limits<float>::infinity(), 0});
  EXPECT_FALSE(s.Unscale({p}));
  s.Update();
  EXPECT_EQ(s.scale(), 512.0);  // halved after the overflow
  for (int i = 0; i < 2; ++i) {
    p.mutable_grad() = torch::ones({3});
    EXPECT_TRUE(s.Unscale({p}));
    s.Update();
  }
  EXPECT_EQ(s.scale(), 1024.0);  // doubled after growth_interval clean steps
  LossScaler restored(true, torch::kCPU);
  restored.LoadState(s.State());
  EXPECT_EQ(restored.scale(), 1024.0);
}

}  // namespace
}  // namespace mosaic::train
