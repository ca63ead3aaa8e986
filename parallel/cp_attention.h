// Shared vocabulary of the context-parallel attention plans (ring_attention.h,
// sparse_cp_attention.h): one rank's shard in, its rows' output out, and what it cost.
#pragma once

#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/dtype.h"
#include "parallel/cp_layout.h"

namespace prefill {

// dense: the exact ring; sparse: the estimated block mask (sparse_cp_attention.h).
enum class AttentionMode { kDense, kSparse };
absl::StatusOr<AttentionMode> ParseAttentionMode(std::string_view name);  // "dense", "sparse"
const char* AttentionModeName(AttentionMode mode);

// One rank's rows of a self-attention layer, token-major, in backend memory.
struct CpAttentionShard {
  DType dtype = DType::kF32;
  const void* q = nullptr;  // [local_len, hq, head_dim]
  const void* k = nullptr;  // [local_len, hkv, head_dim]
  const void* v = nullptr;  // [local_len, hkv, head_dim]
  int hq = 0;
  int hkv = 0;
  int head_dim = 0;
  bool causal = true;
  float scale = 0.f;
};

struct CpAttentionOutput {
  float* o = nullptr;    // [local_len, hq, head_dim] in o_dtype, backend memory
  float* lse = nullptr;  // [local_len, hq], backend memory
  // One rank (dense ring or sparse) may write O in bf16, ready for the output projection's
  // GEMM (no fp32 round trip); paths that merge partial results need fp32 and reject others.
  DType o_dtype = DType::kF32;
};

struct CpAttentionStats {
  int64_t selected_blocks = 0;  // (head, q block, kv block) triples computed by this rank
  int64_t visible_blocks = 0;   // what a dense (causal) mask would compute
  // Sparse balancing (sparse_balance_plan.h): the (head, q block, kv block) triples this rank
  // computed, its own left after the moves plus the ones it computed for other ranks; equal
  // to selected_blocks when nothing moved.
  int64_t computed_blocks = 0;
  int64_t balance_bytes_sent = 0;  // Q rows, mask rows and partial results sent for balancing
  int64_t balance_moves = 0;       // segments the plan moved, all ranks together
  uint64_t balance_plan_hash = 0;  // SparseBalancePlan::Hash(), alike on every rank; 0: no plan
  int64_t kv_bytes_sent = 0;       // K and V bytes this rank put on the wire
  double estimate_seconds = 0;     // pooling, pooled-key all-gather, mask estimation
  double exchange_seconds = 0;     // planning and the part of KV transfer not hidden by compute
  // Dense ring: per step, how long the compute waited for the next K/V after its own work
  // was done, timed where the compute runs (CUDA: events on the backend's stream).
  double exchange_exposed_seconds = 0;
  double attention_seconds = 0;  // kernels and merges
  bool ran_dense = false;        // sparse mode ran the dense ring: the estimated density was high
};

// Bytes of K and V (both) for `rows` tokens of one KV head.
inline int64_t KvBytes(int64_t rows, int head_dim, DType dtype) {
  return 2 * rows * head_dim * DTypeSize(dtype);
}

}  // namespace prefill
