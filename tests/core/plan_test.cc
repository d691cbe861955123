// Plans: the validator rejects what could never run, with the JSON path and reason; the task
// graph has exactly the edges of Note [task graph edges]; round trip.
#include <gtest/gtest.h>

#include <algorithm>

#include "core/plan.h"
#include "test_util.h"

namespace mosaic {
namespace {

using testing::BrokenCase;
using testing::LoadSource;

class PlanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = ParseModelSpec(LoadSource("configs/models/clip-b16.json"));
    auto d = ParseDeviceSpec(LoadSource("configs/devices/h100-sxm.json"));
    ASSERT_TRUE(m.ok() && d.ok());
    model_ = *m;
    device_ = *d;
  }
  Status Validate(const Json& doc) {
    StatusOr<Plan> plan = ParsePlan(doc);
    if (!plan.ok()) return plan.status();
    return ValidatePlan(*plan, model_, device_);
  }
  ModelSpec model_;
  DeviceSpec device_;
};

TEST_F(PlanTest, ShippedPlansAreValid) {
  EXPECT_TRUE(Validate(LoadSource("configs/plans/clip-b16-temporal.json")).ok());
  EXPECT_TRUE(Validate(LoadSource("configs/plans/clip-b16-split.json")).ok());
}

TEST_F(PlanTest, TaskGraphEdges) {
  StatusOr<TaskGraph> g = BuildTaskGraph(model_, 2, {{"vision", 1}});
  ASSERT_TRUE(g.ok()) << g.status();
  // vision and text: 2 fwd + 2 bwd + opt; loss: batch-level 1 fwd + 1 bwd + opt.
  EXPECT_EQ(g->size(), 5u + 5u + 3u);
  auto has = [&](const std::string& a, const std::string& b, EdgeKind k) {
    int from = g->Find(a), to = g->Find(b);
    for (int e : g->out_edges(from))
      if (g->edges()[e].to == to && g->edges()[e].kind == k) return true;
    return false;
  };
  EXPECT_TRUE(has("vision.fwd.1", "loss.fwd.0", EdgeKind::kData));
  EXPECT_TRUE(has("loss.bwd.0", "text.bwd.1", EdgeKind::kData));
  EXPECT_TRUE(has("vision.fwd.0", "vision.bwd.0", EdgeKind::kData));
  EXPECT_TRUE(has("vision.bwd.1", "vision.opt", EdgeKind::kData));
  EXPECT_TRUE(has("vision.bwd.0", "vision.fwd.1", EdgeKind::kBuffer));  // one buffer
  EXPECT_FALSE(has("text.bwd.0", "text.fwd.1", EdgeKind::kBuffer));     // default: no limit
  EXPECT_EQ(g->Find("loss.fwd.1"), -1);
  // data: 2 model edges x 2 mb x 2 directions + fwd->bwd (2+2+1) + bwd->opt (2+2+1); buffer: 1
  EXPECT_EQ(g->edges().size(), 8u + 5u + 5u + 1u);
}

TEST_F(PlanTest, BufferTooSmallForContrastiveLossIsRejected) {
  Json doc = LoadSource("configs/plans/clip-b16-temporal.json");
  doc["micro_batches"] = 2;
  doc["activation_buffers"] = {{"vision", 1}};
  doc["phases"][0]["partitions"][0]["tasks"] = {
      "vision.fwd.0", "vision.fwd.1", "text.fwd.0", "text.fwd.1",   "loss.fwd.0",
      "loss.bwd.0",   "text.bwd.0",   "text.bwd.1", "vision.bwd.0", "vision.bwd.1",
      "vision.opt",   "text.opt",     "loss.opt"};
  Status s = Validate(doc);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("activation_buffers.vision: the plan keeps more micro-batches of "
                             "vision in flight than its 1 activation buffer(s) allow"),
            std::string::npos)
      << s.message();
  doc["activation_buffers"] = {{"vision", 2}};
  EXPECT_TRUE(Validate(doc).ok()) << Validate(doc);
}

class BrokenPlan : public PlanTest, public ::testing::WithParamInterface<BrokenCase> {};

TEST_P(BrokenPlan, FailsWithPathAndReason) {
  Json doc = LoadSource("configs/plans/clip-b16-split.json");
  GetParam().edit(doc);
  Status s = Validate(doc);
  ASSERT_FALSE(s.ok()) << "accepted a broken plan";
  EXPECT_NE(s.message().find(GetParam().expected), std::string::npos) << s.message();
}

Json& Part(Json& d, int phase, int part) {
  return d["phases"][phase]["partitions"][part];
}

INSTANTIATE_TEST_SUITE_P(
    Table, BrokenPlan,
    ::testing::Values(
        BrokenCase{"QuotaOffGranularity", [](Json& d) { Part(d, 0, 1)["sms"] = 30; },
                   "phases[0].partitions[1].sms: 30 is not a multiple of 8 or a multiple of 8 "
                   "plus the 12-SM remainder on h100-sxm (132 SMs)"},
        BrokenCase{"QuotasOverDevice", [](Json& d) { Part(d, 0, 0)["sms"] = 120; },
                   "phases[0].partitions: dedicated quotas sum to 148 SMs, over h100-sxm's 132"},
        BrokenCase{"RemainderTwice",
                   [](Json& d) {
                     Part(d, 0, 0)["sms"] = 20;
                     Part(d, 0, 1)["sms"] = 28;
                   },
                   "and the remainder group twice"},
        BrokenCase{"SharedWithNoSmsLeft",
                   [](Json& d) {
                     Part(d, 0, 0)["sms"] = 132;
                     d["phases"][0]["partitions"][1] = {
                         {"id", "t"}, {"kind", "shared"}, {"tasks", {"text.fwd.0", "loss.fwd.0"}}};
                   },
                   "shared partitions get no SMs: dedicated partitions hold all 132"},
        BrokenCase{"SharedWithQuota", [](Json& d) { Part(d, 1, 0)["sms"] = 8; },
                   "phases[1].partitions[0].sms: a shared partition has no SM quota"},
        BrokenCase{"UnknownModule", [](Json& d) { Part(d, 0, 0)["tasks"][0] = "image.fwd.0"; },
                   "phases[0].partitions[0].tasks[0]: unknown module \"image\" (model clip-b16 "
                   "has: vision, text, loss)"},
        BrokenCase{"MicroBatchOutOfRange",
                   [](Json& d) { Part(d, 0, 0)["tasks"].push_back("vision.fwd.1"); },
                   "no task \"vision.fwd.1\" (micro-batch 1 is outside 0..0)"},
        BrokenCase{"MissingTask", [](Json& d) { Part(d, 1, 0)["tasks"].erase(1); },
                   "phases: task vision.opt is not assigned to any partition"},
        BrokenCase{"TaskTwice", [](Json& d) { Part(d, 1, 0)["tasks"].push_back("text.opt"); },
                   "phases[1].partitions[1].tasks[2]: task text.opt is assigned twice (first at "
                   "phases[1].partitions[0].tasks[2])"},
        BrokenCase{"BadTaskId", [](Json& d) { Part(d, 0, 0)["tasks"][0] = "vision.forward.0"; },
                   "phases[0].partitions[0].tasks[0]: \"vision.forward.0\" is not a task id"},
        BrokenCase{"OrderAgainstDependency",
                   [](Json& d) {
                     Part(d, 0, 1)["tasks"] = {"loss.fwd.0", "text.fwd.0"};
                   },
                   "phases: the order contradicts a dependency: text.fwd.0 -data-> loss.fwd.0 "
                   "-order-> text.fwd.0"},
        BrokenCase{"BackwardBeforeForwardPhase",
                   [](Json& d) { std::swap(d["phases"][0], d["phases"][1]); },
                   "the order contradicts a dependency"},
        BrokenCase{"PartitionDoesNotExistKind", [](Json& d) { Part(d, 0, 0)["kind"] = "green"; },
                   "phases[0].partitions[0].kind: \"green\" is not one of dedicated | shared"},
        BrokenCase{"DuplicatePartitionId", [](Json& d) { Part(d, 0, 1)["id"] = "vision"; },
                   "phases[0].partitions[1].id: duplicate partition id \"vision\""},
        BrokenCase{"WrongModel", [](Json& d) { d["model"] = "clip-l14"; },
                   "model: the plan is for \"clip-l14\" but the model spec is \"clip-b16\""},
        BrokenCase{"MicroBatchesDoNotDivide", [](Json& d) { d["micro_batches"] = 5; },
                   "micro_batches: 5 does not divide the model's batch_size 32"},
        BrokenCase{"BuffersOverMicroBatches",
                   [](Json& d) {
                     d["activation_buffers"] = {{"vision", 3}};
                   },
                   "activation_buffers.vision: 3 is outside 1..1"},
        BrokenCase{"BuffersUnknownModule",
                   [](Json& d) {
                     d["activation_buffers"] = {{"audio", 1}};
                   },
                   "activation_buffers: unknown module \"audio\""},
        BrokenCase{"PriorityOnDedicated", [](Json& d) { Part(d, 0, 0)["priority"] = 1; },
                   "phases[0].partitions[0].priority: a dedicated partition has its SMs to "
                   "itself; priority is for shared ones"},
        BrokenCase{"PriorityOutOfRange", [](Json& d) { Part(d, 1, 0)["priority"] = 6; },
                   "phases[1].partitions[0].priority: must be 0 to 5, got 6"},
        BrokenCase{"PriorityNotANumber", [](Json& d) { Part(d, 1, 1)["priority"] = "high"; },
                   "phases[1].partitions[1].priority"},
        BrokenCase{"NoPhases", [](Json& d) { d["phases"] = Json::array(); },
                   "phases: a plan needs at least one phase"}));

TEST_F(PlanTest, RoundTripIsExact) {
  for (const char* name : {"clip-b16-temporal", "clip-b16-split"}) {
    Json original = LoadSource(std::string("configs/plans/") + name + ".json");
    StatusOr<Plan> a = ParsePlan(original);
    ASSERT_TRUE(a.ok()) << a.status();
    Json saved = ToJson(*a);
    EXPECT_EQ(saved, original) << name;  // shipped plans are written in canonical form
    StatusOr<Plan> b = ParsePlan(saved);
    ASSERT_TRUE(b.ok());
    EXPECT_EQ(ToJson(*b), saved);
  }
}

TEST_F(PlanTest, StreamPriorityRoundTripsAndIsCheckedInCode) {
  Json doc = LoadSource("configs/plans/clip-b16-split.json");
  Part(doc, 1, 0)["priority"] = 2;
  StatusOr<Plan> plan = ParsePlan(doc);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->phases[1].partitions[0].priority, 2);
  EXPECT_EQ(plan->phases[1].partitions[1].priority, 0);
  EXPECT_TRUE(ValidatePlan(*plan, model_, device_).ok());
  const Json saved = ToJson(*plan);
  EXPECT_EQ(saved, doc);
  EXPECT_FALSE(saved["phases"][1]["partitions"][1].contains("priority"));  // 0 is not written
  // A plan built in code is checked by ValidatePlan the same way.
  plan->phases[0].partitions[1].priority = 1;
  plan->phases[1].partitions[1].priority = -1;
  Status s = ValidatePlan(*plan, model_, device_);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("phases[0].partitions[1].priority: 1 on a dedicated partition"),
            std::string::npos)
      << s.message();
  EXPECT_NE(s.message().find("phases[1].partitions[1].priority: -1 is not 0 to 5"),
            std::string::npos)
      << s.message();
}

TEST(TaskId, ParseAndPrint) {
  for (const char* s : {"vision.fwd.0", "llm.bwd.12", "text.opt"}) {
    StatusOr<TaskId> id = ParseTaskId(s);
    ASSERT_TRUE(id.ok()) << id.status();
    EXPECT_EQ(id->ToString(), s);
  }
  for (const char* s :
       {"vision", ".fwd.0", "vision.fwd", "vision.fwd.x", "vision.fwd.-1", "vision.back.0"}) {
    EXPECT_FALSE(ParseTaskId(s).ok()) << s;
  }
}

}  // namespace
}  // namespace mosaic
