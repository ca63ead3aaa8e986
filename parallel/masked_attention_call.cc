#include "parallel/masked_attention_call.h"

#include "parallel/backend_upload.h"

namespace prefill {

absl::Status RunMaskedAttention(AttentionBackend& backend, const CpAttentionShard& shard,
                                const int32_t* q_pos, int lq, int block_size, const KvRows& kv,
                                const HostCsr& mask, float* o, float* lse,
                                bool empty_rows_lse_only) {
  absl::StatusOr<BackendBuffer> offsets =
      UploadToBackend(backend, std::span<const int32_t>(mask.offsets));
  if (!offsets.ok()) return offsets.status();
  absl::StatusOr<BackendBuffer> ids = UploadToBackend(backend, std::span<const int32_t>(mask.ids));
  if (!ids.ok()) return ids.status();
  absl::Status s = RunMaskedAttentionInBackend(
      backend, shard, q_pos, lq, block_size, kv, static_cast<const int32_t*>(offsets->get()),
      static_cast<const int32_t*>(ids->get()), o, lse, DType::kF32, empty_rows_lse_only);
  if (!s.ok()) return s;
  // The uploaded mask dies with this scope: the kernel must be done with it.
  return backend.Synchronize();
}

absl::Status RunMaskedAttentionInBackend(AttentionBackend& backend, const CpAttentionShard& shard,
                                         const int32_t* q_pos, int lq, int block_size,
                                         const KvRows& kv, const int32_t* row_offsets,
                                         const int32_t* kv_blocks, float* o, float* lse,
                                         DType o_dtype, bool empty_rows_lse_only) {
  AttentionParams p;
  p.dtype = shard.dtype;
  p.q = shard.q;
  p.q_row_stride = static_cast<int64_t>(shard.hq) * shard.head_dim;
  p.q_head_stride = shard.head_dim;
  p.q_pos = q_pos;
  p.k = kv.k;
  p.v = kv.v;
  p.kv_row_stride = kv.row_stride;
  p.kv_head_stride = kv.head_stride;
  p.k_pos = kv.positions;
  p.k_pos_head_stride = kv.positions_head_stride;
  p.lq = lq;
  p.lk = kv.rows;
  p.hq = shard.hq;
  p.hkv = shard.hkv;
  p.head_dim = shard.head_dim;
  p.block_size = block_size;
  p.causal = shard.causal;
  p.scale = shard.scale;
  p.mask_row_offsets = row_offsets;
  p.mask_kv_blocks = kv_blocks;
  p.out_dtype = o_dtype;
  p.o = o;
  p.lse = lse;
  p.empty_rows_lse_only = empty_rows_lse_only;
  return backend.Attention(p);
}

}  // namespace prefill
