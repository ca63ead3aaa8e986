// The inputs of the CPU scorers that read a rank's own query blocks against the keys of the
// whole sequence (the oracle's true block masses, the antidiagonal estimator), and their one
// validation.
#pragma once

#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "kernels/dtype.h"
#include "kernels/mask_estimation_params.h"

namespace prefill::cpu {

struct QueryBlocksAgainstKeys {
  DType dtype = DType::kF32;  // storage of q and k
  // Local queries [lq, hq, head_dim]; local query block q is rows [q*B, (q+1)*B) and holds
  // the absolute positions [q_block_ids[q]*B, (q_block_ids[q]+1)*B).
  const void* q = nullptr;
  int64_t q_row_stride = 0;
  int64_t q_head_stride = 0;
  const int32_t* q_block_ids = nullptr;
  int num_q_blocks = 0;
  // Keys of the whole sequence in absolute order: element (pos, g, e) at
  // k[pos * k_row_stride + g * k_head_stride + e].
  const void* k = nullptr;
  int64_t k_row_stride = 0;
  int64_t k_head_stride = 0;
  int seq_len = 0;  // a multiple of block_size
  int hq = 0;
  int hkv = 0;  // divides hq (GQA: head h reads KV head h / (hq / hkv))
  int head_dim = 0;
  int block_size = kDefaultBlockSize;
  bool causal = true;
  float scale = 0.f;  // logit scale, usually 1/sqrt(head_dim)
};

// InvalidArgument whose message starts with "<who>: " for heads that do not divide, a length
// that is not whole blocks, missing or negative strides and pointers, a non-positive scale,
// and query block ids outside the sequence.
absl::Status ValidateQueryBlocksAgainstKeys(const QueryBlocksAgainstKeys& p, std::string_view who);

}  // namespace prefill::cpu
