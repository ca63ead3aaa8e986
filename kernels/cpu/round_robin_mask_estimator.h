// RRAttention mask estimation on the CPU (../shared/research/rrattention.md section 1):
// query head h samples position i*S + (h mod S) of each query stride i (i*S with
// rotate_offsets = false: the unrotated baseline), scores it against the
// pooled keys of every visible key stride, takes a global fp32 row softmax, sums the
// probabilities into BxB blocks and keeps, per (head, query block), the shortest descending
// prefix of blocks whose mass reaches tau (ties: lower block id first), AND causal
// visibility, OR the sink block and the diagonal block; optionally the last query block of
// the sequence dense (keep_recent).
//
// Each row's arithmetic depends only on its own query and the pooled keys, in a fixed order,
// so a rank that estimates some rows gets bitwise the mask a single rank gets for them.
#pragma once

#include "absl/status/statusor.h"
#include "kernels/block_mask.h"
#include "kernels/mask_estimation_params.h"

namespace prefill::cpu {

// threads <= 0: all hardware threads.
absl::StatusOr<BlockMask> EstimateRoundRobinMask(const MaskEstimateParams& p, int threads);

}  // namespace prefill::cpu
