#include "bench/quality/baselines/query_blocks_against_keys.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace prefill::cpu {

absl::Status ValidateQueryBlocksAgainstKeys(const QueryBlocksAgainstKeys& p, std::string_view who) {
  const auto invalid = [&](const auto&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(who), ": ", parts...));
  };
  if (p.hq < 1 || p.hkv < 1 || p.hq % p.hkv != 0) {
    return invalid("hq (", p.hq, ") and hkv (", p.hkv, ") must be >= 1 with hkv dividing hq");
  }
  if (p.head_dim < 1) return invalid("head_dim (", p.head_dim, ") must be >= 1");
  if (p.block_size < 1 || p.seq_len < 1 || p.seq_len % p.block_size != 0) {
    return invalid("seq_len (", p.seq_len, ") must be a positive multiple of block_size (",
                   p.block_size, ")");
  }
  if (p.k == nullptr || p.k_row_stride < 1 || p.k_head_stride < 0) {
    return invalid("k must be set with k_row_stride >= 1 and k_head_stride >= 0");
  }
  if (!(p.scale > 0.f && std::isfinite(p.scale)))
    return invalid("scale (", p.scale, ") must be positive and finite");
  if (p.num_q_blocks < 0) return invalid("num_q_blocks (", p.num_q_blocks, ") must be >= 0");
  if (p.num_q_blocks > 0 && (p.q == nullptr || p.q_block_ids == nullptr || p.q_row_stride < 1)) {
    return invalid("q and q_block_ids must be set with q_row_stride >= 1");
  }
  const int num_blocks = p.seq_len / p.block_size;
  for (int i = 0; i < p.num_q_blocks; ++i) {
    if (p.q_block_ids[i] < 0 || p.q_block_ids[i] >= num_blocks) {
      return invalid("q_block_ids[", i, "] (", p.q_block_ids[i], ") must be in [0, ", num_blocks,
                     ")");
    }
  }
  return absl::OkStatus();
}

}  // namespace prefill::cpu
