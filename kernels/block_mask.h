// BlockMask: which KV blocks each (query head, query block) attends to, in CSR form.
//
// Row r = head * num_q_blocks + q_block lists its KV block ids in ascending order in
// kv_blocks[row_offsets[r] .. row_offsets[r+1]). What a KV block id means is the caller's
// contract: for the estimator and the distributed engine it is the absolute block
// (positions [id*B, (id+1)*B)); for a kernel call it is the block index into the K/V rows
// handed to that call. q_block_ids[q] names the absolute query block of local block q, so a
// rank's mask is comparable row by row with a single-rank mask.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace prefill {

struct BlockMask {
  int num_heads = 0;      // query heads
  int num_q_blocks = 0;   // local query blocks
  int num_kv_blocks = 0;  // KV blocks the ids range over
  int block_size = 0;
  std::vector<int32_t> q_block_ids;  // [num_q_blocks] absolute query block of each local block
  std::vector<int32_t> row_offsets;  // [num_heads * num_q_blocks + 1]
  std::vector<int32_t> kv_blocks;    // [row_offsets.back()], ascending within a row
  int64_t visible_blocks =
      0;  // blocks a dense (causal if causal) mask would hold: density's denominator

  int num_rows() const { return num_heads * num_q_blocks; }
  int64_t selected_blocks() const { return static_cast<int64_t>(kv_blocks.size()); }
  double density() const {
    return visible_blocks ? static_cast<double>(kv_blocks.size()) / visible_blocks : 0.0;
  }
  std::span<const int32_t> row(int head, int q_block) const {
    const int r = head * num_q_blocks + q_block;
    return {kv_blocks.data() + row_offsets[r],
            static_cast<size_t>(row_offsets[r + 1] - row_offsets[r])};
  }
  bool operator==(const BlockMask&) const = default;
};

// Every KV block whose first key position is <= the last query position of the row
// (all blocks when !causal); contiguous absolute blocks, q block i = absolute block
// q_block_ids[i]. This is "dense attention" expressed as a mask.
BlockMask DenseBlockMask(int num_heads, std::span<const int32_t> q_block_ids, int num_kv_blocks,
                         int block_size, bool causal);

// Number of KV blocks a causal (or full) row of absolute query block `q_block` can see.
inline int64_t VisibleBlocks(int q_block, int num_kv_blocks, bool causal) {
  return causal ? q_block + 1 : num_kv_blocks;
}

}  // namespace prefill
