// What the attention kernels receive: the caller's AttentionParams (pointers possibly
// redirected to bf16 copies of fp32 inputs) plus what the entry derived from it.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/attention_params.h"

namespace prefill::cuda {

struct AttentionKernelParams {
  AttentionParams p;                  // q/k/v are 16-bit (bf16 or f16) here
  const int32_t* schedule = nullptr;  // [num_items] mask rows (head * num_q_blocks + q_block),
                                      // longest first (LaunchBuildWorkSchedule)
  int num_items = 0;                  // hq * num_q_blocks
  int num_q_blocks = 0;               // lq / block_size
  int group = 1;                      // hq / hkv
  float scale_log2 = 0.f;             // p.scale * log2(e): logits go through exp2
  // sm90: the running max of a row moves only when a tile passes it by more than this (log2
  // units), so most tiles leave O unscaled; 0 rescales whenever the max grows.
  float rescale_threshold_log2 = 8.f;
  // Causal only (sm90): [hkv][num_kv_blocks][2] smallest and largest key position of each KV
  // block, so visibility of a whole tile is decided without reading its positions.
  const int32_t* kv_block_range = nullptr;
  int num_kv_blocks = 0;  // lk / block_size
};

// Launchers (one per head dim and 16-bit element type, instantiated in their own .cu files).
// Element is __nv_bfloat16 or __half; sm80 kernels run on every device of compute
// capability >= 8.0.
template <int kHeadDim, typename Element>
cudaError_t LaunchAttentionSm80(const AttentionKernelParams& kp, cudaStream_t stream);

// range[(g * num_blocks + b) * 2 + {0, 1}] = min / max of k_pos[g * head_stride + b*block
// ..+block).
cudaError_t LaunchKvBlockRange(const int32_t* k_pos, int64_t k_pos_head_stride, int hkv,
                               int num_blocks, int block, int32_t* range, cudaStream_t stream);

// Fills schedule[0 .. num_items) with the mask rows, longest first in buckets of similar
// length (kWorkScheduleMaxBuckets of width ceil((max_row_length + 1) / kWorkScheduleMaxBuckets)
// at most), rows sharing a KV head and query block together inside a bucket; deterministic.
inline constexpr int kWorkScheduleMaxBuckets = 128;
cudaError_t LaunchBuildWorkSchedule(const int32_t* row_offsets, int num_items, int num_q_blocks,
                                    int group, int max_row_length, int32_t* schedule,
                                    cudaStream_t stream);

}  // namespace prefill::cuda
