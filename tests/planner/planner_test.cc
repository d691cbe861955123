// Planner tests: never worse than the temporal and all-shared baselines, equal to the
// exhaustive oracle on small cases, valid plans whose re-simulation matches the prediction,
// and clear errors for budgets that cannot fit.
#include <gtest/gtest.h>

#include "../sim/toy_step.h"
#include "core/plan.h"
#include "perfmodel/synthetic_profile.h"
#include "planner/inputs.h"
#include "planner/planner.h"
#include "sim/simulator.h"
#include "zoo_inputs.h"

namespace mosaic {
namespace {

using testing::ToyDevice;
using testing::ToyModel;
using testing::ToyProfile;
using testing::ToyTask;

using testing::LoadZoo;
using testing::Zoo;

// Re-simulates a plan the way `mosaic simulate` does, from the plan alone.
double Resimulate(const Plan& plan, const Zoo& z, const PlannerOptions& options) {
  EXPECT_TRUE(ValidatePlan(plan, z.model, z.device).ok()) << ValidatePlan(plan, z.model, z.device);
  TaskGraph g = *BuildTaskGraph(z.model, plan);
  SimProgram prog = *CompilePlan(plan, g, z.device);
  PerfModelOptions o = options.perf;
  o.contention =
      PerfModel::FitContention(z.model, z.device, z.profile, o.default_contention).value();
  PerfModel pm =
      *PerfModel::Build(z.model, z.device, z.profile, z.model.batch_size / plan.micro_batches, o);
  Simulator sim(g, pm);
  return sim.Run(prog)->step.value();
}

class ZooPlans : public ::testing::TestWithParam<const char*> {};

TEST_P(ZooPlans, NeverWorseThanTemporalOrAllSharedAndValid) {
  Zoo z = LoadZoo(GetParam());
  PlannerOptions options;
  StatusOr<PlanReport> r = PlanStep(z.model, z.device, z.profile, options);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_FALSE(r->plans.empty());
  EXPECT_LE(r->plans.size(), 5u);
  EXPECT_LE(r->plans[0].step_us, r->temporal_us);
  EXPECT_LE(r->plans[0].step_us, r->all_shared_us);
  for (size_t i = 1; i < r->plans.size(); ++i)
    EXPECT_LE(r->plans[i - 1].step_us, r->plans[i].step_us);
  for (const RankedPlan& rp : r->plans) {
    EXPECT_DOUBLE_EQ(Resimulate(rp.plan, z, options), rp.step_us) << rp.strategy;
    ASSERT_TRUE(rp.plan.predicted_step.has_value());
    EXPECT_DOUBLE_EQ(rp.plan.predicted_step->value(), rp.step_us);
  }
}

INSTANTIATE_TEST_SUITE_P(Zoo, ZooPlans,
                         ::testing::Values("clip-tiny", "clip-b16", "clip-l14", "llava-small",
                                           "omni-small", "imagebind-like"));

TEST(Planner, TemporalBaselineIsOneStreamInOrder) {
  // Toy: a single stream runs tasks back to back at full speed: 100+200+10+50+100+10.
  ModelSpec m = ToyModel({"a", "b"}, {{"a", "b"}});
  DeviceSpec d = ToyDevice();
  Profile p = ToyProfile(m, d,
                         {{"a.fwd", {100}},
                          {"a.bwd", {200}},
                          {"a.opt", {10}},
                          {"b.fwd", {50}},
                          {"b.bwd", {100}},
                          {"b.opt", {10}}},
                         8);
  PlannerOptions o;
  o.micro_batches = {1};
  o.perf.contention = 0;
  PlanReport r = *PlanStep(m, d, p, o);
  EXPECT_DOUBLE_EQ(r.temporal_us, 470);
}

// Small generated instances: the heuristic matches the exhaustive oracle.
struct SmallCase {
  int modules;
  bool chain;
  double scale[4];
  double saturation[4];  // SMs beyond which the module stops speeding up
};

Profile CaseProfile(const ModelSpec& m, const DeviceSpec& d, const SmallCase& c) {
  Profile p;
  p.model = m.name;
  p.device = d.name;
  p.micro_batch_size = m.batch_size;
  p.source = "measured";
  for (int k = 0; k < c.modules; ++k) {
    for (TaskPhase ph : {TaskPhase::kForward, TaskPhase::kBackward, TaskPhase::kOptimizer}) {
      ProfileEntry e;
      e.module = m.modules[k].name;
      e.phase = ph;
      const double w = c.scale[k] * (ph == TaskPhase::kForward    ? 1
                                     : ph == TaskPhase::kBackward ? 2
                                                                  : 0.1);
      e.bytes = Bytes(w * 2e5);
      for (int s = d.sm_granularity.value(); s <= d.sm_count.value();
           s += d.sm_granularity.value()) {
        const double eff = std::min<double>(s, c.saturation[k]);
        e.points.push_back({SmCount(s), TimeUs(5 + w * 100 / eff)});
      }
      p.entries.push_back(e);
    }
  }
  return p;
}

TEST(Planner, MatchesTheOracleOnSmallCases) {
  const SmallCase cases[] = {
      {2, false, {1, 1}, {16, 16}},     {2, false, {4, 1}, {16, 4}},
      {2, true, {3, 1}, {12, 16}},      {3, false, {2, 1, 0.5}, {16, 8, 4}},
      {3, true, {1, 2, 1}, {8, 16, 8}}, {3, false, {5, 1, 1}, {16, 6, 6}},
      {2, false, {1, 6}, {4, 16}},      {3, true, {0.2, 3, 0.5}, {16, 16, 2}},
  };
  int index = 0;
  for (const SmallCase& c : cases) {
    std::vector<std::string> names = {"a", "b", "c", "d"};
    names.resize(c.modules);
    std::vector<std::pair<std::string, std::string>> edges;
    if (c.chain)
      for (int k = 0; k + 1 < c.modules; ++k)
        edges.push_back({names[k], names[k + 1]});
    ModelSpec m = ToyModel(names, edges, 4);
    DeviceSpec d = ToyDevice(16, 2);
    Profile p = CaseProfile(m, d, c);
    PlannerOptions o;
    o.micro_batches = {1, 2};
    PlanReport h = *PlanStep(m, d, p, o);
    PlanReport x = *PlanStepExhaustive(m, d, p, o);
    EXPECT_LE(x.plans[0].step_us, h.plans[0].step_us * (1 + 1e-12)) << "case " << index;
    EXPECT_NEAR(h.plans[0].step_us, x.plans[0].step_us, 1e-9 * x.plans[0].step_us)
        << "case " << index << ": heuristic " << h.plans[0].strategy << " vs oracle "
        << x.plans[0].strategy;
    ++index;
  }
}

TEST(Planner, PlansEveryPhaseStructure) {
  // Each structure yields plans whose phases each carry their own partition set.
  Zoo z = LoadZoo("clip-b16");
  for (Structure st : {Structure::kSingle, Structure::kTwoPhases, Structure::kThreePhases}) {
    PlannerOptions o;
    o.structures = {st};
    o.top_k = 20;
    PlanReport r = *PlanStep(z.model, z.device, z.profile, o);
    bool found = false;
    for (const RankedPlan& rp : r.plans) {
      if (rp.plan.phases.size() != PhasesOf(st).size()) continue;
      found = true;
      EXPECT_TRUE(ValidatePlan(rp.plan, z.model, z.device).ok()) << rp.strategy;
    }
    EXPECT_TRUE(found) << ToString(st);
  }
}

TEST(Planner, PerPhaseSplitsFollowThePhase) {
  // Amdahl-shaped curves (a serial part) reward ending concurrent tasks together. a is heavy in
  // forward and light in backward, b the reverse: the best two-phase plan gives a the larger
  // dedicated share in forward and b in backward.
  ModelSpec m = ToyModel({"a", "b"}, {});
  DeviceSpec d = ToyDevice(16, 2);
  Profile p;
  p.model = m.name;
  p.device = d.name;
  p.micro_batch_size = m.batch_size;
  p.source = "measured";
  for (const char* name : {"a", "b"}) {
    for (TaskPhase ph : {TaskPhase::kForward, TaskPhase::kBackward, TaskPhase::kOptimizer}) {
      ProfileEntry e;
      e.module = name;
      e.phase = ph;
      const bool heavy = (std::string(name) == "a") == (ph == TaskPhase::kForward);
      const double work = ph == TaskPhase::kOptimizer ? 10 : heavy ? 4000 : 1000;
      for (int s = 2; s <= 16; s += 2)
        e.points.push_back({SmCount(s), TimeUs(200 + work / s)});
      p.entries.push_back(e);
    }
  }
  PlannerOptions o;
  o.micro_batches = {1};
  o.perf.contention = 0;
  o.structures = {Structure::kTwoPhases};
  o.top_k = 50;
  PlanReport r = *PlanStep(m, d, p, o);
  const Plan* best = nullptr;
  for (const RankedPlan& rp : r.plans)
    if (rp.plan.phases.size() == 2 && !best) best = &rp.plan;
  ASSERT_NE(best, nullptr);
  auto quota_of = [](const PhaseSpec& ph, const std::string& id) {
    for (const auto& part : ph.partitions)
      if (part.id == id && part.kind == PartitionKind::kDedicated) return part.sms.value();
    return 0;
  };
  // Found: forward a 12 / b 4 SMs, backward a 4 / b 12.
  EXPECT_GT(quota_of(best->phases[0], "a"), quota_of(best->phases[0], "b")) << ToJson(*best).dump();
  EXPECT_GT(quota_of(best->phases[0], "b"), 0) << "b dedicated too";
  EXPECT_GT(quota_of(best->phases[1], "b"), quota_of(best->phases[1], "a")) << ToJson(*best).dump();
}

// Modules a, b, c with every task 100 us on all 8 SMs; c needs b; a's and c's curves also get
// `low` (points below 8 SMs, ascending), b scales linearly. No contention.
struct ThreeModules {
  ModelSpec m = ToyModel({"a", "b", "c"}, {{"b", "c"}});
  DeviceSpec d = ToyDevice();
  Profile p;
  std::unique_ptr<SearchContext> ctx;
  explicit ThreeModules(const std::vector<ProfilePoint>& low) {
    std::map<std::string, ToyTask> times;
    for (const char* k : {"a", "b", "c"})
      for (const char* ph : {"fwd", "bwd", "opt"})
        times[std::string(k) + "." + ph] = {100};
    p = ToyProfile(m, d, times, 8);
    for (auto& e : p.entries)
      if (e.module != "b") e.points.insert(e.points.begin(), low.begin(), low.end());
    PerfModelOptions o;
    o.contention = 0;
    auto perf = std::make_shared<const PerfModel>(*PerfModel::Build(m, d, p, 8, o));
    ctx = *SearchContext::Make(m, d, perf, 1, {}, OrderPolicy::kForwardFirst, 0);
  }
};

TEST(Planner, ReorderingFindsABetterOrder) {
  // a and c stop scaling at 4 SMs (flat curves), b does not; c needs b. Order [a, b] on one
  // stream: a 0-100, b 100-200, then c 200-300. Order [b, a]: b 0-100, then a and c side by
  // side, each on 4 SMs at full speed: 100-200.
  ThreeModules toy({{SmCount(4), TimeUs(100)}});
  SearchContext* ctx = toy.ctx.get();
  const TaskGraph& g = ctx->graph;
  SimProgram prog;
  prog.phases.push_back({"forward",
                         {{"ab", PartitionKind::kShared, 0, {g.Find("a.fwd.0"), g.Find("b.fwd.0")}},
                          {"c", PartitionKind::kShared, 0, {g.Find("c.fwd.0")}}}});
  SimResult r = *ctx->sim->Run(prog);
  EXPECT_DOUBLE_EQ(r.step.value(), 300);
  EXPECT_TRUE(ReorderTasks(*ctx, 3, &prog, &r));
  EXPECT_DOUBLE_EQ(r.step.value(), 200);
  EXPECT_EQ(prog.phases[0].partitions[0].tasks[0], g.Find("b.fwd.0"));
  EXPECT_FALSE(ReorderTasks(*ctx, 3, &prog, &r));  // nothing left to gain
}

TEST(Planner, PrioritizingTheCriticalStreamShortensTheStep) {
  // a and c scale linearly up to 4 SMs and no further, b to all 8; c needs b; one shared
  // stream each. Equal priorities: a takes its demand 4/1.05 SMs (0-105), b the
  // rest and then the whole GPU (0-150), c 150-250. b high (Note [stream priorities]): b takes
  // its demand 8/1.05 (0-105) while a crawls on what is left; c then runs 105-205 beside a,
  // which ends at 195: the step is 205 instead of 250.
  ThreeModules toy({{SmCount(2), TimeUs(200)}, {SmCount(4), TimeUs(100)}});
  SearchContext* ctx = toy.ctx.get();
  const TaskGraph& g = ctx->graph;
  SimProgram prog;
  prog.phases.push_back({"forward",
                         {{"A", PartitionKind::kShared, 0, {g.Find("a.fwd.0")}},
                          {"B", PartitionKind::kShared, 0, {g.Find("b.fwd.0")}},
                          {"C", PartitionKind::kShared, 0, {g.Find("c.fwd.0")}}}});
  SimResult r = *ctx->sim->Run(prog);
  const double before = r.step.value();
  EXPECT_NEAR(before, 250, 1e-9);
  EXPECT_EQ(PrioritizeStreams(*ctx, &prog, &r), std::vector<std::string>{"B"});
  EXPECT_EQ(prog.phases[0].partitions[1].priority, 1);
  EXPECT_EQ(prog.phases[0].partitions[0].priority, 0);
  EXPECT_EQ(prog.phases[0].partitions[2].priority, 0);
  EXPECT_NEAR(r.step.value(), 205, 1e-9);
  EXPECT_DOUBLE_EQ(r.step.value(), ctx->sim->Run(prog)->step.value());  // `best` is the result
  EXPECT_TRUE(PrioritizeStreams(*ctx, &prog, &r).empty());  // one raised partition per phase
  // Where no priority helps (one stream per phase), nothing is raised.
  SimProgram one;
  one.phases.push_back({"forward",
                        {{"all",
                          PartitionKind::kShared,
                          0,
                          {g.Find("a.fwd.0"), g.Find("b.fwd.0"), g.Find("c.fwd.0")}}}});
  SimResult s = *ctx->sim->Run(one);
  EXPECT_TRUE(PrioritizeStreams(*ctx, &one, &s).empty());
}

TEST(Planner, WithPrioritizedStreamRaisesTheCriticalStream) {
  // Alone on the whole GPU: a's tasks take 30 us in all, b's 210, c's 120: b is raised.
  ModelSpec m = ToyModel({"a", "b", "c"}, {});
  DeviceSpec d = ToyDevice();
  std::map<std::string, ToyTask> times;
  const std::map<std::string, double> fwd = {{"a", 10}, {"b", 70}, {"c", 40}};
  for (const auto& [k, t] : fwd) {
    times[k + ".fwd"] = {t};
    times[k + ".bwd"] = {t};
    times[k + ".opt"] = {t};
  }
  PlanningInputs in{m, d, ToyProfile(m, d, times, 8), "toy profile", std::nullopt};
  Plan plan;
  plan.name = "toy-shared";
  plan.model = m.name;
  plan.device = d.name;
  PhaseSpec ph;
  ph.name = "step";
  for (const std::string k : {"a", "b", "c"}) {
    std::vector<TaskId> tasks;
    for (const std::string t : {".fwd.0", ".bwd.0", ".opt"})
      tasks.push_back(*ParseTaskId(k + t));
    ph.partitions.push_back({k, PartitionKind::kShared, SmCount(0), tasks});
  }
  plan.phases.push_back(ph);
  plan.phases[0].partitions[2].priority = 2;  // replaced: one raised stream per phase
  std::vector<std::string> raised;
  StatusOr<Plan> out = WithPrioritizedStream(plan, in, &raised);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(raised, std::vector<std::string>{"b"});
  EXPECT_EQ(out->name, "toy-shared-priority");
  for (int j = 0; j < 3; ++j)
    EXPECT_EQ(out->phases[0].partitions[j].priority, j == 1 ? 1 : 0);
  EXPECT_TRUE(SimulatePlan(*out, in).ok());
  // One stream: nothing to prioritize.
  Plan one = plan;
  one.phases[0].partitions.resize(1);
  one.phases[0].partitions[0].tasks.clear();
  for (const char* t : {"a.fwd.0", "b.fwd.0", "c.fwd.0", "c.bwd.0", "b.bwd.0", "a.bwd.0", "a.opt",
                        "b.opt", "c.opt"})
    one.phases[0].partitions[0].tasks.push_back(*ParseTaskId(t));
  ASSERT_TRUE(SimulatePlan(one, in).ok());
  StatusOr<Plan> none = WithPrioritizedStream(one, in, &raised);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(raised.empty());
}

TEST(Planner, WeightsOverTheBudgetIsAClearError) {
  Zoo z = LoadZoo("llava-small");
  PlannerOptions o;
  o.memory_budget_bytes = 4.0 * (1 << 30);
  StatusOr<PlanReport> r = PlanStep(z.model, z.device, z.profile, o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("weights, gradients and AdamW state need"), std::string::npos)
      << r.status();
}

TEST(Planner, ActivationsOverTheBudgetIsAClearError) {
  Zoo z = LoadZoo("clip-b16");
  PlannerOptions o;
  // Static state plus 1 MiB: no plan's activations fit.
  double static_bytes = PlanStep(z.model, z.device, z.profile, {})->static_bytes;
  o.memory_budget_bytes = static_bytes + (1 << 20);
  StatusOr<PlanReport> r = PlanStep(z.model, z.device, z.profile, o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("smallest activation peak"), std::string::npos) << r.status();
}

TEST(Planner, TightMemoryPicksMicroBatchesAndBuffers) {
  // llava-small has no batch-level module: with 8 micro-batches and one buffer per module the
  // activation peak drops; a budget between that and the full batch's peak must be met.
  Zoo z = LoadZoo("llava-small");
  PlannerOptions loose;
  PlanReport free = *PlanStep(z.model, z.device, z.profile, loose);
  PlannerOptions tight;
  tight.memory_budget_bytes = free.static_bytes + 0.4 * free.plans[0].peak_activation_bytes;
  StatusOr<PlanReport> r = PlanStep(z.model, z.device, z.profile, tight);
  ASSERT_TRUE(r.ok()) << r.status();
  for (const RankedPlan& rp : r->plans)
    EXPECT_LE(rp.peak_activation_bytes, 0.4 * free.plans[0].peak_activation_bytes);
  EXPECT_GT(r->plans[0].plan.micro_batches, 1);
}

TEST(Planner, BadMicroBatchCountIsRejected) {
  Zoo z = LoadZoo("clip-b16");
  PlannerOptions o;
  o.micro_batches = {3};
  StatusOr<PlanReport> r = PlanStep(z.model, z.device, z.profile, o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("does not divide"), std::string::npos);
}

// A plan from task times taken with other kernels than the run's is flagged, exactly when the
// profile was measured and its kernels differ.
TEST(ProfileKernels, WarnsOnlyForAMeasuredProfileOfOtherKernels) {
  PlanningInputs in = testing::LoadZooInputs("clip-b16");
  in.profile.source = "measured";
  in.profile.fused_kernels = "none";
  in.profile_from = "configs/profiles/clip-b16-h100-sxm.json";
  const std::string w = ProfileKernelsWarning(in, "add-norm");
  EXPECT_EQ(w,
            "warning: configs/profiles/clip-b16-h100-sxm.json was measured with fused kernels "
            "\"none\" and this run uses \"add-norm\": its task times are not this run's "
            "(re-measure it with `mosaic profile`)");
  in.profile.fused_kernels = "add-norm";
  EXPECT_EQ(ProfileKernelsWarning(in, "add-norm"), "");
  EXPECT_NE(ProfileKernelsWarning(in, "add-norm+linear-grad"), "");
  in.profile.source = "synthetic";  // the law has no kernels to disagree with
  EXPECT_EQ(ProfileKernelsWarning(in, "none"), "");
}

}  // namespace
}  // namespace mosaic
