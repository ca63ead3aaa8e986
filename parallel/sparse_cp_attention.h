// Sparse context-parallel attention, the heart of the project:
//   a. all-gather the stride-pooled keys (1/S of K's bytes);
//   b. estimate this rank's mask over the whole sequence, locally (round-robin sampling);
//   c.-d. fetch exactly the selected remote KV blocks (SparseKvExchange);
//   e. attend to local blocks while remote ones arrive, then to remote ones, and merge.
// With balancing, between b. and c. the ranks agree on a plan that moves work to the owners
// of the KV blocks (guest_attention.h); c.-e. then run on what each rank still computes.
// One rank whose blocks are all local has no c.-d.: its mask stays in backend memory (ids
// built on the device, read in place by the attention).
// The mask a rank computes is bitwise the rows a single rank computes for its query blocks.
#pragma once

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/block_mask.h"
#include "kernels/mask_estimation_params.h"
#include "kernels/phase_timer.h"
#include "parallel/communicator.h"
#include "parallel/cp_attention.h"
#include "parallel/cp_layout.h"
#include "parallel/sparse_balance_plan.h"

namespace prefill {

struct SparseOptions {
  int stride = kDefaultStride;
  float tau = kDefaultTau;
  bool keep_sink = true;
  bool keep_recent = true;
  // One rank: the mask's ids never need the host (nothing to exchange); false leaves them on
  // the device and SparseCpResult::mask without ids.
  bool mask_ids_on_host = true;
  // Several ranks: when the estimated density over all ranks reaches this, the layer runs the
  // dense ring (one exchange pattern, no planning, nothing selected to skip) with the same
  // result as a mask of every visible block. One rank always takes the mask: its attention
  // reads the mask in place and skips what it leaves out, with no exchange to save.
  double dense_above = 0.9;
  // Several ranks, sparse layers: auto evens the ranks' mask entries by having the owner of
  // a KV block compute the entries other ranks selected on it (guest_attention.h); no KV
  // moves for them, only their Q rows and partial results.
  BalanceMode balance = BalanceMode::kAuto;
  // Where the work runs (PhaseTimer; CUDA events), the spans "mask_estimation" (pooling, the
  // pooled keys' all-gather, estimation) and "attention" (the rest), of layer `timer_layer`;
  // null: none. Host clocks around the estimation bill it the queued work it waits for.
  PhaseTimer* timer = nullptr;
  int timer_layer = -1;
  // rr+heavy: each block's heavy key is pooled and all-gathered too (1/B of K's bytes more).
  MaskEstimator estimator = MaskEstimator::kRoundRobin;
};

struct SparseCpResult {
  CpAttentionStats stats;
  BlockMask mask;  // this rank's rows, absolute KV block ids (none: one rank, !mask_ids_on_host)
};

absl::StatusOr<SparseCpResult> SparseCpAttention(Communicator& comm, AttentionBackend& backend,
                                                 const CpLayout& layout,
                                                 const CpAttentionShard& shard,
                                                 const SparseOptions& options,
                                                 const CpAttentionOutput& out);

}  // namespace prefill
