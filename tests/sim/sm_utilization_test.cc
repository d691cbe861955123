// SmTimeUtilization (Note [measured SM-time utilization]): exact busy SM-time on hand-made traces.
#include "sim/sm_utilization.h"

#include <gtest/gtest.h>

namespace mosaic {
namespace {

TEST(SmUtilization, AKernelKeepsItsBlocksOrItsPlacesSmsBusy) {
  // A full-GPU kernel with 2 waves of blocks, then a small one, then a gap of 5 us.
  auto u = SmTimeUtilization({{0, 10, 0, 264}, {10, 20, 0, 16}}, {132}, 132, 25);
  ASSERT_TRUE(u.ok()) << u.status().message();
  EXPECT_DOUBLE_EQ(u->busy_sm_us, 10 * 132 + 10 * 16);
  EXPECT_DOUBLE_EQ(u->utilization, (10.0 * 132 + 10 * 16) / (132 * 25));
}

TEST(SmUtilization, ConcurrentKernelsAddUpToTheirPlaceAndTheGpu) {
  // Places: the whole GPU (132) and two disjoint green contexts of 64 and 68 SMs.
  const std::vector<int> places = {132, 64, 68};
  // [0, 4): two kernels in the 64-SM context, 40 + 40 blocks -> capped at 64.
  // [2, 6): a 68-SM-context kernel of 500 blocks -> 68.
  // [5, 8): a full-GPU kernel of 100 blocks: with the other two running at [5, 6), 68 + 100 is
  //         capped at 132.
  auto u = SmTimeUtilization(
      {{0, 4, 1, 40}, {0, 4, 1, 40}, {2, 6, 2, 500}, {5, 8, 0, 100}}, places, 132, 10);
  ASSERT_TRUE(u.ok()) << u.status().message();
  // [0,2): 64   [2,4): 64 + 68   [4,5): 68   [5,6): min(68 + 100, 132)   [6,8): 100
  const double expected = 2 * 64 + 2 * 132 + 1 * 68 + 1 * 132 + 2 * 100;
  EXPECT_DOUBLE_EQ(u->busy_sm_us, expected);
  EXPECT_DOUBLE_EQ(u->utilization, expected / (132 * 10));
}

TEST(SmUtilization, BackToBackAndEmptyKernelsCountOnce) {
  // One stream's kernels end where the next starts; a zero-length kernel adds nothing.
  auto u = SmTimeUtilization({{0, 3, 0, 200}, {3, 3, 0, 200}, {3, 7, 0, 8}}, {132}, 132, 7);
  ASSERT_TRUE(u.ok());
  EXPECT_DOUBLE_EQ(u->busy_sm_us, 3 * 132 + 4 * 8);
  auto none = SmTimeUtilization({}, {132}, 132, 7);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->busy_sm_us, 0);
}

TEST(SmUtilization, BadInputsAreClearErrors) {
  auto msg = [](const StatusOr<SmUtilization>& u) { return u.status().message(); };
  EXPECT_EQ(msg(SmTimeUtilization({{5, 4, 0, 1}}, {132}, 132, 10)),
            "SM utilization: kernel 0 ends before it starts");
  EXPECT_EQ(msg(SmTimeUtilization({{0, 1, 0, 1}, {0, 1, 0, 0}}, {132}, 132, 10)),
            "SM utilization: kernel 1 has no blocks");
  EXPECT_EQ(msg(SmTimeUtilization({{0, 1, 2, 1}}, {132, 8}, 132, 10)),
            "SM utilization: kernel 0 names place 2 of 2");
  EXPECT_EQ(msg(SmTimeUtilization({}, {140}, 132, 10)),
            "SM utilization: place 0 has 140 SMs (the GPU has 132)");
  EXPECT_EQ(msg(SmTimeUtilization({}, {132}, 132, 0)),
            "SM utilization: the window must be positive");
}

}  // namespace
}  // namespace mosaic
