// Loss heads against hand computations: CLIP's symmetric InfoNCE with a learnable, clamped
// temperature; the ImageBind-like sum against the first input; the next-token loss on text
// positions with padding.
#include "models/losses.h"

#include <gtest/gtest.h>

#include <cmath>

#include "test_util.h"

namespace mosaic::models {
namespace {

using testing::ExpectGradientsMatchFiniteDifferences;

// -1/2B sum_i [log softmax_j(s cos(a_i, b_j))_i + log softmax_j(s cos(a_j, b_i))_i], with loops.
double HandClipLoss(const torch::Tensor& a, const torch::Tensor& b, double s) {
  const int64_t B = a.size(0);
  auto cosine = [&](int64_t i, int64_t j) {
    return (a[i] * b[j]).sum().item<double>() /
           (a[i].norm().item<double>() * b[j].norm().item<double>());
  };
  double total = 0;
  for (int64_t i = 0; i < B; ++i) {
    double row = 0, col = 0;
    for (int64_t j = 0; j < B; ++j) {
      row += std::exp(s * cosine(i, j));
      col += std::exp(s * cosine(j, i));
    }
    total += -(s * cosine(i, i) - std::log(row)) - (s * cosine(i, i) - std::log(col));
  }
  return total / (2 * B);
}

TEST(ContrastiveLossTest, InitialTemperatureIsClips) {
  ContrastiveLoss loss;
  EXPECT_NEAR(loss->logit_scale.item<double>(), std::log(1 / 0.07), 1e-6);
  EXPECT_NEAR(loss->scale().item<double>(), 1 / 0.07, 1e-4);
  EXPECT_EQ(loss->parameters().size(), 1u);
}

TEST(ContrastiveLossTest, MatchesHandComputation) {
  torch::manual_seed(20);
  ContrastiveLoss loss;
  loss->to(torch::kDouble);
  torch::Tensor a = torch::randn({5, 4}, torch::kDouble), b = torch::randn({5, 4}, torch::kDouble);
  const double s = loss->scale().item<double>();  // 1/0.07 rounded to fp32 at init
  EXPECT_NEAR(loss->forward({a, b}).item<double>(), HandClipLoss(a, b, s), 1e-9);
  // Perfectly aligned, well separated pairs give a loss near 0; swapped pairs a large one.
  torch::Tensor eye = torch::eye(4, torch::kDouble);
  EXPECT_LT(loss->forward({eye, eye}).item<double>(), 1e-3);
  EXPECT_GT(loss->forward({eye, eye.flip(0)}).item<double>(), 5.0);
}

TEST(ContrastiveLossTest, TemperatureIsClampedAt100) {
  ContrastiveLoss loss;
  loss->to(torch::kDouble);
  {
    torch::NoGradGuard g;
    loss->logit_scale.fill_(std::log(1000.0));
  }
  torch::manual_seed(21);
  torch::Tensor a = torch::randn({4, 3}, torch::kDouble), b = torch::randn({4, 3}, torch::kDouble);
  EXPECT_NEAR(loss->scale().item<double>(), 100.0, 1e-9);
  torch::Tensor l = loss->forward({a, b});
  EXPECT_NEAR(l.item<double>(), HandClipLoss(a, b, 100.0), 1e-9);
  l.backward();
  EXPECT_EQ(loss->logit_scale.grad().item<double>(), 0.0);  // clamped: no gradient
}

TEST(ContrastiveLossTest, MoreThanTwoInputsSumAgainstTheFirst) {
  torch::manual_seed(22);
  ContrastiveLoss loss;
  loss->to(torch::kDouble);
  torch::Tensor a = torch::randn({4, 3}, torch::kDouble), b = torch::randn({4, 3}, torch::kDouble),
                c = torch::randn({4, 3}, torch::kDouble);
  const double s = loss->scale().item<double>();
  EXPECT_NEAR(loss->forward({a, b, c}).item<double>(),
              HandClipLoss(a, b, s) + HandClipLoss(a, c, s), 1e-9);
  EXPECT_THROW(loss->forward({a}), c10::Error);
}

TEST(ContrastiveLossTest, GradientsMatchFiniteDifferences) {
  torch::manual_seed(23);
  ContrastiveLoss loss;
  loss->to(torch::kDouble);
  torch::Tensor a = torch::randn({4, 3}, torch::kDouble).requires_grad_();
  torch::Tensor b = torch::randn({4, 3}, torch::kDouble);
  ExpectGradientsMatchFiniteDifferences(*loss, [&] { return loss->forward({a, b}); });
  // And with respect to the features, by central differences on one coordinate.
  a.mutable_grad() = torch::Tensor();
  loss->forward({a, b}).backward();
  const double g = a.grad()[1][2].item<double>(), eps = 1e-6;
  torch::Tensor ap = a.detach().clone(), am = a.detach().clone();
  ap[1][2] += eps;
  am[1][2] -= eps;
  EXPECT_NEAR(
      g,
      (loss->forward({ap, b}).item<double>() - loss->forward({am, b}).item<double>()) / (2 * eps),
      1e-6);
}

TEST(NextTokenLossTest, MatchesHandComputationWithPadding) {
  torch::manual_seed(24);
  const int64_t B = 2, T = 5, V = 7;
  torch::Tensor logits = torch::randn({B, T, V}, torch::kDouble);
  torch::Tensor tokens = torch::randint(0, V, {B, T}, torch::kLong);
  torch::Tensor mask = torch::ones({B, T}, torch::kBool);
  mask[1][3] = false;
  mask[1][4] = false;
  double total = 0;
  int count = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t + 1 < T; ++t) {
      if (!mask[b][t + 1].item<bool>()) continue;
      torch::Tensor row = logits[b][t];
      total += -(row[tokens[b][t + 1].item<int64_t>()].item<double>() -
                 std::log(row.exp().sum().item<double>()));
      ++count;
    }
  EXPECT_EQ(count, 6);
  EXPECT_NEAR(NextTokenLoss(logits, tokens, mask).item<double>(), total / count, 1e-9);
  // Without a mask every next token counts.
  torch::Tensor all = NextTokenLoss(logits, tokens);
  EXPECT_GT(std::abs(all.item<double>() - total / count), 1e-6);
  EXPECT_THROW(NextTokenLoss(logits, tokens.narrow(1, 0, 4)), c10::Error);
}

TEST(NextTokenLossTest, PerfectPredictionGivesZero) {
  torch::Tensor tokens = torch::tensor({{1, 2, 3, 0}}, torch::kLong);
  torch::Tensor logits = torch::full({1, 4, 4}, -50.0, torch::kDouble);
  for (int t = 0; t < 3; ++t)
    logits[0][t][tokens[0][t + 1].item<int64_t>()] = 50.0;
  EXPECT_LT(NextTokenLoss(logits, tokens).item<double>(), 1e-12);
}

}  // namespace
}  // namespace mosaic::models
