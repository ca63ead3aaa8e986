// The masks the quality benchmark compares, on planted structure:
//   the true block masses equal fp64 attention restricted to one block (an independent route
//   through ReferenceAttention's log-sum-exp);
//   the oracle's recall is >= tau by construction, with the fewest blocks;
//   every estimator's mask is a superset of the forced blocks (sink, diagonal, last row);
//   round robin at S = 8 recalls a planted needle for every head of the question block;
//   the antidiagonal estimator's masses equal a naive double-precision XAttention;
//   the static window matches a target density with the smallest window.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>
#include <vector>

#include "bench/quality/baselines/antidiagonal_mask_estimator.h"
#include "bench/quality/baselines/oracle_mask.h"
#include "bench/quality/baselines/static_window_mask.h"
#include "kernels/cpu/key_pooling.h"
#include "kernels/cpu/reference_attention.h"
#include "kernels/cpu/round_robin_mask_estimator.h"
#include "runtime/synthetic_workload.h"

namespace prefill {
namespace {

constexpr int kBlock = 128;

// A whole synthetic sequence on one rank.
struct Problem {
  WorkloadSpec spec;
  QkvRows rows;
  std::vector<int32_t> positions, q_blocks;
  float scale = 0.f;

  Problem(WorkloadKind kind, int64_t seq_len, int heads, int kv_heads, int head_dim = 64) {
    spec = {kind, seq_len, heads, kv_heads, head_dim, 3};
    positions.resize(seq_len);
    std::iota(positions.begin(), positions.end(), 0);
    q_blocks.resize(seq_len / kBlock);
    std::iota(q_blocks.begin(), q_blocks.end(), 0);
    rows = GenerateQkvRows(spec, positions);
    scale = 1.f / std::sqrt(static_cast<float>(head_dim));
  }
  int num_blocks() const { return static_cast<int>(spec.seq_len / kBlock); }

  cpu::TrueBlockMass Mass() const {
    cpu::TrueMassParams p;
    p.q = rows.q.data();
    p.q_row_stride = int64_t{spec.heads} * spec.head_dim;
    p.q_head_stride = spec.head_dim;
    p.q_block_ids = q_blocks.data();
    p.num_q_blocks = num_blocks();
    p.k = rows.k.data();
    p.k_row_stride = int64_t{spec.kv_heads} * spec.head_dim;
    p.k_head_stride = spec.head_dim;
    p.seq_len = static_cast<int>(spec.seq_len);
    p.hq = spec.heads;
    p.hkv = spec.kv_heads;
    p.head_dim = spec.head_dim;
    p.block_size = kBlock;
    p.scale = scale;
    absl::StatusOr<cpu::TrueBlockMass> m = cpu::ComputeTrueBlockMass(p, 2);
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? *std::move(m) : cpu::TrueBlockMass{};
  }

  BlockMask RoundRobin(int stride, float tau, bool rotate, std::vector<float>* pooled) const {
    pooled->assign(spec.seq_len / stride * spec.kv_heads * spec.head_dim, 0.f);
    PoolKeysParams pk{DType::kF32,
                      rows.k.data(),
                      int64_t{spec.kv_heads} * spec.head_dim,
                      static_cast<int>(spec.seq_len),
                      spec.kv_heads,
                      spec.head_dim,
                      stride,
                      pooled->data()};
    EXPECT_TRUE(cpu::PoolKeys(pk).ok());
    MaskEstimateParams p;
    p.q = rows.q.data();
    p.q_row_stride = int64_t{spec.heads} * spec.head_dim;
    p.q_head_stride = spec.head_dim;
    p.q_block_ids = q_blocks.data();
    p.num_q_blocks = num_blocks();
    p.pooled_k = pooled->data();
    p.seq_len = static_cast<int>(spec.seq_len);
    p.hq = spec.heads;
    p.hkv = spec.kv_heads;
    p.head_dim = spec.head_dim;
    p.block_size = kBlock;
    p.stride = stride;
    p.tau = tau;
    p.rotate_offsets = rotate;
    p.scale = scale;
    absl::StatusOr<BlockMask> m = cpu::EstimateRoundRobinMask(p, 2);
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? *std::move(m) : BlockMask{};
  }

  cpu::AntidiagonalMaskParams Antidiagonal(int stride, float tau) const {
    cpu::AntidiagonalMaskParams p;
    p.q = rows.q.data();
    p.q_row_stride = int64_t{spec.heads} * spec.head_dim;
    p.q_head_stride = spec.head_dim;
    p.q_block_ids = q_blocks.data();
    p.num_q_blocks = num_blocks();
    p.k = rows.k.data();
    p.k_row_stride = int64_t{spec.kv_heads} * spec.head_dim;
    p.k_head_stride = spec.head_dim;
    p.seq_len = static_cast<int>(spec.seq_len);
    p.hq = spec.heads;
    p.hkv = spec.kv_heads;
    p.head_dim = spec.head_dim;
    p.block_size = kBlock;
    p.stride = stride;
    p.tau = tau;
    p.scale = scale;
    return p;
  }
};

bool Holds(std::span<const int32_t> row, int32_t block) {
  return std::binary_search(row.begin(), row.end(), block);
}

TEST(OracleMask, TrueBlockMassEqualsReferenceAttentionRestrictedToTheBlock) {
  // mass of (row, J) = exp(lse over block J - lse over every visible key), from the fp64
  // reference run once with a dense mask and once with only block J in every row.
  const Problem pb(WorkloadKind::kStripes, 1024, 4, 2);
  const cpu::TrueBlockMass mass = pb.Mass();
  std::vector<int32_t> k_pos(pb.positions);
  AttentionParams p;
  p.q = pb.rows.q.data();
  p.q_row_stride = int64_t{pb.spec.heads} * pb.spec.head_dim;
  p.q_head_stride = pb.spec.head_dim;
  p.q_pos = pb.positions.data();
  p.k = pb.rows.k.data();
  p.v = pb.rows.v.data();
  p.kv_row_stride = int64_t{pb.spec.kv_heads} * pb.spec.head_dim;
  p.kv_head_stride = pb.spec.head_dim;
  p.k_pos = k_pos.data();
  p.lq = p.lk = 1024;
  p.hq = pb.spec.heads;
  p.hkv = pb.spec.kv_heads;
  p.head_dim = pb.spec.head_dim;
  p.block_size = kBlock;
  p.causal = true;
  p.scale = pb.scale;
  const BlockMask dense = DenseBlockMask(p.hq, pb.q_blocks, pb.num_blocks(), kBlock, true);
  p.mask_row_offsets = dense.row_offsets.data();
  p.mask_kv_blocks = dense.kv_blocks.data();
  std::vector<double> o, lse_all;
  ASSERT_TRUE(cpu::ReferenceAttention(p, &o, &lse_all, 2).ok());
  for (int32_t J : {0, 3, 7}) {
    std::vector<int32_t> offsets{0}, blocks;
    for (int h = 0; h < p.hq; ++h) {
      for (int qb = 0; qb < pb.num_blocks(); ++qb) {
        if (J <= qb) blocks.push_back(J);
        offsets.push_back(static_cast<int32_t>(blocks.size()));
      }
    }
    p.mask_row_offsets = offsets.data();
    p.mask_kv_blocks = blocks.data();
    std::vector<double> lse_j;
    ASSERT_TRUE(cpu::ReferenceAttention(p, &o, &lse_j, 2).ok());
    double worst = 0;
    for (int h = 0; h < p.hq; ++h) {
      for (int qb = J; qb < pb.num_blocks(); ++qb) {
        for (int i = 0; i < kBlock; ++i) {
          const int64_t row = int64_t{qb} * kBlock + i;
          const double want = std::exp(lse_j[row * p.hq + h] - lse_all[row * p.hq + h]);
          worst = std::max(worst, std::abs(want - mass.query_row(h, qb, i)[J]));
        }
      }
    }
    EXPECT_LT(worst, 1e-6) << "block " << J << " (masses are stored as float)";
  }
  // A row's masses sum to 1; a block row's to block_size.
  for (int h = 0; h < p.hq; ++h) {
    for (int qb = 0; qb < pb.num_blocks(); ++qb) {
      const std::span<const double> row = mass.block_row(h, qb);
      EXPECT_NEAR(std::accumulate(row.begin(), row.end(), 0.0), kBlock, 1e-9);
    }
  }
}

TEST(OracleMask, RecallIsAtLeastTauWithTheFewestBlocks) {
  for (WorkloadKind kind : {WorkloadKind::kVideo, WorkloadKind::kRandom}) {
    const Problem pb(kind, 2048, 4, 2);
    const cpu::TrueBlockMass mass = pb.Mass();
    for (float tau : {0.5f, 0.8f, 0.9f, 0.95f, 0.99f}) {
      const cpu::TopTauRule rule{tau, true, true, false};
      const BlockMask m = cpu::OracleTopTauMask(mass, rule);
      for (int h = 0; h < pb.spec.heads; ++h) {
        for (int qb = 0; qb < pb.num_blocks(); ++qb) {
          const std::span<const double> row = mass.block_row(h, qb);
          const std::span<const int32_t> kept = m.row(h, qb);
          const double total = std::accumulate(row.begin(), row.begin() + qb + 1, 0.0);
          double in = 0, smallest = 1e300;
          for (int32_t j : kept) {
            in += row[j];
            if (j != 0 && j != qb) smallest = std::min(smallest, row[j]);
          }
          ASSERT_GE(in, tau * total * (1 - 1e-12))
              << "tau " << tau << " head " << h << " block " << qb;
          // Fewest: without its lightest optional block the row falls short of tau.
          if (smallest < 1e300) {
            EXPECT_LT(in - smallest, tau * total) << tau << " " << h << " " << qb;
          }
        }
      }
      absl::StatusOr<std::vector<double>> recall = cpu::RowRecall(mass, m);
      ASSERT_TRUE(recall.ok());
      const double mean = std::accumulate(recall->begin(), recall->end(), 0.0) / recall->size();
      EXPECT_GE(mean, tau) << WorkloadKindName(kind) << " tau " << tau;
    }
  }
}

// Sink, diagonal, and the last query block dense: in every mask the sweep compares.
void ExpectForcedBlocks(const BlockMask& m, int num_blocks, const std::string& what) {
  for (int h = 0; h < m.num_heads; ++h) {
    for (int qb = 0; qb < m.num_q_blocks; ++qb) {
      const int absolute = m.q_block_ids[qb];
      const std::span<const int32_t> row = m.row(h, qb);
      ASSERT_TRUE(Holds(row, 0)) << what << ": sink, head " << h << " block " << absolute;
      ASSERT_TRUE(Holds(row, absolute))
          << what << ": diagonal, head " << h << " block " << absolute;
      if (absolute == num_blocks - 1) {
        ASSERT_EQ(row.size(), static_cast<size_t>(num_blocks))
            << what << ": last row dense, head " << h;
      }
      ASSERT_TRUE(std::is_sorted(row.begin(), row.end()));
      ASSERT_LE(row.back(), absolute) << what << ": causal";
    }
  }
}

TEST(QualityMasks, EveryEstimatorKeepsTheForcedBlocks) {
  // The random workload gives the forced blocks no mass of their own: only forcing keeps them.
  for (WorkloadKind kind : {WorkloadKind::kRandom, WorkloadKind::kNeedle}) {
    const Problem pb(kind, 2048, 8, 2);
    std::vector<float> pooled;
    for (int stride : {4, 8, 16}) {
      for (float tau : {0.3f, 0.9f}) {
        for (bool rotate : {true, false}) {
          const BlockMask m = pb.RoundRobin(stride, tau, rotate, &pooled);
          ExpectForcedBlocks(m, pb.num_blocks(), rotate ? "round robin" : "unrotated");
          if (tau < 0.5f) {
            EXPECT_LT(m.density(), 1.0) << "forced blocks, not a dense mask";
          }
        }
        absl::StatusOr<BlockMask> xa =
            cpu::EstimateAntidiagonalMask(pb.Antidiagonal(stride, tau), 2);
        ASSERT_TRUE(xa.ok()) << xa.status();
        ExpectForcedBlocks(*xa, pb.num_blocks(), "antidiagonal");
      }
    }
    const cpu::TrueBlockMass mass = pb.Mass();
    ExpectForcedBlocks(cpu::OracleTopTauMask(mass, {0.3f}), pb.num_blocks(), "oracle");
    ExpectForcedBlocks(cpu::StaticWindowMask({8, pb.num_blocks(), kBlock, 2}, pb.q_blocks),
                       pb.num_blocks(), "static window");
  }
}

TEST(QualityMasks, RoundRobinRecallsThePlantedNeedleAtStride8) {
  const Problem pb(WorkloadKind::kNeedle, 8192, 8, 2);
  const NeedlePlacement needle = PlaceNeedle(pb.spec.seq_len, kBlock);
  const int32_t question = static_cast<int32_t>(needle.question_begin / kBlock);
  const int32_t first = static_cast<int32_t>(needle.needle_position / kBlock);
  const int32_t last = static_cast<int32_t>((needle.needle_position + kNeedleTokens - 1) / kBlock);
  ASSERT_EQ(first, last) << "the needle lies inside one block";
  std::vector<float> pooled;
  for (float tau : {0.8f, 0.95f}) {
    const BlockMask m = pb.RoundRobin(8, tau, true, &pooled);
    int elsewhere = 0;
    for (int h = 0; h < pb.spec.heads; ++h) {
      EXPECT_TRUE(Holds(m.row(h, question), first)) << "tau " << tau << " head " << h;
      for (int qb = first + 1; qb < pb.num_blocks() - 1; ++qb)
        elsewhere += qb != question && Holds(m.row(h, qb), first);
    }
    // Found because it is sought, not because everything is kept.
    EXPECT_LT(elsewhere, (pb.num_blocks() - first - 3) * pb.spec.heads / 2) << "tau " << tau;
  }
}

// XAttention's scores written out in double, straight from the definition.
std::vector<double> NaiveAntidiagonalMass(const Problem& pb, int stride) {
  const int hq = pb.spec.heads, d = pb.spec.head_dim, group = hq / pb.spec.kv_heads;
  const int strides = static_cast<int>(pb.spec.seq_len / stride), per_block = kBlock / stride;
  std::vector<double> mass(int64_t{hq} * pb.num_blocks() * pb.num_blocks(), 0.0);
  auto q = [&](int pos, int h, int e) {
    return double{pb.rows.q[(int64_t{pos} * hq + h) * d + e]};
  };
  auto k = [&](int pos, int g, int e) {
    return double{pb.rows.k[(int64_t{pos} * pb.spec.kv_heads + g) * d + e]};
  };
  for (int h = 0; h < hq; ++h) {
    for (int i = 0; i < strides; ++i) {
      std::vector<double> z(i + 1);
      for (int j = 0; j <= i; ++j) {
        double s = 0;
        for (int t = 0; t < stride; ++t) {
          for (int e = 0; e < d; ++e)
            s += q(i * stride + stride - 1 - t, h, e) * k(j * stride + t, h / group, e);
        }
        z[j] = s * pb.scale / stride;
      }
      const double max = *std::max_element(z.begin(), z.end());
      double total = 0;
      for (double& x : z) total += (x = std::exp(x - max));
      const int qb = i / per_block;
      for (int j = 0; j <= i; ++j)
        mass[(int64_t{h} * pb.num_blocks() + qb) * pb.num_blocks() + j / per_block] += z[j] / total;
    }
  }
  return mass;
}

TEST(AntidiagonalMask, MassesEqualANaiveXAttention) {
  const Problem pb(WorkloadKind::kVideo, 1024, 4, 2);
  for (int stride : {4, 16}) {
    cpu::AntidiagonalMaskParams p = pb.Antidiagonal(stride, 0.9f);
    p.keep_recent = false;
    absl::StatusOr<std::vector<double>> got = cpu::AntidiagonalBlockMass(p, 2);
    ASSERT_TRUE(got.ok()) << got.status();
    const std::vector<double> want = NaiveAntidiagonalMass(pb, stride);
    ASSERT_EQ(got->size(), want.size());
    double worst = 0;
    for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::abs((*got)[i] - want[i]));
    // fp32 scores against double: about 1e-6 of a row's mass (a row sums to B/S).
    EXPECT_LT(worst, 1e-4) << "stride " << stride;
  }
}

TEST(StaticWindowMask, SmallestWindowReachingTheTargetDensity) {
  const cpu::StaticWindowParams p{4, 64, kBlock, 1};
  double previous = 0;
  for (int w = 1; w <= 64; ++w) {
    cpu::StaticWindowParams pw = p;
    pw.window = w;
    const double density = cpu::StaticWindowDensity(pw);
    EXPECT_GE(density, previous) << w;
    previous = density;
    EXPECT_LE(cpu::WindowForDensity(p, density), w);
  }
  for (double target : {0.1, 0.25, 0.5}) {
    const int w = cpu::WindowForDensity(p, target);
    cpu::StaticWindowParams pw = p;
    pw.window = w;
    EXPECT_GE(cpu::StaticWindowDensity(pw), target);
    pw.window = w - 1;
    if (w > 1) {
      EXPECT_LT(cpu::StaticWindowDensity(pw), target);
    }
    std::vector<int32_t> blocks(64);
    std::iota(blocks.begin(), blocks.end(), 0);
    pw.window = w;
    EXPECT_NEAR(cpu::StaticWindowMask(pw, blocks).density(), cpu::StaticWindowDensity(pw), 1e-12);
  }
}

}  // namespace
}  // namespace prefill
