// Units arithmetic and Status/StatusOr propagation.
#include <gtest/gtest.h>

#include "core/status.h"
#include "core/units.h"

namespace mosaic {
namespace {

TEST(Units, ArithmeticKeepsUnits) {
  TimeUs t = TimeUs(12.5) + TimeUs(3.0);
  EXPECT_EQ(t.value(), 15.5);
  EXPECT_EQ((SmCount(8) * 3).value(), 24);
  EXPECT_DOUBLE_EQ(TimeUs(15.0) / TimeUs(5.0), 3.0);
  EXPECT_TRUE(SmCount(8) < SmCount(16));
  TimeUs acc(1.0);
  acc += TimeUs(2.0);
  acc -= TimeUs(0.5);
  EXPECT_EQ(acc.value(), 2.5);
}

TEST(Units, TimeForWorkAndTraffic) {
  // 1e12 FLOPs at 1e15 FLOP/s = 1 ms = 1000 us.
  EXPECT_DOUBLE_EQ(TimeFor(Flops(1e12), FlopsPerSec(1e15)).value(), 1000.0);
  // 3.35e9 bytes at 3.35e12 B/s = 1 ms.
  EXPECT_DOUBLE_EQ(TimeFor(Bytes(3.35e9), BytesPerSec(3.35e12)).value(), 1000.0);
}

Status FailsWith(StatusCode code) {
  return Status(code, "boom");
}

StatusOr<int> Half(int x) {
  if (x % 2) return InvalidArgument(std::to_string(x) + " is odd");
  return x / 2;
}

StatusOr<int> Quarter(int x) {
  MOSAIC_ASSIGN_OR_RETURN(int h, Half(x));
  MOSAIC_ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

Status Chain(StatusCode code) {
  MOSAIC_RETURN_IF_ERROR(FailsWith(code));
  return Status::Ok();
}

TEST(Status, PropagatesFirstError) {
  EXPECT_EQ(*Quarter(8), 2);
  StatusOr<int> bad = Quarter(6);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(), "3 is odd");
  EXPECT_EQ(Chain(StatusCode::kIoError).code(), StatusCode::kIoError);
  EXPECT_TRUE(Chain(StatusCode::kOk).ok());
}

TEST(Status, ToStringAndPrefix) {
  Status s = NotFound("no such file");
  EXPECT_EQ(s.ToString(), "NOT_FOUND: no such file");
  EXPECT_EQ(s.WithPrefix("a.json").message(), "a.json: no such file");
  EXPECT_EQ(Status::Ok().WithPrefix("x").ToString(), "OK");
}

TEST(Status, StatusOrHoldsItsError) {
  StatusOr<int> v{Status(StatusCode::kInternal, "x")};
  EXPECT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), StatusCode::kInternal);
}

}  // namespace
}  // namespace mosaic
