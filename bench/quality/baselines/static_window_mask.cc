#include "bench/quality/baselines/static_window_mask.h"

#include <algorithm>
#include <numeric>
#include <vector>

namespace prefill::cpu {
namespace {

// Ascending blocks of one row.
void RowBlocks(const StaticWindowParams& p, int absolute, std::vector<int32_t>* out) {
  out->clear();
  const int visible = static_cast<int>(VisibleBlocks(absolute, p.num_kv_blocks, p.causal));
  if (p.keep_recent && absolute == p.num_kv_blocks - 1) {
    out->resize(visible);
    std::iota(out->begin(), out->end(), 0);
    return;
  }
  const int first = std::max(0, absolute - std::max(p.window, 1) + 1);
  if (p.keep_sink && first > 0) out->push_back(0);
  for (int j = first; j <= absolute; ++j) out->push_back(j);
}

}  // namespace

BlockMask StaticWindowMask(const StaticWindowParams& p, std::span<const int32_t> q_block_ids) {
  BlockMask mask;
  mask.num_heads = p.hq;
  mask.num_q_blocks = static_cast<int>(q_block_ids.size());
  mask.num_kv_blocks = p.num_kv_blocks;
  mask.block_size = p.block_size;
  mask.q_block_ids.assign(q_block_ids.begin(), q_block_ids.end());
  mask.row_offsets.push_back(0);
  std::vector<int32_t> row;
  for (int h = 0; h < p.hq; ++h) {
    for (int32_t absolute : q_block_ids) {
      RowBlocks(p, absolute, &row);
      mask.kv_blocks.insert(mask.kv_blocks.end(), row.begin(), row.end());
      mask.row_offsets.push_back(static_cast<int32_t>(mask.kv_blocks.size()));
      mask.visible_blocks += VisibleBlocks(absolute, p.num_kv_blocks, p.causal);
    }
  }
  return mask;
}

double StaticWindowDensity(const StaticWindowParams& p) {
  int64_t selected = 0, visible = 0;
  std::vector<int32_t> row;
  for (int absolute = 0; absolute < p.num_kv_blocks; ++absolute) {
    RowBlocks(p, absolute, &row);
    selected += static_cast<int64_t>(row.size());
    visible += VisibleBlocks(absolute, p.num_kv_blocks, p.causal);
  }
  return visible ? static_cast<double>(selected) / visible : 0.0;
}

int WindowForDensity(StaticWindowParams p, double target) {
  for (p.window = 1; p.window < p.num_kv_blocks; ++p.window) {
    if (StaticWindowDensity(p) >= target) return p.window;
  }
  return p.num_kv_blocks;
}

}  // namespace prefill::cpu
