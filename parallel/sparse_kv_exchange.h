// SparseKvExchange: each rank fetches exactly the remote KV blocks its mask selected.
//   1. plan: per peer, the union over the query heads of a GQA group and the rank's query
//      blocks of the selected blocks that peer owns, per KV head (KV is never replicated to
//      query heads);
//   2. the rank tells each peer what it needs (two all-to-alls: counts, then requests);
//   3. peers pack those blocks and send them; the receiver lays them out per KV head in
//      compact slots, so one kernel call attends to all remote blocks.
// Transfers are posted and left in flight: the caller computes on local blocks meanwhile.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/block_mask.h"
#include "parallel/communicator.h"
#include "parallel/cp_attention.h"
#include "parallel/cp_layout.h"
#include "parallel/masked_attention_call.h"

namespace prefill {

struct KvBlockRef {
  int32_t kv_head;
  int32_t block;  // absolute block id
  bool operator==(const KvBlockRef&) const = default;
};

// [peer] -> the blocks this rank needs from it, sorted by (kv_head, block), no duplicates.
std::vector<std::vector<KvBlockRef>> PlanRemoteKvBlocks(const BlockMask& mask,
                                                        const CpLayout& layout, int rank, int hkv);

// Sends each peer the list of blocks wanted from it; returns what each peer wants from us.
absl::StatusOr<std::vector<std::vector<KvBlockRef>>> ExchangeKvRequests(
    Communicator& comm, const std::vector<std::vector<KvBlockRef>>& need_from);

// Remote K/V received into per-KV-head compact slots:
// k[g][slot * B + t][d], positions[g][slot * B + t].
class SparseKvExchange {
 public:
  // Posts every receive and every send. local_k/local_v are this rank's K/V head-major
  // [hkv][local_len][head_dim] in backend memory.
  static absl::StatusOr<std::unique_ptr<SparseKvExchange>> Start(
      Communicator& comm, AttentionBackend& backend, const CpLayout& layout,
      const CpAttentionShard& shard, const void* local_k, const void* local_v,
      std::vector<std::vector<KvBlockRef>> need_from,
      const std::vector<std::vector<KvBlockRef>>& send_to);

  absl::Status Wait();  // all posted transfers

  int64_t bytes_sent() const { return bytes_sent_; }
  int max_slots() const { return max_slots_; }
  // Slot of a remote block in its KV head's compact rows, -1 when not received.
  int SlotOf(int kv_head, int32_t block) const;
  KvRows remote_rows() const;

 private:
  SparseKvExchange() = default;
  std::vector<absl::flat_hash_map<int32_t, int>> slot_of_;  // [kv_head] block -> slot
  int max_slots_ = 0;
  int64_t bytes_sent_ = 0;
  int64_t row_stride_ = 0;  // elements
  int block_size_ = 0;
  BackendBuffer remote_k_{nullptr, nullptr};
  BackendBuffer remote_v_{nullptr, nullptr};
  BackendBuffer remote_pos_{nullptr, nullptr};
  std::vector<BackendBuffer> send_buffers_;
  std::vector<std::unique_ptr<PendingTransfer>> transfers_;
};

}  // namespace prefill
