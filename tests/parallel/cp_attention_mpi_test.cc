// Context-parallel attention under mpirun (1, 2 and 4 ranks): each rank compares its rows
// with a single-rank run of the same job on MPI_COMM_SELF.
//   dense ring == single rank (fp32 rounding);
//   sparse mask rows == single-rank mask rows, bitwise; sparse output == single-rank sparse;
//   bytes sent == selected remote (KV head, block) pairs x block bytes, < dense ring's;
//   sparse at an estimated density above SparseOptions::dense_above == the dense ring, same mask;
//   balanced sparse (owner computes) == unbalanced sparse, same mask, the same plan on every
//   rank, the computed blocks no more uneven than the selected ones (also on 3 ranks).
#include <mpi.h>

#include <cmath>
#include <numeric>
#include <set>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "parallel/mpi_communicator.h"
#include "parallel/ring_attention.h"
#include "parallel/sparse_cp_attention.h"
#include "runtime/synthetic_workload.h"
#include "runtime/tensor.h"

namespace prefill {
namespace {

constexpr int kBlock = 128, kHeads = 4, kKvHeads = 2, kDim = 64;

struct Job {
  LayoutKind layout;
  bool causal;
  WorkloadKind workload;
  DType dtype;
};

struct RankInputs {
  Tensor q, k, v;
};

RankInputs Inputs(const Job& job, const CpLayout& layout, int rank) {
  const std::vector<int32_t> pos = layout.Positions(rank);
  const WorkloadSpec spec{job.workload, layout.seq_len(), kHeads, kKvHeads, kDim, 7};
  QkvRows rows = GenerateQkvRows(spec, pos);
  const int64_t n = static_cast<int64_t>(pos.size());
  return {FromF32(rows.q, job.dtype, {n, kHeads, kDim}),
          FromF32(rows.k, job.dtype, {n, kKvHeads, kDim}),
          FromF32(rows.v, job.dtype, {n, kKvHeads, kDim})};
}

struct Outcome {
  std::vector<float> o;  // [local rows, heads, dim]
  CpAttentionStats stats;
  BlockMask mask;
};

CpAttentionShard ShardOf(const Job& job, const RankInputs& in) {
  return CpAttentionShard{job.dtype,
                          in.q.bytes.data(),
                          in.k.bytes.data(),
                          in.v.bytes.data(),
                          kHeads,
                          kKvHeads,
                          kDim,
                          job.causal,
                          1.0f / std::sqrt(float{kDim})};
}

// dense_above: SparseOptions' (by default above any density: the sparse exchange always runs).
Outcome RunJob(Communicator& comm, const Job& job, const CpLayout& layout, bool sparse,
               double dense_above = 2.0, BalanceMode balance = BalanceMode::kAuto,
               MaskEstimator estimator = MaskEstimator::kRoundRobin) {
  const RankInputs in = Inputs(job, layout, comm.rank());
  std::unique_ptr<AttentionBackend> backend = MakeCpuBackend(1);
  const int64_t rows = layout.local_len();
  Outcome out;
  out.o.resize(rows * kHeads * kDim);
  std::vector<float> lse(rows * kHeads);
  const CpAttentionShard shard = ShardOf(job, in);
  if (sparse) {
    SparseOptions options{8, 0.9f, true, true, true, dense_above, balance};
    options.estimator = estimator;
    absl::StatusOr<SparseCpResult> r =
        SparseCpAttention(comm, *backend, layout, shard, options, {out.o.data(), lse.data()});
    EXPECT_TRUE(r.ok()) << r.status();
    if (r.ok()) {
      out.stats = r->stats;
      out.mask = std::move(r->mask);
    }
  } else {
    absl::StatusOr<CpAttentionStats> r =
        RingAttention(comm, *backend, layout, shard, {out.o.data(), lse.data()});
    EXPECT_TRUE(r.ok()) << r.status();
    if (r.ok()) out.stats = *r;
  }
  return out;
}

class CpAttentionTest
    : public ::testing::TestWithParam<std::tuple<LayoutKind, bool, WorkloadKind, DType>> {
 protected:
  void SetUp() override {
    world_ = *MpiCommunicator::Create(MPI_COMM_WORLD);
    self_ = *MpiCommunicator::Create(MPI_COMM_SELF);
    auto [layout, causal, workload, dtype] = GetParam();
    job_ = {layout, causal, workload, dtype};
    seq_len_ = 2 * 4 * kBlock * 4;  // 4096: zigzag chunks of 4 blocks on 4 ranks
    layout_ =
        std::make_unique<CpLayout>(*CpLayout::Create(layout, seq_len_, world_->size(), kBlock));
    single_ = std::make_unique<CpLayout>(*CpLayout::Create(layout, seq_len_, 1, kBlock));
  }

  // The single-rank row of absolute position p.
  const float* SingleRow(const Outcome& single, int32_t p) const {
    return &single.o[static_cast<size_t>(p) * kHeads * kDim];
  }

  void ExpectSameRows(const Outcome& mine, const Outcome& single, double tol) const {
    const std::vector<int32_t> pos = layout_->Positions(world_->rank());
    double worst = 0;
    for (size_t i = 0; i < pos.size(); ++i) {
      for (int e = 0; e < kHeads * kDim; ++e) {
        worst = std::max(
            worst, std::abs(double{mine.o[i * kHeads * kDim + e]} - SingleRow(single, pos[i])[e]));
      }
    }
    EXPECT_LE(worst, tol) << "rank " << world_->rank() << " of " << world_->size();
  }

  std::unique_ptr<MpiCommunicator> world_, self_;
  Job job_;
  int64_t seq_len_ = 0;
  std::unique_ptr<CpLayout> layout_, single_;
};

// Partial results merged by log-sum-exp differ from one pass only by fp32 rounding: |o| is
// O(1) and each merge adds a few ulps, so 1e-5 absolute is generous yet catches any wrong block.
constexpr double kMergeTolerance = 1e-5;

TEST_P(CpAttentionTest, DenseRingEqualsSingleRank) {
  const Outcome mine = RunJob(*world_, job_, *layout_, false);
  const Outcome single = RunJob(*self_, job_, *single_, false);
  ExpectSameRows(mine, single, kMergeTolerance);
}

// The exposed part of the exchange is timed inside the host's wait for the transfers (the
// CPU computes before it waits), so it is at most that wait; one rank exchanges nothing.
TEST_P(CpAttentionTest, DenseRingExposedExchangeIsPartOfTheWait) {
  const Outcome mine = RunJob(*world_, job_, *layout_, false);
  EXPECT_GE(mine.stats.exchange_exposed_seconds, 0.0);
  EXPECT_LE(mine.stats.exchange_exposed_seconds, mine.stats.exchange_seconds);
  const Outcome single = RunJob(*self_, job_, *single_, false);
  EXPECT_EQ(single.stats.exchange_exposed_seconds, 0.0);
}

void ExpectSameMaskRows(const Outcome& mine, const Outcome& single, int rank) {
  ASSERT_EQ(mine.mask.num_heads, single.mask.num_heads);
  for (int h = 0; h < kHeads; ++h) {
    for (int qb = 0; qb < mine.mask.num_q_blocks; ++qb) {
      const int32_t absolute = mine.mask.q_block_ids[qb];
      auto a = mine.mask.row(h, qb), b = single.mask.row(h, absolute);
      EXPECT_EQ(std::vector<int32_t>(a.begin(), a.end()), std::vector<int32_t>(b.begin(), b.end()))
          << "head " << h << " query block " << absolute << " on rank " << rank;
    }
  }
}

TEST_P(CpAttentionTest, SparseMaskAndOutputEqualSingleRank) {
  const Outcome mine = RunJob(*world_, job_, *layout_, true);
  const Outcome single = RunJob(*self_, job_, *single_, true);
  ExpectSameMaskRows(mine, single, world_->rank());
  ExpectSameRows(mine, single, kMergeTolerance);
}

// rr+heavy: the heavy keys are pooled per rank and all-gathered in absolute block order, so
// every rank's rows are the single rank's, as with plain round robin.
TEST_P(CpAttentionTest, HeavyEstimatorMaskAndOutputEqualSingleRank) {
  const Outcome mine = RunJob(*world_, job_, *layout_, true, 2.0, BalanceMode::kAuto,
                              MaskEstimator::kRoundRobinHeavy);
  const Outcome single = RunJob(*self_, job_, *single_, true, 2.0, BalanceMode::kAuto,
                                MaskEstimator::kRoundRobinHeavy);
  ExpectSameMaskRows(mine, single, world_->rank());
  ExpectSameRows(mine, single, kMergeTolerance);
}

// Unbalanced: balancing moves work to where its KV blocks are, so fewer are fetched.
TEST_P(CpAttentionTest, SparseSendsExactlyTheSelectedRemoteBlocks) {
  const Outcome mine = RunJob(*world_, job_, *layout_, true, 2.0, BalanceMode::kOff);
  std::set<std::pair<int, int>> remote;  // (kv head, block) this rank needs from others
  const int group = kHeads / kKvHeads;
  for (int h = 0; h < kHeads; ++h) {
    for (int qb = 0; qb < mine.mask.num_q_blocks; ++qb) {
      for (int32_t block : mine.mask.row(h, qb)) {
        if (layout_->HomeOf(block).rank != world_->rank()) remote.insert({h / group, block});
      }
    }
  }
  const double block_bytes = 2.0 * kBlock * kDim * DTypeSize(job_.dtype);  // K and V
  double totals[3] = {static_cast<double>(remote.size()) * block_bytes,
                      static_cast<double>(mine.stats.kv_bytes_sent),
                      static_cast<double>(mine.stats.selected_blocks) / mine.stats.visible_blocks};
  ASSERT_EQ(MPI_Allreduce(MPI_IN_PLACE, totals, 3, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD),
            MPI_SUCCESS);
  EXPECT_EQ(totals[0], totals[1]) << "bytes received as needed vs bytes sent";
  const double ring = static_cast<double>(DenseRingKvBytes(*layout_, kKvHeads, kDim, job_.dtype));
  if (world_->size() > 1) {
    const double density = totals[2] / world_->size();
    if (density < 1.0) {
      EXPECT_LT(totals[1], ring);
    }
  } else {
    EXPECT_EQ(totals[1], 0);
  }
}

// dense_above 0: every layer's density reaches it, so every rank runs the ring (one rank too,
// with several: one rank always takes the mask) with the dense result, and the mask is the
// estimator's all the same.
TEST_P(CpAttentionTest, SparseAboveDenseThresholdRunsTheRing) {
  const Outcome mine = RunJob(*world_, job_, *layout_, true, /*dense_above=*/0.0);
  const Outcome dense = RunJob(*self_, job_, *single_, false);
  const Outcome sparse = RunJob(*self_, job_, *single_, true);
  if (world_->size() == 1) {
    EXPECT_FALSE(mine.stats.ran_dense);
    ExpectSameRows(mine, sparse, kMergeTolerance);
    return;
  }
  EXPECT_TRUE(mine.stats.ran_dense);
  EXPECT_EQ(mine.stats.kv_bytes_sent * world_->size(),
            DenseRingKvBytes(*layout_, kKvHeads, kDim, job_.dtype));
  ExpectSameRows(mine, dense, kMergeTolerance);
  for (int qb = 0; qb < mine.mask.num_q_blocks; ++qb) {
    auto a = mine.mask.row(0, qb), b = sparse.mask.row(0, mine.mask.q_block_ids[qb]);
    EXPECT_EQ(std::vector<int32_t>(a.begin(), a.end()), std::vector<int32_t>(b.begin(), b.end()));
  }
}

// Ranks merge partial outputs in fp32: a bf16 O is for one rank only (the model hands it to
// the output projection as it is), and the paths that merge refuse it.
TEST(CpAttentionOutputDType, Bf16OutputOnlyWhereNothingMerges) {
  std::unique_ptr<MpiCommunicator> world = *MpiCommunicator::Create(MPI_COMM_WORLD);
  const Job job{LayoutKind::kContiguous, true, WorkloadKind::kRandom, DType::kBF16};
  const CpLayout layout =
      *CpLayout::Create(job.layout, 4 * kBlock * world->size(), world->size(), kBlock);
  const RankInputs in = Inputs(job, layout, world->rank());
  std::unique_ptr<AttentionBackend> backend = MakeCpuBackend(1);
  std::vector<float> o(layout.local_len() * kHeads * kDim), lse(layout.local_len() * kHeads);
  const CpAttentionShard shard = ShardOf(job, in);
  const CpAttentionOutput bf16_out{o.data(), lse.data(), DType::kBF16};
  absl::StatusOr<SparseCpResult> sparse =
      SparseCpAttention(*world, *backend, layout, shard, SparseOptions{}, bf16_out);
  // The CPU backend writes fp32 only (its activations are fp32), so one rank's request goes
  // through to it and fails there; several ranks refuse it before any work, for the merge.
  // (One rank's bf16 O on the GPU: tests/gpu/model_on_gpu.sh, sparse against numpy.)
  EXPECT_EQ(sparse.status().code(), absl::StatusCode::kInvalidArgument) << sparse.status();
  EXPECT_EQ(sparse.status().message().find("merge") != std::string_view::npos, world->size() > 1)
      << sparse.status();
  if (world->size() > 1) {
    absl::StatusOr<CpAttentionStats> ring =
        RingAttention(*world, *backend, layout, shard, bf16_out);
    EXPECT_EQ(ring.status().code(), absl::StatusCode::kInvalidArgument) << ring.status();
    EXPECT_NE(ring.status().message().find("fp32"), std::string_view::npos) << ring.status();
  }
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, CpAttentionTest,
    ::testing::Values(
        std::make_tuple(LayoutKind::kZigzag, true, WorkloadKind::kNeedle, DType::kF32),
        std::make_tuple(LayoutKind::kContiguous, true, WorkloadKind::kStripes, DType::kF32),
        std::make_tuple(LayoutKind::kZigzag, false, WorkloadKind::kVideo, DType::kF32),
        std::make_tuple(LayoutKind::kZigzag, true, WorkloadKind::kHeavy, DType::kF32),
        std::make_tuple(LayoutKind::kZigzag, true, WorkloadKind::kRandom, DType::kBF16)));

// Balanced against unbalanced sparse attention, 1 to 4 ranks (3 included: 3072 tokens split
// into whole blocks for every world size up to 4, zigzag too).
class SparseBalanceTest : public ::testing::TestWithParam<std::tuple<LayoutKind, WorkloadKind>> {
 protected:
  void SetUp() override {
    world_ = *MpiCommunicator::Create(MPI_COMM_WORLD);
    auto [layout, workload] = GetParam();
    job_ = {layout, true, workload, DType::kF32};
    layout_ = std::make_unique<CpLayout>(*CpLayout::Create(layout, 3072, world_->size(), kBlock));
  }
  std::unique_ptr<MpiCommunicator> world_;
  Job job_;
  std::unique_ptr<CpLayout> layout_;
};

// Every rank's value of x, in rank order.
template <typename T>
std::vector<T> Gathered(T x) {
  int n = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  std::vector<T> all(n);
  EXPECT_EQ(MPI_Allgather(&x, sizeof(T), MPI_BYTE, all.data(), sizeof(T), MPI_BYTE, MPI_COMM_WORLD),
            MPI_SUCCESS);
  return all;
}

TEST_P(SparseBalanceTest, BalancedEqualsUnbalancedWithTheSameMaskAndPlan) {
  const Outcome off = RunJob(*world_, job_, *layout_, true, 2.0, BalanceMode::kOff);
  const Outcome on = RunJob(*world_, job_, *layout_, true, 2.0, BalanceMode::kAuto);
  EXPECT_EQ(on.mask, off.mask) << "rank " << world_->rank();
  double worst = 0;
  for (size_t i = 0; i < on.o.size(); ++i)
    worst = std::max(worst, std::abs(double{on.o[i]} - off.o[i]));
  EXPECT_LE(worst, kMergeTolerance) << "rank " << world_->rank() << " of " << world_->size();

  const std::vector<uint64_t> hashes = Gathered(on.stats.balance_plan_hash);
  const std::vector<int64_t> moves = Gathered(on.stats.balance_moves);
  const std::vector<int64_t> selected = Gathered(on.stats.selected_blocks);
  const std::vector<int64_t> computed = Gathered(on.stats.computed_blocks);
  const std::vector<int64_t> kv_on = Gathered(on.stats.kv_bytes_sent),
                             kv_off = Gathered(off.stats.kv_bytes_sent);
  EXPECT_EQ(selected, Gathered(off.stats.selected_blocks));
  EXPECT_EQ(Gathered(off.stats.computed_blocks), selected)
      << "unbalanced ranks compute what they select";
  EXPECT_EQ(std::accumulate(computed.begin(), computed.end(), int64_t{0}),
            std::accumulate(selected.begin(), selected.end(), int64_t{0}));
  EXPECT_LE(Imbalance(computed), Imbalance(selected));
  EXPECT_LE(std::accumulate(kv_on.begin(), kv_on.end(), int64_t{0}),
            std::accumulate(kv_off.begin(), kv_off.end(), int64_t{0}));
  for (int r = 1; r < world_->size(); ++r) {
    EXPECT_EQ(hashes[r], hashes[0]) << "rank " << r << "'s plan differs from rank 0's";
    EXPECT_EQ(moves[r], moves[0]);
  }
  if (world_->size() == 1) {
    EXPECT_EQ(on.stats.balance_moves, 0);
    EXPECT_EQ(on.stats.computed_blocks, on.stats.selected_blocks);
  } else if (job_.workload == WorkloadKind::kNeedle && job_.layout == LayoutKind::kZigzag) {
    // The forced-dense last query block makes the rank holding it the heaviest: work moves.
    EXPECT_GT(on.stats.balance_moves, 0);
    const std::vector<int64_t> bytes = Gathered(on.stats.balance_bytes_sent);
    EXPECT_GT(std::accumulate(bytes.begin(), bytes.end(), int64_t{0}), 0);
    EXPECT_LT(Imbalance(computed), Imbalance(selected));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Workloads, SparseBalanceTest,
    ::testing::Combine(::testing::Values(LayoutKind::kContiguous, LayoutKind::kZigzag),
                       ::testing::Values(WorkloadKind::kNeedle, WorkloadKind::kStripes,
                                         WorkloadKind::kSinks, WorkloadKind::kVideo)));

}  // namespace
}  // namespace prefill
