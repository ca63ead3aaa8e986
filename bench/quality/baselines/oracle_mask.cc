// True block masses in fp64: per KV head the whole K is converted to double once; per (query
// head, query block) the scores of the block's rows against every visible key come from one
// dgemm, are masked causally, and each row is softmaxed exactly (max, exp, sum, divide) and
// summed per KV block in key order. Then top-tau selection and recall of any mask.
#include "bench/quality/baselines/oracle_mask.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/parallel_for.h"

namespace prefill::cpu {
namespace {

absl::Status Validate(const TrueMassParams& p) {
  return ValidateQueryBlocksAgainstKeys(p, "ComputeTrueBlockMass");
}

// `rows` rows of head_dim values at src (row stride in elements) as doubles, [rows][head_dim].
std::vector<double> ToDouble(DType dtype, const void* src, int64_t row_stride, int64_t rows,
                             int head_dim) {
  std::vector<double> out(rows * head_dim);
  std::vector<float> row(head_dim);
  const auto* base = static_cast<const char*>(src);
  for (int64_t r = 0; r < rows; ++r) {
    ConvertToF32(dtype, base + r * row_stride * DTypeSize(dtype), row.data(), head_dim);
    std::copy(row.begin(), row.end(), out.begin() + r * head_dim);
  }
  return out;
}

// One (head, query block) item: row masses and their block sums.
void MassOfItem(const TrueMassParams& p, const std::vector<double>& k, int head, int q_block,
                TrueBlockMass* out) {
  const int b = p.block_size, d = p.head_dim;
  const int num_kv_blocks = p.seq_len / b;
  const int absolute = p.q_block_ids[q_block];
  const int64_t keys = VisibleBlocks(absolute, num_kv_blocks, p.causal) * b;
  const auto* q_base =
      static_cast<const char*>(p.q) +
      (int64_t{q_block} * b * p.q_row_stride + head * p.q_head_stride) * DTypeSize(p.dtype);
  const std::vector<double> q = ToDouble(p.dtype, q_base, p.q_row_stride, b, d);
  thread_local std::vector<double> scores;  // [b][keys], every element written by dgemm
  scores.resize(static_cast<size_t>(b) * keys);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, b, static_cast<int>(keys), d, p.scale,
              q.data(), d, k.data(), d, 0.0, scores.data(), static_cast<int>(keys));

  double* block_sum =
      out->block.data() + (int64_t{head} * p.num_q_blocks + q_block) * num_kv_blocks;
  std::fill(block_sum, block_sum + num_kv_blocks, 0.0);
  std::vector<double> row_blocks(num_kv_blocks);
  for (int i = 0; i < b; ++i) {
    double* s = scores.data() + static_cast<int64_t>(i) * keys;
    // Causal: key position <= query position; only the diagonal block is cut.
    const int64_t seen = p.causal ? int64_t{absolute} * b + i + 1 : keys;
    double max = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < seen; ++j) max = std::max(max, s[j]);
    std::fill(row_blocks.begin(), row_blocks.end(), 0.0);
    double total = 0;
    for (int64_t j = 0; j < seen; ++j) {
      const double e = std::exp(s[j] - max);
      row_blocks[j / b] += e;
      total += e;
    }
    float* row =
        out->row.data() + ((int64_t{head} * p.num_q_blocks + q_block) * b + i) * num_kv_blocks;
    for (int J = 0; J < num_kv_blocks; ++J) {
      const double m = row_blocks[J] / total;
      row[J] = static_cast<float>(m);
      block_sum[J] += m;
    }
  }
}

}  // namespace

absl::StatusOr<TrueBlockMass> ComputeTrueBlockMass(const TrueMassParams& p, int threads) {
  if (absl::Status s = Validate(p); !s.ok()) return s;
  TrueBlockMass out;
  out.num_heads = p.hq;
  out.num_q_blocks = p.num_q_blocks;
  out.num_kv_blocks = p.seq_len / p.block_size;
  out.block_size = p.block_size;
  out.q_block_ids.assign(p.q_block_ids, p.q_block_ids + p.num_q_blocks);
  out.block.assign(int64_t{p.hq} * p.num_q_blocks * out.num_kv_blocks, 0.0);
  out.row.assign(int64_t{p.hq} * p.num_q_blocks * p.block_size * out.num_kv_blocks, 0.f);
  // Parallelism comes from the items; a multi-threaded OpenBLAS inside each would
  // oversubscribe the cores.
  openblas_set_num_threads(1);
  const int group = p.hq / p.hkv;
  for (int g = 0; g < p.hkv; ++g) {
    const char* k = static_cast<const char*>(p.k) + g * p.k_head_stride * DTypeSize(p.dtype);
    const std::vector<double> kd = ToDouble(p.dtype, k, p.k_row_stride, p.seq_len, p.head_dim);
    ParallelFor(int64_t{group} * p.num_q_blocks, threads, [&](int64_t item) {
      const int head = g * group + static_cast<int>(item / p.num_q_blocks);
      MassOfItem(p, kd, head, static_cast<int>(item % p.num_q_blocks), &out);
    });
  }
  return out;
}

BlockMask SelectTopTauForcedFirst(std::span<const double> mass, int hq,
                                  std::span<const int32_t> q_block_ids, int num_kv_blocks,
                                  int block_size, const TopTauRule& rule) {
  const int num_q_blocks = static_cast<int>(q_block_ids.size());
  BlockMask mask;
  mask.num_heads = hq;
  mask.num_q_blocks = num_q_blocks;
  mask.num_kv_blocks = num_kv_blocks;
  mask.block_size = block_size;
  mask.q_block_ids.assign(q_block_ids.begin(), q_block_ids.end());
  mask.row_offsets.push_back(0);
  std::vector<char> keep(num_kv_blocks);
  std::vector<int32_t> order;
  for (int h = 0; h < hq; ++h) {
    for (int qb = 0; qb < num_q_blocks; ++qb) {
      const int absolute = q_block_ids[qb];
      const int visible = static_cast<int>(VisibleBlocks(absolute, num_kv_blocks, rule.causal));
      mask.visible_blocks += visible;
      const double* m = mass.data() + (int64_t{h} * num_q_blocks + qb) * num_kv_blocks;
      std::fill(keep.begin(), keep.end(), 0);
      if (rule.keep_recent && absolute == num_kv_blocks - 1) {
        std::fill(keep.begin(), keep.begin() + visible, 1);
      } else {
        double total = 0;
        for (int j = 0; j < visible; ++j) total += m[j];
        double kept = 0;
        if (rule.keep_sink) {
          keep[0] = 1;
          kept += m[0];
        }
        if (!keep[absolute]) {
          keep[absolute] = 1;
          kept += absolute < visible ? m[absolute] : 0.0;
        }
        order.resize(visible);
        std::iota(order.begin(), order.end(), 0);
        std::sort(order.begin(), order.end(),
                  [&](int32_t a, int32_t b) { return m[a] > m[b] || (m[a] == m[b] && a < b); });
        const double threshold = static_cast<double>(rule.tau) * total;
        for (int32_t j : order) {
          if (!(kept < threshold) || !(m[j] > 0)) break;
          if (keep[j]) continue;
          keep[j] = 1;
          kept += m[j];
        }
      }
      for (int32_t j = 0; j < num_kv_blocks; ++j) {
        if (keep[j]) mask.kv_blocks.push_back(j);
      }
      mask.row_offsets.push_back(static_cast<int32_t>(mask.kv_blocks.size()));
    }
  }
  return mask;
}

BlockMask OracleTopTauMask(const TrueBlockMass& mass, const TopTauRule& rule) {
  return SelectTopTauForcedFirst(mass.block, mass.num_heads, mass.q_block_ids, mass.num_kv_blocks,
                                 mass.block_size, rule);
}

absl::StatusOr<std::vector<double>> RowRecall(const TrueBlockMass& mass, const BlockMask& mask) {
  if (mask.num_heads != mass.num_heads || mask.q_block_ids != mass.q_block_ids ||
      mask.num_kv_blocks != mass.num_kv_blocks || mask.block_size != mass.block_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("RowRecall: the mask (", mask.num_heads, " heads, ", mask.num_q_blocks,
                     " query blocks, ", mask.num_kv_blocks, " KV blocks of ", mask.block_size,
                     ") does not match the masses (", mass.num_heads, ", ", mass.num_q_blocks, ", ",
                     mass.num_kv_blocks, " of ", mass.block_size, ") or names other query blocks"));
  }
  const int b = mass.block_size;
  std::vector<double> recall(int64_t{mass.num_q_blocks} * b * mass.num_heads);
  for (int h = 0; h < mass.num_heads; ++h) {
    for (int qb = 0; qb < mass.num_q_blocks; ++qb) {
      const std::span<const int32_t> blocks = mask.row(h, qb);
      for (int i = 0; i < b; ++i) {
        const std::span<const float> m = mass.query_row(h, qb, i);
        double sum = 0;
        for (int32_t j : blocks) sum += m[j];
        recall[(int64_t{qb} * b + i) * mass.num_heads + h] = sum;
      }
    }
  }
  return recall;
}

}  // namespace prefill::cpu
