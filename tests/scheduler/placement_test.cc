// Placement is a pure function: group sizes, wave packing, ordering and refusals.
#include "scheduler/placement.h"

#include <set>

#include "gtest/gtest.h"

namespace prefill {
namespace {

PlacementPolicy Policy(int world) { return PlacementPolicy{world, 8192, 131072}; }

TEST(GroupSize, ShortDocumentsStayOnOneRank) {
  EXPECT_EQ(GroupSize(4096, Policy(64)), 1);
  EXPECT_EQ(GroupSize(16383, Policy(64)), 1);  // two ranks would hold < 8K each
  EXPECT_EQ(GroupSize(16384, Policy(64)), 2);
}

TEST(GroupSize, LongVideosTakeEveryRank) {
  EXPECT_EQ(GroupSize(1 << 20, Policy(64)), 64);
  EXPECT_EQ(GroupSize(1 << 20, Policy(96)), 64);  // power-of-two groups: 64 of the 96
  EXPECT_EQ(GroupSize(32768, Policy(64)), 4);
}

TEST(GroupSize, MemoryBudgetSetsTheFloor) {
  const PlacementPolicy tight{64, 8192, 4096};
  EXPECT_EQ(GroupSize(8192 * 3, tight), 8);   // needs 6 ranks at 4K: rounded up to 8
  EXPECT_EQ(GroupSize(4096 * 65, tight), 0);  // more than 64 ranks' budget
}

TEST(PlanPlacement, WavesTileTheWorldWithoutOverlap) {
  const std::vector<PlacementInput> requests = {{70000, 0}, {4000, 0}, {300000, 0},
                                                {20000, 0}, {9000, 0}, {1000, 0},
                                                {40000, 0}, {500, 0},  {16384, 0}};
  const Placement plan = PlanPlacement(requests, Policy(8));
  std::set<int> placed;
  for (const Wave& w : plan.waves) {
    std::vector<int> used(8, 0);
    for (const Assignment& a : w.assignments) {
      EXPECT_TRUE(placed.insert(a.request).second) << "request " << a.request << " placed twice";
      EXPECT_EQ(a.ranks, GroupSize(requests[a.request].tokens, Policy(8)));
      for (int r = a.first_rank; r < a.first_rank + a.ranks; ++r) {
        ASSERT_LT(r, 8);
        EXPECT_EQ(used[r]++, 0) << "rank " << r << " in two groups of one wave";
      }
    }
  }
  EXPECT_EQ(placed.size(), requests.size());
  EXPECT_TRUE(plan.refused.empty());
}

TEST(PlanPlacement, LongestFirstThenGapsFilledBySmallerOnes) {
  const Placement plan = PlanPlacement({{8192, 0}, {65536, 0}, {4096, 0}, {65536, 0}}, Policy(8));
  ASSERT_GE(plan.waves.size(), 1u);
  // 64K -> 8 ranks fills wave 0 alone; the second 64K takes wave 1; the short ones share wave 2.
  ASSERT_EQ(plan.waves.size(), 3u);
  EXPECT_EQ(plan.waves[0].assignments[0].request, 1);
  EXPECT_EQ(plan.waves[1].assignments[0].request, 3);
  EXPECT_EQ(plan.waves[2].assignments.size(), 2u);
}

TEST(PlanPlacement, PriorityBeatsLength) {
  const Placement plan = PlanPlacement({{65536, 0}, {4096, 5}}, Policy(8));
  EXPECT_EQ(plan.waves[0].assignments[0].request, 1);
}

TEST(PlanPlacement, TooLongIsRefusedWithTheFigure) {
  const Placement plan = PlanPlacement({{1 << 22, 0}, {100, 0}}, PlacementPolicy{4, 8192, 131072});
  ASSERT_EQ(plan.refused.size(), 1u);
  EXPECT_EQ(plan.refused[0].first, 0);
  EXPECT_EQ(plan.refused[0].second,
            "4194304 tokens need 32 ranks at --max-tokens-per-rank 131072; the job has 4");
  ASSERT_EQ(plan.waves.size(), 1u);
}

}  // namespace
}  // namespace prefill
