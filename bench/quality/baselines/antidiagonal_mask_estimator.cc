// Antidiagonal (XAttention) block mass: keys packed per KV head so that stride j's S keys,
// concatenated, are one vector of S*d values, and the queries of stride i, reversed and
// concatenated, another; their dot product is the antidiagonal sum. Scores run in a register
// tile of kRows query strides x kTileStrides key strides with one lane per key stride and the
// S*d terms in order (no FMA: the library builds with -ffp-contract=off), so any grouping of
// rows, thread count or vector width gives the same bits. Softmax and sums run in double.
#include "bench/quality/baselines/antidiagonal_mask_estimator.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "bench/quality/baselines/oracle_mask.h"
#include "kernels/cpu/parallel_for.h"

namespace prefill::cpu {
namespace {

constexpr int kTileStrides = 64;
constexpr int kRows = 4;

absl::Status Invalid(const auto&... parts) {
  return absl::InvalidArgumentError(absl::StrCat("EstimateAntidiagonalMask: ", parts...));
}

absl::Status Validate(const AntidiagonalMaskParams& p) {
  if (p.block_size < 1 || p.stride < 1 || p.block_size % p.stride != 0) {
    return Invalid("stride (", p.stride, ") must be >= 1 and divide block_size (", p.block_size,
                   ")");
  }
  if (!(p.tau > 0.f && p.tau <= 1.f)) return Invalid("tau (", p.tau, ") must be in (0, 1]");
  return ValidateQueryBlocksAgainstKeys(p, "EstimateAntidiagonalMask");
}

// Keys of one KV head, element x = t*d + e of key stride j (key j*S + t, element e) at
// tiles[(j / kTileStrides * S*d + x) * kTileStrides + j % kTileStrides].
std::vector<float> PackKeys(const AntidiagonalMaskParams& p, int g) {
  const int strides = p.seq_len / p.stride, width = p.stride * p.head_dim;
  const int tiles = (strides + kTileStrides - 1) / kTileStrides;
  std::vector<float> packed(int64_t{tiles} * width * kTileStrides, 0.f);
  std::vector<float> key(p.head_dim);
  const auto* k = static_cast<const char*>(p.k);
  for (int64_t pos = 0; pos < p.seq_len; ++pos) {
    ConvertToF32(p.dtype, k + (pos * p.k_row_stride + g * p.k_head_stride) * DTypeSize(p.dtype),
                 key.data(), p.head_dim);
    const int64_t j = pos / p.stride, t = pos % p.stride;
    float* dst = packed.data() + (j / kTileStrides * width + t * p.head_dim) * kTileStrides +
                 j % kTileStrides;
    for (int e = 0; e < p.head_dim; ++e) dst[int64_t{e} * kTileStrides] = key[e];
  }
  return packed;
}

// scores[r][j] for j < tiles * kTileStrides: lane j accumulates q[r][x] * key_j[x] over x in
// order; the caller scales.
template <int kR>
void ScoreTiles(const float* q, int width, const float* keys, int tiles, float* scores,
                int64_t scores_stride) {
  for (int tile = 0; tile < tiles; ++tile) {
    const float* kt = keys + int64_t{tile} * width * kTileStrides;
    float acc[kR][kTileStrides] = {};
    for (int x = 0; x < width; ++x) {
      const float* kx = kt + int64_t{x} * kTileStrides;
      for (int r = 0; r < kR; ++r) {
        const float qx = q[r * width + x];
        for (int l = 0; l < kTileStrides; ++l) acc[r][l] = acc[r][l] + qx * kx[l];
      }
    }
    for (int r = 0; r < kR; ++r) {
      std::copy(acc[r], acc[r] + kTileStrides, scores + r * scores_stride + tile * kTileStrides);
    }
  }
}

// mass[J] (num_kv_blocks) += the softmax mass of block J for each query stride of the item.
void ItemMass(const AntidiagonalMaskParams& p, const std::vector<float>& keys, int head,
              int q_block, double* mass) {
  const int s = p.stride, d = p.head_dim, width = s * d;
  const int per_block = p.block_size / s;
  const int strides = p.seq_len / s;
  const int tiles_all = (strides + kTileStrides - 1) / kTileStrides;
  const int first = p.q_block_ids[q_block] * per_block;  // absolute stride of the block's first
  const float logit_scale = p.scale / s;
  std::vector<float> q(int64_t{kRows} * width), row(d);
  std::vector<float> scores(int64_t{kRows} * tiles_all * kTileStrides);
  const int64_t scores_stride = int64_t{tiles_all} * kTileStrides;
  const auto* qbase = static_cast<const char*>(p.q);
  for (int i0 = 0; i0 < per_block; i0 += kRows) {
    const int rows = std::min(kRows, per_block - i0);
    int visible[kRows] = {};
    int max_visible = 0;
    for (int r = 0; r < rows; ++r) {
      const int i = i0 + r;
      for (int t = 0; t < s; ++t) {  // q[iS + S-1-t] meets k[jS + t]
        const int64_t local = int64_t{q_block} * p.block_size + int64_t{i} * s + (s - 1 - t);
        ConvertToF32(p.dtype,
                     qbase + (local * p.q_row_stride + head * p.q_head_stride) * DTypeSize(p.dtype),
                     q.data() + r * width + t * d, d);
      }
      visible[r] = p.causal ? first + i + 1 : strides;  // key strides j <= i
      max_visible = std::max(max_visible, visible[r]);
    }
    const int tiles = (max_visible + kTileStrides - 1) / kTileStrides;
    switch (rows) {
      case 1:
        ScoreTiles<1>(q.data(), width, keys.data(), tiles, scores.data(), scores_stride);
        break;
      case 2:
        ScoreTiles<2>(q.data(), width, keys.data(), tiles, scores.data(), scores_stride);
        break;
      case 3:
        ScoreTiles<3>(q.data(), width, keys.data(), tiles, scores.data(), scores_stride);
        break;
      default:
        ScoreTiles<4>(q.data(), width, keys.data(), tiles, scores.data(), scores_stride);
        break;
    }
    for (int r = 0; r < rows; ++r) {
      const float* z = scores.data() + r * scores_stride;
      double max = -std::numeric_limits<double>::infinity();
      for (int j = 0; j < visible[r]; ++j) max = std::max(max, double{z[j] * logit_scale});
      thread_local std::vector<double> block_sums;
      block_sums.assign((visible[r] + per_block - 1) / per_block, 0.0);
      double total = 0;
      for (int j = 0; j < visible[r]; ++j) {
        const double e = std::exp(double{z[j] * logit_scale} - max);
        block_sums[j / per_block] += e;
        total += e;
      }
      for (size_t J = 0; J < block_sums.size(); ++J) mass[J] += block_sums[J] / total;
    }
  }
}

}  // namespace

absl::StatusOr<std::vector<double>> AntidiagonalBlockMass(const AntidiagonalMaskParams& p,
                                                          int threads) {
  if (absl::Status s = Validate(p); !s.ok()) return s;
  const int num_kv_blocks = p.seq_len / p.block_size;
  std::vector<double> mass(int64_t{p.hq} * p.num_q_blocks * num_kv_blocks, 0.0);
  const int group = p.hq / p.hkv;
  for (int g = 0; g < p.hkv; ++g) {
    const std::vector<float> keys = PackKeys(p, g);
    ParallelFor(int64_t{group} * p.num_q_blocks, threads, [&](int64_t item) {
      const int head = g * group + static_cast<int>(item / p.num_q_blocks);
      const int q_block = static_cast<int>(item % p.num_q_blocks);
      // keep_recent: the last query block is dense whatever its mass; skip the costliest row.
      if (p.keep_recent && p.q_block_ids[q_block] == num_kv_blocks - 1) return;
      ItemMass(p, keys, head, q_block,
               mass.data() + (int64_t{head} * p.num_q_blocks + q_block) * num_kv_blocks);
    });
  }
  return mass;
}

absl::StatusOr<BlockMask> EstimateAntidiagonalMask(const AntidiagonalMaskParams& p, int threads) {
  absl::StatusOr<std::vector<double>> mass = AntidiagonalBlockMass(p, threads);
  if (!mass.ok()) return mass.status();
  return SelectTopTauForcedFirst(*mass, p.hq, {p.q_block_ids, static_cast<size_t>(p.num_q_blocks)},
                                 p.seq_len / p.block_size, p.block_size,
                                 {p.tau, p.causal, p.keep_sink, p.keep_recent});
}

}  // namespace prefill::cpu
