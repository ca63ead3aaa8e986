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
#include "bench/quality/baselines/query_blocks_against_keys.h"
#include "kernels/block_mask.h"
#include "kernels/dtype.h"
#include "kernels/mask_estimation_params.h"

namespace prefill::cpu {

// scale: 1/sqrt(head_dim); the estimator multiplies by 1/stride.
struct AntidiagonalMaskParams : QueryBlocksAgainstKeys {
  int stride = kDefaultStride;  // divides block_size
  float tau = 0.9f;
  bool keep_sink = true;
  bool keep_recent = true;
};

// [hq][num_q_blocks][seq_len / block_size]: each block's softmax mass summed over the query
// strides of the query block (a row sums to block_size / stride). threads <= 0: all.
absl::StatusOr<std::vector<double>> AntidiagonalBlockMass(const AntidiagonalMaskParams& p,
                                                          int threads);

// The mask: SelectTopTauForcedFirst over AntidiagonalBlockMass.
absl::StatusOr<BlockMask> EstimateAntidiagonalMask(const AntidiagonalMaskParams& p, int threads);

}  // namespace prefill::cpu
