// Dense ring attention, the exact baseline: every rank's K/V travels N-1 hops around the
// ring; at each hop the rank attends its queries to the visiting K/V and merges the partial
// result by log-sum-exp. The next hop's transfer is posted before this hop's compute, so
// they overlap.
#pragma once

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "parallel/communicator.h"
#include "parallel/cp_attention.h"
#include "parallel/cp_layout.h"

namespace prefill {

absl::StatusOr<CpAttentionStats> RingAttention(Communicator& comm, AttentionBackend& backend,
                                               const CpLayout& layout,
                                               const CpAttentionShard& shard,
                                               const CpAttentionOutput& out);

// The KV bytes the dense ring puts on the wire, all ranks together.
int64_t DenseRingKvBytes(const CpLayout& layout, int hkv, int head_dim, DType dtype);

}  // namespace prefill
