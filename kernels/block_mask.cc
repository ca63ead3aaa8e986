#include "kernels/block_mask.h"

namespace prefill {

BlockMask DenseBlockMask(int num_heads, std::span<const int32_t> q_block_ids, int num_kv_blocks,
                         int block_size, bool causal) {
  BlockMask m;
  m.num_heads = num_heads;
  m.num_q_blocks = static_cast<int>(q_block_ids.size());
  m.num_kv_blocks = num_kv_blocks;
  m.block_size = block_size;
  m.q_block_ids.assign(q_block_ids.begin(), q_block_ids.end());
  m.row_offsets.reserve(m.num_rows() + 1);
  m.row_offsets.push_back(0);
  for (int h = 0; h < num_heads; ++h) {
    for (int32_t qb : q_block_ids) {
      const int64_t visible = VisibleBlocks(qb, num_kv_blocks, causal);
      for (int32_t j = 0; j < visible; ++j) m.kv_blocks.push_back(j);
      m.row_offsets.push_back(static_cast<int32_t>(m.kv_blocks.size()));
      m.visible_blocks += visible;
    }
  }
  return m;
}

}  // namespace prefill
