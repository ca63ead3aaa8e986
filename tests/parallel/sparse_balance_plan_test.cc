// The balance planner on hand-made loads: which segments move, that the most loaded rank
// gets lighter, that totals are kept, and that the plan is a pure function of its input.
#include "parallel/sparse_balance_plan.h"

#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace prefill {
namespace {

// One KV head; counts[qb][owner].
SegmentCosts Costs(int world, std::vector<std::vector<int32_t>> by_block) {
  SegmentCosts c{1, static_cast<int>(by_block.size()), world, {}};
  for (const auto& row : by_block) c.counts.insert(c.counts.end(), row.begin(), row.end());
  return c;
}

TEST(SparseBalancePlan, MovesTheSegmentThatLowersTheMaximumMost) {
  // Loads 50, 20, 20 (mean 30). Rank 0's segments: 20 entries on rank 1, 16 on rank 2. Neither
  // fits under rank 0's load after the move; 16 to rank 2 gives the lower peak (36 vs 40).
  // Then rank 2 (36) can only hand rank 0 its 2 entries, which would not lower the peak.
  const std::vector<SegmentCosts> ranks = {Costs(3, {{10, 0, 0}, {4, 20, 16}}),
                                           Costs(3, {{2, 10, 0}, {0, 8, 0}}),
                                           Costs(3, {{2, 0, 8}, {0, 0, 10}})};
  absl::StatusOr<SparseBalancePlan> plan = PlanSparseBalance(ranks, {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->moves, (std::vector<BalanceMove>{{0, 0, 1, 2, 16}}));
  EXPECT_EQ(plan->selected, (std::vector<int64_t>{50, 20, 20}));
  EXPECT_EQ(plan->computed, (std::vector<int64_t>{34, 20, 36}));
  EXPECT_NEAR(Imbalance(plan->selected), 50.0 / 30, 1e-12);
  EXPECT_NEAR(Imbalance(plan->computed), 36.0 / 30, 1e-12);
}

TEST(SparseBalancePlan, TakesTheLargestSegmentThatFits) {
  // Rank 0 holds one heavy dense row spread over its peers, as the forced-dense last query
  // block of a zigzag layout does: 30 entries on each of ranks 1..3.
  const std::vector<SegmentCosts> ranks = {
      Costs(4, {{40, 0, 0, 0}, {30, 30, 30, 30}}), Costs(4, {{20, 40, 0, 0}, {0, 0, 0, 0}}),
      Costs(4, {{20, 0, 40, 0}, {0, 0, 0, 0}}), Costs(4, {{20, 0, 0, 40}, {0, 0, 0, 0}})};
  absl::StatusOr<SparseBalancePlan> plan = PlanSparseBalance(ranks, {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  // 160 / 60 / 60 / 60, mean 85: each peer takes its 30 (ties of cost: lowest owner first).
  EXPECT_EQ(plan->moves,
            (std::vector<BalanceMove>{{0, 0, 1, 1, 30}, {0, 0, 1, 2, 30}, {0, 0, 1, 3, 30}}));
  EXPECT_EQ(plan->computed, (std::vector<int64_t>{70, 90, 90, 90}));
  EXPECT_LT(Imbalance(plan->computed), 1.06);
  EXPECT_GT(Imbalance(plan->selected), 1.88);
}

TEST(SparseBalancePlan, LeavesSmallSegmentsAndEvenLoadsAlone) {
  const std::vector<SegmentCosts> uneven = {Costs(2, {{10, 3}}), Costs(2, {{0, 1}})};
  absl::StatusOr<SparseBalancePlan> plan = PlanSparseBalance(uneven, {.min_cost = 4});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_TRUE(plan->moves.empty());
  EXPECT_EQ(plan->computed, plan->selected);
  plan = PlanSparseBalance(uneven, {.min_cost = 3});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->moves, (std::vector<BalanceMove>{{0, 0, 0, 1, 3}}));

  const std::vector<SegmentCosts> even = {Costs(2, {{10, 5}}), Costs(2, {{5, 10}})};
  plan = PlanSparseBalance(even, {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_TRUE(plan->moves.empty());
}

TEST(SparseBalancePlan, RejectsCostsOfDifferentShapes) {
  const std::vector<SegmentCosts> ranks = {Costs(2, {{10, 3}}), Costs(2, {{0, 1}, {1, 1}})};
  absl::StatusOr<SparseBalancePlan> plan = PlanSparseBalance(ranks, {});
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  const std::vector<SegmentCosts> negative = {Costs(2, {{10, -3}}), Costs(2, {{0, 1}})};
  EXPECT_EQ(PlanSparseBalance(negative, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseBalanceMode("sometimes").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*ParseBalanceMode("auto"), BalanceMode::kAuto);
}

// Random loads: the plan keeps the total, never raises the maximum, moves only segments that
// exist (at their full cost, at most once), and is the same when planned again.
TEST(SparseBalancePlan, RandomLoadsKeepTotalsAndLowerTheMaximum) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 200; ++trial) {
    const int world = 2 + trial % 7, hkv = 1 + trial % 3, q_blocks = 1 + trial % 5;
    std::vector<SegmentCosts> ranks(world, SegmentCosts{hkv, q_blocks, world, {}});
    for (SegmentCosts& c : ranks) {
      for (int i = 0; i < hkv * q_blocks * world; ++i)
        c.counts.push_back(static_cast<int32_t>(rng() % (1 + rng() % 200)));
    }
    absl::StatusOr<SparseBalancePlan> plan = PlanSparseBalance(ranks, {});
    ASSERT_TRUE(plan.ok()) << plan.status();
    EXPECT_EQ(std::accumulate(plan->computed.begin(), plan->computed.end(), int64_t{0}),
              std::accumulate(plan->selected.begin(), plan->selected.end(), int64_t{0}));
    EXPECT_LE(Imbalance(plan->computed), Imbalance(plan->selected));
    std::vector<int64_t> load = plan->selected;
    for (size_t i = 0; i < plan->moves.size(); ++i) {
      const BalanceMove& m = plan->moves[i];
      EXPECT_NE(m.from, m.to);
      EXPECT_EQ(m.cost, ranks[m.from].at(m.kv_head, m.q_block, m.to));
      if (i > 0) {
        EXPECT_FALSE(m == plan->moves[i - 1]);
      }
      load[m.from] -= m.cost;
      load[m.to] += m.cost;
    }
    EXPECT_EQ(load, plan->computed);
    EXPECT_EQ(PlanSparseBalance(ranks, {})->Hash(), plan->Hash());
  }
}

TEST(SparseBalancePlan, CountsMaskEntriesByOwner) {
  // 2 ranks, zigzag, 8 blocks of 16: rank 0 holds blocks 0, 1, 6, 7; rank 1 holds 2..5.
  const CpLayout layout = *CpLayout::Create(LayoutKind::kZigzag, 8 * 16, 2, 16);
  BlockMask mask;
  mask.num_heads = 2;  // one KV head, a group of 2
  mask.num_q_blocks = 1;
  mask.row_offsets = {0, 3, 5};
  mask.kv_blocks = {0, 3, 6, 2, 5};
  const SegmentCosts c = CountSegments(mask, layout, 1);
  EXPECT_EQ(c.counts, (std::vector<int32_t>{2, 3}));
  EXPECT_EQ(c.total(), 5);
}

}  // namespace
}  // namespace prefill
