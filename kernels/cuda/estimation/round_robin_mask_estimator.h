// Round-robin (RRAttention) mask estimation on the GPU, the same function as
// kernels/cpu/round_robin_mask_estimator.h: sampled query of head h in query stride i is
// row i*S + (h mod S); scores against the pooled keys of every visible key stride; global
// fp32 row softmax; stride-then-block aggregation; per (head, query block) the shortest
// descending prefix (ties: lower block id first) whose mass reaches tau, AND causal
// visibility, OR sink and diagonal; keep_recent makes the last query block dense.
// Only the CSR (row offsets, block ids) comes back to the host, never the scores.
#pragma once

#include "absl/status/statusor.h"
#include "kernels/block_mask.h"
#include "kernels/cuda/device_context.h"
#include "kernels/mask_estimation_params.h"

namespace prefill::cuda {

// Every pointer in `p` is a device pointer (q, q_block_ids, pooled_k), as the backend
// contract says; q_block_ids is copied back for the mask. Waits for the stream (the mask is
// needed on the host).
absl::StatusOr<BlockMask> EstimateRoundRobinMask(const MaskEstimateParams& p,
                                                 const DeviceContext& ctx);

}  // namespace prefill::cuda
