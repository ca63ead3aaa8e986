// The quality evaluation under mpirun -np 4 equals a single-rank run of the same workload
// (each rank also runs the whole job alone on MPI_COMM_SELF): every estimator's mask rows
// bitwise, density and needle recall exactly, recall (mean, 1st percentile) to rounding,
// output errors to fp32 rounding (round robin merges remote blocks by log-sum-exp).
#include <mpi.h>

#include <cmath>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "bench/quality/quality_evaluation.h"
#include "gtest/gtest.h"
#include "parallel/mpi_communicator.h"
#include "runtime/synthetic_workload.h"

namespace prefill::quality {
namespace {

constexpr int kBlock = 128, kHeads = 4, kKvHeads = 2, kDim = 64;
constexpr int64_t kSeqLen = 2048;  // zigzag on 4 ranks: chunks of 2 blocks

WorkloadShard Shard(WorkloadKind kind, const CpLayout& layout, int rank) {
  const WorkloadSpec spec{kind, layout.seq_len(), kHeads, kKvHeads, kDim, 11};
  QkvRows rows = GenerateQkvRows(spec, layout.Positions(rank));
  WorkloadShard s;
  s.name = WorkloadKindName(kind);
  s.q = std::move(rows.q);
  s.k = std::move(rows.k);
  s.v = std::move(rows.v);
  s.heads = kHeads;
  s.kv_heads = kKvHeads;
  s.head_dim = kDim;
  if (kind == WorkloadKind::kNeedle) {
    const NeedlePlacement n = PlaceNeedle(layout.seq_len(), kBlock);
    s.needle = WorkloadShard::Needle{n.needle_position, n.needle_position + kNeedleTokens - 1,
                                     static_cast<int32_t>(n.question_begin / kBlock)};
  }
  return s;
}

class QualityMpiTest : public ::testing::TestWithParam<WorkloadKind> {};

TEST_P(QualityMpiTest, FourRanksEqualOneRank) {
  auto world = *MpiCommunicator::Create(MPI_COMM_WORLD);
  auto self = *MpiCommunicator::Create(MPI_COMM_SELF);
  const CpLayout layout = *CpLayout::Create(LayoutKind::kZigzag, kSeqLen, world->size(), kBlock);
  const CpLayout single = *CpLayout::Create(LayoutKind::kZigzag, kSeqLen, 1, kBlock);
  SweepConfig sweep;
  sweep.strides = {8, 16};
  sweep.taus = {0.8f, 0.95f};
  sweep.oracle_curve_taus = {0.5f};
  sweep.keep_masks = true;
  absl::StatusOr<WorkloadReport> mine =
      EvaluateWorkload(*world, layout, Shard(GetParam(), layout, world->rank()), sweep);
  ASSERT_TRUE(mine.ok()) << mine.status();
  absl::StatusOr<WorkloadReport> alone =
      EvaluateWorkload(*self, single, Shard(GetParam(), single, 0), sweep);
  ASSERT_TRUE(alone.ok()) << alone.status();

  ASSERT_EQ(mine->points.size(), alone->points.size());
  ASSERT_EQ(mine->world_size, world->size());
  std::set<std::string> estimators;
  for (size_t i = 0; i < mine->points.size(); ++i) {
    const EstimatorPoint& a = mine->points[i];
    const EstimatorPoint& b = alone->points[i];
    const std::string what = a.estimator + " S=" + std::to_string(a.stride) +
                             " tau=" + std::to_string(a.tau) + " W=" + std::to_string(a.window);
    estimators.insert(a.estimator);
    ASSERT_EQ(a.estimator, b.estimator);
    ASSERT_EQ(a.stride, b.stride);
    ASSERT_EQ(a.tau, b.tau);
    ASSERT_EQ(a.window, b.window) << what;
    for (int h = 0; h < kHeads; ++h) {
      for (int qb = 0; qb < a.mask.num_q_blocks; ++qb) {
        const int32_t absolute = a.mask.q_block_ids[qb];
        const std::span<const int32_t> x = a.mask.row(h, qb), y = b.mask.row(h, absolute);
        ASSERT_EQ(std::vector<int32_t>(x.begin(), x.end()),
                  std::vector<int32_t>(y.begin(), y.end()))
            << what << ": head " << h << " block " << absolute << " on rank " << world->rank();
      }
    }
    EXPECT_EQ(a.density, b.density) << what;
    EXPECT_EQ(a.needle_recall, b.needle_recall) << what;
    EXPECT_EQ(a.recall_p1, b.recall_p1) << what;
    EXPECT_NEAR(a.recall_mean, b.recall_mean, 1e-12) << what;
    ASSERT_EQ(a.has_output, b.has_output);
    if (a.has_output) {
      // The baselines' outputs are computed per (head, query block) alike on both; round
      // robin's remote blocks come through a log-sum-exp merge: fp32 rounding of O(1) values.
      EXPECT_NEAR(a.rel_l2_err, b.rel_l2_err, 1e-5 + 1e-4 * b.rel_l2_err) << what;
      EXPECT_NEAR(a.max_abs_err, b.max_abs_err, 1e-5) << what;
    }
    EXPECT_GT(a.density, 0) << what;
    EXPECT_GE(a.recall_mean, a.recall_p1) << what;
  }
  EXPECT_EQ(estimators, (std::set<std::string>{"rr", "rr_unrotated", "rr+heavy", "antidiagonal",
                                               "oracle", "static_window"}));
  if (GetParam() == WorkloadKind::kNeedle) {
    for (const EstimatorPoint& p : mine->points) {
      EXPECT_GE(p.needle_recall, 0) << p.estimator;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Workloads, QualityMpiTest,
                         ::testing::Values(WorkloadKind::kNeedle, WorkloadKind::kVideo),
                         [](const auto& info) {
                           return std::string(WorkloadKindName(info.param));
                         });

}  // namespace
}  // namespace prefill::quality
