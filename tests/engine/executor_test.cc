// The plan executor on the CPU: it runs every task once, in an order that respects every
// dependency of the step (data, buffers, phases, each partition's order), for plans with
// micro-batches and per-phase partitions; and its step equals the eager step (fp32).
#include <gtest/gtest.h>

#include "engine/fused_adamw.h"
#include "engine/plan_executor.h"
#include "engine/standard_plans.h"
#include "test_util.h"

namespace mosaic::engine {
namespace {

using testing::ExpectHonoursPlan;

struct Case {
  std::string name;
  ModelSpec spec;
  Plan plan;
};

std::vector<Case> Cases() {
  std::vector<Case> cases;
  const ModelSpec clip = testing::TinyClip(8, 1);
  const ModelSpec clip2 = testing::TinyClip(8, 2);
  const ModelSpec llava = testing::TinyLlava(4, 2);
  cases.push_back({"clip temporal", clip, *TemporalPlan(clip, 1)});
  cases.push_back({"clip shared streams", clip, *SharedStreamsPlan(clip, 1)});
  cases.push_back({"clip split fwd, shared bwd", clip,
                   *PartitionedPlan(clip, 1, {{{"vision"}, 104}, {{"text"}, 28}}, true)});
  cases.push_back({"clip 2 micro-batches split", clip2,
                   *PartitionedPlan(clip2, 2, {{{"vision"}, 64}, {{"text"}, 68}}, false)});
  cases.push_back({"llava 2 micro-batches temporal", llava, *TemporalPlan(llava, 2)});
  cases.push_back(
      {"llava split fwd, shared bwd", llava,
       *PartitionedPlan(llava, 2, {{{"vision"}, 64}, {{"projector", "llm"}, 68}}, true)});
  // One activation buffer for the vision tower: vision.fwd.1 must wait for vision.bwd.0.
  Plan buffered = *PartitionedPlan(llava, 2, {{{"vision"}, 64}, {{"projector", "llm"}, 68}}, false);
  buffered.activation_buffers["vision"] = 1;
  {
    auto& v = buffered.phases[0].partitions[0].tasks;
    v = {*ParseTaskId("vision.fwd.0"), *ParseTaskId("vision.bwd.0"), *ParseTaskId("vision.fwd.1"),
         *ParseTaskId("vision.bwd.1"), *ParseTaskId("vision.opt")};
    auto& l = buffered.phases[0].partitions[1].tasks;
    l.clear();
    for (int m = 0; m < 2; ++m)
      for (const char* t :
           {"projector.fwd.", "llm.fwd.", "loss.fwd.", "loss.bwd.", "llm.bwd.", "projector.bwd."})
        l.push_back(*ParseTaskId(t + std::to_string(m)));
    for (const char* t : {"projector.opt", "llm.opt"})
      l.push_back(*ParseTaskId(t));
  }
  cases.push_back({"llava 1F1B, one vision buffer", llava, buffered});
  return cases;
}

TEST(IssueOrder, HonoursEveryDependencyOfEveryPlan) {
  for (Case& c : Cases()) {
    SCOPED_TRACE(c.name);
    torch::manual_seed(0);
    auto model = models::BuildMultimodalModel(c.spec, torch::kCPU);
    ASSERT_TRUE(model.ok()) << model.status();
    const models::Batch batch = models::SyntheticBatch(c.spec, c.spec.batch_size, torch::kCPU, 3);
    auto exec = PlanExecutor::Create(*model, c.plan, batch, torch::kCPU);
    ASSERT_TRUE(exec.ok()) << exec.status();
    EXPECT_EQ((*exec)->mode(), ExecMode::kEager);
    auto loss = (*exec)->ForwardBackward(batch);
    ASSERT_TRUE(loss.ok()) << loss.status();
    EXPECT_TRUE(std::isfinite(loss->item<double>()));
    ExpectHonoursPlan(**exec, c.plan);
  }
}

TEST(IssueOrder, RejectsAPartitionOrderThatDeadlocks) {
  const ModelSpec clip = testing::TinyClip();
  Plan p = *TemporalPlan(clip, 1);
  auto& tasks = p.phases[0].partitions[0].tasks;
  std::swap(tasks[0], tasks.back());  // an optimizer task first: waits on backwards after it
  auto g = BuildTaskGraph(clip, p);
  ASSERT_TRUE(g.ok());
  auto order = IssueOrder(p, *g);
  ASSERT_FALSE(order.ok());
  EXPECT_NE(order.status().message().find("deadlocks"), std::string::npos) << order.status();
}

TEST(IssueOrder, RejectsAMissingTask) {
  const ModelSpec clip = testing::TinyClip();
  Plan p = *TemporalPlan(clip, 1);
  p.phases[0].partitions[0].tasks.pop_back();
  auto g = BuildTaskGraph(clip, p);
  ASSERT_TRUE(g.ok());
  EXPECT_FALSE(IssueOrder(p, *g).ok());
}

// The executor's step (any plan) equals the eager step of the whole model: same loss, same
// gradients, fp32 on the CPU.
TEST(PlanExecutor, StepEqualsEagerStep) {
  for (Case& c : Cases()) {
    SCOPED_TRACE(c.name);
    torch::manual_seed(0);
    auto model = models::BuildMultimodalModel(c.spec, torch::kCPU);
    ASSERT_TRUE(model.ok());
    const models::Batch batch = models::SyntheticBatch(c.spec, c.spec.batch_size, torch::kCPU, 5);
    const bool batch_level = c.spec.modules.back().loss == LossKind::kContrastive;
    const torch::Tensor ref_loss =
        testing::EagerStep(*model, batch, c.plan.micro_batches, batch_level);
    const auto ref = testing::Grads(*model);
    auto exec = PlanExecutor::Create(*model, c.plan, batch, torch::kCPU);
    ASSERT_TRUE(exec.ok()) << exec.status();
    auto loss = (*exec)->ForwardBackward(batch);
    ASSERT_TRUE(loss.ok()) << loss.status();
    EXPECT_NEAR(loss->item<double>(), ref_loss.item<double>(), 1e-5);
    std::string where;
    EXPECT_LT(testing::MaxRelDiff(testing::Grads(*model), ref, &where), 1e-4) << where;
    EXPECT_EQ(testing::Grads(*model).size(), ref.size());
  }
}

TEST(PlanExecutor, StepsWithAdamWLowerTheLoss) {
  const ModelSpec llava = testing::TinyLlava(4, 2);
  torch::manual_seed(0);
  auto model = models::BuildMultimodalModel(llava, torch::kCPU);
  ASSERT_TRUE(model.ok());
  const models::Batch batch = models::SyntheticBatch(llava, 4, torch::kCPU, 5);
  auto exec = PlanExecutor::Create(*model, *SharedStreamsPlan(llava, 2), batch, torch::kCPU);
  ASSERT_TRUE(exec.ok()) << exec.status();
  torch::optim::AdamW opt((*model)->parameters(), torch::optim::AdamWOptions(3e-3));
  double first = 0, last = 0;
  for (int i = 0; i < 15; ++i) {
    auto loss = (*exec)->Step(batch, &opt);
    ASSERT_TRUE(loss.ok()) << loss.status();
    (i == 0 ? first : last) = loss->item<double>();
  }
  EXPECT_LT(last, first * 0.8) << "first " << first << " last " << last;
}

}  // namespace
}  // namespace mosaic::engine

namespace mosaic::engine {
namespace {

// FusedAdamW (torch's fused kernel) takes the same steps as torch::optim::AdamW.
TEST(FusedAdamW, MatchesTorchAdamW) {
  torch::manual_seed(0);
  const torch::Tensor w0 = torch::randn({7, 5}), b0 = torch::randn({5});
  torch::Tensor w1 = w0.clone().requires_grad_(true), b1 = b0.clone().requires_grad_(true);
  torch::Tensor w2 = w0.clone().requires_grad_(true), b2 = b0.clone().requires_grad_(true);
  const auto o = torch::optim::AdamWOptions(1e-2).weight_decay(0.1).betas({0.9, 0.98}).eps(1e-6);
  torch::optim::AdamW ref({w1, b1}, o);
  FusedAdamW fused(std::vector<torch::Tensor>{w2, b2}, o);
  for (int i = 0; i < 5; ++i) {
    const torch::Tensor x = torch::randn({3, 7});
    for (auto [opt, w, b] : {std::make_tuple<torch::optim::Optimizer*>(&ref, w1, b1),
                             std::make_tuple<torch::optim::Optimizer*>(&fused, w2, b2)}) {
      opt->zero_grad();
      (x.matmul(w) + b).pow(2).sum().backward();
      opt->step();
    }
  }
  EXPECT_TRUE(torch::allclose(w1, w2, 1e-5, 1e-6)) << (w1 - w2).abs().max();
  EXPECT_TRUE(torch::allclose(b1, b2, 1e-5, 1e-6));
  EXPECT_FALSE(torch::allclose(w1, w0)) << "the weights must have moved";
}

}  // namespace
}  // namespace mosaic::engine

namespace mosaic::engine {
namespace {

// The baseline plans the engine makes for the zoo pass the core validator for an H100.
TEST(StandardPlans, ZooPlansAreValidForH100) {
  auto device = LoadDeviceSpec(std::string(MOSAIC_SOURCE_DIR) + "/configs/devices/h100-sxm.json");
  ASSERT_TRUE(device.ok()) << device.status();
  for (const char* name : {"clip-b16", "llava-small", "imagebind-like", "omni-small"}) {
    SCOPED_TRACE(name);
    auto spec = LoadModelSpec(std::string(MOSAIC_SOURCE_DIR) + "/configs/models/" + name + ".json");
    ASSERT_TRUE(spec.ok()) << spec.status();
    std::vector<StatusOr<Plan>> plans = {TemporalPlan(*spec, spec->micro_batches),
                                         SharedStreamsPlan(*spec, spec->micro_batches)};
    if (std::string(name) == "clip-b16") {
      plans.push_back(PartitionedPlan(*spec, 1, {{{"vision"}, 104}, {{"text"}, 28}}, false));
      plans.push_back(PartitionedPlan(*spec, 1, {{{"vision"}, 104}, {{"text"}, 28}}, true));
    }
    if (std::string(name) == "llava-small") {
      plans.push_back(PartitionedPlan(*spec, spec->micro_batches,
                                      {{{"vision"}, 64}, {{"projector", "llm"}, 68}}, false));
    }
    for (const StatusOr<Plan>& p : plans) {
      ASSERT_TRUE(p.ok()) << p.status();
      EXPECT_TRUE(ValidatePlan(*p, *spec, *device).ok())
          << p->name << ": " << ValidatePlan(*p, *spec, *device);
      auto again = ParsePlan(ToJson(*p));  // what `mosaic validate` reads back
      EXPECT_TRUE(again.ok()) << again.status();
    }
  }
}

}  // namespace
}  // namespace mosaic::engine
