// Launchers of the GPU round-robin mask estimator's stages (internal to kernels/cuda):
//   1. SplitPooledKeys: pooled fp32 keys -> bf16 hi + bf16 lo, [hkv][strides][D];
//   2. GatherSampledQueries: the sampled query rows of a chunk of query blocks -> bf16 hi/lo,
//      [hkv][rows][D], row t = ((q_block - first) * group + head_in_group) * R + i;
//   3. BlockScores: per sampled row and KV block, log2-sum-exp2 of its visible stride logits
//      (tensor cores, hi/lo split so the logits carry ~16 mantissa bits, not bf16's 8);
//   4. SelectBlocks: per (head, query block): row softmax from the block sums, block masses,
//      sort, top-tau, forced blocks -> a bitmask row and its count;
//   5. ScanRowCounts + FillCsr: CSR offsets and ascending block ids.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/dtype.h"

namespace prefill::cuda {

// Geometry of one estimation call, shared by the stages.
struct EstimatorShape {
  int hq = 0, hkv = 0, group = 1;  // group = hq / hkv
  int head_dim = 0;
  int block_size = 0;   // B
  int stride = 0;       // S
  int rows_per_block = 0;  // R = B / S sampled rows per (head, query block)
  int num_strides = 0;  // seq_len / S
  int num_kv_blocks = 0;  // seq_len / B
  int num_q_blocks = 0;   // local query blocks
  bool causal = true;
  float logit_scale_log2 = 0.f;  // scale / S * log2(e)
};

cudaError_t LaunchSplitPooledKeys(const float* pooled, const EstimatorShape& shape, uint16_t* k_hi,
                                  uint16_t* k_lo, int sm_count, cudaStream_t stream);

cudaError_t LaunchGatherSampledQueries(DType dtype, const void* q, int64_t q_row_stride,
                                       int64_t q_head_stride, const EstimatorShape& shape,
                                       int q_block_begin, int q_block_end, uint16_t* q_hi,
                                       uint16_t* q_lo, int sm_count, cudaStream_t stream);

// block_lse: [hkv][num_kv_blocks][chunk_rows] fp32 (log2 units). split_q: q_lo is non-zero.
template <int kHeadDim, int kRowsPerBlock>
cudaError_t LaunchBlockScores(const uint16_t* q_hi, const uint16_t* q_lo, bool split_q,
                              const uint16_t* k_hi, const uint16_t* k_lo,
                              const int32_t* q_block_ids, const EstimatorShape& shape,
                              int q_block_begin, int q_block_end, float* block_lse,
                              cudaStream_t stream);

struct SelectionOptions {
  float tau = 0.95f;
  bool keep_sink = true;
  bool keep_recent = true;
};

// selected: [hq * num_q_blocks][words_per_row] bitmask rows; counts: [hq * num_q_blocks].
cudaError_t LaunchSelectBlocks(const float* block_lse, const int32_t* q_block_ids,
                               const EstimatorShape& shape, const SelectionOptions& options,
                               int q_block_begin, int q_block_end, uint32_t* selected,
                               int words_per_row, int32_t* counts, size_t max_smem,
                               cudaStream_t stream);

// offsets[0] = 0, offsets[i + 1] = counts[0] + .. + counts[i].
cudaError_t LaunchScanRowCounts(const int32_t* counts, int num_rows, int32_t* offsets,
                                cudaStream_t stream);

cudaError_t LaunchFillCsr(const uint32_t* selected, int words_per_row, const int32_t* offsets,
                          int num_rows, int32_t* kv_blocks, cudaStream_t stream);

}  // namespace prefill::cuda
