// GuestAttention: runs a SparseBalancePlan ("owner computes", sparse_balance_plan.h).
//   0. AgreeOnBalancePlan: one all-gather of every rank's segment counts; every rank plans
//      the same moves from the same numbers.
//   1. Exchange (collective): each rank sends the owner of each segment it moves the
//      segment's mask rows (host int32) and its Q rows (backend memory). The sizes follow
//      from the plan, so no count exchange precedes them.
//   2. PostPartialReceives: receives of the partial results of this rank's moved segments.
//   3. ComputeAndReturn: this rank attends its guests' Q rows over its own K/V (no KV moves)
//      and sends each guest rank its partial (o, lse).
//   4. MergeInto: waits for this rank's partials and merges them by log-sum-exp.
// Why this order: NCCL matches point-to-point transfers by order and starts them at the next
// collective or Wait, so a receive posted before a collective would hold that collective's
// stream until the peer's send, which comes after the peer's compute. Callers post 2. and 3.
// after the layer's last collective (the KV request exchange) and after the KV exchange's own
// transfers, so every pair of ranks posts its transfers in the same order.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/block_mask.h"
#include "parallel/communicator.h"
#include "parallel/cp_attention.h"
#include "parallel/cp_layout.h"
#include "parallel/sparse_balance_plan.h"

namespace prefill {

// Gathers every rank's segment counts of `mask` (hkv x local query blocks x ranks int32 per
// rank) and plans; segments smaller than the query group stay put (their Q rows and partial
// cost more bytes than they shift). Collective; the same plan on every rank.
absl::StatusOr<SparseBalancePlan> AgreeOnBalancePlan(Communicator& comm, const CpLayout& layout,
                                                     const BlockMask& mask, int hq, int hkv);

// `mask` without the entries this rank moves away: what it computes itself (and the KV
// blocks it still fetches).
BlockMask WithoutMovedEntries(const BlockMask& mask, const CpLayout& layout, int rank, int hkv,
                              const SparseBalancePlan& plan);

class GuestAttention {
 public:
  // Step 1. `mask`: this rank's full mask (absolute KV block ids).
  static absl::StatusOr<std::unique_ptr<GuestAttention>> Exchange(
      Communicator& comm, AttentionBackend& backend, const CpLayout& layout,
      const CpAttentionShard& shard, const BlockMask& mask, const SparseBalancePlan& plan);
  absl::Status PostPartialReceives();  // step 2
  // Step 3. local_k/local_v: this rank's K/V head-major [hkv][local_len][head_dim];
  // local_pos: its positions [local_len]; backend memory.
  absl::Status ComputeAndReturn(const void* local_k, const void* local_v, const int32_t* local_pos);
  // Step 4; also waits for this rank's sends.
  absl::Status MergeInto(const CpAttentionOutput& out);

  // Q rows, mask rows and partial results this rank put on the wire.
  int64_t bytes_sent() const { return bytes_sent_; }

 private:
  GuestAttention(Communicator& comm, AttentionBackend& backend, const CpLayout& layout,
                 const CpAttentionShard& shard)
      : comm_(comm), backend_(backend), layout_(layout), shard_(shard) {}
  int group() const { return shard_.hq / shard_.hkv; }
  int64_t q_segment_bytes() const;
  absl::Status ExchangeMaskRows(const BlockMask& mask);
  absl::Status ExchangeQueryRows();
  // Attends the guest segments incoming_[peer][first, last) (one KV head) into that peer's
  // partial buffers.
  absl::Status AttendGuestRun(int peer, size_t first, size_t last, const void* local_k,
                              const void* local_v, const int32_t* local_pos, const int32_t* q_pos);
  absl::Status Keep(absl::StatusOr<std::unique_ptr<PendingTransfer>> transfer,
                    std::vector<std::unique_ptr<PendingTransfer>>& into);
  absl::Status MergeFrom(int peer, const CpAttentionOutput& out);

  Communicator& comm_;
  AttentionBackend& backend_;
  const CpLayout& layout_;
  CpAttentionShard shard_;
  std::vector<std::vector<BalanceMove>> outgoing_;  // [peer] this rank's segments it computes
  std::vector<std::vector<BalanceMove>> incoming_;  // [peer] that peer's segments computed here
  // Received mask rows: per incoming segment, per head of its group, a count then the blocks.
  std::vector<int32_t> guest_rows_;
  std::vector<size_t> guest_rows_start_;          // [peer] index into guest_rows_
  BackendBuffer guest_q_{nullptr, [](void*) {}};  // [incoming segments][block][group][head_dim]
  std::vector<int64_t> guest_q_start_;            // [peer] byte offset into guest_q_
  // Partials, o [segments * block][group][head_dim] f32 and lse [segments * block][group].
  std::vector<BackendBuffer> send_o_, send_lse_, recv_o_, recv_lse_;
  std::vector<std::unique_ptr<PendingTransfer>> sends_, receives_;
  int64_t bytes_sent_ = 0;
};

}  // namespace prefill
