// The oracle block mask: the true attention mass of every (query head, query block, KV block)
// from the exact softmax in fp64, then the fewest blocks per row whose true mass reaches tau,
// with the same forced blocks the estimators keep. At a given tau no mask with those forced
// blocks reaches tau of a row's true mass with fewer blocks: it is the best any estimator can
// do. The true masses also score any other mask: RowRecall gives, per query row, the fraction
// of its true softmax mass that lies in the mask's blocks.
//
// The masses of a row depend only on that row's queries and on K, in a fixed order, so a
// context-parallel rank that computes its own query blocks against the whole K gets bitwise
// the numbers a single rank gets for them.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/quality/baselines/query_blocks_against_keys.h"
#include "kernels/block_mask.h"
#include "kernels/dtype.h"
#include "kernels/mask_estimation_params.h"

namespace prefill::cpu {

// The oracle needs nothing beyond the shared inputs.
struct TrueMassParams : QueryBlocksAgainstKeys {};

struct TrueBlockMass {
  int num_heads = 0;
  int num_q_blocks = 0;
  int num_kv_blocks = 0;
  int block_size = 0;
  std::vector<int32_t> q_block_ids;  // [num_q_blocks] absolute query block of each local block
  // [num_heads][num_q_blocks][num_kv_blocks]: the softmax mass each query row puts on the KV
  // block, summed over the block's rows (a row's masses sum to 1; a block row's to block_size).
  std::vector<double> block;
  // [num_heads][num_q_blocks][block_size][num_kv_blocks]: the same per query row.
  std::vector<float> row;

  std::span<const double> block_row(int head, int q_block) const {
    return {block.data() + (int64_t{head} * num_q_blocks + q_block) * num_kv_blocks,
            static_cast<size_t>(num_kv_blocks)};
  }
  std::span<const float> query_row(int head, int q_block, int i) const {
    return {
        row.data() + ((int64_t{head} * num_q_blocks + q_block) * block_size + i) * num_kv_blocks,
        static_cast<size_t>(num_kv_blocks)};
  }
};

// threads <= 0: all hardware threads. InvalidArgument names a bad field.
absl::StatusOr<TrueBlockMass> ComputeTrueBlockMass(const TrueMassParams& p, int threads);

// How a mask is cut from block masses. The forced blocks are those of the round-robin
// estimator: the sink (KV block 0) if keep_sink, the diagonal block always, and every visible
// block of the sequence's last query block if keep_recent.
struct TopTauRule {
  float tau = kDefaultTau;
  bool causal = true;
  bool keep_sink = true;
  bool keep_recent = true;
};

// Per (head, query block) row of `mass` ([hq][q_block_ids.size()][num_kv_blocks], only the
// causally visible blocks are read): the forced blocks first, their mass counted, then the
// visible blocks by mass descending (ties: lower id first) while the kept mass is < tau of
// the row's visible mass; blocks with no mass are never added. This is XAttention's rule
// (sink and diagonal counted first), and on true masses it is the smallest superset of the
// forced blocks that reaches tau.
BlockMask SelectTopTauForcedFirst(std::span<const double> mass, int hq,
                                  std::span<const int32_t> q_block_ids, int num_kv_blocks,
                                  int block_size, const TopTauRule& rule);

// The oracle mask: SelectTopTauForcedFirst on the true block masses.
BlockMask OracleTopTauMask(const TrueBlockMass& mass, const TopTauRule& rule);

// Per local query row and head, [num_q_blocks * block_size][num_heads] (the layout of an
// attention output's rows): the true mass of the row inside the blocks `mask` selects.
// InvalidArgument unless the mask has the same heads and query blocks as `mass`.
absl::StatusOr<std::vector<double>> RowRecall(const TrueBlockMass& mass, const BlockMask& mask);

}  // namespace prefill::cpu
