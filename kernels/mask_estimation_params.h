// Parameters of round-robin (RRAttention) mask estimation: key pooling per stride, then
// sampled scores, global row softmax, stride-then-block aggregation and top-tau selection.
// See ../shared/research/rrattention.md section 1 and docs/rrattention.md.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/dtype.h"

namespace prefill {

// The mask's defaults, defined once: every options struct of every layer starts from these.
inline constexpr int kDefaultBlockSize = 128;
inline constexpr int kDefaultStride = 8;
inline constexpr float kDefaultTau = 0.95f;

// Which estimator scores the blocks (docs/rrattention.md, "Heavy tokens"):
//   rr       : round robin over stride-mean-pooled keys (RRAttention);
//   rr+heavy : the same plus one extra key per KV block, the block's key that deviates most
//              from its stride's mean, scored unpooled: a single heavy key that the mean
//              dilutes S-fold keeps its own logit. Cost: one more key per B/S pooled ones.
enum class MaskEstimator { kRoundRobin, kRoundRobinHeavy };
absl::StatusOr<MaskEstimator> ParseMaskEstimator(const std::string& name);
const char* MaskEstimatorName(MaskEstimator estimator);

// pooled[j, g, :] = sum of the `stride` keys of stride j (fp32 accumulation, fp32 result).
struct PoolKeysParams {
  DType dtype = DType::kF32;
  const void* k =
      nullptr;  // [lk, hkv, head_dim], rows contiguous in absolute order within a stride
  int64_t k_row_stride = 0;  // elements between consecutive key rows
  int lk = 0;                // a multiple of stride
  int hkv = 0;
  int head_dim = 0;
  int stride = 0;
  float* pooled = nullptr;  // [lk / stride, hkv, head_dim] fp32
  // Optional (rr+heavy): per block of block_size keys (lk a multiple of it) and KV head, the
  // key (fp32) farthest from its stride's mean: the largest sum over e of
  // (k[e] - pooled[e] / stride)^2, in fp64 with e ascending, the first key on ties.
  int block_size = 0;
  float* heavy = nullptr;  // [lk / block_size, hkv, head_dim] fp32
};

struct MaskEstimateParams {
  DType dtype = DType::kF32;
  // Local queries [lq, hq, head_dim]; local query block q is rows [q*B, (q+1)*B) and holds
  // the absolute positions [q_block_ids[q]*B, (q_block_ids[q]+1)*B).
  const void* q = nullptr;
  int64_t q_row_stride = 0;
  int64_t q_head_stride = 0;
  const int32_t* q_block_ids = nullptr;
  int num_q_blocks = 0;

  // Pooled keys of the whole sequence [seq_len / stride, hkv, head_dim], absolute stride order.
  const float* pooled_k = nullptr;
  // rr+heavy: the heavy key of every block [seq_len / block_size, hkv, head_dim] (PoolKeys'
  // `heavy`), absolute block order; null: plain round robin. Query q sees the heavy keys of
  // the blocks wholly before its own (every block when not causal); each joins q's softmax
  // as one key (logit minus log2(stride) against the pooled strides, which stand for
  // `stride` keys each) and adds its mass to its block.
  const float* heavy_k = nullptr;

  int seq_len = 0;  // total tokens (keys) of the sequence; a multiple of block_size
  int hq = 0;
  int hkv = 0;
  int head_dim = 0;
  int block_size = kDefaultBlockSize;
  int stride = kDefaultStride;  // divides block_size
  float tau = kDefaultTau;      // keep the fewest blocks whose estimated mass reaches tau
  bool causal = true;
  bool keep_sink = true;       // KV block 0 always kept
  bool keep_recent = true;     // the last query block of the sequence attends densely
  bool rotate_offsets = true;  // false: every head samples offset 0 (the unrotated baseline)
  float scale = 0.f;  // 1/sqrt(head_dim); the estimator multiplies by 1/stride (mean pooling)
};

}  // namespace prefill
