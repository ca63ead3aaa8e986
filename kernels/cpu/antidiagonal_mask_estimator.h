// XAttention-style mask estimation on the CPU (../shared/research/rrattention.md section 3),
// the antidiagonal baseline for the round-robin estimator:
//   score[h, i, j] = sum over t < S of q_h[iS + S-1-t] . k_g[jS + t], times scale / S
// (every query of stride i meets one key of stride j: the antidiagonal of the S x S tile),
// key stride j visible iff i >= j under causal, a softmax over the visible key strides of each
// query stride, sums over the (B/S)^2 stride pairs of each B x B block, and per (head, query
// block) the fewest blocks reaching tau with the sink and diagonal counted first
// (SelectTopTauForcedFirst), plus the last query block dense if keep_recent.
//
// It reads S times more dot products than round-robin sampling (L^2 d / S against L^2 d / S^2)
// and needs the whole K, not pooled keys. A row's arithmetic depends only on its own queries
// and K, in a fixed order (one vector lane per key stride, head dimension in order), so a rank
// estimating some query blocks gets bitwise the rows a single rank gets.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/block_mask.h"
#include "kernels/dtype.h"

namespace prefill::cpu {

struct AntidiagonalMaskParams {
  DType dtype = DType::kF32;  // storage of q and k
  // Local queries [lq, hq, head_dim]; local query block q is rows [q*B, (q+1)*B) and holds
  // the absolute positions [q_block_ids[q]*B, (q_block_ids[q]+1)*B).
  const void* q = nullptr;
  int64_t q_row_stride = 0;
  int64_t q_head_stride = 0;
  const int32_t* q_block_ids = nullptr;
  int num_q_blocks = 0;
  // Keys of the whole sequence in absolute order: element (pos, g, e) at
  // k[pos * k_row_stride + g * k_head_stride + e].
  const void* k = nullptr;
  int64_t k_row_stride = 0;
  int64_t k_head_stride = 0;
  int seq_len = 0;  // a multiple of block_size
  int hq = 0;
  int hkv = 0;
  int head_dim = 0;
  int block_size = 128;
  int stride = 8;  // divides block_size
  float tau = 0.9f;
  bool causal = true;
  bool keep_sink = true;
  bool keep_recent = true;
  float scale = 0.f;  // 1/sqrt(head_dim); the estimator multiplies by 1/stride
};

// [hq][num_q_blocks][seq_len / block_size]: each block's softmax mass summed over the query
// strides of the query block (a row sums to block_size / stride). threads <= 0: all.
absl::StatusOr<std::vector<double>> AntidiagonalBlockMass(const AntidiagonalMaskParams& p,
                                                          int threads);

// The mask: SelectTopTauForcedFirst over AntidiagonalBlockMass.
absl::StatusOr<BlockMask> EstimateAntidiagonalMask(const AntidiagonalMaskParams& p, int threads);

}  // namespace prefill::cpu
