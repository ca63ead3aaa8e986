// Round-robin (RRAttention) mask estimation on the GPU, the same function as
// kernels/cpu/round_robin_mask_estimator.h: sampled query of head h in query stride i is
// row i*S + (h mod S) (offset 0 without rotate_offsets); scores against the pooled keys of
// every visible key stride; global row softmax; stride-then-block aggregation; per (head,
// query block) the shortest descending prefix (ties: lower block id first) whose mass reaches
// tau, AND causal visibility, OR sink and diagonal; keep_recent makes the last query block
// dense. Only the CSR (row offsets, block ids) comes back to the host, never the scores.
#pragma once

#include <cstddef>

#include "absl/status/statusor.h"
#include "kernels/block_mask.h"
#include "kernels/cuda/device_context.h"
#include "kernels/mask_estimation_params.h"

namespace prefill::cuda {

// Every pointer in `p` is a device pointer (q, q_block_ids, pooled_k), as the backend
// contract says; q_block_ids is copied back for the mask. Queues the whole estimation on
// ctx.stream without waiting, then waits once for the row offsets (to size the host CSR) and
// once for the block ids (the mask is needed on the host).
absl::StatusOr<BlockMask> EstimateRoundRobinMask(const MaskEstimateParams& p,
                                                 const DeviceContext& ctx);

// The CSR of a mask left on the device: row offsets [hq * num_q_blocks + 1] and ascending KV
// block ids [row_offsets[last]], both in the caller's `storage`, valid until its next Reserve.
struct DeviceMaskCsr {
  const int32_t* row_offsets = nullptr;
  const int32_t* kv_blocks = nullptr;
};

// The same estimation, the ids built straight into `storage` and never copied to the host:
// the returned mask holds everything but the ids (kv_blocks empty; row_offsets, q_block_ids
// and visible_blocks filled). One host wait, for the row offsets (they size the ids); the ids
// are complete in stream order on ctx.stream, where the attention that reads them runs.
absl::StatusOr<BlockMask> EstimateRoundRobinMaskOnDevice(const MaskEstimateParams& p,
                                                         const DeviceContext& ctx,
                                                         DeviceScratch& storage,
                                                         DeviceMaskCsr* csr);

// Logit precision of the tensor-core GEMM (process-wide; read at each call).
//   kBf16:  bf16 queries and bf16 pooled keys, fp32 accumulation: one MMA per product. Logits
//           carry ~2^-9 relative error per operand; block masses stay within ~2e-3 of the row
//           mass of the fp32 ones (tests/gpu/cuda_mask_estimator_test.cc states the claim).
//   kSplit: keys (and non-bf16 queries) split into bf16 hi + lo, 2 (bf16 q) or 3 MMAs per
//           product; logits within ~1e-5 relative, masses within 1e-4 of the row mass.
enum class EstimatorPrecision { kBf16, kSplit };
void SetEstimatorPrecision(EstimatorPrecision precision);
EstimatorPrecision GetEstimatorPrecision();

// Tensor-core instruction of the logit GEMM (process-wide). kAuto: wgmma (warpgroup MMA) on a
// compute-capability-9.0 device running sm_90a code and precisions without q_lo, mma.sync
// otherwise; kMmaSync: mma.sync everywhere (the sm_80 path, for tests and comparisons).
enum class EstimatorMmaPath { kAuto, kMmaSync };
void SetEstimatorMmaPath(EstimatorMmaPath path);
EstimatorMmaPath GetEstimatorMmaPath();

// Scratch sizing (process-wide). The per-(sampled row, KV block) log-sum-exps of a chunk of
// query blocks live in scratch: a chunk holds at least `min_waves` waves of score CTAs and at
// least what `lse_budget_bytes` allows, so the scratch grows linearly in L. The CSR is built
// in a staging buffer of at most `csr_staging_ints` ids and copied out in pieces.
struct EstimatorTuning {
  size_t lse_budget_bytes = size_t{256} << 20;
  int min_waves = 4;  // 0: the budget alone decides
  size_t csr_staging_ints = size_t{32} << 20;
  // Radix plan of the top-tau selection (same masks, different speed): 0 = 256 threads and
  // 11/10/10-bit digits, 1 = 128 threads and 8-bit digits.
  int select_variant = 1;
};
void SetEstimatorTuning(const EstimatorTuning& tuning);
EstimatorTuning GetEstimatorTuning();

// Per-call timings for benchmarks (null: off, the default). Device stages are CUDA-event
// intervals on the stream; host_ms is the wall time of the whole call. Not thread-safe.
struct EstimatorProfile {
  int chunks = 0;
  int terms = 0;          // MMAs per product (1 bf16, 2/3 split)
  bool wgmma = false;     // the scores ran on wgmma
  double prepare_ms = 0;  // key split + query gathers
  double scores_ms = 0;   // BlockScores kernels
  double select_ms = 0;   // SelectBlocks kernels
  double csr_ms = 0;      // row-count scan + CSR fill
  double device_ms = 0;   // first launch to the CSR complete on the device
  double host_ms = 0;     // the whole call, host CSR included
};
void SetEstimatorProfile(EstimatorProfile* out);

}  // namespace prefill::cuda
