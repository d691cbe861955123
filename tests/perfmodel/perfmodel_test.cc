// Tests of the performance model: the time-vs-SMs fit, the synthetic law, shared streams,
// colocation contention and its fit, and calibration.
#include <gtest/gtest.h>

#include <cmath>

#include "../sim/toy_step.h"
#include "core/device_spec.h"
#include "core/model_spec.h"
#include "perfmodel/calibration.h"
#include "perfmodel/perf_model.h"
#include "perfmodel/scaling_curve.h"
#include "perfmodel/synthetic_profile.h"

namespace mosaic {
namespace {

using testing::ToyDevice;
using testing::ToyModel;
using testing::ToyProfile;
using testing::ToyTask;

std::vector<ProfilePoint> VitB16() {  // gpu-facts.md, ViT-B/16 bs32 fwd+bwd, ms
  return {{SmCount(16), TimeUs(95.5)}, {SmCount(32), TimeUs(51.1)},  {SmCount(64), TimeUs(30.2)},
          {SmCount(96), TimeUs(23.1)}, {SmCount(120), TimeUs(19.8)}, {SmCount(132), TimeUs(17.3)}};
}

TEST(ScalingCurve, ExactAtMeasuredPoints) {
  ScalingCurve c = *ScalingCurve::Fit(VitB16());
  for (const auto& p : VitB16())
    EXPECT_DOUBLE_EQ(c.At(p.sms.value()).value(), p.time.value()) << p.sms;
}

TEST(ScalingCurve, InterpolatesOnTheHyperbolaThroughNeighbors) {
  ScalingCurve c = *ScalingCurve::Fit(VitB16());
  // Between 16 and 32 SMs: b = (95.5 - 51.1) / (1/16 - 1/32) = 1420.8, a = 95.5 - b/16 = 6.7.
  EXPECT_NEAR(c.At(24).value(), 6.7 + 1420.8 / 24, 1e-9);
}

TEST(ScalingCurve, MonotoneNonIncreasingEverywhere) {
  ScalingCurve c = *ScalingCurve::Fit(VitB16());
  double prev = c.At(0.5).value();
  for (double s = 1; s <= 300; s += 0.25) {
    double t = c.At(s).value();
    EXPECT_LE(t, prev + 1e-12) << "at " << s << " SMs";
    prev = t;
  }
}

TEST(ScalingCurve, SaturatesBeyondTheLastPoint) {
  ScalingCurve c = *ScalingCurve::Fit(VitB16());
  // Last segment: b = (19.8 - 17.3) / (1/120 - 1/132) = 3300, a = 17.3 - 25 = -7.7 < 0, so the
  // curve is capped at linear scaling from the last point: never faster than that.
  EXPECT_DOUBLE_EQ(c.At(264).value(), 17.3 / 2);
  ScalingCurve text = *ScalingCurve::Fit({{SmCount(64), TimeUs(7.6)}, {SmCount(132), TimeUs(5.3)}});
  // a = 5.3 - b/132 with b = 2.3 / (1/64 - 1/132) > 0 leaves a > 0: saturates toward a.
  const double b = 2.3 / (1.0 / 64 - 1.0 / 132), a = 5.3 - b / 132;
  EXPECT_NEAR(text.At(1e6).value(), a, 1e-3);
  EXPECT_GT(text.At(1e6).value(), 0);
}

TEST(ScalingCurve, BelowTheFirstPointSlowsDown) {
  ScalingCurve one = *ScalingCurve::Fit({{SmCount(8), TimeUs(100)}});
  EXPECT_DOUBLE_EQ(one.At(4).value(), 200);   // one point: linear scaling below
  EXPECT_DOUBLE_EQ(one.At(16).value(), 100);  // and flat above
  ScalingCurve c = *ScalingCurve::Fit(VitB16());
  EXPECT_GT(c.At(8).value(), 95.5);
}

TEST(ScalingCurve, NoisyPointsAreMadeMonotone) {
  // 12 us at 16 SMs after 10 at 8: pooled to the mean, 11 at both.
  ScalingCurve c = *ScalingCurve::Fit(
      {{SmCount(8), TimeUs(10)}, {SmCount(16), TimeUs(12)}, {SmCount(32), TimeUs(6)}});
  EXPECT_DOUBLE_EQ(c.At(8).value(), 11);
  EXPECT_DOUBLE_EQ(c.At(16).value(), 11);
  EXPECT_DOUBLE_EQ(c.At(32).value(), 6);
}

TEST(ScalingCurve, RejectsBadPoints) {
  EXPECT_FALSE(ScalingCurve::Fit({}).ok());
  EXPECT_FALSE(ScalingCurve::Fit({{SmCount(16), TimeUs(1)}, {SmCount(8), TimeUs(2)}}).ok());
  EXPECT_FALSE(ScalingCurve::Fit({{SmCount(0), TimeUs(1)}}).ok());
  EXPECT_FALSE(ScalingCurve::Fit({{SmCount(8), TimeUs(-1)}}).ok());
}

TEST(ScalingCurve, SaturationSmsIsTheKnee) {
  ScalingCurve one = *ScalingCurve::Fit({{SmCount(8), TimeUs(100)}});
  // 800 / s <= 105 from s = 800 / 105.
  EXPECT_NEAR(one.SaturationSms(0.05, 8), 800.0 / 105, 1e-9);
}

ModelSpec ClipB16() {
  ModelSpec m;
  m.name = "clip-b16";
  m.batch_size = 32;
  ModuleSpec v;
  v.name = "vision";
  v.kind = ModuleKind::kVit;
  v.width = 768, v.depth = 12, v.heads = 12, v.mlp_dim = 3072, v.image_size = 224;
  v.patch_size = 16, v.channels = 3, v.output_dim = 512;
  ModuleSpec t;
  t.name = "text";
  t.kind = ModuleKind::kText;
  t.width = 512, t.depth = 12, t.heads = 8, t.mlp_dim = 2048, t.seq_len = 77;
  t.vocab_size = 49408, t.output_dim = 512;
  ModuleSpec l;
  l.name = "loss";
  l.kind = ModuleKind::kLoss;
  m.modules = {v, t, l};
  m.edges = {{"vision", "loss"}, {"text", "loss"}};
  return m;
}

DeviceSpec H100() {
  DeviceSpec d;
  d.name = "h100-sxm";
  d.sm_count = SmCount(132);
  d.sm_granularity = SmCount(8);
  d.sm_groups = 15;
  d.memory = Bytes(80.0 * (1 << 30));
  d.peak_flops_bf16 = FlopsPerSec(989e12);
  d.peak_flops_fp32 = FlopsPerSec(67e12);
  d.memory_bandwidth = BytesPerSec(3350e9);
  d.launch_overhead = TimeUs(4);
  return d;
}

TEST(SyntheticLaw, TracksTheMeasuredH100Table) {
  // gpu-facts.md: forward+backward ms at 16, 32, 64, 96, 120, 132 SMs.
  const int sms[] = {16, 32, 64, 96, 120, 132};
  const double measured[4][6] = {{95.5, 51.1, 30.2, 23.1, 19.8, 17.3},
                                 {23.1, 12.8, 7.6, 6.6, 6.1, 5.3},
                                 {28.4, 15.7, 9.7, 7.5, 7.0, 6.1},
                                 {9.1, 5.9, 4.1, 3.6, 3.5, 3.3}};
  const int module[4] = {0, 1, 0, 1}, batch[4] = {32, 32, 8, 8};
  ModelSpec m = ClipB16();
  DeviceSpec d = H100();
  double sq = 0;
  for (int k = 0; k < 4; ++k) {
    for (int i = 0; i < 6; ++i) {
      double t = (SyntheticTime(m, d, module[k], TaskPhase::kForward, batch[k], sms[i]).value() +
                  SyntheticTime(m, d, module[k], TaskPhase::kBackward, batch[k], sms[i]).value()) /
                 1000;
      double rel = t / measured[k][i] - 1;
      EXPECT_LT(std::abs(rel), 0.13) << "curve " << k << " at " << sms[i] << " SMs: " << t;
      sq += rel * rel;
    }
  }
  EXPECT_LT(std::sqrt(sq / 24), 0.07);  // the rms documented in Note [synthetic scaling law]
}

TEST(SyntheticLaw, MonotoneInSmsAndSamples) {
  ModelSpec m = ClipB16();
  DeviceSpec d = H100();
  for (TaskPhase ph : {TaskPhase::kForward, TaskPhase::kBackward, TaskPhase::kOptimizer}) {
    double prev = 1e300;
    for (int s = 1; s <= 132; ++s) {
      double t = SyntheticTime(m, d, 0, ph, 32, s).value();
      EXPECT_LE(t, prev);
      prev = t;
    }
  }
  EXPECT_LT(SyntheticTime(m, d, 0, TaskPhase::kForward, 16, 64).value(),
            SyntheticTime(m, d, 0, TaskPhase::kForward, 32, 64).value());
}

TEST(SyntheticLaw, ProfileHasEveryTaskKindAtEveryQuota) {
  ModelSpec m = ClipB16();
  Profile p = MakeSyntheticProfile(m, H100(), 32);
  EXPECT_EQ(p.source, "synthetic");
  // vision, text: fwd, bwd, opt; contrastive loss: fwd, bwd, opt (temperature).
  EXPECT_EQ(p.entries.size(), 9u);
  // Quotas 8..120 (15 granules), 12..132 with the remainder: 31 distinct counts.
  EXPECT_EQ(p.entries[0].points.size(), 31u);
  EXPECT_EQ(p.entries[0].points.back().sms.value(), 132);
}

// Two toy tasks with chosen bandwidth demands (u = bytes / (time * 1e6 B/us)).
PerfModel TwoTasks(double u_a, double u_b, double kappa) {
  ModelSpec m = ToyModel({"a", "b"}, {});
  DeviceSpec d = ToyDevice();
  Profile p = ToyProfile(m, d,
                         {{"a.fwd", {100, u_a * 100e6}},
                          {"a.bwd", {100}},
                          {"a.opt", {10}},
                          {"b.fwd", {50, u_b * 50e6}},
                          {"b.bwd", {100}},
                          {"b.opt", {10}}},
                         8);
  PerfModelOptions o;
  o.contention = kappa;
  return *PerfModel::Build(m, d, p, 8, o);
}

TEST(Contention, AloneIsNotSlowed) {
  PerfModel pm = TwoTasks(0.9, 0.9, 0.3);
  RunningTask r[1] = {{PerfModel::Kind(0, TaskPhase::kForward), false, 8}};
  TaskRate out[1];
  pm.Evaluate(r, 1, 0, out);
  EXPECT_DOUBLE_EQ(out[0].slowdown, 1.0);
  EXPECT_DOUBLE_EQ(out[0].isolated_us, 100);
  EXPECT_DOUBLE_EQ(out[0].rate, 1.0 / 100);
}

TEST(Contention, BelowTheRooflineOnlyKappa) {
  // Dedicated 4 + 4 SMs: a takes 200 us moving 0.2 * 100e6 B: u_a = 0.1; b: 100 us, u_b = 0.1.
  PerfModel pm = TwoTasks(0.2, 0.2, 0.5);
  const int a = PerfModel::Kind(0, TaskPhase::kForward),
            b = PerfModel::Kind(1, TaskPhase::kForward);
  RunningTask r[2] = {{a, false, 4}, {b, false, 4}};
  TaskRate out[2];
  pm.Evaluate(r, 2, 0, out);
  EXPECT_DOUBLE_EQ(out[0].isolated_us, 200);
  EXPECT_DOUBLE_EQ(out[1].isolated_us, 100);
  EXPECT_NEAR(out[0].slowdown, 1 + 0.5 * 0.1, 1e-12);
  EXPECT_NEAR(out[1].slowdown, 1 + 0.5 * 0.1, 1e-12);
}

TEST(Contention, RooflineDividesBandwidthMaxMinFairly) {
  // Alone on 4 SMs each: u_a = 1.8 * 100e6 / (200 * 1e6) = 0.9, u_b = 0.2 * 50e6 / (100e6)
  // = 0.1. U = 1.0 -> no roofline. With u_a = 0.95 (1.9) U = 1.05: b keeps its 0.1, a gets
  // 0.9 and stretches by 0.95 / 0.9.
  PerfModel pm = TwoTasks(1.9, 0.2, 0.0);
  const int a = PerfModel::Kind(0, TaskPhase::kForward),
            b = PerfModel::Kind(1, TaskPhase::kForward);
  RunningTask r[2] = {{a, false, 4}, {b, false, 4}};
  TaskRate out[2];
  pm.Evaluate(r, 2, 0, out);
  EXPECT_NEAR(out[0].slowdown, 0.95 / 0.9, 1e-12);
  EXPECT_DOUBLE_EQ(out[1].slowdown, 1.0);  // compute-bound: not slowed by the roofline
}

TEST(Contention, SymmetricAndBounded) {
  const double kappa = 0.4;
  for (double ua : {0.05, 0.5, 1.0, 2.0}) {
    for (double ub : {0.05, 0.5, 1.0, 2.0}) {
      PerfModel pm = TwoTasks(ua, ub, kappa);
      const int a = PerfModel::Kind(0, TaskPhase::kForward);
      const int b = PerfModel::Kind(1, TaskPhase::kForward);
      RunningTask ab[2] = {{a, false, 4}, {b, false, 4}};
      RunningTask ba[2] = {{b, false, 4}, {a, false, 4}};
      TaskRate x[2], y[2];
      pm.Evaluate(ab, 2, 0, x);
      pm.Evaluate(ba, 2, 0, y);
      EXPECT_DOUBLE_EQ(x[0].slowdown, y[1].slowdown);
      EXPECT_DOUBLE_EQ(x[1].slowdown, y[0].slowdown);
      for (const TaskRate& t : x) {
        EXPECT_GE(t.slowdown, 1.0);
        EXPECT_LE(t.slowdown, (1 + kappa * 1) * 2);  // (1 + kappa (n - 1)) * n
      }
    }
  }
  // Identical tasks are slowed identically.
  PerfModel pm = TwoTasks(0.7, 0.7, kappa);
  const int a = PerfModel::Kind(0, TaskPhase::kForward);
  RunningTask aa[2] = {{a, false, 4}, {a, false, 4}};
  TaskRate z[2];
  pm.Evaluate(aa, 2, 0, z);
  EXPECT_DOUBLE_EQ(z[0].slowdown, z[1].slowdown);
}

TEST(Contention, FittedFromMeasuredPairs) {
  // Pairs generated by a model with kappa = 0.3 are fitted back to 0.3.
  PerfModel truth = TwoTasks(0.3, 0.4, 0.3);
  const int a = PerfModel::Kind(0, TaskPhase::kForward),
            b = PerfModel::Kind(1, TaskPhase::kForward);
  ModelSpec m = ToyModel({"a", "b"}, {});
  DeviceSpec d = ToyDevice();
  Profile p = ToyProfile(m, d,
                         {{"a.fwd", {100, 0.3 * 100e6}},
                          {"a.bwd", {100}},
                          {"a.opt", {10}},
                          {"b.fwd", {50, 0.4 * 50e6}},
                          {"b.bwd", {100}},
                          {"b.opt", {10}}},
                         8);
  for (auto [qa, qb] : {std::pair{4, 4}, std::pair{6, 2}, std::pair{2, 0}}) {
    auto [ta, tb] = truth.PairTimes({a, false, double(qa)}, {b, qb == 0, double(qb)});
    ColocationSample s;
    s.a = {"a", TaskPhase::kForward, SmCount(qa)};
    s.b = {"b", TaskPhase::kForward, SmCount(qb)};
    s.time_a = ta;
    s.time_b = tb;
    p.pairs.push_back(s);
  }
  EXPECT_NEAR(*PerfModel::FitContention(m, d, p, 0.1), 0.3, 1e-9);
  PerfModel fitted = *PerfModel::Build(m, d, p, 8);  // contention < 0: fit
  EXPECT_NEAR(fitted.contention(), 0.3, 1e-9);
  p.pairs.clear();
  EXPECT_DOUBLE_EQ(*PerfModel::FitContention(m, d, p, 0.1), 0.1);  // no pairs: the default
}

TEST(SharedStreams, WeightsFollowFlopsPerKernel) {
  // a: 4x the FLOPs per kernel of b; with exponent 1 the pool splits 4:1 (both demand more).
  ModelSpec m = ToyModel({"a", "b"}, {});
  DeviceSpec d = ToyDevice(10, 2);
  Profile p = ToyProfile(m, d,
                         {{"a.fwd", {100}},
                          {"a.bwd", {100}},
                          {"a.opt", {10}},
                          {"b.fwd", {100}},
                          {"b.bwd", {100}},
                          {"b.opt", {10}}},
                         8);
  for (auto& e : p.entries)
    e.flops = Flops(e.module == "a" ? 4e12 : 1e12);
  PerfModelOptions o;
  o.contention = 0;
  o.shared_weight_exponent = 1;
  PerfModel pm = *PerfModel::Build(m, d, p, 8, o);
  const int a = PerfModel::Kind(0, TaskPhase::kForward),
            b = PerfModel::Kind(1, TaskPhase::kForward);
  RunningTask r[2] = {{a, true, 0}, {b, true, 0}};
  TaskRate out[2];
  pm.Evaluate(r, 2, 10, out);
  EXPECT_DOUBLE_EQ(out[0].sms, 8);
  EXPECT_DOUBLE_EQ(out[1].sms, 2);
  o.shared_weight_exponent = 0;  // exponent 0: equal shares
  PerfModel equal = *PerfModel::Build(m, d, p, 8, o);
  equal.Evaluate(r, 2, 10, out);
  EXPECT_DOUBLE_EQ(out[0].sms, 5);
  EXPECT_DOUBLE_EQ(out[1].sms, 5);
}

TEST(SharedStreams, ExponentAndContentionFittedFromSharedPairs) {
  ModelSpec m = ToyModel({"a", "b"}, {});
  DeviceSpec d = ToyDevice();
  Profile p = ToyProfile(m, d,
                         {{"a.fwd", {100, 0.3 * 100e6}},
                          {"a.bwd", {200, 0.2 * 200e6}},
                          {"a.opt", {10}},
                          {"b.fwd", {50, 0.4 * 50e6}},
                          {"b.bwd", {100, 0.1 * 100e6}},
                          {"b.opt", {10}}},
                         8);
  for (auto& e : p.entries)
    e.flops = Flops(e.module == "a" ? 3e12 : 1e12);
  PerfModelOptions truth_options;
  truth_options.contention = 0.4;
  truth_options.shared_weight_exponent = 1.5;
  PerfModel truth = *PerfModel::Build(m, d, p, 8, truth_options);
  for (TaskPhase ph : {TaskPhase::kForward, TaskPhase::kBackward}) {
    const int a = PerfModel::Kind(0, ph), b = PerfModel::Kind(1, ph);
    for (auto [qa, qb] : {std::pair{0, 0}, std::pair{4, 4}, std::pair{2, 0}}) {
      auto [ta, tb] = truth.PairTimes({a, qa == 0, double(qa)}, {b, qb == 0, double(qb)});
      ColocationSample s;
      s.a = {"a", ph, SmCount(qa)};
      s.b = {"b", ph, SmCount(qb)};
      s.time_a = ta;
      s.time_b = tb;
      p.pairs.push_back(s);
    }
  }
  PerfModel::ColocationFit fit = *PerfModel::FitColocation(m, d, p);
  EXPECT_NEAR(fit.contention, 0.4, 1e-9);
  EXPECT_NEAR(fit.shared_weight_exponent, 1.5, 1e-9);
  EXPECT_NEAR(fit.rms_log_error, 0, 1e-9);
  EXPECT_EQ(fit.pairs, 6);
}

TEST(SharedStreams, PairTimesLetTheSurvivorRunAlone) {
  // Equal shares of 8 SMs: a (100 us alone) and b (50 us alone) each get 4: b ends at 100 with
  // a half done; a alone then needs 50 more.
  PerfModel pm = TwoTasks(0, 0, 0);
  auto [ta, tb] = pm.PairTimes({PerfModel::Kind(0, TaskPhase::kForward), true, 0},
                               {PerfModel::Kind(1, TaskPhase::kForward), true, 0});
  EXPECT_DOUBLE_EQ(ta.value(), 150);
  EXPECT_DOUBLE_EQ(tb.value(), 100);
}

TEST(SharedStreams, EqualSplitWhenBothWantTheWholeGpu) {
  PerfModel pm = TwoTasks(0, 0, 0);
  const int a = PerfModel::Kind(0, TaskPhase::kForward),
            b = PerfModel::Kind(1, TaskPhase::kForward);
  RunningTask r[2] = {{a, true, 0}, {b, true, 0}};
  TaskRate out[2];
  pm.Evaluate(r, 2, 8, out);
  EXPECT_DOUBLE_EQ(out[0].sms, 4);
  EXPECT_DOUBLE_EQ(out[1].sms, 4);
  EXPECT_DOUBLE_EQ(out[0].isolated_us, 200);
  EXPECT_DOUBLE_EQ(out[1].isolated_us, 100);
}

// a scales to all 8 SMs (100 us there); b's forward saturates at 2 SMs (points 2 -> 10 us,
// 8 -> 10 us), so its demand is small. No contention.
PerfModel SmallDemandB() {
  ModelSpec m = ToyModel({"a", "b"}, {});
  DeviceSpec d = ToyDevice();
  Profile p = ToyProfile(m, d,
                         {{"a.fwd", {100}},
                          {"a.bwd", {100}},
                          {"a.opt", {10}},
                          {"b.fwd", {10}},
                          {"b.bwd", {10}},
                          {"b.opt", {10}}},
                         8);
  auto& entry = const_cast<ProfileEntry&>(*p.Find("b", TaskPhase::kForward));
  entry.points.insert(entry.points.begin(), {SmCount(2), TimeUs(10)});
  PerfModelOptions o;
  o.contention = 0;
  PerfModel pm = *PerfModel::Build(m, d, p, 8, o);
  return pm;
}

TEST(SharedStreams, SmallDemandIsMetAndTheRestGoesToTheOther) {
  // b takes its demand, a the rest.
  PerfModel pm = SmallDemandB();
  const int a = PerfModel::Kind(0, TaskPhase::kForward),
            b = PerfModel::Kind(1, TaskPhase::kForward);
  EXPECT_DOUBLE_EQ(pm.demand_sms(b), 1);  // the flat first segment continues below 2 SMs
  RunningTask r[2] = {{a, true, 0}, {b, true, 0}};
  TaskRate out[2];
  pm.Evaluate(r, 2, 8, out);
  EXPECT_DOUBLE_EQ(out[1].sms, 1);
  EXPECT_DOUBLE_EQ(out[0].sms, 7);
}

// Note [stream priorities]: the high-priority stream takes what it can use first.
TEST(StreamPriorities, TheHighStreamGetsItsDemandAndTheLowOneTheRest) {
  PerfModel pm = TwoTasks(0, 0, 0);  // both scale to all 8 SMs
  const int a = PerfModel::Kind(0, TaskPhase::kForward),
            b = PerfModel::Kind(1, TaskPhase::kForward);
  const double d = pm.demand_sms(b);  // within 5% of its 8-SM time: 8 / 1.05
  EXPECT_NEAR(d, 8 / 1.05, 1e-9);
  RunningTask r[2] = {{a, true, 0, /*priority=*/0}, {b, true, 0, /*priority=*/1}};
  TaskRate out[2];
  pm.Evaluate(r, 2, 8, out);
  EXPECT_DOUBLE_EQ(out[1].sms, d);
  EXPECT_DOUBLE_EQ(out[1].useful_sms, d);
  EXPECT_DOUBLE_EQ(out[0].sms, 8 - d);
  EXPECT_NEAR(out[1].isolated_us, 50 * 1.05, 1e-9);
  // The pair: b runs at its demand (52.5 us) while a crawls on the rest, then a alone.
  auto [ta, tb] = pm.PairTimes(r[0], r[1]);
  EXPECT_NEAR(tb.value(), 52.5, 1e-9);
  const double a_done = 52.5 / pm.Isolated(a, 8 - d).value();
  EXPECT_NEAR(ta.value(), 52.5 + (1 - a_done) * 100, 1e-9);
  // Without priorities both get 4 (EqualSplitWhenBothWantTheWholeGpu): b takes 100 us.
  EXPECT_LT(tb.value(), pm.PairTimes({a, true, 0}, {b, true, 0}).second.value());
}

TEST(StreamPriorities, EqualPrioritiesDivideAsPlainStreams) {
  PerfModel pm = TwoTasks(0, 0, 0);
  const int a = PerfModel::Kind(0, TaskPhase::kForward),
            b = PerfModel::Kind(1, TaskPhase::kForward);
  for (int level : {0, 1, 3}) {
    RunningTask r[2] = {{a, true, 0, level}, {b, true, 0, level}};
    TaskRate out[2];
    pm.Evaluate(r, 2, 8, out);
    EXPECT_DOUBLE_EQ(out[0].sms, 4) << level;
    EXPECT_DOUBLE_EQ(out[1].sms, 4) << level;
  }
}

TEST(StreamPriorities, ALowStreamWaitsWhenTheHighOneCanUseThePool) {
  // b saturates at 1 SM (as in SmallDemandIsMet...): high, it takes that 1 and a gets 7.
  PerfModel pm = SmallDemandB();
  const int a = PerfModel::Kind(0, TaskPhase::kForward),
            b = PerfModel::Kind(1, TaskPhase::kForward);
  TaskRate out[2];
  RunningTask b_high[2] = {{a, true, 0, 0}, {b, true, 0, 2}};
  pm.Evaluate(b_high, 2, 8, out);
  EXPECT_DOUBLE_EQ(out[1].sms, 1);
  EXPECT_DOUBLE_EQ(out[0].sms, 7);
  // a high next to a dedicated 2-SM partition: a's demand (7.6) exceeds the 6-SM pool, so it
  // takes all 6 and b waits (rate 0); the dedicated partition keeps its SMs.
  RunningTask three[3] = {{a, true, 0, 1}, {b, true, 0, 0}, {b, false, 2, 0}};
  TaskRate out3[3];
  pm.Evaluate(three, 3, 6, out3);
  EXPECT_DOUBLE_EQ(out3[0].sms, 6);
  EXPECT_DOUBLE_EQ(out3[1].sms, 0);
  EXPECT_EQ(out3[1].rate, 0);
  EXPECT_DOUBLE_EQ(out3[2].sms, 2);
  EXPECT_GT(out3[2].rate, 0);
}

TEST(PerfModel, RejectsAProfileOfAnotherModel) {
  ModelSpec m = ToyModel({"a"}, {});
  DeviceSpec d = ToyDevice();
  Profile p = ToyProfile(m, d, {{"a.fwd", {1}}, {"a.bwd", {1}}, {"a.opt", {1}}}, 8);
  p.model = "other";
  StatusOr<PerfModel> pm = PerfModel::Build(m, d, p, 8);
  ASSERT_FALSE(pm.ok());
  EXPECT_NE(pm.status().message().find("other"), std::string::npos);
}

TEST(PerfModel, MissingEntriesComeFromTheSyntheticLaw) {
  ModelSpec m = ClipB16();
  DeviceSpec d = H100();
  Profile p = MakeSyntheticProfile(m, d, 32);
  p.source = "measured";
  p.entries.erase(p.entries.begin());  // vision.fwd
  PerfModel pm = *PerfModel::Build(m, d, p, 32);
  EXPECT_EQ(pm.source(), "measured+synthetic");
  EXPECT_DOUBLE_EQ(pm.Isolated(PerfModel::Kind(0, TaskPhase::kForward), 64).value(),
                   SyntheticTime(m, d, 0, TaskPhase::kForward, 32, 64).value());
}

TEST(PerfModel, MicroBatchRescalingFollowsTheLaw) {
  ModelSpec m = ClipB16();
  DeviceSpec d = H100();
  Profile p = MakeSyntheticProfile(m, d, 32);
  PerfModel half = *PerfModel::Build(m, d, p, 16);
  const int v = PerfModel::Kind(0, TaskPhase::kForward);
  EXPECT_NEAR(half.Isolated(v, 64).value(),
              SyntheticTime(m, d, 0, TaskPhase::kForward, 16, 64).value(), 1e-6);
}

TEST(PerfModel, WorldSizeAddsAnAllReduceToTheOptimizer) {
  ModelSpec m = ClipB16();
  DeviceSpec d = H100();
  d.link_bandwidth = BytesPerSec(100e9);
  d.link_latency = TimeUs(5);
  Profile p = MakeSyntheticProfile(m, d, 32);
  PerfModel one = *PerfModel::Build(m, d, p, 32);
  PerfModelOptions o;
  o.world_size = 64;
  PerfModel many = *PerfModel::Build(m, d, p, 32, o);
  const int opt = PerfModel::Kind(0, TaskPhase::kOptimizer);
  EXPECT_GT(many.Isolated(opt, 132).value(), one.Isolated(opt, 132).value() + 100);
  const int fwd = PerfModel::Kind(0, TaskPhase::kForward);
  EXPECT_DOUBLE_EQ(many.Isolated(fwd, 132).value(), one.Isolated(fwd, 132).value());
}

// Note [executor overhead]: two linear projectors of 1000 x 1000 (+ bias): 1 001 000
// parameters and 2 tensors each. Device: 1 TB/s = 1e6 bytes/us, at efficiency 0.5: 5e5.
TEST(ExecutorOverhead, ZeroAndOptimizerFromParametersAndTensors) {
  ModelSpec m = ToyModel({"a", "b"}, {});
  for (ModuleSpec& s : m.modules)
    s.in_dim = s.out_dim = 1000;
  DeviceSpec d = ToyDevice();
  Profile p = ToyProfile(m, d,
                         {{"a.fwd", {100}},
                          {"a.bwd", {200}},
                          {"a.opt", {10}},
                          {"b.fwd", {50}},
                          {"b.bwd", {100}},
                          {"b.opt", {10}}},
                         8);
  PerfModel plain = *PerfModel::Build(m, d, p, 8);
  EXPECT_FALSE(plain.step_overhead().serial_optimizer);
  EXPECT_EQ(plain.step_overhead().before_us, 0);
  EXPECT_EQ(plain.step_overhead().after_us, 0);
  EXPECT_FALSE(plain.instant(PerfModel::Kind(0, TaskPhase::kOptimizer)));

  ExecutorSpec ex;
  ex.zero_grad_us_per_tensor = 5;
  ex.optimizer_bytes_per_param = 40;
  ex.bandwidth_efficiency = 0.5;
  d.executor = ex;
  PerfModel pm = *PerfModel::Build(m, d, p, 8);
  const StepOverheadModel& o = pm.step_overhead();
  EXPECT_TRUE(o.serial_optimizer);
  EXPECT_EQ(o.parameters, 2002000);
  EXPECT_EQ(o.parameter_tensors, 4);
  // zero: 4 tensors x 5 us + 4 B x 2 002 000 / 5e5 B/us = 20 + 16.016 us.
  EXPECT_DOUBLE_EQ(o.before_us, 36.016);
  // optimizer: 40 B x 2 002 000 / 5e5 B/us = 160.16 us.
  EXPECT_DOUBLE_EQ(o.after_us, 160.16);
  EXPECT_TRUE(pm.instant(PerfModel::Kind(1, TaskPhase::kOptimizer)));
  EXPECT_FALSE(pm.instant(PerfModel::Kind(1, TaskPhase::kBackward)));
  // The tasks' own curves are unchanged.
  EXPECT_EQ(pm.Isolated(PerfModel::Kind(0, TaskPhase::kBackward), 8).value(), 200);

  // A profile's measured values replace the law; a data-parallel run adds its all-reduces.
  p.step_overhead.zero_grad_us = 7;
  p.step_overhead.optimizer_us = 9;
  PerfModel measured = *PerfModel::Build(m, d, p, 8);
  EXPECT_EQ(measured.step_overhead().before_us, 7);
  EXPECT_EQ(measured.step_overhead().after_us, 9);
  EXPECT_TRUE(measured.step_overhead().measured_before && measured.step_overhead().measured_after);
  d.link_bandwidth = BytesPerSec(1e9);  // 1e3 B/us
  d.link_latency = TimeUs(10);
  PerfModelOptions two;
  two.world_size = 2;
  PerfModel dp = *PerfModel::Build(m, d, p, 8, two);
  // Per module 4 B x 1 001 000 x 2 x 1/2 / 1e3 B/us + 2 x 1 x 10 us = 4024 us.
  EXPECT_DOUBLE_EQ(dp.step_overhead().after_us, 9 + 2 * 4024.0);
}

ModelSpec MiniLlava();  // below

TEST(ExecutorOverhead, EagerLossIsTheLongerOfItsLaunchesAndItsTraffic) {
  ModelSpec m = ClipB16();
  DeviceSpec d = H100();
  const int loss = 2;
  const double before = SyntheticTime(m, d, loss, TaskPhase::kForward, 32, 132).value();
  EXPECT_LT(before, 30);  // 6 graph nodes x 4 us + almost nothing
  ExecutorSpec ex;
  ex.eager_op_us = 10;
  d.executor = ex;
  // One pair (two inputs): 6 kernels forward, 12 backward, 10 us each; the contrastive loss
  // of 32 x 512 features moves far less than 60 us of bytes.
  EXPECT_DOUBLE_EQ(SyntheticTime(m, d, loss, TaskPhase::kForward, 32, 132).value(), 60);
  EXPECT_DOUBLE_EQ(SyntheticTime(m, d, loss, TaskPhase::kBackward, 32, 132).value(), 120);
  // A third input: two pairs against the anchor.
  ModelSpec three = m;
  ModuleSpec audio = three.modules[1];
  audio.name = "audio";
  three.modules.insert(three.modules.begin() + 2, audio);
  three.edges.push_back({"audio", "loss"});
  EXPECT_DOUBLE_EQ(SyntheticTime(three, d, 3, TaskPhase::kForward, 32, 132).value(), 120);
  // A next-token loss over 4 x 256 x 1000 logits at 1 TB/s (the toy's) and efficiency 0.5:
  // forward 26 B per logit, 53.248 us, over 6 launches of 5 us; backward 38 B, 77.824 us, over
  // 12 launches; on half the SMs (4 of the toy's 8, which all feed DRAM) twice the time.
  ModelSpec lm = MiniLlava();
  DeviceSpec toy = ToyDevice();
  ExecutorSpec slow;
  slow.eager_op_us = 5;
  slow.bandwidth_efficiency = 0.5;
  toy.executor = slow;
  EXPECT_DOUBLE_EQ(SyntheticTime(lm, toy, 3, TaskPhase::kForward, 4, 8).value(), 53.248);
  EXPECT_DOUBLE_EQ(SyntheticTime(lm, toy, 3, TaskPhase::kBackward, 4, 8).value(), 77.824);
  EXPECT_DOUBLE_EQ(SyntheticTime(lm, toy, 3, TaskPhase::kBackward, 4, 4).value(), 2 * 77.824);
  slow.eager_op_us = 20;  // launches dominate: 6 x 20
  toy.executor = slow;
  EXPECT_DOUBLE_EQ(SyntheticTime(lm, toy, 3, TaskPhase::kForward, 4, 8).value(), 120);
  // Encoders keep the graph law.
  DeviceSpec plain = H100();
  EXPECT_EQ(SyntheticTime(m, d, 0, TaskPhase::kForward, 32, 64).value(),
            SyntheticTime(m, plain, 0, TaskPhase::kForward, 32, 64).value());
}

TEST(ExecutorOverhead, ParameterTensorsAsTheModelsBuildThem) {
  ModelSpec m = ClipB16();
  // ViT: 12 blocks x 12 + patch conv weight + bias + positions + ln_pre (2) + ln_post (2) +
  // proj (no class token with the default pooling? the spec's pool decides).
  const ModuleSpec& v = m.modules[0];
  const int cls = v.pool == Pooling::kCls || v.drop_cls ? 1 : 0;
  EXPECT_EQ(EstimateParameterTensors(v), 144 + 2 + 1 + cls + 4 + 1);
  // Text: 12 x 12 + token embedding + positions + ln_final (2) + proj.
  EXPECT_EQ(EstimateParameterTensors(m.modules[1]), 149);
  EXPECT_EQ(EstimateParameterTensors(m.modules[2]), 1);  // the temperature
  ModuleSpec llm;
  llm.kind = ModuleKind::kLlm;
  llm.depth = 16;
  // 16 x 6 (RMSNorm, SwiGLU, no biases) + embedding + final norm + LM head.
  EXPECT_EQ(EstimateParameterTensors(llm), 99);
  llm.tie_embeddings = true;
  EXPECT_EQ(EstimateParameterTensors(llm), 98);
}

// vision (224/16: 196 patch tokens, no pooling) -> projector -> llm (256 text tokens, a
// vocabulary of 1000) -> next-token loss.
ModelSpec MiniLlava() {
  ModelSpec m;
  m.name = "mini-llava";
  m.batch_size = 4;
  ModuleSpec v;
  v.name = "vision";
  v.kind = ModuleKind::kVit;
  v.width = 768, v.depth = 2, v.heads = 12, v.image_size = 224, v.patch_size = 16;
  v.channels = 3, v.pool = Pooling::kNone;
  ModuleSpec p;
  p.name = "proj";
  p.kind = ModuleKind::kProjector;
  p.projector = ProjectorKind::kLinear;
  p.in_dim = 768, p.out_dim = 1024;
  ModuleSpec l;
  l.name = "llm";
  l.kind = ModuleKind::kLlm;
  l.width = 1024, l.depth = 2, l.heads = 16, l.seq_len = 256, l.vocab_size = 1000;
  ModuleSpec loss;
  loss.name = "loss";
  loss.kind = ModuleKind::kLoss;
  loss.loss = LossKind::kNextToken;
  m.modules = {v, p, l, loss};
  m.edges = {{"vision", "proj"}, {"proj", "llm"}, {"llm", "loss"}};
  return m;
}

TEST(SyntheticLaw, AnLlmsEfficiencyCountsItsPrefixTokens) {
  // The LLM's GEMMs run 452 rows per sample (omni-small's ran 1952 while the law saw 256).
  ModelSpec m = MiniLlava();
  EXPECT_EQ(EstimateTaskWork(m, 2, TaskPhase::kForward, 4).tokens, 4.0 * (256 + 196));
  EXPECT_EQ(EstimateTaskWork(m, 0, TaskPhase::kForward, 4).tokens, 4.0 * 196);
}

TEST(SyntheticLaw, WiderGemmsRunCloserToPeak) {
  // With no bandwidth or launch term the law is compute alone, so the width factor shows as
  // the ratio: (1024 / 768)^-0.4 for the 1024-wide LLM, 1 for the 768-wide ViT.
  ModelSpec m = MiniLlava();
  DeviceSpec d = H100();
  d.memory_bandwidth = BytesPerSec(1e30);
  d.launch_overhead = TimeUs(0);
  SyntheticLaw flat;
  flat.width_exponent = 0;
  const SyntheticLaw law;  // the default, fitted (Note [synthetic scaling law])
  EXPECT_EQ(law.width_exponent, 0.4);
  const double llm = SyntheticTime(m, d, 2, TaskPhase::kForward, 4, 64, law).value() /
                     SyntheticTime(m, d, 2, TaskPhase::kForward, 4, 64, flat).value();
  EXPECT_NEAR(llm, std::pow(1024.0 / 768, -0.4), 1e-9);
  EXPECT_NEAR(SyntheticTime(m, d, 0, TaskPhase::kBackward, 4, 64, law).value(),
              SyntheticTime(m, d, 0, TaskPhase::kBackward, 4, 64, flat).value(), 1e-9);
}

TEST(Calibration, ConvergesGeometricallyToTheTrueRatio) {
  Calibration cal;
  const double truth = 1.3;  // the GPU is 30% slower than the profile says
  double uncalibrated = 100;
  for (int i = 0; i < 12; ++i) {
    double predicted = uncalibrated * cal.factor("v", TaskPhase::kForward);
    ASSERT_TRUE(
        cal.ObserveTask("v", TaskPhase::kForward, TimeUs(truth * uncalibrated), TimeUs(predicted))
            .ok());
  }
  EXPECT_NEAR(cal.factor("v", TaskPhase::kForward), truth, 1e-3);
  EXPECT_DOUBLE_EQ(cal.factor("v", TaskPhase::kBackward), 1.0);  // others untouched
}

TEST(Calibration, OneUpdateIsHalfTheLogError) {
  Calibration cal;
  ASSERT_TRUE(cal.ObserveTask("v", TaskPhase::kForward, TimeUs(121), TimeUs(100)).ok());
  EXPECT_NEAR(cal.factor("v", TaskPhase::kForward), 1.1, 1e-12);  // sqrt(1.21)
}

TEST(Calibration, BoundedPerStepAndOverall) {
  Calibration cal;
  ASSERT_TRUE(cal.ObserveTask("v", TaskPhase::kForward, TimeUs(1000), TimeUs(100)).ok());
  EXPECT_DOUBLE_EQ(cal.factor("v", TaskPhase::kForward), 1.25);  // an outlier moves 25% at most
  for (int i = 0; i < 50; ++i)
    ASSERT_TRUE(cal.ObserveTask("v", TaskPhase::kForward, TimeUs(1000), TimeUs(100)).ok());
  EXPECT_DOUBLE_EQ(cal.factor("v", TaskPhase::kForward), 2.0);
  for (int i = 0; i < 50; ++i)
    ASSERT_TRUE(cal.ObserveStep(TimeUs(1), TimeUs(100)).ok());
  EXPECT_DOUBLE_EQ(cal.step_factor(), 0.5);
}

TEST(Calibration, RejectsNonsenseAndRoundTrips) {
  Calibration cal;
  EXPECT_FALSE(cal.ObserveTask("v", TaskPhase::kForward, TimeUs(0), TimeUs(1)).ok());
  EXPECT_FALSE(cal.ObserveStep(TimeUs(1), TimeUs(NAN)).ok());
  ASSERT_TRUE(cal.ObserveTask("v", TaskPhase::kBackward, TimeUs(121), TimeUs(100)).ok());
  ASSERT_TRUE(cal.ObserveStep(TimeUs(81), TimeUs(100)).ok());
  Calibration back = *Calibration::FromJson(cal.ToJson());
  EXPECT_DOUBLE_EQ(back.factor("v", TaskPhase::kBackward), cal.factor("v", TaskPhase::kBackward));
  EXPECT_DOUBLE_EQ(back.step_factor(), 0.9);
}

TEST(Calibration, AppliedByTheModel) {
  ModelSpec m = ToyModel({"a"}, {});
  DeviceSpec d = ToyDevice();
  Profile p = ToyProfile(m, d, {{"a.fwd", {100}}, {"a.bwd", {100}}, {"a.opt", {10}}}, 8);
  Calibration cal;
  ASSERT_TRUE(cal.ObserveTask("a", TaskPhase::kForward, TimeUs(121), TimeUs(100)).ok());
  PerfModel pm = *PerfModel::Build(m, d, p, 8, {}, &cal);
  EXPECT_NEAR(pm.Isolated(PerfModel::Kind(0, TaskPhase::kForward), 8).value(), 110, 1e-9);
  EXPECT_NEAR(pm.Isolated(PerfModel::Kind(0, TaskPhase::kForward), 4).value(), 220, 1e-9);
}

}  // namespace
}  // namespace mosaic
