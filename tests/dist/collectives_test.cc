// Two Gloo ranks as threads of one process: the differentiable all-gather gives the gradients of
// the one-process global contrastive loss, gradient buckets are all-reduced during backward and
// averaged, the replica and settings checks name what differs, and a rendezvous with a missing
// peer fails within its timeout.
#include <gtest/gtest.h>

#include "dist/all_gather.h"
#include "dist/data_parallel.h"
#include "dist/process_group.h"
#include "models/losses.h"
#include "ranks.h"

namespace mosaic::dist {
namespace {

using testing::RunRanks;

constexpr int kWorld = 2;

// Note [seeded tensors in rank threads]: the ranks are threads of one process, so they must not
// share torch's default generator (manual_seed + randn on two threads races): each draw uses a
// generator of its own.
torch::Tensor Randn(std::vector<int64_t> shape, uint64_t seed) {
  at::Generator g = at::detail::createCPUGenerator(seed);
  return torch::randn(shape, g);
}

// Largest |a - b| / (|b| + tiny) over elements.
double MaxRelDiff(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).abs() / (b.abs() + 1e-12)).max().item<double>();
}

TEST(Collectives, AllReduceAndAllGather) {
  RunRanks(kWorld, [](Context& ctx) {
    torch::Tensor t = torch::full({3}, static_cast<float>(ctx.rank() + 1));
    ASSERT_TRUE(ctx.AllReduceSum(t, "test").ok());
    EXPECT_TRUE(torch::equal(t, torch::full({3}, 3.0f)));
    auto all = ctx.AllGather(torch::full({2, 2}, static_cast<float>(ctx.rank())), "test");
    ASSERT_TRUE(all.ok()) << all.status();
    ASSERT_EQ(all->sizes(), (std::vector<int64_t>{4, 2}));
    EXPECT_EQ(all->index({0, 0}).item<float>(), 0.0f);
    EXPECT_EQ(all->index({3, 1}).item<float>(), 1.0f);
  });
}

// Note [global contrastive loss]: encoders Wa, Wb and the temperature on every rank, a global
// batch of 8 pairs split 4 + 4 (and 5 + 3: a rank that skipped bad examples), the loss over
// gathered features, gradients through GradientSync: the same gradients as one process on the
// whole batch.
void CheckGlobalContrastive(int rows_rank0) {
  constexpr int G = 8, Din = 6, D = 5;
  torch::manual_seed(11);
  const torch::Tensor xa = torch::randn({G, Din}), xb = torch::randn({G, Din});
  const torch::Tensor wa0 = torch::randn({Din, D}), wb0 = torch::randn({Din, D});
  const torch::Tensor s0 = torch::full({}, 2.0);

  // One process.
  torch::Tensor wa = wa0.clone().requires_grad_(), wb = wb0.clone().requires_grad_();
  torch::Tensor s = s0.clone().requires_grad_();
  torch::Tensor ref_loss = models::ClipLoss(xa.mm(wa), xb.mm(wb), s.exp());
  ref_loss.backward();

  RunRanks(kWorld, [&](Context& ctx) {
    torch::Tensor my_wa = wa0.clone().requires_grad_(), my_wb = wb0.clone().requires_grad_();
    torch::Tensor my_s = s0.clone().requires_grad_();
    const int64_t start = ctx.rank() == 0 ? 0 : rows_rank0;
    const int64_t rows = ctx.rank() == 0 ? rows_rank0 : G - rows_rank0;
    GradientSync sync(ctx, {my_wa, my_wb, my_s}, /*bucket_bytes=*/64);
    torch::Tensor fa = AllGatherWithGrad(ctx, xa.narrow(0, start, rows).mm(my_wa));  // (G, D)
    torch::Tensor fb = AllGatherWithGrad(ctx, xb.narrow(0, start, rows).mm(my_wb));  // (G, D)
    torch::Tensor loss = models::ClipLoss(fa, fb, my_s.exp());
    sync.Arm(true);
    loss.backward();
    ASSERT_TRUE(sync.Finish().ok());
    // Same matrices, another summation order: float32 rounding only.
    EXPECT_LT(MaxRelDiff(loss, ref_loss), 1e-6);
    EXPECT_LT(MaxRelDiff(my_wa.grad(), wa.grad()), 1e-4) << my_wa.grad() << wa.grad();
    EXPECT_LT(MaxRelDiff(my_wb.grad(), wb.grad()), 1e-4);
    EXPECT_LT(MaxRelDiff(my_s.grad(), s.grad()), 1e-5);
    // A wrong backward (no all-reduce, or no rescaling) is off by a factor of about 2.
    EXPECT_FALSE(torch::allclose(my_wa.grad(), wa.grad() / 2, 1e-2, 0));
  });
}

TEST(Collectives, GlobalContrastiveGradientEqualsOneProcess) {
  CheckGlobalContrastive(4);
}

TEST(Collectives, GlobalContrastiveWithUnevenRows) {
  CheckGlobalContrastive(5);
}

// A stack of linear layers, one parameter per bucket, two micro-batches per step: the
// gradients are the mean over ranks of the accumulated gradients, and buckets were launched
// from the hooks while backward ran.
TEST(Collectives, BucketedGradientsAreTheMeanOverRanks) {
  constexpr int kLayers = 6, kWidth = 8;
  auto make_layers = [] {
    std::vector<torch::Tensor> ws;
    for (int i = 0; i < kLayers; ++i)
      ws.push_back((Randn({kWidth, kWidth}, 5 + i) / 3).requires_grad_());
    return ws;
  };
  auto input = [](int rank, int mb) { return Randn({4, kWidth}, 100 + 10 * rank + mb); };
  auto forward = [](const std::vector<torch::Tensor>& ws, const torch::Tensor& x) {
    torch::Tensor h = x;
    for (const auto& w : ws)
      h = torch::tanh(h.mm(w));
    return h.square().mean();
  };
  // Reference: the mean over ranks of each rank's accumulated gradient.
  std::vector<torch::Tensor> ref = make_layers();
  for (int r = 0; r < kWorld; ++r)
    for (int mb = 0; mb < 2; ++mb)
      (forward(ref, input(r, mb)) / kWorld).backward();

  RunRanks(kWorld, [&](Context& ctx) {
    std::vector<torch::Tensor> ws = make_layers();
    GradientSync sync(ctx, ws, /*bucket_bytes=*/kWidth * kWidth * 4);
    ASSERT_EQ(sync.buckets().size(), static_cast<size_t>(kLayers));
    EXPECT_EQ(sync.buckets().front(), std::vector<int>{kLayers - 1});  // last layer first
    for (int step = 0; step < 2; ++step) {  // the second step checks the reset between steps
      for (auto& w : ws)
        w.mutable_grad() = torch::Tensor();
      for (int mb = 0; mb < 2; ++mb) {
        sync.Arm(mb == 1);
        forward(ws, input(ctx.rank(), mb)).backward();
      }
      EXPECT_GT(sync.launched_during_backward(), 0);
      ASSERT_TRUE(sync.Finish().ok());
      for (int i = 0; i < kLayers; ++i)
        EXPECT_LT(MaxRelDiff(ws[i].grad(), ref[i].grad()), 1e-5) << "layer " << i;
    }
  });
}

TEST(Collectives, ReplicaCheckNamesTheParameterThatDiffers) {
  RunRanks(kWorld, [](Context& ctx) {
    std::vector<std::pair<std::string, torch::Tensor>> params = {
        {"encoder.weight", Randn({4, 4}, 1)}, {"encoder.bias", Randn({4}, 2)}};
    EXPECT_TRUE(CheckReplicasInSync(ctx, params, 6).ok());
    if (ctx.rank() == 1) {
      params[1].second.index_put_({2}, params[1].second[2] + 1e-6);  // one element, slightly
    }
    Status s = CheckReplicasInSync(ctx, params, 7);
    ASSERT_FALSE(s.ok());  // on both ranks
    EXPECT_EQ(s.code(), StatusCode::kInternal);
    EXPECT_NE(s.message().find("'encoder.bias' on rank 1"), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("after step 7"), std::string::npos) << s.message();
  });
}

TEST(Collectives, SettingsCheckRefusesDifferentFlags) {
  RunRanks(kWorld, [](Context& ctx) {
    EXPECT_TRUE(CheckSameSettings(ctx, "steps 10").ok());
    Status s = CheckSameSettings(ctx, ctx.rank() == 0 ? "steps 10" : "steps 11");
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("same flags"), std::string::npos) << s.message();
  });
}

// Note [bounded waits]: rank 0 of 2 alone, with a 2 s timeout, gives up with an error.
TEST(Collectives, RendezvousWithoutThePeerFailsWithinTheTimeout) {
  ContextOptions o;
  o.timeout_s = 2;
  auto ctx = Context::Connect(testing::Env(0, 2, testing::FreePort()), torch::kCPU, o);
  ASSERT_FALSE(ctx.ok());
  EXPECT_EQ(ctx.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(ctx.status().message().find("rank 0 of 2"), std::string::npos)
      << ctx.status().message();
}

}  // namespace
}  // namespace mosaic::dist
