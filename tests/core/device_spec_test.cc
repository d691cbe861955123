// Device specs: quotas and granularity, broken specs, round trip.
#include <gtest/gtest.h>

#include "core/device_spec.h"
#include "test_util.h"

namespace mosaic {
namespace {

using testing::BrokenCase;
using testing::LoadSource;

TEST(DeviceSpec, ExecutorConstantsAreOptionalAndRoundTrip) {
  Json doc = LoadSource("configs/devices/h100-sxm.json");
  doc.erase("executor");
  StatusOr<DeviceSpec> plain = ParseDeviceSpec(doc);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_FALSE(plain->executor.has_value());
  EXPECT_FALSE(ToJson(*plain).contains("executor"));
  doc["executor"] = {{"zero_grad_us_per_tensor", 7.5}, {"eager_op_us", 12}};
  StatusOr<DeviceSpec> d = ParseDeviceSpec(doc);
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_TRUE(d->executor.has_value());
  EXPECT_EQ(d->executor->zero_grad_us_per_tensor, 7.5);
  EXPECT_EQ(d->executor->eager_op_us, 12);
  EXPECT_EQ(d->executor->optimizer_bytes_per_param, 40);  // defaults
  EXPECT_EQ(d->executor->bandwidth_efficiency, 1);
  StatusOr<DeviceSpec> back = ParseDeviceSpec(ToJson(*d));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(ToJson(*back), ToJson(*d));
  doc["executor"] = {{"bandwidth_efficiency", 1.5}};
  StatusOr<DeviceSpec> bad = ParseDeviceSpec(doc);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("executor.bandwidth_efficiency"), std::string::npos)
      << bad.status();
  doc["executor"] = {{"zero_grad_us", 1}};
  bad = ParseDeviceSpec(doc);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("zero_grad_us"), std::string::npos) << bad.status();
}

TEST(DeviceSpec, H100QuotasFollowOneSplit) {
  StatusOr<DeviceSpec> d = ParseDeviceSpec(LoadSource("configs/devices/h100-sxm.json"));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->sm_count.value(), 132);
  EXPECT_EQ(d->remainder().value(), 12);  // 15 groups of 8 + 12 (gpu-facts.md)
  EXPECT_TRUE(d->IsValidQuota(SmCount(8)));
  EXPECT_TRUE(d->IsValidQuota(SmCount(120)));
  EXPECT_TRUE(d->IsValidQuota(SmCount(12)));   // the remainder alone
  EXPECT_TRUE(d->IsValidQuota(SmCount(28)));   // 2 groups + remainder
  EXPECT_TRUE(d->IsValidQuota(SmCount(132)));  // everything
  EXPECT_FALSE(d->IsValidQuota(SmCount(0)));
  EXPECT_FALSE(d->IsValidQuota(SmCount(10)));
  EXPECT_FALSE(d->IsValidQuota(SmCount(128)));  // 16 groups: the split has 15
  EXPECT_FALSE(d->IsValidQuota(SmCount(140)));
  EXPECT_DOUBLE_EQ(d->peak_flops_bf16.value(), 989e12);
  EXPECT_DOUBLE_EQ(d->memory.value(), 80.0 * 1024 * 1024 * 1024);
}

TEST(DeviceSpec, DefaultGroupsIsCountOverGranularity) {
  StatusOr<DeviceSpec> d = ParseDeviceSpec(LoadSource("configs/devices/cpu.json"));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->sm_groups, 2);
  EXPECT_EQ(d->remainder().value(), 0);
  EXPECT_TRUE(d->IsValidQuota(SmCount(1)));
  EXPECT_FALSE(d->IsValidQuota(SmCount(3)));
}

class BrokenDeviceSpec : public ::testing::TestWithParam<BrokenCase> {};

TEST_P(BrokenDeviceSpec, FailsWithPathAndReason) {
  Json doc = LoadSource("configs/devices/h100-sxm.json");
  GetParam().edit(doc);
  StatusOr<DeviceSpec> d = ParseDeviceSpec(doc);
  ASSERT_FALSE(d.ok()) << "accepted a broken spec";
  EXPECT_NE(d.status().message().find(GetParam().expected), std::string::npos)
      << d.status().message();
}

INSTANTIATE_TEST_SUITE_P(
    Table, BrokenDeviceSpec,
    ::testing::Values(
        BrokenCase{"ZeroSms", [](Json& d) { d["sm_count"] = 0; },
                   "sm_count: must be positive, got 0"},
        BrokenCase{"GranularityOverCount", [](Json& d) { d["sm_granularity"] = 200; },
                   "sm_granularity: 200 is larger than sm_count 132"},
        BrokenCase{"TooManyGroups", [](Json& d) { d["sm_groups"] = 17; },
                   "sm_groups: 17 groups of 8 SMs do not fit in sm_count 132"},
        BrokenCase{"MissingBandwidth", [](Json& d) { d.erase("memory_bandwidth_gbps"); },
                   "memory_bandwidth_gbps: missing (required)"},
        BrokenCase{"NegativeMemory", [](Json& d) { d["memory_gib"] = -1; },
                   "memory_gib: must be positive, got -1"},
        BrokenCase{"MeasuredOverPeak", [](Json& d) { d["measured_tflops_bf16"] = 2000; },
                   "measured_tflops_bf16: measured peak"},
        BrokenCase{"BadKind", [](Json& d) { d["kind"] = "tpu"; },
                   "kind: \"tpu\" is not one of gpu | cpu"},
        BrokenCase{"BadInterconnect", [](Json& d) { d["interconnect"]["latency_us"] = "fast"; },
                   "interconnect.latency_us: expected a number, got a string \"fast\""},
        BrokenCase{"UnknownField", [](Json& d) { d["sm_cnt"] = 1; }, "sm_cnt: unknown field"}));

TEST(DeviceSpec, RoundTripIsStable) {
  for (const char* name : {"h100-sxm", "h200", "cpu"}) {
    Json original = LoadSource(std::string("configs/devices/") + name + ".json");
    StatusOr<DeviceSpec> a = ParseDeviceSpec(original);
    ASSERT_TRUE(a.ok()) << a.status();
    Json saved = ToJson(*a);
    StatusOr<DeviceSpec> b = ParseDeviceSpec(saved);
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_EQ(ToJson(*b), saved) << name;
    for (auto it = original.begin(); it != original.end(); ++it)
      EXPECT_EQ(saved[it.key()], it.value()) << name << " " << it.key();
  }
}

}  // namespace
}  // namespace mosaic
