// The static sink + local window mask (StreamingLLM's "attention sinks + recent tokens",
// MInference's A-shape): every (head, query block) row keeps KV block 0 and the last `window`
// blocks up to and including its diagonal block, whatever the input; the sequence's last
// query block is dense if keep_recent. No estimation cost, no adaptivity: the baseline that
// shows what looking at the input buys.
#pragma once

#include <cstdint>
#include <span>

#include "kernels/block_mask.h"
#include "kernels/mask_estimation_params.h"

namespace prefill::cpu {

struct StaticWindowParams {
  int hq = 0;
  int num_kv_blocks = 0;  // seq_len / block_size
  int block_size = kDefaultBlockSize;
  int window = 1;  // >= 1 blocks ending at the diagonal
  bool causal = true;
  bool keep_sink = true;
  bool keep_recent = true;
};

// Rows for the given absolute query blocks (local order).
BlockMask StaticWindowMask(const StaticWindowParams& p, std::span<const int32_t> q_block_ids);

// The density of the mask over every query block of the sequence (all heads alike).
double StaticWindowDensity(const StaticWindowParams& p);

// The smallest window >= 1 whose whole-sequence density is >= target (num_kv_blocks when none
// is): the window that matches an estimator's density for a fair comparison.
int WindowForDensity(StaticWindowParams p, double target);

}  // namespace prefill::cpu
