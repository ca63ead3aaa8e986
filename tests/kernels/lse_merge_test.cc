// MergeByLse: attention over disjoint KV block sets, merged by LSE, equals one pass over
// their union; rows without keys (-inf) on either side; bad params.
#include "kernels/cpu/lse_merge.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/block_sparse_attention.h"
#include "tests/kernels/attention_test_problem.h"

namespace prefill {
namespace {

using attention_test::AttentionProblem;
using attention_test::ProblemSpec;

struct CsrMask {
  std::vector<int32_t> row_offsets, kv_blocks;
};

// Deals every block of every row of the problem's mask to one of `parts` sub-masks at random:
// disjoint, their union the whole mask, some rows of some parts empty.
std::vector<CsrMask> PartitionMask(const AttentionProblem& problem, int parts, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> pick(0, parts - 1);
  std::vector<CsrMask> out(parts, CsrMask{{0}, {}});
  for (size_t r = 0; r + 1 < problem.row_offsets.size(); ++r) {
    for (int32_t e = problem.row_offsets[r]; e < problem.row_offsets[r + 1]; ++e) {
      out[pick(rng)].kv_blocks.push_back(problem.kv_blocks_ids[e]);
    }
    for (CsrMask& m : out) m.row_offsets.push_back(static_cast<int32_t>(m.kv_blocks.size()));
  }
  return out;
}

struct Attention {
  std::vector<float> o, lse;
};

Attention RunWithMask(AttentionProblem& problem, const CsrMask& mask) {
  problem.row_offsets = mask.row_offsets;
  problem.kv_blocks_ids = mask.kv_blocks;
  EXPECT_TRUE(cpu::BlockSparseAttention(problem.Params(), 2).ok());
  return {problem.o, problem.lse};
}

void Merge(Attention& acc, const Attention& part, int head_dim) {
  LseMergeParams m;
  m.o_acc = acc.o.data();
  m.lse_acc = acc.lse.data();
  m.o_part = part.o.data();
  m.lse_part = part.lse.data();
  m.rows = static_cast<int64_t>(acc.lse.size());
  m.head_dim = head_dim;
  ASSERT_TRUE(cpu::MergeByLse(m).ok());
}

TEST(MergeByLse, PartitionedMasksEqualOnePass) {
  for (const bool causal : {false, true}) {
    for (const int parts : {2, 3}) {
      SCOPED_TRACE(::testing::Message()
                   << (causal ? "causal" : "full") << ", " << parts << " parts");
      ProblemSpec spec;
      spec.causal = causal;
      spec.dtype = DType::kBF16;
      spec.density = 0.8;
      spec.seed = parts;
      AttentionProblem problem(spec);
      const CsrMask whole{problem.row_offsets, problem.kv_blocks_ids};
      const std::vector<CsrMask> pieces = PartitionMask(problem, parts, 11 * parts);
      const Attention one_pass = RunWithMask(problem, whole);
      Attention merged = RunWithMask(problem, pieces[0]);
      for (int k = 1; k < parts; ++k) Merge(merged, RunWithMask(problem, pieces[k]), spec.head_dim);

      // Tolerance, in eps of the output scale max|V|: within a KV block both runs do the same
      // dot products; they differ in the running max each block's exp2 is taken against, so
      // each side carries its own exp/accumulation rounding, at most the kernel's whole error
      // against fp64 (<= 6 eps max|V| in block_sparse_attention_test): 12 eps for both. The
      // merge weighs each part by exp(lse_part - lse) from fp32 LSEs rounded to eps * |lse|:
      // 2 eps * max|lse| more. LSE: each side within ~1 ulp of |lse|, plus the merge's rounding.
      constexpr double kEps = 0x1p-24;
      double max_lse = 0, o_error = 0, lse_error = 0;
      for (size_t r = 0; r < one_pass.lse.size(); ++r) {
        ASSERT_TRUE(std::isfinite(one_pass.lse[r]));
        max_lse = std::max(max_lse, std::fabs(double{one_pass.lse[r]}));
        lse_error = std::max(lse_error, std::fabs(double{merged.lse[r]} - one_pass.lse[r]));
      }
      for (size_t i = 0; i < one_pass.o.size(); ++i) {
        o_error = std::max(o_error, std::fabs(double{merged.o[i]} - one_pass.o[i]));
      }
      EXPECT_LE(o_error, (12 + 2 * max_lse) * kEps * problem.max_abs_value());
      EXPECT_LE(lse_error, 4 * kEps * (1 + max_lse));
    }
  }
}

// Rows: both finite, acc -inf, part -inf, both -inf.
TEST(MergeByLse, HandlesRowsWithoutKeys) {
  constexpr int kDim = 2;
  const float inf = INFINITY;
  std::vector<float> o_acc = {1, 2, 0, 0, 5, 6, 0, 0};
  std::vector<float> lse_acc = {0.5f, -inf, 1.5f, -inf};
  const std::vector<float> o_part = {3, 4, 7, 8, 0, 0, 0, 0};
  const std::vector<float> lse_part = {-0.25f, 2.f, -inf, -inf};
  LseMergeParams m{o_acc.data(), lse_acc.data(), o_part.data(), lse_part.data(), 4, kDim};
  ASSERT_TRUE(cpu::MergeByLse(m).ok());

  const double wa = std::exp(0.5), wb = std::exp(-0.25);
  EXPECT_NEAR(lse_acc[0], std::log(wa + wb), 1e-6);
  EXPECT_NEAR(o_acc[0], (1 * wa + 3 * wb) / (wa + wb), 1e-6);
  EXPECT_NEAR(o_acc[1], (2 * wa + 4 * wb) / (wa + wb), 1e-6);
  EXPECT_EQ(lse_acc[1], 2.f);  // acc empty: the part, exactly
  EXPECT_EQ(o_acc[2], 7.f);
  EXPECT_EQ(o_acc[3], 8.f);
  EXPECT_EQ(lse_acc[2], 1.5f);  // part empty: acc unchanged
  EXPECT_EQ(o_acc[4], 5.f);
  EXPECT_EQ(o_acc[5], 6.f);
  EXPECT_EQ(lse_acc[3], -inf);  // both empty: still empty, O = 0
  EXPECT_EQ(o_acc[6], 0.f);
  EXPECT_EQ(o_acc[7], 0.f);
}

TEST(MergeByLse, RejectsBadParams) {
  std::vector<float> o(4), lse(2);
  const LseMergeParams good{o.data(), lse.data(), o.data(), lse.data(), 2, 2};
  auto expect_invalid = [](LseMergeParams p, const std::string& field) {
    const absl::Status s = cpu::MergeByLse(p);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_NE(std::string(s.message()).find(field), std::string::npos) << s.message();
  };
  LseMergeParams p = good;
  p.o_acc = nullptr;
  expect_invalid(p, "o_acc");
  p = good;
  p.lse_acc = nullptr;
  expect_invalid(p, "lse_acc");
  p = good;
  p.o_part = nullptr;
  expect_invalid(p, "o_part");
  p = good;
  p.lse_part = nullptr;
  expect_invalid(p, "lse_part");
  p = good;
  p.rows = -1;
  expect_invalid(p, "rows");
  p = good;
  p.head_dim = 0;
  expect_invalid(p, "head_dim");
}

// A part holding heads 1-2 of 4 for 3 rows (run 2, stride 4) merges into exactly those entries
// of acc, as the contiguous merge of the same entries does; the other entries stay as they were.
TEST(MergeByLse, StridedRunsMatchContiguousMerge) {
  constexpr int kDim = 3, kRows = 3, kHeads = 4, kRun = 2;
  std::vector<float> o_acc(kRows * kHeads * kDim), lse_acc(kRows * kHeads);
  std::vector<float> o_part(kRows * kRun * kDim), lse_part(kRows * kRun);
  for (size_t i = 0; i < o_acc.size(); ++i) o_acc[i] = 0.25f * static_cast<float>(i) - 2.f;
  for (size_t i = 0; i < lse_acc.size(); ++i) lse_acc[i] = 0.5f * static_cast<float>(i % 5);
  for (size_t i = 0; i < o_part.size(); ++i) o_part[i] = 1.5f - 0.125f * static_cast<float>(i);
  for (size_t i = 0; i < lse_part.size(); ++i)
    lse_part[i] = 1.f - 0.75f * static_cast<float>(i % 3);
  lse_part[3] = -INFINITY;  // a part entry without keys leaves its acc entry alone
  // The reference: the touched acc entries gathered, merged contiguously, put back.
  std::vector<float> want_o = o_acc, want_lse = lse_acc;
  std::vector<float> sub_o, sub_lse;
  std::vector<int> at;
  for (int r = 0; r < kRows; ++r) {
    for (int h = 1; h <= kRun; ++h) at.push_back(r * kHeads + h);
  }
  for (int e : at) {
    sub_lse.push_back(lse_acc[e]);
    sub_o.insert(sub_o.end(), o_acc.begin() + e * kDim, o_acc.begin() + (e + 1) * kDim);
  }
  LseMergeParams contiguous{.o_acc = sub_o.data(),
                            .lse_acc = sub_lse.data(),
                            .o_part = o_part.data(),
                            .lse_part = lse_part.data(),
                            .rows = kRows * kRun,
                            .head_dim = kDim};
  ASSERT_TRUE(cpu::MergeByLse(contiguous).ok());
  for (size_t i = 0; i < at.size(); ++i) {
    want_lse[at[i]] = sub_lse[i];
    std::copy_n(sub_o.begin() + i * kDim, kDim, want_o.begin() + at[i] * kDim);
  }
  LseMergeParams strided{.o_acc = o_acc.data() + kDim,  // entry 1: heads 1-2 of each row
                         .lse_acc = lse_acc.data() + 1,
                         .o_part = o_part.data(),
                         .lse_part = lse_part.data(),
                         .rows = kRows * kRun,
                         .head_dim = kDim,
                         .run = kRun,
                         .acc_run_stride = kHeads};
  ASSERT_TRUE(cpu::MergeByLse(strided).ok());
  EXPECT_EQ(o_acc, want_o);
  EXPECT_EQ(lse_acc, want_lse);
  strided.acc_run_stride = kRun - 1;
  EXPECT_EQ(cpu::MergeByLse(strided).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace prefill
