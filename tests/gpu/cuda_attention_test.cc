// CUDA block-sparse attention against the CPU kernel and the fp64 reference, on the same
// stored inputs (bf16, f16, or fp32 that the GPU converts to bf16) and the same masks, for
// the sm80 kernel (every device) and the sm90a kernel (compute capability 9.0 devices).
//
// Tolerance (STYLE habit 4): the GPU multiplies P by V with P rounded to the 16-bit input
// type (tensor cores take 16-bit operands), so its O error against fp64 is of the order of a
// naive implementation that does the same: fp32 everywhere, P rounded to bf16 before P V
// (NaiveRoundedPAttention below; bf16 is the coarser of the two 16-bit types, and fp32 inputs
// are rounded to bf16 first, which the yardstick also does for them). The running-max
// rescaling rounds P against a different reference than the final max, so allow 3x that
// error; a bf16/f16 output adds one rounding of O (2^-8 of max |O|, a bound with slack).
// LSE is accumulated in fp32 in both: 8x the naive fp32 error plus 2e-5 for exp2/log2 ulps.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/cpu/block_sparse_attention.h"
#include "kernels/cpu/reference_attention.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/kernels/attention_cases.h"
#include "tests/kernels/attention_test_problem.h"

namespace prefill {
namespace {

using attention_test::AttentionErrors;
using attention_test::AttentionProblem;
using attention_test::ProblemSpec;
using gpu_test::DeviceBuffer;

float RoundBf16(float x) { return Bf16ToF32(F32ToBf16(x)); }

// fp32 attention with each probability rounded to bf16 before it multiplies V (the sum uses
// the unrounded value, as the kernels do); fp32 inputs are first rounded to bf16 as well.
void NaiveRoundedPAttention(const AttentionParams& p, std::vector<float>* o,
                            std::vector<float>* lse) {
  const int b = p.block_size, d = p.head_dim, group = p.hq / p.hkv;
  const size_t elem = DTypeSize(p.dtype);
  auto load = [&](const void* base, int64_t index) {
    float x;
    ConvertToF32(p.dtype, static_cast<const char*>(base) + index * elem, &x, 1);
    return p.dtype == DType::kF32 ? RoundBf16(x) : x;
  };
  o->assign(static_cast<size_t>(p.lq) * p.hq * d, 0.f);
  lse->assign(static_cast<size_t>(p.lq) * p.hq, -INFINITY);
  for (int h = 0; h < p.hq; ++h) {
    const int g = h / group;
    for (int i = 0; i < p.lq; ++i) {
      const int mask_row = h * (p.lq / b) + i / b;
      std::vector<float> scores;
      std::vector<int64_t> keys;
      for (int32_t e = p.mask_row_offsets[mask_row]; e < p.mask_row_offsets[mask_row + 1]; ++e) {
        for (int j = p.mask_kv_blocks[e] * b; j < (p.mask_kv_blocks[e] + 1) * b; ++j) {
          if (p.causal && p.k_pos[g * p.k_pos_head_stride + j] > p.q_pos[i]) continue;
          float s = 0.f;
          for (int c = 0; c < d; ++c) {
            s += load(p.q, i * p.q_row_stride + h * p.q_head_stride + c) *
                 load(p.k, g * p.kv_head_stride + j * p.kv_row_stride + c);
          }
          scores.push_back(s * p.scale);
          keys.push_back(j);
        }
      }
      if (scores.empty()) continue;
      float max = -INFINITY;
      for (float s : scores) max = std::max(max, s);
      float sum = 0.f;
      float* out = o->data() + (static_cast<size_t>(i) * p.hq + h) * d;
      for (size_t n = 0; n < keys.size(); ++n) {
        const float prob = std::exp(scores[n] - max);
        sum += prob;
        const float rounded = RoundBf16(prob);
        for (int c = 0; c < d; ++c)
          out[c] += rounded * load(p.v, g * p.kv_head_stride + keys[n] * p.kv_row_stride + c);
      }
      for (int c = 0; c < d; ++c) out[c] /= sum;
      (*lse)[static_cast<size_t>(i) * p.hq + h] = max + std::log(sum);
    }
  }
}

struct GpuResult {
  std::vector<float> o, lse;
};

// Runs `backend` on the problem's inputs (copied to the device); O and LSE are poisoned with
// 0xff bytes (NaN in every float type) first, so an unwritten element fails the comparison.
GpuResult RunOnGpu(AttentionBackend& backend, AttentionProblem& problem, DType out_dtype) {
  const AttentionParams hp = problem.Params();
  const size_t elem = DTypeSize(hp.dtype);
  const size_t q_bytes = static_cast<size_t>(hp.lq) * hp.q_row_stride * elem;
  const size_t kv_bytes = static_cast<size_t>(hp.hkv) * hp.kv_head_stride * elem;
  DeviceBuffer q(backend, q_bytes), k(backend, kv_bytes), v(backend, kv_bytes);
  q.Upload(backend, hp.q, q_bytes);
  k.Upload(backend, hp.k, kv_bytes);
  v.Upload(backend, hp.v, kv_bytes);
  DeviceBuffer q_pos(backend, problem.q_pos), k_pos(backend, problem.k_pos);
  DeviceBuffer offsets(backend, problem.row_offsets);
  std::vector<int32_t> blocks = problem.kv_blocks_ids;
  if (blocks.empty()) blocks.push_back(0);
  DeviceBuffer kv_blocks(backend, blocks);
  const size_t rows = static_cast<size_t>(hp.lq) * hp.hq;
  const size_t o_bytes = rows * hp.head_dim * DTypeSize(out_dtype);
  DeviceBuffer o(backend, std::vector<uint8_t>(o_bytes, 0xff));
  DeviceBuffer lse(backend, std::vector<uint8_t>(rows * sizeof(float), 0xff));

  AttentionParams dp = hp;
  dp.q = q.get();
  dp.k = k.get();
  dp.v = v.get();
  dp.q_pos = q_pos.as<int32_t>();
  dp.k_pos = k_pos.as<int32_t>();
  dp.mask_row_offsets = offsets.as<int32_t>();
  dp.mask_kv_blocks = kv_blocks.as<int32_t>();
  dp.out_dtype = out_dtype;
  dp.o = o.get();
  dp.lse = lse.as<float>();
  const absl::Status status = backend.Attention(dp);
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_TRUE(backend.Synchronize().ok());

  GpuResult result;
  const std::vector<uint8_t> o_raw = o.Download<uint8_t>(backend);
  result.o.resize(rows * hp.head_dim);
  ConvertToF32(out_dtype, o_raw.data(), result.o.data(), static_cast<int64_t>(result.o.size()));
  result.lse = lse.Download<float>(backend);
  return result;
}

double MaxAbs(const std::vector<double>& x) {
  double m = 0;
  for (double v : x) {
    if (std::isfinite(v)) m = std::max(m, std::fabs(v));
  }
  return m;
}

// Every attention path this device runs.
std::vector<cuda::AttentionPath> DevicePaths() {
  std::vector<cuda::AttentionPath> paths = {cuda::AttentionPath::kSm80};
  if (gpu_test::DeviceMajor() == 9) paths.push_back(cuda::AttentionPath::kSm90);
  return paths;
}

const char* PathName(cuda::AttentionPath path) {
  return path == cuda::AttentionPath::kSm90 ? "sm90a" : "sm80";
}

// The CUDA kernel reads fp32 inputs as bf16 (converted on entry, docs/cuda_backend.md), so
// its LSE carries the rounding of q and k to bf16: the error of a naive fp32 attention over
// bf16-rounded inputs measures it. 0 for inputs already stored in 16 bits.
double Bf16InputRoundingLseError(const AttentionParams& hp, const std::vector<double>& ref_o,
                                 const std::vector<double>& ref_lse) {
  if (hp.dtype != DType::kF32) return 0.0;
  auto rounded = [](const void* src, int64_t n) {
    std::vector<uint16_t> out(n);
    const float* f = static_cast<const float*>(src);
    for (int64_t i = 0; i < n; ++i) out[i] = F32ToBf16(f[i]);
    return out;
  };
  const int64_t q_n =
      int64_t{hp.lq - 1} * hp.q_row_stride + int64_t{hp.hq - 1} * hp.q_head_stride + hp.head_dim;
  const int64_t kv_n =
      int64_t{hp.hkv - 1} * hp.kv_head_stride + int64_t{hp.lk - 1} * hp.kv_row_stride + hp.head_dim;
  const std::vector<uint16_t> q = rounded(hp.q, q_n), k = rounded(hp.k, kv_n),
                              v = rounded(hp.v, kv_n);
  AttentionParams p = hp;
  p.dtype = DType::kBF16;
  p.q = q.data();
  p.k = k.data();
  p.v = v.data();
  std::vector<float> o, lse;
  attention_test::NaiveF32Attention(p, &o, &lse);
  return attention_test::MeasureErrors(o, lse, ref_o, ref_lse, hp.head_dim).lse;
}

// The GPU against fp64 (within the derived tolerance) and against the CPU kernel.
void CheckProblem(AttentionProblem& problem, DType out_dtype = DType::kF32) {
  const AttentionParams hp = problem.Params();
  std::vector<double> ref_o, ref_lse;
  ASSERT_TRUE(cpu::ReferenceAttention(hp, &ref_o, &ref_lse, 0).ok());
  std::vector<float> naive_o, naive_lse;
  NaiveRoundedPAttention(hp, &naive_o, &naive_lse);
  const AttentionErrors naive =
      attention_test::MeasureErrors(naive_o, naive_lse, ref_o, ref_lse, hp.head_dim);
  std::vector<float> f32_o, f32_lse;
  attention_test::NaiveF32Attention(hp, &f32_o, &f32_lse);
  const AttentionErrors naive_f32 =
      attention_test::MeasureErrors(f32_o, f32_lse, ref_o, ref_lse, hp.head_dim);
  ASSERT_TRUE(cpu::BlockSparseAttention(problem.Params(), 0).ok());
  const std::vector<float> cpu_o = problem.o, cpu_lse = problem.lse;
  const AttentionErrors cpu =
      attention_test::MeasureErrors(cpu_o, cpu_lse, ref_o, ref_lse, hp.head_dim);

  const double out_rounding = out_dtype == DType::kF32 ? 0.0 : 0x1p-8 * MaxAbs(ref_o);
  const double o_tolerance = 3.0 * naive.o + out_rounding + 1e-6 * problem.max_abs_value();
  const double lse_tolerance =
      8.0 * naive_f32.lse + 2.0 * Bf16InputRoundingLseError(hp, ref_o, ref_lse) + 2e-5;
  for (cuda::AttentionPath path : DevicePaths()) {
    SCOPED_TRACE(PathName(path));
    auto backend = gpu_test::MakeBackend(path);
    ASSERT_NE(backend, nullptr);
    const GpuResult gpu = RunOnGpu(*backend, problem, out_dtype);
    const AttentionErrors e =
        attention_test::MeasureErrors(gpu.o, gpu.lse, ref_o, ref_lse, hp.head_dim);
    EXPECT_TRUE(e.empty_rows_exact) << e.empty_rows << " rows without a visible key";
    EXPECT_LE(e.o, o_tolerance) << "naive rounded-P error " << naive.o;
    EXPECT_LE(e.lse, lse_tolerance) << "naive fp32 LSE error " << naive_f32.lse;
    // Against the CPU kernel directly: within the GPU's tolerance plus the CPU's own error.
    double o_vs_cpu = 0, lse_vs_cpu = 0;
    for (size_t i = 0; i < gpu.o.size(); ++i) {
      o_vs_cpu = std::max(o_vs_cpu, std::isnan(gpu.o[i])
                                        ? INFINITY
                                        : static_cast<double>(std::fabs(gpu.o[i] - cpu_o[i])));
    }
    for (size_t i = 0; i < gpu.lse.size(); ++i) {
      if (cpu_lse[i] == -INFINITY) continue;
      lse_vs_cpu =
          std::max(lse_vs_cpu, std::isnan(gpu.lse[i])
                                   ? INFINITY
                                   : static_cast<double>(std::fabs(gpu.lse[i] - cpu_lse[i])));
    }
    EXPECT_LE(o_vs_cpu, o_tolerance + cpu.o);
    EXPECT_LE(lse_vs_cpu, lse_tolerance + cpu.lse);
  }
}

ProblemSpec GpuSpec() {
  ProblemSpec spec;
  spec.lq = 256;
  spec.lk = 512;
  spec.hq = 8;
  spec.hkv = 2;
  spec.block_size = 128;
  spec.head_dim = 128;
  spec.dtype = DType::kBF16;
  return spec;
}

class CudaAttentionTest : public ::testing::TestWithParam<attention_test::AttentionCase> {
 protected:
  void SetUp() override { PREFILL_SKIP_WITHOUT_GPU(); }
};

TEST_P(CudaAttentionTest, MatchesCpuAndReference) {
  AttentionProblem problem(attention_test::ApplyCase(GpuSpec(), GetParam()));
  CheckProblem(problem);
}

INSTANTIATE_TEST_SUITE_P(Grid, CudaAttentionTest, attention_test::AllAttentionCases(),
                         attention_test::AttentionCaseName);

class CudaAttention : public ::testing::Test {
 protected:
  void SetUp() override { PREFILL_SKIP_WITHOUT_GPU(); }
};

TEST_F(CudaAttention, Bf16AndF16Outputs) {
  for (DType out : {DType::kBF16, DType::kF16}) {
    SCOPED_TRACE(std::string(DTypeName(out)));
    ProblemSpec spec = GpuSpec();
    spec.causal = true;
    spec.density = 0.6;
    AttentionProblem problem(spec);
    CheckProblem(problem, out);
  }
}

// More work items than SMs, uneven row lengths: exercises the schedule and the persistent grid.
TEST_F(CudaAttention, ManyItemsUnevenRows) {
  ProblemSpec spec = GpuSpec();
  spec.lq = 1024;
  spec.lk = 2048;
  spec.hq = 16;
  spec.hkv = 4;
  spec.causal = true;
  spec.density = 0.3;
  AttentionProblem problem(spec);
  CheckProblem(problem);
}

TEST_F(CudaAttention, LargeLogits) {
  ProblemSpec spec = GpuSpec();
  spec.logit_gain = 12.f;
  spec.causal = true;
  AttentionProblem problem(spec);
  CheckProblem(problem);
}

// Row maxima that grow by more than the sm90 kernel's rescaling threshold (2^8) from one tile
// to the next, with and without causality, dense and sparse: O must be rescaled then.
TEST_F(CudaAttention, GrowingRowMaxima) {
  for (bool causal : {false, true}) {
    for (double density : {1.0, 0.5}) {
      SCOPED_TRACE(testing::Message() << (causal ? "causal" : "full") << " density " << density);
      ProblemSpec spec = GpuSpec();
      spec.lk = 1024;
      spec.logit_gain = 4.f;
      spec.key_ramp = 4.f;
      spec.causal = causal;
      spec.density = density;
      AttentionProblem problem(spec);
      CheckProblem(problem);
    }
  }
}

// Zigzag context parallelism: a rank holds query chunks 1 and 6 of 8 (chunk = 128 tokens).
TEST_F(CudaAttention, ZigzagPositions) {
  ProblemSpec spec = GpuSpec();
  spec.lq = 256;
  spec.lk = 1024;
  spec.causal = true;
  AttentionProblem problem(spec);
  for (int i = 0; i < 128; ++i) {
    problem.q_pos[i] = 128 + i;
    problem.q_pos[128 + i] = 6 * 128 + i;
  }
  problem.RandomizeMask(0.6);
  CheckProblem(problem);
}

// Per-head compacted K/V: key positions differ by KV head and are not contiguous; every
// block listed, so the kernels must skip and mask by position themselves.
TEST_F(CudaAttention, PerKvHeadKeyPositions) {
  ProblemSpec spec = GpuSpec();
  spec.lq = 256;
  spec.lk = 512;
  spec.causal = true;
  AttentionProblem problem(spec);
  const int b = spec.block_size;
  const std::vector<std::vector<int>> absolute_blocks = {{0, 2, 3, 5}, {1, 2, 4, 5}};
  problem.k_pos.resize(2 * spec.lk);
  problem.k_pos_head_stride = spec.lk;
  for (int g = 0; g < 2; ++g) {
    for (int j = 0; j < spec.lk; ++j)
      problem.k_pos[g * spec.lk + j] = absolute_blocks[g][j / b] * b + j % b;
  }
  for (int i = 0; i < b; ++i) {
    problem.q_pos[i] = 2 * b + i;
    problem.q_pos[b + i] = 5 * b + i;
  }
  problem.row_offsets.assign(1, 0);
  problem.kv_blocks_ids.clear();
  for (int row = 0; row < spec.hq * problem.num_q_blocks(); ++row) {
    for (int kb = 0; kb < problem.num_kv_blocks(); ++kb) problem.kv_blocks_ids.push_back(kb);
    problem.row_offsets.push_back(static_cast<int32_t>(problem.kv_blocks_ids.size()));
  }
  CheckProblem(problem);
}

// Rows that see no key (O = 0, LSE = -inf exactly): queries before every listed key, and
// empty mask rows.
TEST_F(CudaAttention, RowsWithoutVisibleKeys) {
  ProblemSpec spec = GpuSpec();
  spec.lq = 256;
  spec.lk = 512;
  spec.causal = true;
  AttentionProblem problem(spec);
  for (int i = 0; i < spec.lq; ++i) problem.q_pos[i] = 200 + i;  // block 0 (0..199) partly hidden
  problem.row_offsets.assign(1, 0);
  problem.kv_blocks_ids.clear();
  for (int h = 0; h < spec.hq; ++h) {
    for (int qb = 0; qb < problem.num_q_blocks(); ++qb) {
      if (h % 3 == 0) {
        // empty row
      } else if (qb == 0) {
        problem.kv_blocks_ids.push_back(
            2);  // keys 256..383: invisible to positions 200..327 in part
        problem.kv_blocks_ids.push_back(3);  // keys 384..511: invisible to all of q block 0
      } else {
        problem.kv_blocks_ids.push_back(0);
        problem.kv_blocks_ids.push_back(3);
      }
      problem.row_offsets.push_back(static_cast<int32_t>(problem.kv_blocks_ids.size()));
    }
  }
  CheckProblem(problem);
}

TEST_F(CudaAttention, RejectsUnsupportedShapes) {
  auto backend = gpu_test::MakeBackend();
  ASSERT_NE(backend, nullptr);
  ProblemSpec spec = GpuSpec();
  AttentionProblem problem(spec);
  AttentionParams p = problem.Params();
  p.block_size = 64;
  EXPECT_EQ(backend->Attention(p).code(), absl::StatusCode::kInvalidArgument);
  p = problem.Params();
  p.head_dim = 96;
  EXPECT_EQ(backend->Attention(p).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace prefill
