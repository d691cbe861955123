// Profiles: broken profiles fail with path and reason; round trip.
#include <gtest/gtest.h>

#include "core/profile.h"
#include "test_util.h"

namespace mosaic {
namespace {

using testing::BrokenCase;

Json ValidProfile() {
  return Json::parse(R"({
    "model": "clip-b16", "device": "h100-sxm", "precision": "bf16", "micro_batch_size": 32,
    "source": "measured", "driver": "580.159", "torch": "2.11.0+cu130",
    "entries": [
      {"module": "vision", "phase": "fwd", "flops": 1.4e12, "bytes": 2.1e10,
       "activation_bytes": 3.5e9,
       "points": [{"sms": 16, "time_us": 31800.5}, {"sms": 64, "time_us": 10000},
                  {"sms": 132, "time_us": 5770}]},
      {"module": "text", "phase": "fwd", "flops": 2.9e11, "bytes": 6e9,
       "points": [{"sms": 132, "time_us": 1800}]}],
    "pairs": [
      {"a": {"module": "vision", "phase": "fwd", "sms": 104},
       "b": {"module": "text", "phase": "fwd", "sms": 0},
       "time_a_us": 6900, "time_b_us": 2700}]})");
}

TEST(Profile, ParsesAndFinds) {
  StatusOr<Profile> p = ParseProfile(ValidProfile());
  ASSERT_TRUE(p.ok()) << p.status();
  const ProfileEntry* v = p->Find("vision", TaskPhase::kForward);
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->points.size(), 3u);
  EXPECT_EQ(v->points[0].time.value(), 31800.5);
  EXPECT_EQ(p->Find("vision", TaskPhase::kBackward), nullptr);
  EXPECT_EQ(p->pairs[0].b.sms.value(), 0);
}

TEST(Profile, RoundTripIsExact) {
  Json original = ValidProfile();
  StatusOr<Profile> p = ParseProfile(original);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(ToJson(*p), original);
}

TEST(Profile, MeasuredStepOverheadIsOptionalAndRoundTrips) {
  Json doc = ValidProfile();
  StatusOr<Profile> none = ParseProfile(doc);
  ASSERT_TRUE(none.ok());
  EXPECT_LT(none->step_overhead.zero_grad_us, 0);  // not measured
  EXPECT_LT(none->step_overhead.optimizer_us, 0);
  doc["step_overhead"] = {{"zero_grad_us", 2400.5}, {"optimizer_us", 2390}};
  StatusOr<Profile> p = ParseProfile(doc);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->step_overhead.zero_grad_us, 2400.5);
  EXPECT_EQ(p->step_overhead.optimizer_us, 2390);
  EXPECT_EQ(ToJson(*p), doc);
  doc["step_overhead"] = {{"optimizer_us", -1}};
  StatusOr<Profile> bad = ParseProfile(doc);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("step_overhead.optimizer_us"), std::string::npos)
      << bad.status();
}

TEST(Profile, FusedKernelsAbsentMeanNoneAndRoundTrip) {
  Json doc = ValidProfile();
  StatusOr<Profile> none = ParseProfile(doc);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->fused_kernels, "none");  // every profile measured before the key existed
  EXPECT_FALSE(ToJson(*none).contains("fused_kernels"));
  doc["fused_kernels"] = "add-norm+linear-grad";
  StatusOr<Profile> both = ParseProfile(doc);
  ASSERT_TRUE(both.ok()) << both.status();
  EXPECT_EQ(both->fused_kernels, "add-norm+linear-grad");
  const Json written = ToJson(*both);  // (key order is the writer's, not the edited doc's)
  EXPECT_EQ(written["fused_kernels"], "add-norm+linear-grad");
  StatusOr<Profile> back = ParseProfile(written);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(ToJson(*back), written);
}

class BrokenProfile : public ::testing::TestWithParam<BrokenCase> {};

TEST_P(BrokenProfile, FailsWithPathAndReason) {
  Json doc = ValidProfile();
  GetParam().edit(doc);
  StatusOr<Profile> p = ParseProfile(doc);
  ASSERT_FALSE(p.ok()) << "accepted a broken profile";
  EXPECT_NE(p.status().message().find(GetParam().expected), std::string::npos)
      << p.status().message();
}

INSTANTIATE_TEST_SUITE_P(
    Table, BrokenProfile,
    ::testing::Values(
        BrokenCase{"UnsortedPoints", [](Json& d) { d["entries"][0]["points"][1]["sms"] = 8; },
                   "entries[0].points[1].sms: 8 must be larger than the previous point's 16"},
        BrokenCase{"ZeroTime", [](Json& d) { d["entries"][0]["points"][0]["time_us"] = 0; },
                   "entries[0].points[0].time_us: must be positive, got 0"},
        BrokenCase{"BadPhase", [](Json& d) { d["entries"][1]["phase"] = "forward"; },
                   "entries[1].phase: \"forward\" is not one of fwd | bwd | opt"},
        BrokenCase{"DuplicateEntry", [](Json& d) { d["entries"][1]["module"] = "vision"; },
                   "entries[1]: duplicate entry for vision fwd (first at entries[0])"},
        BrokenCase{"NoPoints", [](Json& d) { d["entries"][1]["points"] = Json::array(); },
                   "entries[1].points: needs at least one measured point"},
        BrokenCase{"NegativeFlops", [](Json& d) { d["entries"][0]["flops"] = -1; },
                   "entries[0].flops: must not be negative, got -1"},
        BrokenCase{"PairUnknownEntry", [](Json& d) { d["pairs"][0]["b"]["phase"] = "bwd"; },
                   "pairs[0].b.module: no entry for text bwd in this profile's entries"},
        BrokenCase{"UnknownFusedKernel", [](Json& d) { d["fused_kernels"] = "add-norm+gelu"; },
                   "fused_kernels: \"gelu\" is not one of add-norm | vectorized-norm | "
                   "linear-grad | bias-grad | patch-gemm"},
        BrokenCase{"BadSource", [](Json& d) { d["source"] = "guessed"; },
                   "source: \"guessed\" is not one of measured | synthetic"}));

}  // namespace
}  // namespace mosaic
