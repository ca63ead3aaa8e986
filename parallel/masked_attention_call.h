// One block-sparse attention call of a plan: the rank's queries against one set of K/V rows
// under a host-built CSR mask whose ids index those rows' blocks.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "kernels/backend.h"
#include "parallel/cp_attention.h"

namespace prefill {

struct HostCsr {
  std::vector<int32_t> offsets{0};  // [rows + 1], row = head * q_blocks + q_block
  std::vector<int32_t> ids;
  int64_t nnz() const { return static_cast<int64_t>(ids.size()); }
};

// K/V rows in backend memory: element (row, g, e) at k[g * head_stride + row * row_stride + e].
struct KvRows {
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t row_stride = 0;
  int64_t head_stride = 0;
  const int32_t* positions = nullptr;  // backend memory, positions[g * positions_head_stride + row]
  int64_t positions_head_stride = 0;
  int rows = 0;
};

// o [lq, hq, d] and lse [lq, hq] receive the normalised partial result (lse -inf where the
// mask leaves a row empty; O there is 0, or left unwritten when `empty_rows_lse_only`, for a
// partial that is only merged by LSE).
absl::Status RunMaskedAttention(AttentionBackend& backend, const CpAttentionShard& shard,
                                const int32_t* q_pos, int lq, int block_size, const KvRows& kv,
                                const HostCsr& mask, float* o, float* lse,
                                bool empty_rows_lse_only = false);

// The same under a CSR already in backend memory (row offsets, ids); queued, no wait. o in
// o_dtype.
absl::Status RunMaskedAttentionInBackend(AttentionBackend& backend, const CpAttentionShard& shard,
                                         const int32_t* q_pos, int lq, int block_size,
                                         const KvRows& kv, const int32_t* row_offsets,
                                         const int32_t* kv_blocks, float* o, float* lse,
                                         DType o_dtype = DType::kF32,
                                         bool empty_rows_lse_only = false);

}  // namespace prefill
