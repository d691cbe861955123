// Multi-GPU placement: the communication formulas by hand, the calibration hook and its bounds,
// N = 1 reproducing the single-GPU planner, scaling efficiency never above 1 where the single
// GPU is not memory-bound, the layout choice flipping with the interconnect and with the
// LLM's size, and clear errors for invalid GPU counts.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "core/plan.h"
#include "perfmodel/synthetic_profile.h"
#include "planner/multi_gpu.h"
#include "zoo_inputs.h"

namespace mosaic {
namespace {

using testing::LoadZoo;
using testing::Zoo;

MultiGpuReport Plan(const Zoo& z, int gpus) {
  MultiGpuOptions o;
  o.gpus = gpus;
  StatusOr<MultiGpuReport> r = PlanMultiGpu(z.model, z.device, z.profile, o);
  EXPECT_TRUE(r.ok()) << r.status();
  return *r;
}

Zoo WithLink(Zoo z, double gbps, double latency_us) {
  z.device.link_bandwidth = BytesPerSec(gbps * 1e9);
  z.device.link_latency = TimeUs(latency_us);
  return z;
}

TEST(CommModel, FormulasByHand) {
  CommModel c(BytesPerSec(100e9), TimeUs(5));  // 100 GB/s = 1e5 bytes per microsecond
  // 2 (N-1)/N * bytes / bw + 2 (N-1) latency: 2 * 3/4 * 1e9 / 1e5 + 2 * 3 * 5.
  EXPECT_DOUBLE_EQ(c.RingAllReduce(Bytes(1e9), 4).value(), 15000.0 + 30.0);
  EXPECT_DOUBLE_EQ(c.RingAllReduce(Bytes(1e9), 2).value(), 10000.0 + 10.0);
  EXPECT_DOUBLE_EQ(c.RingAllReduce(Bytes(1e9), 1).value(), 0.0);
  // 4 buckets of at most 3e8 bytes, each paying 2 (N-1) latencies.
  EXPECT_DOUBLE_EQ(c.BucketedAllReduce(Bytes(1e9), Bytes(3e8), 4).value(), 15000.0 + 4 * 30.0);
  EXPECT_DOUBLE_EQ(c.BucketedAllReduce(Bytes(1e9), Bytes(1e9), 4).value(),
                   c.RingAllReduce(Bytes(1e9), 4).value());
  // bytes / bw + latency.
  EXPECT_DOUBLE_EQ(c.SendRecv(Bytes(1e6)).value(), 10.0 + 5.0);
  EXPECT_DOUBLE_EQ(c.SendRecv(Bytes(0)).value(), 0.0);
}

TEST(CommModel, FromDeviceSpec) {
  Zoo z = LoadZoo("clip-tiny");
  CommModel c = CommModel::FromDevice(z.device);  // h100-sxm: 450 GB/s, 5 us
  EXPECT_DOUBLE_EQ(c.bandwidth().value(), 450e9);
  EXPECT_DOUBLE_EQ(c.latency().value(), 5.0);
  DeviceSpec none = z.device;
  none.link_bandwidth = BytesPerSec(0);
  CommModel d = CommModel::FromDevice(none);
  EXPECT_DOUBLE_EQ(d.bandwidth().value(), 25e9);
  EXPECT_DOUBLE_EQ(d.latency().value(), 10.0);
}

TEST(CommModel, CalibrationScalesTheBandwidthWithinBounds) {
  CommModel c(BytesPerSec(100e9), TimeUs(5));
  // Measured: twice the bandwidth term plus the latency term: half the bandwidth.
  ASSERT_TRUE(c.CalibrateAllReduce(Bytes(1e9), 4, TimeUs(2 * 15000.0 + 30.0)).ok());
  EXPECT_DOUBLE_EQ(c.bandwidth_scale(), 0.5);
  EXPECT_DOUBLE_EQ(c.bandwidth().value(), 50e9);
  EXPECT_DOUBLE_EQ(c.RingAllReduce(Bytes(1e9), 4).value(), 30030.0);
  // Send/recv: 4x faster than the spec is clamped at 2x.
  ASSERT_TRUE(c.CalibrateSendRecv(Bytes(1e6), TimeUs(10.0 / 4 + 5.0)).ok());
  EXPECT_DOUBLE_EQ(c.bandwidth_scale(), CommModel::kMaxScale);
  // At or below the latency alone: the upper bound too.
  ASSERT_TRUE(c.CalibrateSendRecv(Bytes(1e6), TimeUs(5.0)).ok());
  EXPECT_DOUBLE_EQ(c.bandwidth_scale(), CommModel::kMaxScale);
  // Absurdly slow: the lower bound.
  ASSERT_TRUE(c.CalibrateSendRecv(Bytes(1e6), TimeUs(1e9)).ok());
  EXPECT_DOUBLE_EQ(c.bandwidth_scale(), CommModel::kMinScale);
  // Exact: 10 us of bandwidth term measured as 10 us: scale 1.
  ASSERT_TRUE(c.CalibrateSendRecv(Bytes(1e6), TimeUs(15.0)).ok());
  EXPECT_DOUBLE_EQ(c.bandwidth_scale(), 1.0);
  // Invalid measurements are errors and change nothing.
  EXPECT_EQ(c.CalibrateAllReduce(Bytes(1e9), 1, TimeUs(100)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c.CalibrateAllReduce(Bytes(0), 4, TimeUs(100)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c.CalibrateSendRecv(Bytes(1e6), TimeUs(0)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c.CalibrateSendRecv(Bytes(1e6), TimeUs(-3)).code(), StatusCode::kInvalidArgument);
  EXPECT_DOUBLE_EQ(c.bandwidth_scale(), 1.0);
}

TEST(MultiGpu, OneGpuIsTheSingleGpuPlan) {
  Zoo z = LoadZoo("clip-b16");
  StatusOr<PlanReport> single = PlanStep(z.model, z.device, z.profile, PlannerOptions{});
  ASSERT_TRUE(single.ok());
  MultiGpuReport r = Plan(z, 1);
  ASSERT_EQ(r.layouts.size(), 1u);
  EXPECT_EQ(r.layouts[0].kind, LayoutKind::kColocated);
  EXPECT_EQ(r.layouts[0].step.value(), single->plans[0].step_us);
  EXPECT_EQ(r.single_gpu_step.value(), single->plans[0].step_us);
  EXPECT_EQ(r.layouts[0].scaling_efficiency, 1.0);
  EXPECT_EQ(r.layouts[0].groups.at(0).allreduce.value(), 0.0);
  EXPECT_EQ(r.global_batch, z.model.batch_size);
  ASSERT_EQ(r.plans.size(), 1u);
  EXPECT_EQ(ToJson(r.plans[0]).dump(), ToJson(single->plans[0].plan).dump());
}

TEST(MultiGpu, InvalidGpuCountsAreClearErrors) {
  Zoo z = LoadZoo("clip-tiny", "cpu");
  for (int n : {0, -1, -512}) {
    MultiGpuOptions o;
    o.gpus = n;
    StatusOr<MultiGpuReport> r = PlanMultiGpu(z.model, z.device, z.profile, o);
    ASSERT_FALSE(r.ok()) << n;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(r.status().message(), "--gpus must be at least 1 (got " + std::to_string(n) + ")");
  }
  MultiGpuOptions o;
  o.gpus = 4;
  o.planner.perf.world_size = 4;  // would count the all-reduce twice
  EXPECT_EQ(PlanMultiGpu(z.model, z.device, z.profile, o).status().code(),
            StatusCode::kInvalidArgument);
}

class Efficiency : public ::testing::TestWithParam<const char*> {};

TEST_P(Efficiency, NeverAboveOneAndRanked) {
  Zoo z = LoadZoo(GetParam());
  for (int n : {2, 8, 64, 512}) {
    MultiGpuReport r = Plan(z, n);
    ASSERT_FALSE(r.layouts.empty());
    EXPECT_EQ(r.global_batch, n * z.model.batch_size);
    for (size_t i = 0; i < r.layouts.size(); ++i) {
      const MultiGpuLayout& l = r.layouts[i];
      EXPECT_GT(l.scaling_efficiency, 0) << l.name << " on " << n;
      EXPECT_LE(l.scaling_efficiency, 1.0) << l.name << " on " << n;
      int gpus = 0;
      for (const GpuGroup& g : l.groups)
        gpus += g.gpus;
      EXPECT_EQ(gpus, n) << l.name;
      EXPECT_DOUBLE_EQ(l.samples_per_s, r.global_batch / l.step.value() * 1e6);
      if (i > 0) {
        EXPECT_LE(r.layouts[i - 1].step.value(), l.step.value());
      }
    }
    EXPECT_EQ(r.plans.size(), r.layouts[0].groups.size());
  }
}
INSTANTIATE_TEST_SUITE_P(Zoo, Efficiency,
                         ::testing::Values("clip-b16", "llava-small", "imagebind-like",
                                           "omni-small"));

TEST(MultiGpu, ColocationAllReduceOverlapsBackward) {
  Zoo z = LoadZoo("clip-b16");
  MultiGpuReport r = Plan(z, 8);
  const MultiGpuLayout* co = nullptr;
  for (const MultiGpuLayout& l : r.layouts)
    if (l.kind == LayoutKind::kColocated) co = &l;
  ASSERT_NE(co, nullptr);
  const GpuGroup& g = co->groups.at(0);
  EXPECT_GT(g.allreduce.value(), 0);
  EXPECT_LT(g.exposed_allreduce.value(), g.allreduce.value());  // most of it hidden
  EXPECT_GT(g.comm_sm_cost.value(), 0);                         // but its SMs cost compute
  EXPECT_DOUBLE_EQ(co->step.value(), r.single_gpu_step.value() + g.exposed_allreduce.value() +
                                         g.comm_sm_cost.value());
}

TEST(MultiGpu, SlowInterconnectFlipsToDisaggregated) {
  Zoo z = LoadZoo("clip-b16");
  // The spec's NVLink (450 GB/s) and a 10x faster one: colocated with data parallelism wins
  // (the single-GPU plan's colocation gain, the all-reduce mostly hidden).
  EXPECT_EQ(Plan(z, 64).layouts[0].kind, LayoutKind::kColocated);
  EXPECT_EQ(Plan(WithLink(z, 4500, 0.5), 64).layouts[0].kind, LayoutKind::kColocated);
  // 10 GB/s: each GPU all-reducing only its own stage's gradients wins.
  MultiGpuReport slow = Plan(WithLink(z, 10, 0.5), 64);
  EXPECT_EQ(slow.layouts[0].kind, LayoutKind::kDisaggregated);
  EXPECT_EQ(slow.plans.size(), 2u);
  // On 512 GPUs the ring's 2 (N-1) latencies per bucket decide at 5 us; without them the
  // colocated layout wins again.
  Zoo llava = LoadZoo("llava-small");
  EXPECT_EQ(Plan(llava, 512).layouts[0].kind, LayoutKind::kDisaggregated);
  EXPECT_EQ(Plan(WithLink(llava, 4500, 0.5), 512).layouts[0].kind, LayoutKind::kColocated);
}

TEST(MultiGpu, ABigLlmFlipsBackToColocated) {
  // On a slow link (15 GB/s) two GPUs split llava-small's encoders and LLM (each all-reduces
  // half the gradients). Made 4x deeper, the LLM dwarfs the encoders: the encoder GPU would
  // idle, so both GPUs colocate everything. (At 10 GB/s, since the synthetic law rates a
  // 2048-wide LLM's GEMMs 1.48x more efficient (width_exponent), the deep LLM's colocated
  // all-reduce no longer hides behind its shorter backward, and the split stays ahead.)
  Zoo z = WithLink(LoadZoo("llava-small"), 15, 0.5);
  EXPECT_EQ(Plan(z, 2).layouts[0].kind, LayoutKind::kDisaggregated);
  z.model.modules[z.model.IndexOf("llm")].depth *= 4;
  z.profile = MakeSyntheticProfile(z.model, z.device, z.model.micro_batch_size());
  EXPECT_EQ(Plan(z, 2).layouts[0].kind, LayoutKind::kColocated);
}

TEST(MultiGpu, DisaggregatedStepIsThePipelineFormula) {
  Zoo z = LoadZoo("llava-small");
  MultiGpuReport r = Plan(z, 64);
  int checked = 0;
  for (const MultiGpuLayout& l : r.layouts) {
    if (l.kind != LayoutKind::kDisaggregated) continue;
    const GpuGroup& a = l.groups.at(0);
    const GpuGroup& b = l.groups.at(1);
    EXPECT_EQ(a.gpus + b.gpus, 64);
    // Micro-batches dealt out evenly: ceil(N M / G) per GPU for some M in {1, 2, 4, 8}.
    bool dealt = false;
    for (int m : {1, 2, 4, 8})
      dealt = dealt || (a.micro_batches_per_gpu == (64 * m + a.gpus - 1) / a.gpus &&
                        b.micro_batches_per_gpu == (64 * m + b.gpus - 1) / b.gpus);
    EXPECT_TRUE(dealt) << l.name;
    const double e = a.compute.value() / a.micro_batches_per_gpu;
    const double ll = b.compute.value() / b.micro_batches_per_gpu;
    const double c = a.link.value() / a.micro_batches_per_gpu;
    EXPECT_NEAR(c, b.link.value() / b.micro_batches_per_gpu, 1e-9 * c);
    const double step =
        std::max(std::max(a.compute.value(), a.link.value()) + a.comm_sm_cost.value(),
                 std::max(b.compute.value(), b.link.value()) + b.comm_sm_cost.value()) +
        e + ll + 2 * c - std::max(e, ll) +
        std::max(a.optimizer.value() + a.exposed_allreduce.value(),
                 b.optimizer.value() + b.exposed_allreduce.value());
    EXPECT_NEAR(l.step.value(), step, 1e-9 * step) << l.name;
    ++checked;
  }
  EXPECT_GE(checked, 2);
}

TEST(MultiGpu, CalibratedLinkIsUsed) {
  Zoo z = LoadZoo("clip-b16");
  CommModel comm = CommModel::FromDevice(z.device);
  const double bytes = 1e9;
  // Measured at a quarter of the spec bandwidth.
  ASSERT_TRUE(comm.CalibrateAllReduce(Bytes(bytes), 8,
                                      TimeUs(4 * 1e6 * 2 * 7.0 / 8 * bytes / 450e9 + 2 * 7 * 5.0))
                  .ok());
  EXPECT_DOUBLE_EQ(comm.bandwidth_scale(), 0.25);
  MultiGpuOptions o;
  o.gpus = 8;
  o.comm = &comm;
  MultiGpuReport slow = *PlanMultiGpu(z.model, z.device, z.profile, o);
  MultiGpuReport spec = Plan(z, 8);
  EXPECT_DOUBLE_EQ(slow.comm.bandwidth().value(), 450e9 / 4);
  auto colocated = [](const MultiGpuReport& r) {
    for (const MultiGpuLayout& l : r.layouts)
      if (l.kind == LayoutKind::kColocated) return l.groups.at(0).allreduce.value();
    return -1.0;
  };
  // Same latency terms, four times the bandwidth term: slow - spec = 3 x the spec's bandwidth
  // term, and what is left of the spec's time is a whole number of buckets' 2 (N-1) latencies.
  const double bandwidth_term = (colocated(slow) - colocated(spec)) / 3;
  EXPECT_GT(bandwidth_term, 0);
  const double buckets = (colocated(spec) - bandwidth_term) / (2 * 7 * 5.0);
  EXPECT_GE(buckets, 1);
  EXPECT_NEAR(buckets, std::round(buckets), 1e-6);
}

TEST(MultiGpu, HybridLayoutsFromThreeGpus) {
  Zoo z = LoadZoo("clip-b16");
  for (const MultiGpuLayout& l : Plan(z, 2).layouts)
    EXPECT_NE(l.kind, LayoutKind::kHybrid) << l.name;  // needs a colocated GPU and a pipeline
  MultiGpuReport r = Plan(z, 8);
  const MultiGpuLayout* hybrid = nullptr;
  for (const MultiGpuLayout& l : r.layouts)
    if (l.kind == LayoutKind::kHybrid) hybrid = &l;
  ASSERT_NE(hybrid, nullptr);
  ASSERT_EQ(hybrid->groups.size(), 3u);
  EXPECT_EQ(hybrid->groups[0].name, "all");
  EXPECT_EQ(hybrid->groups[0].gpus + hybrid->groups[1].gpus + hybrid->groups[2].gpus, 8);
  // The colocated GPUs join both rings: they all-reduce more than either stage's GPUs.
  EXPECT_GT(hybrid->groups[0].allreduce.value(), hybrid->groups[1].allreduce.value());
  EXPECT_GT(hybrid->groups[0].allreduce.value(), hybrid->groups[2].allreduce.value());
  // Every global micro-batch is processed: h q_c + pipeline >= N M.
  const long long q =
      static_cast<long long>(hybrid->groups[0].gpus) * hybrid->groups[0].micro_batches_per_gpu +
      static_cast<long long>(hybrid->groups[1].gpus) * hybrid->groups[1].micro_batches_per_gpu;
  EXPECT_GE(q, 8LL * z.model.micro_batches);
}

TEST(MultiGpu, Deterministic) {
  Zoo z = LoadZoo("llava-small");
  MultiGpuReport a = Plan(z, 64), b = Plan(z, 64);
  ASSERT_EQ(a.layouts.size(), b.layouts.size());
  for (size_t i = 0; i < a.layouts.size(); ++i) {
    EXPECT_EQ(a.layouts[i].name, b.layouts[i].name);
    EXPECT_EQ(a.layouts[i].step.value(), b.layouts[i].step.value());
  }
}

}  // namespace
}  // namespace mosaic
