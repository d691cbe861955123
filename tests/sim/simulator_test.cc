// Golden timelines of small hand-made steps (every number below is computed by hand in the
// comments), determinism, deadlock detection, memory, and a check against the H100 whole-step
// measurements of gpu-facts.md.
#include <gtest/gtest.h>

#include <cstring>
#include <optional>

#include "core/plan.h"
#include "perfmodel/perf_model.h"
#include "perfmodel/synthetic_profile.h"
#include "sim/simulator.h"
#include "sim/timeline.h"
#include "toy_step.h"

namespace mosaic {
namespace {

using testing::ToyDevice;
using testing::ToyModel;
using testing::ToyProfile;
using testing::ToyTask;

// Times on all 8 SMs; one measured point, so on q SMs a task takes time * 8 / q; no traffic,
// so no contention. Demand on a shared stream: 8 / 1.05 SMs.
struct Toy {
  ModelSpec model;
  DeviceSpec device = ToyDevice();
  TaskGraph graph;
  std::unique_ptr<PerfModel> perf;
  Toy(std::vector<std::pair<std::string, std::string>> edges, int micro_batches,
      std::map<std::string, ToyTask> tasks, std::map<std::string, int> buffers = {},
      std::optional<ExecutorSpec> executor = std::nullopt) {
    device.executor = executor;
    model = ToyModel({"a", "b"}, edges);
    Profile p = ToyProfile(model, device, tasks, model.batch_size / micro_batches);
    PerfModelOptions o;
    o.contention = 0;
    perf = std::make_unique<PerfModel>(
        *PerfModel::Build(model, device, p, model.batch_size / micro_batches, o));
    graph = *BuildTaskGraph(model, micro_batches, buffers);
  }
  SimPartition Part(const std::string& id, PartitionKind kind, int sms,
                    std::vector<std::string> tasks) const {
    SimPartition p;
    p.id = id;
    p.kind = kind;
    p.sms = sms;
    for (const auto& t : tasks) {
      int i = graph.Find(t);
      EXPECT_GE(i, 0) << t;
      p.tasks.push_back(i);
    }
    return p;
  }
  SimResult Run(const SimProgram& program) const {
    Simulator sim(graph, *perf);
    StatusOr<SimResult> r = sim.Run(program);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : SimResult{};
  }
  TimeUs Start(const SimResult& r, const std::string& t) const {
    return r.tasks[graph.Find(t)].start;
  }
  TimeUs End(const SimResult& r, const std::string& t) const { return r.tasks[graph.Find(t)].end; }
};

const std::map<std::string, ToyTask> kTimes = {{"a.fwd", {100}}, {"a.bwd", {200}}, {"a.opt", {10}},
                                               {"b.fwd", {50}},  {"b.bwd", {100}}, {"b.opt", {10}}};

TEST(Golden, TwoDedicatedPartitions) {
  Toy toy({}, 1, kTimes);
  SimProgram prog;
  prog.phases.push_back(
      {"step",
       {toy.Part("A", PartitionKind::kDedicated, 4, {"a.fwd.0", "a.bwd.0", "a.opt"}),
        toy.Part("B", PartitionKind::kDedicated, 4, {"b.fwd.0", "b.bwd.0", "b.opt"})}});
  SimResult r = toy.Run(prog);
  // Half the SMs: twice the time. a: 0-200, 200-600, 600-620. b: 0-100, 100-300, 300-320.
  EXPECT_EQ(toy.Start(r, "a.fwd.0").value(), 0);
  EXPECT_EQ(toy.End(r, "a.fwd.0").value(), 200);
  EXPECT_EQ(toy.End(r, "a.bwd.0").value(), 600);
  EXPECT_EQ(toy.End(r, "a.opt").value(), 620);
  EXPECT_EQ(toy.End(r, "b.fwd.0").value(), 100);
  EXPECT_EQ(toy.End(r, "b.bwd.0").value(), 300);
  EXPECT_EQ(toy.Start(r, "b.opt").value(), 300);
  EXPECT_EQ(toy.End(r, "b.opt").value(), 320);
  EXPECT_EQ(r.step.value(), 620);
  EXPECT_EQ(r.busy[0][0].value(), 620);
  EXPECT_EQ(r.busy[0][1].value(), 320);
  // SM-time: 4 SMs x 620 + 4 x 320 over 8 x 620.
  EXPECT_DOUBLE_EQ(r.utilization, (4.0 * 620 + 4.0 * 320) / (8.0 * 620));
  EXPECT_EQ(r.events, 12);
}

// Note [executor overhead]: the toy's two 4 x 4 linear projectors hold 20 parameters and 2
// tensors each. With 5 us per zeroed tensor at full bandwidth (1e6 B/us): zero = 4 x 5 +
// 4 B x 40 / 1e6 = 20.00016 us, optimizer = 40 B x 40 / 1e6 = 0.0016 us.
TEST(Golden, ExecutorOverheadWrapsAWholeStepAndTheOptimizerTasksTakeNoTime) {
  ExecutorSpec ex;
  ex.zero_grad_us_per_tensor = 5;
  Toy toy({}, 1, kTimes, {}, ex);
  SimProgram prog;
  prog.phases.push_back(
      {"step",
       {toy.Part("A", PartitionKind::kDedicated, 4, {"a.fwd.0", "a.bwd.0", "a.opt"}),
        toy.Part("B", PartitionKind::kDedicated, 4, {"b.fwd.0", "b.bwd.0", "b.opt"})}});
  SimResult r = toy.Run(prog);
  const double z = 20 + 160 / 1e6;
  EXPECT_DOUBLE_EQ(r.overhead_before.value(), z);
  EXPECT_DOUBLE_EQ(r.overhead_after.value(), 1600 / 1e6);
  // TwoDedicatedPartitions shifted by z, each optimizer task instant where its partition
  // reaches it: a 0-200-600, a.opt at 600; b 0-100-300, b.opt at 300.
  EXPECT_DOUBLE_EQ(toy.Start(r, "a.fwd.0").value(), z);
  EXPECT_DOUBLE_EQ(toy.End(r, "a.bwd.0").value(), z + 600);
  EXPECT_DOUBLE_EQ(toy.Start(r, "a.opt").value(), z + 600);
  EXPECT_DOUBLE_EQ(toy.End(r, "a.opt").value(), z + 600);
  EXPECT_DOUBLE_EQ(toy.End(r, "b.opt").value(), z + 300);
  EXPECT_DOUBLE_EQ(r.phase_end[0].value(), z + 600);
  EXPECT_DOUBLE_EQ(r.step.value(), z + 600 + 1600 / 1e6);
  // Utilization over the phases' span only: 4 SMs x 600 + 4 x 300 over 8 x 600.
  EXPECT_DOUBLE_EQ(r.utilization, (4.0 * 600 + 4.0 * 300) / (8.0 * 600));
  EXPECT_EQ(r.events, 12);
  // The planner's phase search turns the per-step work off.
  Simulator sim(toy.graph, *toy.perf);
  SimOptions off;
  off.step_overhead = false;
  SimResult bare = *sim.Run(prog, off);
  EXPECT_EQ(bare.overhead_before.value(), 0);
  EXPECT_EQ(bare.step.value(), 600);
  EXPECT_EQ(bare.tasks[toy.graph.Find("a.fwd.0")].start.value(), 0);

  // One phase of a step (what the planner simulates) pays no per-step work; an optimizer task
  // that waits for nothing ends at once, and the next task of its partition starts at 0.
  SimProgram part;
  part.phases.push_back(
      {"opt-first", {toy.Part("A", PartitionKind::kShared, 0, {"a.opt", "b.opt", "a.fwd.0"})}});
  SimResult q = toy.Run(part);
  EXPECT_EQ(q.overhead_before.value(), 0);
  EXPECT_EQ(q.overhead_after.value(), 0);
  EXPECT_DOUBLE_EQ(toy.End(q, "b.opt").value(), 0);
  EXPECT_DOUBLE_EQ(toy.Start(q, "a.fwd.0").value(), 0);
  EXPECT_DOUBLE_EQ(q.step.value(), 100);
}

TEST(Golden, SharedStreamsRedivideWhenATaskEnds) {
  Toy toy({}, 1, kTimes);
  SimProgram prog;
  prog.phases.push_back({"forward",
                         {toy.Part("A", PartitionKind::kShared, 0, {"a.fwd.0"}),
                          toy.Part("B", PartitionKind::kShared, 0, {"b.fwd.0"})}});
  SimResult r = toy.Run(prog);
  // Both demand 8/1.05 > 4: 4 SMs each. a at 4 SMs: 200 us, b: 100 us. b ends at 100 with a
  // half done; alone, a gets all 8 SMs (100 us for the whole task): 50 more, ends at 150.
  EXPECT_DOUBLE_EQ(toy.End(r, "b.fwd.0").value(), 100);
  EXPECT_DOUBLE_EQ(toy.End(r, "a.fwd.0").value(), 150);
  EXPECT_DOUBLE_EQ(r.tasks[toy.graph.Find("a.fwd.0")].sms, (4.0 * 100 + 8.0 * 50) / 150);
  // Busy SMs: 8 for 100 us, then a's demand 8/1.05 for 50 us.
  EXPECT_NEAR(r.utilization, (8.0 * 100 + 8.0 / 1.05 * 50) / (8.0 * 150), 1e-12);
}

TEST(Golden, AHighPriorityStreamRunsAtItsDemandAndTheOtherFillsTheRest) {
  Toy toy({}, 1, kTimes);
  SimProgram prog;
  prog.phases.push_back({"forward",
                         {toy.Part("A", PartitionKind::kShared, 0, {"a.fwd.0"}),
                          toy.Part("B", PartitionKind::kShared, 0, {"b.fwd.0"})}});
  prog.phases[0].partitions[1].priority = 1;
  SimResult r = toy.Run(prog);
  // Note [stream priorities]: b takes its demand d = 8/1.05 SMs (52.5 us, 5% over alone), a
  // the 8 - d left: at linear scaling 52.5 * (8 - d) / 800 = 2.5% of its work by then; alone
  // it does the other 97.5% in 97.5 us. Same step as equal priorities (the work is linear),
  // but b ends at 52.5 instead of 100.
  EXPECT_NEAR(toy.End(r, "b.fwd.0").value(), 52.5, 1e-9);
  EXPECT_NEAR(toy.End(r, "a.fwd.0").value(), 150, 1e-9);
  EXPECT_NEAR(r.tasks[toy.graph.Find("b.fwd.0")].sms, 8 / 1.05, 1e-12);
  // With A high instead, a runs at its demand (105 us) and b ends after it.
  prog.phases[0].partitions[1].priority = 0;
  prog.phases[0].partitions[0].priority = 1;
  SimResult q = toy.Run(prog);
  EXPECT_NEAR(toy.End(q, "a.fwd.0").value(), 105, 1e-9);
  EXPECT_GT(toy.End(q, "b.fwd.0").value(), 105);
}

TEST(Golden, ALowPriorityStreamWaitsWhileTheHighOneCanUseEverySharedSm) {
  Toy toy({}, 1, kTimes);
  SimProgram prog;
  // An idle dedicated partition holds 2 SMs: the pool is 6, under a's demand 8/1.05.
  prog.phases.push_back({"forward",
                         {toy.Part("D", PartitionKind::kDedicated, 2, {}),
                          toy.Part("A", PartitionKind::kShared, 0, {"a.fwd.0"}),
                          toy.Part("B", PartitionKind::kShared, 0, {"b.fwd.0"})}});
  prog.phases[0].partitions[1].priority = 1;
  SimResult r = toy.Run(prog);
  // a takes all 6 SMs: 100 * 8 / 6 = 133.33 us; b waits at 0 SMs (started, not running), then
  // gets the 6: 50 * 8 / 6 = 66.67 us more, ending at 200.
  EXPECT_NEAR(toy.End(r, "a.fwd.0").value(), 800.0 / 6, 1e-9);
  EXPECT_DOUBLE_EQ(toy.Start(r, "b.fwd.0").value(), 0);
  EXPECT_NEAR(toy.End(r, "b.fwd.0").value(), 200, 1e-9);
  EXPECT_NEAR(r.busy[0][1].value(), 800.0 / 6, 1e-9);
  EXPECT_NEAR(r.busy[0][2].value(), 400.0 / 6, 1e-9);  // the wait is not busy time
  EXPECT_DOUBLE_EQ(r.busy[0][0].value(), 0);
  EXPECT_NEAR(r.utilization, 6.0 * 200 / (8.0 * 200), 1e-12);
  // A priority outside 0..5 is refused when the plan is compiled.
  Plan plan;
  plan.phases.push_back({"forward", {{"A", PartitionKind::kShared, SmCount(0), {}, 6}}});
  EXPECT_FALSE(CompilePlan(plan, toy.graph, toy.device).ok());
}

TEST(Golden, DependenciesAndPhases) {
  // a feeds b: b.fwd waits for a.fwd; a.bwd waits for b.bwd.
  Toy toy({{"a", "b"}}, 1, kTimes);
  SimProgram prog;
  prog.phases.push_back({"forward",
                         {toy.Part("A", PartitionKind::kDedicated, 4, {"a.fwd.0"}),
                          toy.Part("B", PartitionKind::kDedicated, 4, {"b.fwd.0"})}});
  prog.phases.push_back(
      {"backward",
       {toy.Part("all", PartitionKind::kShared, 0, {"b.bwd.0", "a.bwd.0", "b.opt", "a.opt"})}});
  SimResult r = toy.Run(prog);
  // a.fwd 0-200 (4 SMs); b.fwd 200-300 (4 SMs, waited for a). Phase 2 from 300 on a stream
  // owning all 8 SMs: b.bwd 300-400, a.bwd 400-600, b.opt 600-610, a.opt 610-620.
  EXPECT_DOUBLE_EQ(toy.Start(r, "b.fwd.0").value(), 200);
  EXPECT_DOUBLE_EQ(toy.End(r, "b.fwd.0").value(), 300);
  EXPECT_DOUBLE_EQ(r.phase_end[0].value(), 300);
  EXPECT_DOUBLE_EQ(toy.Start(r, "b.bwd.0").value(), 300);
  EXPECT_DOUBLE_EQ(toy.End(r, "b.bwd.0").value(), 400);
  EXPECT_DOUBLE_EQ(toy.End(r, "a.bwd.0").value(), 600);
  EXPECT_DOUBLE_EQ(toy.End(r, "b.opt").value(), 610);
  EXPECT_DOUBLE_EQ(toy.End(r, "a.opt").value(), 620);
  EXPECT_DOUBLE_EQ(r.step.value(), 620);
}

TEST(Golden, SimultaneousEndsAreProcessedTogetherThenStartsInPartitionOrder) {
  // a.fwd and b.fwd take 200 us each on 4 SMs and end at the same instant; b.fwd.0 -> nothing,
  // both partitions start their next task at exactly 200.
  std::map<std::string, ToyTask> t = kTimes;
  t["b.fwd"] = {100};
  Toy toy({}, 1, t);
  SimProgram prog;
  prog.phases.push_back({"step",
                         {toy.Part("A", PartitionKind::kDedicated, 4, {"a.fwd.0", "a.bwd.0"}),
                          toy.Part("B", PartitionKind::kDedicated, 4, {"b.fwd.0", "b.bwd.0"})}});
  SimResult r = toy.Run(prog);
  EXPECT_EQ(toy.End(r, "a.fwd.0").value(), 200);
  EXPECT_EQ(toy.End(r, "b.fwd.0").value(), 200);
  EXPECT_EQ(toy.Start(r, "a.bwd.0").value(), 200);
  EXPECT_EQ(toy.Start(r, "b.bwd.0").value(), 200);
  EXPECT_EQ(toy.End(r, "a.bwd.0").value(), 600);
  EXPECT_EQ(toy.End(r, "b.bwd.0").value(), 400);
}

TEST(Golden, MicroBatchesPipelineAcrossPartitions) {
  // a feeds b, 2 micro-batches of half the batch (the profile is at that size). a on 4 SMs:
  // fwd 200 each; b on 4 SMs: fwd 100 each. a.fwd.0 0-200, a.fwd.1 200-400 while b.fwd.0
  // 200-300; b.fwd.1 400-500; then b.bwd.0 500-700, b.bwd.1 700-900 and a.bwd.0 (waits for
  // b.bwd.0) 700-1100, a.bwd.1 1100-1500.
  Toy toy({{"a", "b"}}, 2, kTimes);
  SimProgram prog;
  prog.phases.push_back(
      {"step",
       {toy.Part("A", PartitionKind::kDedicated, 4, {"a.fwd.0", "a.fwd.1", "a.bwd.0", "a.bwd.1"}),
        toy.Part("B", PartitionKind::kDedicated, 4,
                 {"b.fwd.0", "b.fwd.1", "b.bwd.0", "b.bwd.1"})}});
  SimResult r = toy.Run(prog);
  EXPECT_DOUBLE_EQ(toy.Start(r, "b.fwd.0").value(), 200);
  EXPECT_DOUBLE_EQ(toy.End(r, "a.fwd.1").value(), 400);
  EXPECT_DOUBLE_EQ(toy.Start(r, "b.fwd.1").value(), 400);
  EXPECT_DOUBLE_EQ(toy.Start(r, "b.bwd.0").value(), 500);
  EXPECT_DOUBLE_EQ(toy.Start(r, "a.bwd.0").value(), 700);
  EXPECT_DOUBLE_EQ(toy.End(r, "b.bwd.1").value(), 900);
  EXPECT_DOUBLE_EQ(toy.End(r, "a.bwd.1").value(), 1500);
  EXPECT_DOUBLE_EQ(r.step.value(), 1500);
}

TEST(Golden, ActivationPeakFollowsTheOrder) {
  std::map<std::string, ToyTask> t = kTimes;
  t["a.fwd"].activation = 1000;
  t["b.fwd"].activation = 10;
  Toy toy({}, 2, t);
  SimProgram all_forward_first;
  all_forward_first.phases.push_back(
      {"step",
       {toy.Part("A", PartitionKind::kShared, 0, {"a.fwd.0", "a.fwd.1", "a.bwd.0", "a.bwd.1"})}});
  EXPECT_DOUBLE_EQ(toy.Run(all_forward_first).peak_activation.value(), 2000);
  SimProgram one_at_a_time;
  one_at_a_time.phases.push_back(
      {"step",
       {toy.Part("A", PartitionKind::kShared, 0, {"a.fwd.0", "a.bwd.0", "a.fwd.1", "a.bwd.1"})}});
  EXPECT_DOUBLE_EQ(toy.Run(one_at_a_time).peak_activation.value(), 1000);
}

TEST(Simulator, DeadlockIsAnError) {
  Toy toy({}, 1, kTimes);
  SimProgram prog;
  prog.phases.push_back(
      {"step", {toy.Part("A", PartitionKind::kShared, 0, {"a.bwd.0", "a.fwd.0"})}});
  Simulator sim(toy.graph, *toy.perf);
  StatusOr<SimResult> r = sim.Run(prog);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("deadlock"), std::string::npos);
  EXPECT_NE(r.status().message().find("a.bwd.0"), std::string::npos);
}

TEST(Simulator, BitForBitDeterministic) {
  std::map<std::string, ToyTask> t = kTimes;
  for (auto& [k, v] : t)
    v.bytes = 3e7;  // contention on, fractional rates
  Toy toy({{"a", "b"}}, 4, t);
  SimProgram prog;
  std::vector<std::string> a, b;
  for (int m = 0; m < 4; ++m)
    a.push_back("a.fwd." + std::to_string(m));
  for (int m = 0; m < 4; ++m)
    b.push_back("b.fwd." + std::to_string(m));
  for (int m = 0; m < 4; ++m)
    b.push_back("b.bwd." + std::to_string(m));
  for (int m = 0; m < 4; ++m)
    a.push_back("a.bwd." + std::to_string(m));
  a.push_back("a.opt");
  b.push_back("b.opt");
  prog.phases.push_back({"step",
                         {toy.Part("A", PartitionKind::kShared, 0, a),
                          toy.Part("B", PartitionKind::kDedicated, 2, b)}});
  SimResult r1 = toy.Run(prog), r2 = toy.Run(prog);
  ASSERT_EQ(r1.tasks.size(), r2.tasks.size());
  for (size_t i = 0; i < r1.tasks.size(); ++i) {
    double x[2] = {r1.tasks[i].start.value(), r1.tasks[i].end.value()};
    double y[2] = {r2.tasks[i].start.value(), r2.tasks[i].end.value()};
    EXPECT_EQ(std::memcmp(x, y, sizeof x), 0);
  }
  EXPECT_EQ(std::memcmp(&r1.utilization, &r2.utilization, sizeof(double)), 0);
}

TEST(Simulator, CompilePlanChecksTasksAndShares) {
  Toy toy({}, 1, kTimes);
  Plan plan;
  plan.phases.push_back({"step",
                         {{"A", PartitionKind::kDedicated, SmCount(8), {}},
                          {"B", PartitionKind::kShared, SmCount(0), {}}}});
  StatusOr<SimProgram> p = CompilePlan(plan, toy.graph, toy.device);
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("no SMs"), std::string::npos);
  plan.phases[0].partitions[0].sms = SmCount(4);
  plan.phases[0].partitions[0].tasks = {*ParseTaskId("a.fwd.0"), *ParseTaskId("a.fwd.0")};
  EXPECT_FALSE(CompilePlan(plan, toy.graph, toy.device).ok());
}

TEST(Timeline, ChromeTraceRoundTripsToTheSameBars) {
  Toy toy({}, 1, kTimes);
  SimProgram prog;
  prog.phases.push_back(
      {"step",
       {toy.Part("A", PartitionKind::kDedicated, 4, {"a.fwd.0", "a.bwd.0", "a.opt"}),
        toy.Part("B", PartitionKind::kShared, 0, {"b.fwd.0", "b.bwd.0", "b.opt"})}});
  SimResult r = toy.Run(prog);
  Timeline tl = MakeTimeline(r, prog, toy.graph, toy.model, "toy");
  EXPECT_EQ(tl.bars.size(), 6u);
  EXPECT_EQ(tl.lanes.size(), 2u);
  EXPECT_EQ(tl.lanes[0].detail, "dedicated 4 SMs");
  Timeline back = *TimelineFromChromeTrace(ToChromeTrace(tl));
  ASSERT_EQ(back.bars.size(), tl.bars.size());
  for (size_t i = 0; i < tl.bars.size(); ++i) {
    EXPECT_EQ(back.bars[i].task, tl.bars[i].task);
    EXPECT_EQ(back.bars[i].lane, tl.bars[i].lane);
    EXPECT_DOUBLE_EQ(back.bars[i].end_us, tl.bars[i].end_us);
  }
  std::string svg = RenderGanttSvg(tl);
  EXPECT_NE(svg.find("<svg"), std::string::npos);
  EXPECT_NE(svg.find("a.fwd.0"), std::string::npos);
  EXPECT_NE(svg.find("dedicated 4 SMs"), std::string::npos);
  EXPECT_FALSE(TimelineFromChromeTrace(Json::object()).ok());
}

// gpu-facts.md, CLIP ViT-B/16 + text w512, bs32, measured fwd+bwd curves; whole step measured:
// temporal 22.65 ms, plain streams 20.76, green split ViT 104 / text 28: 23.40.
TEST(GpuFacts, SharedStreamsAndSplitsLandNearTheMeasuredSteps) {
  // The real CLIP B/16 modules (for bytes), with the measured curves; loss and optimizer
  // entries come from the synthetic law and are left out of the simulated programs.
  ModelSpec m;
  m.name = "clip";
  m.batch_size = 32;
  ModuleSpec v;
  v.name = "vision";
  v.kind = ModuleKind::kVit;
  v.width = 768, v.depth = 12, v.heads = 12, v.mlp_dim = 3072, v.image_size = 224;
  v.patch_size = 16, v.channels = 3, v.output_dim = 512;
  ModuleSpec tx;
  tx.name = "text";
  tx.kind = ModuleKind::kText;
  tx.width = 512, tx.depth = 12, tx.heads = 8, tx.mlp_dim = 2048, tx.seq_len = 77;
  tx.vocab_size = 49408, tx.output_dim = 512;
  ModuleSpec l;
  l.name = "loss";
  l.kind = ModuleKind::kLoss;
  m.modules = {v, tx, l};
  m.edges = {{"vision", "loss"}, {"text", "loss"}};
  DeviceSpec d = ToyDevice(132, 8);
  d.sm_groups = 15;
  d.memory_bandwidth = BytesPerSec(3350e9);
  const int sms[] = {16, 32, 64, 96, 120, 132};
  const double vit[] = {95.5, 51.1, 30.2, 23.1, 19.8, 17.3};
  const double text[] = {23.1, 12.8, 7.6, 6.6, 6.1, 5.3};
  Profile p;
  p.model = m.name;
  p.device = d.name;
  p.micro_batch_size = 32;
  p.source = "measured";
  for (int k = 0; k < 2; ++k) {
    for (TaskPhase ph : {TaskPhase::kForward, TaskPhase::kBackward}) {
      ProfileEntry e;
      e.module = m.modules[k].name;
      e.phase = ph;
      e.bytes = EstimateTaskWork(m, k, ph, 32).bytes;
      const double share = ph == TaskPhase::kForward ? 1.0 / 3 : 2.0 / 3;
      for (int i = 0; i < 6; ++i)
        e.points.push_back({SmCount(sms[i]), TimeUs(1000 * share * (k == 0 ? vit[i] : text[i]))});
      p.entries.push_back(e);
    }
  }
  PerfModel pm = *PerfModel::Build(m, d, p, 32);  // default contention 0.1, no traffic given
  TaskGraph g = *BuildTaskGraph(m, 1, {});
  auto part = [&](const std::string& id, PartitionKind k, int s, std::vector<std::string> ts) {
    SimPartition sp{id, k, s, {}};
    for (auto& t : ts)
      sp.tasks.push_back(g.Find(t));
    return sp;
  };
  Simulator sim(g, pm);
  SimProgram temporal, shared, split;
  temporal.phases.push_back({"step",
                             {part("all", PartitionKind::kShared, 0,
                                   {"vision.fwd.0", "text.fwd.0", "text.bwd.0", "vision.bwd.0"})}});
  shared.phases.push_back({"fwd",
                           {part("v", PartitionKind::kShared, 0, {"vision.fwd.0"}),
                            part("t", PartitionKind::kShared, 0, {"text.fwd.0"})}});
  shared.phases.push_back({"bwd",
                           {part("v", PartitionKind::kShared, 0, {"vision.bwd.0"}),
                            part("t", PartitionKind::kShared, 0, {"text.bwd.0"})}});
  split.phases.push_back({"fwd",
                          {part("v", PartitionKind::kDedicated, 104, {"vision.fwd.0"}),
                           part("t", PartitionKind::kDedicated, 28, {"text.fwd.0"})}});
  split.phases.push_back({"bwd",
                          {part("v", PartitionKind::kDedicated, 104, {"vision.bwd.0"}),
                           part("t", PartitionKind::kDedicated, 28, {"text.bwd.0"})}});
  const double t = sim.Run(temporal)->step.value() / 1000;
  const double s = sim.Run(shared)->step.value() / 1000;
  const double x = sim.Run(split)->step.value() / 1000;
  EXPECT_NEAR(t, 22.6, 0.01);  // a single stream: the sum of full-GPU times
  EXPECT_NEAR(s, 20.76, 0.02 * 20.76);
  // The model rates the static split 5.5% better than measured (22.1 vs 23.4 ms): the profile
  // has no point at 104 SMs and no measured pairs, so neither wave quantization there nor the
  // real contention is known. docs/planning.md discusses it; measured pairs and the engine's
  // timing of the short list are the remedy.
  EXPECT_NEAR(x, 23.40, 0.06 * 23.40);
  EXPECT_LT(s, t);  // plain streams beat temporal, as measured
  EXPECT_LT(s, x);  // and beat the static split, as measured
}

}  // namespace
}  // namespace mosaic
