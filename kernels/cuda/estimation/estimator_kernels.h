// Launchers of the GPU round-robin mask estimator's stages (internal to kernels/cuda), all on
// one stream, no host synchronisation between them:
//   1. SplitPooledKeys: pooled fp32 keys -> bf16 hi [+ bf16 lo], [hkv][strides][D];
//   2. GatherSampledQueries: the sampled query rows of a chunk of query blocks -> bf16 hi
//      [+ lo], [hkv][rows][D], row t = ((q_block - first) * group + head_in_group) * R + i;
//   3. BlockScores: tensor-core logits (wgmma on sm_90a, mma.sync elsewhere), online row softmax,
//   per (sampled row, KV block) the
//      log2-sum-exp2 of its visible strides and per row the log2-sum-exp2 of all of them;
//   3b. HeavyScores (rr+heavy only): the blocks' heavy keys into the same log2-sum-exp2s;
//   4. SelectBlocks: per (head, query block): block masses from those, top-tau by a radix
//      select over the masses (no sort), forced blocks -> a bitmask row and its count;
//   5. ScanRowCounts + FillCsr: CSR offsets and ascending block ids.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/dtype.h"
#include "kernels/mask_estimation_params.h"

namespace prefill::cuda {

// Geometry of one estimation call, shared by the stages.
struct EstimatorShape {
  int hq = 0, hkv = 0, group = 1;  // group = hq / hkv
  int head_dim = 0;
  int block_size = 0;      // B
  int stride = 0;          // S
  int rows_per_block = 0;  // R = B / S sampled rows per (head, query block)
  int num_strides = 0;     // seq_len / S
  int num_kv_blocks = 0;   // seq_len / B
  int num_q_blocks = 0;    // local query blocks
  bool causal = true;
  bool rotate_offsets = true;    // sampled offset h mod S (false: offset 0)
  float logit_scale_log2 = 0.f;  // scale / S * log2(e)
};

// k_lo may be null (bf16 keys only).
cudaError_t LaunchSplitPooledKeys(const float* pooled, const EstimatorShape& shape, uint16_t* k_hi,
                                  uint16_t* k_lo, int sm_count, cudaStream_t stream);

// q_lo may be null (hi only: bf16 queries are exact in it, other dtypes are rounded).
cudaError_t LaunchGatherSampledQueries(DType dtype, const void* q, int64_t q_row_stride,
                                       int64_t q_head_stride, const EstimatorShape& shape,
                                       int q_block_begin, int q_block_end, uint16_t* q_hi,
                                       uint16_t* q_lo, int sm_count, cudaStream_t stream);

// kTerms: 1 = q_hi * k_hi (bf16 operands), 2 = + q_hi * k_lo, 3 = + q_lo * k_hi.
// block_lse: [hkv][chunk_rows / R][num_kv_blocks][R] fp32 (log2 units, visible blocks only);
// row_lse: [hkv][chunk_rows]. skip_dense_rows: rows of the last KV block's query block are not
// scored (keep_recent makes them dense).
// use_wgmma: sm_90a's warpgroup MMA (kTerms <= 2; ignored where the code is not sm_90a),
// else mma.sync.
template <int kHeadDim, int kRowsPerBlock, int kTerms>
cudaError_t LaunchBlockScores(const uint16_t* q_hi, const uint16_t* q_lo, const uint16_t* k_hi,
                              const uint16_t* k_lo, const int32_t* q_block_ids,
                              const EstimatorShape& shape, bool skip_dense_rows, bool use_wgmma,
                              int q_block_begin, int q_block_end, float* block_lse, float* row_lse,
                              cudaStream_t stream);

// rr+heavy, after BlockScores: the heavy keys kh_hi [hkv][num_kv_blocks][D] (bf16, as
// SplitPooledKeys writes them) join the softmax of every sampled row of the chunk: for each
// block J wholly before the row's query block (every J when not causal), the logit
// q_hi . kh[J] * heavy_scale - heavy_bias is log2-added to block_lse[row][J] and to row_lse.
cudaError_t LaunchHeavyScores(const uint16_t* q_hi, const uint16_t* kh_hi,
                              const int32_t* q_block_ids, const EstimatorShape& shape,
                              bool skip_dense_rows, int q_block_begin, int q_block_end,
                              float heavy_scale, float heavy_bias, float* block_lse, float* row_lse,
                              cudaStream_t stream);

struct SelectionOptions {
  float tau = kDefaultTau;
  bool keep_sink = true;
  bool keep_recent = true;
  int variant = 1;  // radix plan of SelectBlocks (EstimatorTuning::select_variant)
};

// selected: [hq * num_q_blocks][words_per_row] bitmask rows; counts: [hq * num_q_blocks].
cudaError_t LaunchSelectBlocks(const float* block_lse, const float* row_lse,
                               const int32_t* q_block_ids, const EstimatorShape& shape,
                               const SelectionOptions& options, int q_block_begin, int q_block_end,
                               uint32_t* selected, int words_per_row, int32_t* counts,
                               size_t max_smem, cudaStream_t stream);

// The selection alone, from given masses [hq * num_q_blocks][num_kv_blocks] (row h *
// num_q_blocks + q): what SelectBlocks does after computing them. For tests of the tie and
// threshold rules with exactly known masses.
cudaError_t LaunchSelectFromMasses(const float* masses, const int32_t* q_block_ids,
                                   const EstimatorShape& shape, const SelectionOptions& options,
                                   uint32_t* selected, int words_per_row, int32_t* counts,
                                   size_t max_smem, cudaStream_t stream);

// offsets[0] = 0, offsets[i + 1] = counts[0] + .. + counts[i].
cudaError_t LaunchScanRowCounts(const int32_t* counts, int num_rows, int32_t* offsets,
                                cudaStream_t stream);

// Rows [row_begin, row_end): the ascending set bits of each row at offsets[row] - base.
cudaError_t LaunchFillCsr(const uint32_t* selected, int words_per_row, const int32_t* offsets,
                          int row_begin, int row_end, int32_t base, int32_t* kv_blocks,
                          cudaStream_t stream);

}  // namespace prefill::cuda
