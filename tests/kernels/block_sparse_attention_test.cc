// Block-sparse flash attention (CPU) against the fp64 reference, on every instruction-set
// path this CPU runs (portable, AVX2, AVX-512, NEON), each also against the portable one; the
// reference itself against a hand computation and an independent numpy script.
#include "kernels/cpu/block_sparse_attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <numbers>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/cpu/cpu_isa.h"
#include "kernels/cpu/reference_attention.h"
#include "tests/kernels/attention_cases.h"
#include "tests/kernels/attention_test_problem.h"

namespace prefill {
namespace {

using attention_test::AttentionErrors;
using attention_test::AttentionProblem;
using attention_test::ProblemSpec;
using attention_test::ScopedCpuIsa;

using cpu::CpuIsa;
using cpu::CpuIsaName;

// The instruction-set paths this CPU runs, portable (the reference path) first.
std::vector<CpuIsa> AvailableIsas() {
  std::vector<CpuIsa> isas = cpu::RunnableCpuIsas();
  std::reverse(isas.begin(), isas.end());
  return isas;
}

struct Comparison {
  AttentionErrors kernel, naive;
};

// Runs the kernel on `problem` (outputs land in problem.o / problem.lse), the fp64
// reference and the naive fp32 implementation, and measures both against the reference.
Comparison CompareWithReference(AttentionProblem& problem, int threads = 2) {
  const AttentionParams p = problem.Params();
  EXPECT_TRUE(cpu::BlockSparseAttention(p, threads).ok());
  std::vector<double> ref_o, ref_lse;
  EXPECT_TRUE(cpu::ReferenceAttention(p, &ref_o, &ref_lse, threads).ok());
  std::vector<float> naive_o, naive_lse;
  attention_test::NaiveF32Attention(p, &naive_o, &naive_lse);
  const int d = p.head_dim;
  return {attention_test::MeasureErrors(problem.o, problem.lse, ref_o, ref_lse, d),
          attention_test::MeasureErrors(naive_o, naive_lse, ref_o, ref_lse, d)};
}

// Tolerance (STYLE habit 4): the naive fp32 implementation's error against fp64 is what fp32
// arithmetic costs on this input. The kernel performs the same dot products and sums in
// another order and rounds each probability more coarsely: exp2 by polynomial (< 1.7 ulp
// against std::exp's 0.5) of a logit that went through one more rounding (q prescaled by
// scale * log2(e)); the per-block rescale multiplies O^T and the sum by the same factor, so
// its error cancels in O = O^T / sum up to one rounding per block. That makes the kernel's
// error up to ~3x the naive one (3.0x is the worst measured on this file's cases); a max
// over a few thousand values is a noisy statistic, so allow 2x on top. The floor of one ulp
// of the output scale only matters if the naive error happens to be 0.
void ExpectWithinTolerance(const Comparison& c, float max_abs_value) {
  constexpr double kEps = 0x1p-24;
  constexpr double kSlack = 6.0;
  EXPECT_TRUE(c.kernel.empty_rows_exact);
  EXPECT_LE(c.kernel.o, kSlack * c.naive.o + kEps * max_abs_value)
      << "naive fp32 error " << c.naive.o;
  EXPECT_LE(c.kernel.lse, kSlack * c.naive.lse + kEps) << "naive fp32 error " << c.naive.lse;
}

// Largest |a - b| over finite pairs; a NaN on one side only counts as infinite.
double MaxAbsDifference(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) != std::isnan(b[i])) return INFINITY;
    if (a[i] == b[i] || std::isnan(a[i])) continue;  // equal infinities included
    worst = std::max(worst, std::fabs(static_cast<double>(a[i]) - b[i]));
  }
  return worst;
}

// Every path against fp64, and every vector path against the portable one. They run the same
// operations in the same order per query lane; they differ only where a vector path fuses a
// multiply-add the portable one rounds twice, a difference of the order of fp32 rounding
// itself. Bound: twice the naive fp32 error against fp64 (the worst measured on this file's
// cases is 1.3x for O, 1.1x for LSE), plus one ulp of the output scale.
void CheckOnEveryIsa(AttentionProblem& problem) {
  std::vector<float> portable_o, portable_lse;
  for (CpuIsa isa : AvailableIsas()) {
    SCOPED_TRACE(CpuIsaName(isa));
    ScopedCpuIsa scoped(std::string(CpuIsaName(isa)));
    const Comparison c = CompareWithReference(problem);
    ExpectWithinTolerance(c, problem.max_abs_value());
    if (isa == CpuIsa::kPortable) {
      portable_o = problem.o;
      portable_lse = problem.lse;
      continue;
    }
    constexpr double kEps = 0x1p-24;
    EXPECT_LE(MaxAbsDifference(problem.o, portable_o),
              2 * c.naive.o + kEps * problem.max_abs_value());
    EXPECT_LE(MaxAbsDifference(problem.lse, portable_lse), 2 * c.naive.lse + kEps);
  }
}

class BlockSparseAttentionTest : public ::testing::TestWithParam<attention_test::AttentionCase> {};

TEST_P(BlockSparseAttentionTest, MatchesReference) {
  AttentionProblem problem(attention_test::ApplyCase(ProblemSpec{}, GetParam()));
  CheckOnEveryIsa(problem);
}

INSTANTIATE_TEST_SUITE_P(Grid, BlockSparseAttentionTest, attention_test::AllAttentionCases(),
                         attention_test::AttentionCaseName);

TEST(BlockSparseAttention, ProductionBlockSize) {
  ProblemSpec spec;
  spec.lq = 256;
  spec.lk = 512;
  spec.block_size = 128;
  spec.head_dim = 128;
  spec.dtype = DType::kBF16;
  spec.causal = true;
  spec.density = 0.7;
  AttentionProblem problem(spec);
  CheckOnEveryIsa(problem);
}

// Block sizes that are not whole vectors (padding lanes) and head dims off the 64/128 path.
TEST(BlockSparseAttention, OddBlockAndHeadSizes) {
  for (const auto& [block, head_dim] : {std::pair{40, 48}, std::pair{8, 16}, std::pair{24, 80}}) {
    SCOPED_TRACE(::testing::Message() << "block " << block << " head_dim " << head_dim);
    ProblemSpec spec;
    spec.lq = 5 * block;
    spec.lk = 7 * block;
    spec.block_size = block;
    spec.head_dim = head_dim;
    spec.causal = true;
    spec.density = 0.6;
    AttentionProblem problem(spec);
    CheckOnEveryIsa(problem);
  }
}

// Peaked softmax: logits in the tens, so the running max moves a lot between blocks and
// most probabilities underflow.
TEST(BlockSparseAttention, LargeLogits) {
  ProblemSpec spec;
  spec.logit_gain = 12.f;
  spec.causal = true;
  AttentionProblem problem(spec);
  CheckOnEveryIsa(problem);
}

// Zigzag context parallelism: a rank holds chunks 1 and 6 of 8 (chunk = 64 tokens) and
// attends to the whole sequence; blocks of 32 split each chunk in two.
TEST(BlockSparseAttention, ZigzagPositions) {
  ProblemSpec spec;
  spec.lq = 128;
  spec.lk = 512;
  spec.block_size = 32;
  spec.causal = true;
  AttentionProblem problem(spec);
  for (int i = 0; i < 64; ++i) {
    problem.q_pos[i] = 64 + i;
    problem.q_pos[64 + i] = 6 * 64 + i;
  }
  problem.RandomizeMask(0.6);
  CheckOnEveryIsa(problem);
}

// Per-head compacted K/V: each KV head carries its own selection of absolute blocks, so key
// positions differ by head (k_pos_head_stride = lk) and are not contiguous.
TEST(BlockSparseAttention, PerKvHeadKeyPositions) {
  ProblemSpec spec;
  spec.lq = 128;
  spec.lk = 256;
  spec.causal = true;
  AttentionProblem problem(spec);
  const int b = spec.block_size;
  const std::vector<std::vector<int>> absolute_blocks = {{0, 2, 3, 5}, {1, 2, 4, 5}};
  problem.k_pos.resize(2 * spec.lk);
  problem.k_pos_head_stride = spec.lk;
  for (int g = 0; g < 2; ++g) {
    for (int j = 0; j < spec.lk; ++j) {
      problem.k_pos[g * spec.lk + j] = absolute_blocks[g][j / b] * b + j % b;
    }
  }
  for (int i = 0; i < b; ++i) {
    problem.q_pos[i] = 2 * b + i;      // sees blocks 0/1 fully, 2 partially, 3-5 not at all
    problem.q_pos[b + i] = 5 * b + i;  // sees everything, block 5 partially
  }
  // Every block in every row: the kernel must skip the invisible ones itself.
  problem.row_offsets.assign(1, 0);
  problem.kv_blocks_ids.clear();
  for (int row = 0; row < spec.hq * problem.num_q_blocks(); ++row) {
    for (int kb = 0; kb < problem.num_kv_blocks(); ++kb) problem.kv_blocks_ids.push_back(kb);
    problem.row_offsets.push_back(static_cast<int32_t>(problem.kv_blocks_ids.size()));
  }
  CheckOnEveryIsa(problem);
}

// Rows that see no key: O = 0 and LSE = -inf exactly, from causality (whole blocks, and
// the first rows of a block whose keys start later) and from empty mask rows.
// Causal, keys starting 32 positions after the queries (the first 32 rows of every head see no
// key), full mask but for the emptied row of head 3, query block 1.
AttentionProblem ProblemWithEmptyRows() {
  ProblemSpec spec;
  spec.lq = 128;
  spec.lk = 192;
  spec.causal = true;
  AttentionProblem problem(spec);
  for (int i = 0; i < spec.lq; ++i) problem.q_pos[i] = i;
  for (int j = 0; j < spec.lk; ++j) problem.k_pos[j] = j + 32;
  problem.RandomizeMask(1.0);
  const int row = 3 * problem.num_q_blocks() + 1;
  const int removed = problem.row_offsets[row + 1] - problem.row_offsets[row];
  problem.kv_blocks_ids.erase(problem.kv_blocks_ids.begin() + problem.row_offsets[row],
                              problem.kv_blocks_ids.begin() + problem.row_offsets[row + 1]);
  for (size_t r = row + 1; r < problem.row_offsets.size(); ++r) problem.row_offsets[r] -= removed;
  return problem;
}

TEST(BlockSparseAttention, RowsWithoutVisibleKeys) {
  AttentionProblem problem = ProblemWithEmptyRows();
  const ProblemSpec& spec = problem.spec();
  for (CpuIsa isa : AvailableIsas()) {
    SCOPED_TRACE(CpuIsaName(isa));
    ScopedCpuIsa scoped(std::string(CpuIsaName(isa)));
    const Comparison c = CompareWithReference(problem);
    ExpectWithinTolerance(c, problem.max_abs_value());
    // 32 rows per head before the first key, plus the 64 rows of the emptied mask row.
    EXPECT_EQ(c.kernel.empty_rows, 32 * spec.hq + 64);
  }
}

// empty_rows_lse_only: an empty mask row writes LSE -inf and leaves O as it was; every other
// row is bitwise the result without the flag (rows emptied by causality alone still get O = 0).
TEST(BlockSparseAttention, EmptyRowsLseOnlyLeavesTheirOutputUntouched) {
  AttentionProblem problem = ProblemWithEmptyRows();
  const ProblemSpec& spec = problem.spec();
  for (CpuIsa isa : AvailableIsas()) {
    SCOPED_TRACE(CpuIsaName(isa));
    ScopedCpuIsa scoped(std::string(CpuIsaName(isa)));
    ASSERT_TRUE(cpu::BlockSparseAttention(problem.Params(), 2).ok());
    const std::vector<float> o_full = problem.o, lse_full = problem.lse;
    constexpr float kSentinel = 12345.f;
    AttentionParams p = problem.Params();
    std::fill(problem.o.begin(), problem.o.end(), kSentinel);
    p.empty_rows_lse_only = true;
    ASSERT_TRUE(cpu::BlockSparseAttention(p, 2).ok());
    EXPECT_EQ(problem.lse, lse_full);
    const int block = spec.block_size, d = spec.head_dim;
    for (int i = 0; i < spec.lq; ++i) {
      for (int h = 0; h < spec.hq; ++h) {
        const bool emptied = h == 3 && i / block == 1;
        for (int e = 0; e < d; ++e) {
          const size_t at = (static_cast<size_t>(i) * spec.hq + h) * d + e;
          ASSERT_EQ(problem.o[at], emptied ? kSentinel : o_full[at]) << i << ", " << h << ", " << e;
        }
      }
    }
  }
}

// A NaN key reaches O and LSE of exactly the heads that read it (a poisoned buffer upstream
// must show, not be averaged away).
TEST(BlockSparseAttention, NanInputsPropagate) {
  ProblemSpec spec;
  spec.lq = spec.lk = 128;
  AttentionProblem problem(spec);
  problem.SetKey(/*kv_head=*/0, /*row=*/5, /*e=*/3, NAN);
  const int group = spec.hq / spec.hkv;
  for (CpuIsa isa : AvailableIsas()) {
    SCOPED_TRACE(CpuIsaName(isa));
    ScopedCpuIsa scoped(std::string(CpuIsaName(isa)));
    ASSERT_TRUE(cpu::BlockSparseAttention(problem.Params(), 2).ok());
    for (int i = 0; i < spec.lq; ++i) {
      for (int h = 0; h < spec.hq; ++h) {
        const bool poisoned = h < group;
        EXPECT_EQ(std::isnan(problem.lse[i * spec.hq + h]), poisoned) << i << ", " << h;
        EXPECT_EQ(std::isnan(problem.o[(i * spec.hq + h) * spec.head_dim]), poisoned);
      }
    }
  }
}

TEST(BlockSparseAttention, ThreadCountDoesNotChangeResults) {
  ProblemSpec spec;
  spec.causal = true;
  spec.density = 0.5;
  AttentionProblem problem(spec);
  AttentionParams p = problem.Params();
  ASSERT_TRUE(cpu::BlockSparseAttention(p, 1).ok());
  const std::vector<float> o1 = problem.o, lse1 = problem.lse;
  p = problem.Params();
  ASSERT_TRUE(cpu::BlockSparseAttention(p, 2).ok());
  EXPECT_EQ(o1, problem.o);
  EXPECT_EQ(lse1, problem.lse);
}

// Which variant runs: the best one CPUID allows, unless PREFILL_CPU_ISA forces another; one
// the CPU cannot run, or a misspelt name, is an error naming the variable.
TEST(BlockSparseAttention, ReportsAndForcesTheIsaVariant) {
  ScopedCpuIsa automatic("");
  const CpuIsa best = cpu::BestCpuIsa();
  std::printf("CPU ISA variants: best %s, runnable:", std::string(CpuIsaName(best)).c_str());
  for (CpuIsa isa : cpu::RunnableCpuIsas())
    std::printf(" %s", std::string(CpuIsaName(isa)).c_str());
  std::printf("\n");
  ::testing::Test::RecordProperty("cpu_isa", std::string(CpuIsaName(best)));
#if defined(__x86_64__)
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  EXPECT_EQ(best, avx512 ? CpuIsa::kAvx512 : avx2 ? CpuIsa::kAvx2 : CpuIsa::kPortable);
  EXPECT_EQ(cpu::CpuRuns(CpuIsa::kAvx2), avx2);
  EXPECT_FALSE(cpu::CpuRuns(CpuIsa::kNeon));
#elif defined(__aarch64__)
  EXPECT_EQ(best, CpuIsa::kNeon);
#endif
  ASSERT_TRUE(cpu::SelectedCpuIsa().ok());
  EXPECT_EQ(*cpu::SelectedCpuIsa(), best);
  for (CpuIsa isa : {CpuIsa::kPortable, CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kNeon}) {
    ScopedCpuIsa forced(std::string(CpuIsaName(isa)));
    const absl::StatusOr<CpuIsa> selected = cpu::SelectedCpuIsa();
    if (cpu::CpuRuns(isa)) {
      ASSERT_TRUE(selected.ok()) << selected.status();
      EXPECT_EQ(*selected, isa);
    } else {
      EXPECT_EQ(selected.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_NE(selected.status().message().find("PREFILL_CPU_ISA"), std::string_view::npos);
    }
  }
  ScopedCpuIsa misspelt("avx3");
  ASSERT_FALSE(cpu::SelectedCpuIsa().ok());
  EXPECT_NE(cpu::SelectedCpuIsa().status().message().find("avx3"), std::string_view::npos);
  ProblemSpec spec;
  spec.lq = spec.lk = 128;
  AttentionProblem problem(spec);
  EXPECT_EQ(cpu::BlockSparseAttention(problem.Params(), 1).code(),
            absl::StatusCode::kInvalidArgument);
}

// Each bad field is reported by name.
TEST(BlockSparseAttention, RejectsBadParams) {
  ProblemSpec spec;
  spec.lq = 128;
  spec.lk = 128;
  AttentionProblem problem(spec);
  const std::vector<std::pair<std::function<void(AttentionParams&)>, std::string>> cases = {
      {[](AttentionParams& p) { p.q = nullptr; }, "q is null"},
      {[](AttentionParams& p) { p.k = nullptr; }, "k is null"},
      {[](AttentionParams& p) { p.v = nullptr; }, "v is null"},
      {[](AttentionParams& p) { p.o = nullptr; }, "o is null"},
      {[](AttentionParams& p) { p.lse = nullptr; }, "lse is null"},
      {[](AttentionParams& p) { p.causal = true, p.q_pos = nullptr; }, "q_pos is null"},
      {[](AttentionParams& p) { p.causal = true, p.k_pos = nullptr; }, "k_pos is null"},
      {[](AttentionParams& p) { p.mask_row_offsets = nullptr; }, "mask_row_offsets is null"},
      {[](AttentionParams& p) { p.mask_kv_blocks = nullptr; }, "mask_kv_blocks is null"},
      {[](AttentionParams& p) { p.block_size = 0; }, "block_size"},
      {[](AttentionParams& p) { p.lq = 100; }, "lq (100)"},
      {[](AttentionParams& p) { p.lk = 96; }, "lk (96)"},
      {[](AttentionParams& p) { p.hkv = 3; }, "hq (8) must be a positive multiple of hkv (3)"},
      {[](AttentionParams& p) { p.head_dim = 72; }, "head_dim (72)"},
      {[](AttentionParams& p) { p.out_dtype = DType::kBF16; }, "out_dtype"},
      {[](AttentionParams& p) { const_cast<int32_t*>(p.mask_kv_blocks)[1] = 2; },
       "mask_kv_blocks[1] = 2 is out of range [0, 2)"},
      {[](AttentionParams& p) { const_cast<int32_t*>(p.mask_kv_blocks)[1] = 0; }, "do not ascend"},
  };
  for (const auto& [mutate, message] : cases) {
    AttentionParams p = problem.Params();
    const std::vector<int32_t> saved_mask = problem.kv_blocks_ids;
    mutate(p);
    const absl::Status status = cpu::BlockSparseAttention(p, 1);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << message;
    EXPECT_NE(std::string(status.message()).find(message), std::string::npos)
        << "got: " << status.message();
    problem.kv_blocks_ids = saved_mask;
  }
}

// The reference on a case small enough to do by hand: one query, keys with logits 0 and 1.
TEST(ReferenceAttention, HandComputed) {
  constexpr int kDim = 16;
  std::vector<float> q(kDim, 0.f), k(2 * kDim, 0.f), v(2 * kDim, 0.f);
  q[0] = 1.f;
  k[kDim] = 1.f;      // logit(key 1) = 1, logit(key 0) = 0
  v[1] = 3.f;         // v0 = 3 e1
  v[kDim + 2] = 6.f;  // v1 = 6 e2
  const std::vector<int32_t> q_pos = {0}, k_pos = {0, 1}, offsets = {0, 2}, blocks = {0, 1};
  AttentionParams p;
  p.q = q.data();
  p.k = k.data();
  p.v = v.data();
  p.q_pos = q_pos.data();
  p.k_pos = k_pos.data();
  p.q_row_stride = p.q_head_stride = kDim;
  p.kv_row_stride = kDim;
  p.kv_head_stride = 2 * kDim;
  p.lq = 1;
  p.lk = 2;
  p.hq = p.hkv = 1;
  p.head_dim = kDim;
  p.block_size = 1;
  p.scale = 1.f;
  p.mask_row_offsets = offsets.data();
  p.mask_kv_blocks = blocks.data();
  std::vector<double> o, lse;
  ASSERT_TRUE(cpu::ReferenceAttention(p, &o, &lse, 1).ok());
  const double e = std::numbers::e;
  EXPECT_NEAR(o[1], 3.0 / (1 + e), 1e-15);
  EXPECT_NEAR(o[2], 6.0 * e / (1 + e), 1e-15);
  EXPECT_EQ(o[0], 0.0);
  EXPECT_NEAR(lse[0], std::log(1 + e), 1e-15);
  p.causal = true;  // query at position 0 sees key 0 only
  ASSERT_TRUE(cpu::ReferenceAttention(p, &o, &lse, 1).ok());
  EXPECT_EQ(o[1], 3.0);
  EXPECT_EQ(o[2], 0.0);
  EXPECT_EQ(lse[0], 0.0);
}

// The reference against tests/kernels/reference_attention_numpy.py, which computes attention
// from a dense visibility matrix with numpy in float64: GQA, causal, shuffled positions, an
// empty mask row.
TEST(ReferenceAttention, MatchesNumpy) {
  ProblemSpec spec;
  spec.lq = 16;
  spec.lk = 24;
  spec.hq = 4;
  spec.hkv = 2;
  spec.head_dim = 16;
  spec.block_size = 4;
  spec.causal = true;
  spec.dtype = DType::kBF16;
  AttentionProblem problem(spec);
  problem.q_pos = {20, 3, 9, 14, 1, 0, 2, 7, 23, 22, 5, 11, 12, 8, 19, 4};
  problem.RandomizeMask(0.5);
  problem.row_offsets.back() =
      problem.row_offsets[problem.row_offsets.size() - 2];  // empty last row
  problem.kv_blocks_ids.resize(problem.row_offsets.back());
  const AttentionParams p = problem.Params();
  std::vector<double> o, lse;
  ASSERT_TRUE(cpu::ReferenceAttention(p, &o, &lse, 1).ok());

  const std::string input = ::testing::TempDir() + "reference_attention_numpy.in";
  {
    std::ofstream out(input);
    out.precision(17);  // exact as double: numpy parses float64
    out << p.lq << ' ' << p.lk << ' ' << p.hq << ' ' << p.hkv << ' ' << p.head_dim << ' '
        << p.block_size << ' ' << p.causal << ' ' << p.scale << '\n';
    for (int32_t x : problem.q_pos) out << x << ' ';
    for (int32_t x : problem.k_pos) out << x << ' ';
    for (int32_t x : problem.row_offsets) out << x << ' ';
    for (int32_t x : problem.kv_blocks_ids) out << x << ' ';
    const int d = p.head_dim;
    std::vector<float> row(d);
    for (int i = 0; i < p.lq; ++i) {
      for (int h = 0; h < p.hq; ++h) {
        ConvertToF32(p.dtype,
                     static_cast<const uint16_t*>(p.q) + i * p.q_row_stride + h * p.q_head_stride,
                     row.data(), d);
        for (float x : row) out << x << ' ';
      }
    }
    for (const void* tensor : {p.k, p.v}) {
      for (int g = 0; g < p.hkv; ++g) {
        for (int j = 0; j < p.lk; ++j) {
          ConvertToF32(
              p.dtype,
              static_cast<const uint16_t*>(tensor) + g * p.kv_head_stride + j * p.kv_row_stride,
              row.data(), d);
          for (float x : row) out << x << ' ';
        }
      }
    }
  }
  const std::string command =
      std::string(PREFILL_PYTHON3) +
      " " PREFILL_SOURCE_DIR "/tests/kernels/reference_attention_numpy.py " + input;
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::vector<double> numpy;
  char word[64];
  while (std::fscanf(pipe, "%63s", word) == 1) numpy.push_back(std::strtod(word, nullptr));
  ASSERT_EQ(pclose(pipe), 0) << command;
  ASSERT_EQ(numpy.size(), o.size() + lse.size());
  for (size_t i = 0; i < o.size(); ++i) EXPECT_NEAR(o[i], numpy[i], 1e-12) << "o[" << i << "]";
  int empty_rows = 0;
  for (size_t r = 0; r < lse.size(); ++r) {
    const double expected = numpy[o.size() + r];
    if (std::isinf(expected)) {
      ++empty_rows;
      EXPECT_EQ(lse[r], expected) << "lse[" << r << "]";
    } else {
      EXPECT_NEAR(lse[r], expected, 1e-12) << "lse[" << r << "]";
    }
  }
  EXPECT_GE(empty_rows, 4);  // the emptied mask row; causality adds more
}

}  // namespace
}  // namespace prefill
