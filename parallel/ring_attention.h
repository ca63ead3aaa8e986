// Dense ring attention, the exact baseline: every rank's K/V travels N-1 hops around the
// ring; at each hop the rank attends its queries to the visiting K/V and merges the partial
// result by log-sum-exp. The next hop's transfer is posted before this hop's compute, so
// they overlap.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "parallel/communicator.h"
#include "parallel/cp_attention.h"
#include "parallel/cp_layout.h"

namespace prefill {

// What the ring needs besides the shard, the same for every layer of a prefill: the rank's
// query positions and, per ring step, the visiting rank's key positions and the step's block
// mask, in backend memory. Built once per request (the masks of one rank at 128K tokens are
// 16.8M ids: building and uploading them every layer cost more than the layer's GEMMs at 32K).
class RingAttentionPlan {
 public:
  static absl::StatusOr<RingAttentionPlan> Create(AttentionBackend& backend, const CpLayout& layout,
                                                  int rank, int hq, bool causal);

  struct Step {
    BackendBuffer k_pos{nullptr, [](void*) {}};
    BackendBuffer row_offsets{nullptr, [](void*) {}};
    BackendBuffer kv_blocks{nullptr, [](void*) {}};
    int64_t selected_blocks = 0;  // 0: no query of this rank sees the visiting keys
  };
  const int32_t* q_pos() const { return static_cast<const int32_t*>(q_pos_.get()); }
  // Step s attends to the K/V of rank (rank - s) mod N.
  const Step& step(int s) const { return steps_[s]; }
  int hq() const { return hq_; }
  bool causal() const { return causal_; }

 private:
  RingAttentionPlan() = default;
  BackendBuffer q_pos_{nullptr, [](void*) {}};
  std::vector<Step> steps_;
  int hq_ = 0;
  bool causal_ = false;
};

absl::StatusOr<CpAttentionStats> RingAttention(Communicator& comm, AttentionBackend& backend,
                                               const CpLayout& layout,
                                               const RingAttentionPlan& plan,
                                               const CpAttentionShard& shard,
                                               const CpAttentionOutput& out);
// The same with a plan of its own (one call, e.g. one layer).
absl::StatusOr<CpAttentionStats> RingAttention(Communicator& comm, AttentionBackend& backend,
                                               const CpLayout& layout,
                                               const CpAttentionShard& shard,
                                               const CpAttentionOutput& out);

// The KV bytes the dense ring puts on the wire, all ranks together.
int64_t DenseRingKvBytes(const CpLayout& layout, int hkv, int head_dim, DType dtype);

}  // namespace prefill
