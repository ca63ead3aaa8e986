// The fp64 reference. Per KV head the whole K and V are converted to double once; per
// (query head, query block) the scores of all selected keys are computed with dgemm, one call
// per run of consecutive selected blocks, masked, and softmaxed exactly (max, then sum);
// then O = P V with dgemm over the same runs.
#include "kernels/cpu/reference_attention.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <utility>

#include "kernels/cpu/attention_validation.h"
#include "kernels/cpu/parallel_for.h"
#include "kernels/status_macros.h"

namespace prefill::cpu {
namespace {

// Selected KV blocks [first, first + count) of one mask row, stored at score column `column`.
struct BlockRun {
  int32_t first = 0;
  int32_t count = 0;
  int64_t column = 0;
};

std::vector<BlockRun> RunsOfRow(const AttentionParams& p, int mask_row) {
  std::vector<BlockRun> runs;
  int64_t column = 0;
  for (int32_t e = p.mask_row_offsets[mask_row]; e < p.mask_row_offsets[mask_row + 1]; ++e) {
    const int32_t block = p.mask_kv_blocks[e];
    if (!runs.empty() && runs.back().first + runs.back().count == block) {
      ++runs.back().count;
    } else {
      runs.push_back({block, 1, column});
    }
    column += p.block_size;
  }
  return runs;
}

// Rows [rows] of `head_dim` values from storage of p.dtype at `src` (row stride in elements).
std::vector<double> RowsToDouble(const AttentionParams& p, const void* src, int64_t row_stride,
                                 int rows) {
  std::vector<double> out(static_cast<size_t>(rows) * p.head_dim);
  std::vector<float> row(p.head_dim);
  for (int r = 0; r < rows; ++r) {
    ConvertToF32(p.dtype, static_cast<const char*>(src) + r * row_stride * DTypeSize(p.dtype),
                 row.data(), p.head_dim);
    std::copy(row.begin(), row.end(), out.begin() + static_cast<size_t>(r) * p.head_dim);
  }
  return out;
}

// One KV head's K and V in double, [lk][head_dim] each, and its key positions.
struct KvHead {
  std::vector<double> k, v;
  const int32_t* k_pos = nullptr;
};

class ReferenceItem {
 public:
  ReferenceItem(const AttentionParams& p, const KvHead& kv, int head, int q_block)
      : p_(p),
        kv_(kv),
        head_(head),
        q_block_(q_block),
        runs_(RunsOfRow(p, head * (p.lq / p.block_size) + q_block)) {}

  // Writes this item's rows of o [lq, hq, head_dim] and lse [lq, hq].
  void Run(double* o, double* lse) {
    const int b = p_.block_size, d = p_.head_dim;
    const int64_t keys = runs_.empty() ? 0 : runs_.back().column + runs_.back().count * b;
    const int64_t first_row = static_cast<int64_t>(q_block_) * b;
    const auto* q_elems =
        static_cast<const char*>(p_.q) +
        (first_row * p_.q_row_stride + head_ * p_.q_head_stride) * DTypeSize(p_.dtype);
    const std::vector<double> q = RowsToDouble(p_, q_elems, p_.q_row_stride, b);
    // [b][keys], up to 32 MB at 32K keys: kept per thread rather than allocated and zeroed
    // per item; dgemm writes every element before it is read.
    thread_local std::vector<double> scores;
    scores.resize(static_cast<size_t>(b) * keys);
    std::vector<double> out(static_cast<size_t>(b) * d, 0.0);
    for (const BlockRun& run : runs_) {
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b, run.count * b, d, p_.scale, q.data(),
                  d, KvRows(kv_.k, run), d, 0.0, scores.data() + run.column, keys);
    }
    std::vector<double> sums(b);
    for (int i = 0; i < b; ++i) {
      const int64_t out_row = (first_row + i) * p_.hq + head_;
      const auto [max, sum] = ExponentiateRow(p_.q_pos ? p_.q_pos[first_row + i] : 0,
                                              std::span(scores.data() + i * keys, keys));
      lse[out_row] = max + std::log(sum);  // -inf when sum = 0
      sums[i] = sum;
    }
    for (const BlockRun& run : runs_) {
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, b, d, run.count * b, 1.0,
                  scores.data() + run.column, keys, KvRows(kv_.v, run), d, 1.0, out.data(), d);
    }
    for (int i = 0; i < b; ++i) {
      const int64_t out_row = (first_row + i) * p_.hq + head_;
      for (int e = 0; e < d; ++e) o[out_row * d + e] = sums[i] > 0 ? out[i * d + e] / sums[i] : 0.0;
    }
  }

 private:
  const double* KvRows(const std::vector<double>& rows, const BlockRun& run) const {
    return rows.data() + static_cast<size_t>(run.first) * p_.block_size * p_.head_dim;
  }

  // One query row's scores (the selected keys in column order) -> exp(score - max), 0 for
  // keys hidden by causality; returns the max and the sum (0 when no key is visible).
  std::pair<double, double> ExponentiateRow(int32_t q_pos, std::span<double> scores) const {
    constexpr double kNegInf = -std::numeric_limits<double>::infinity();
    double max = kNegInf;
    for (const BlockRun& run : runs_) {
      const int32_t* k_pos =
          p_.causal ? kv_.k_pos + static_cast<int64_t>(run.first) * p_.block_size : nullptr;
      double* s = scores.data() + run.column;
      for (int64_t j = 0; j < static_cast<int64_t>(run.count) * p_.block_size; ++j) {
        if (k_pos != nullptr && k_pos[j] > q_pos) s[j] = kNegInf;
        max = std::max(max, s[j]);
      }
    }
    if (max == kNegInf) {
      std::fill(scores.begin(), scores.end(), 0.0);
      return {max, 0.0};
    }
    double sum = 0.0;
    for (double& s : scores) {
      s = std::exp(s - max);
      sum += s;
    }
    return {max, sum};
  }

  const AttentionParams& p_;
  const KvHead& kv_;
  const int head_, q_block_;
  const std::vector<BlockRun> runs_;
};

}  // namespace

absl::Status ReferenceAttention(const AttentionParams& p, std::vector<double>* o,
                                std::vector<double>* lse, int threads) {
  PREFILL_RETURN_IF_ERROR(ValidateAttentionInputs(p, "ReferenceAttention"));
  o->assign(static_cast<size_t>(p.lq) * p.hq * p.head_dim, 0.0);
  lse->assign(static_cast<size_t>(p.lq) * p.hq, 0.0);
  // Parallelism comes from the work items; a multi-threaded OpenBLAS inside each would
  // oversubscribe the cores.
  openblas_set_num_threads(1);
  const int q_blocks = p.lq / p.block_size;
  const int heads_per_kv = p.hq / p.hkv;
  for (int g = 0; g < p.hkv; ++g) {
    KvHead kv;
    const int64_t head_offset = g * p.kv_head_stride * DTypeSize(p.dtype);
    kv.k = RowsToDouble(p, static_cast<const char*>(p.k) + head_offset, p.kv_row_stride, p.lk);
    kv.v = RowsToDouble(p, static_cast<const char*>(p.v) + head_offset, p.kv_row_stride, p.lk);
    kv.k_pos = p.causal ? p.k_pos + g * p.k_pos_head_stride : nullptr;
    ParallelFor(static_cast<int64_t>(heads_per_kv) * q_blocks, threads, [&](int64_t item) {
      const int head = g * heads_per_kv + static_cast<int>(item / q_blocks);
      ReferenceItem(p, kv, head, static_cast<int>(item % q_blocks)).Run(o->data(), lse->data());
    });
  }
  return absl::OkStatus();
}

}  // namespace prefill::cpu
