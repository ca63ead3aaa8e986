// Parameters of block-sparse flash attention forward and of the log-sum-exp merge.
// Plain structs of pointers and sizes, passed by value, shared by the CPU and CUDA backends
// (on CUDA every pointer is a device pointer). Validation happens once, at the entry.
#pragma once

#include <cstdint>

#include "kernels/dtype.h"

namespace prefill {

struct AttentionParams {
  DType dtype = DType::kF32;  // storage of q, k, v; accumulation is fp32

  // Q [lq, hq, head_dim]: element (row, head, e) at q[row * q_row_stride + head * q_head_stride +
  // e].
  const void* q = nullptr;
  int64_t q_row_stride = 0;
  int64_t q_head_stride = 0;
  const int32_t* q_pos = nullptr;  // [lq] absolute token position of each query row

  // K, V [hkv][lk, head_dim]: element (row, g, e) at k[g * kv_head_stride + row * kv_row_stride +
  // e]. Storing each KV head apart (kv_head_stride) lets callers hand in per-head compacted blocks.
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t kv_row_stride = 0;
  int64_t kv_head_stride = 0;
  // Absolute position of key row `row` of KV head g: k_pos[g * k_pos_head_stride + row].
  const int32_t* k_pos = nullptr;
  int64_t k_pos_head_stride = 0;  // 0: every KV head has the same positions

  int lq = 0;  // query rows, a multiple of block_size
  int lk = 0;  // key rows per KV head, a multiple of block_size
  int hq = 0;  // query heads, a multiple of hkv (GQA: head h reads KV head h / (hq / hkv))
  int hkv = 0;
  int head_dim = 0;
  int block_size = 0;   // rows of a query block and of a KV block
  bool causal = false;  // key visible iff k_pos <= q_pos; exact inside partially visible blocks
  float scale = 0.f;    // logit scale, usually 1/sqrt(head_dim)

  // CSR mask over the K/V rows of this call: row hq_index * (lq / block_size) + q_block lists
  // block ids j (K/V rows [j * block_size, (j + 1) * block_size)), ascending.
  const int32_t* mask_row_offsets = nullptr;
  const int32_t* mask_kv_blocks = nullptr;

  // Outputs. O [lq, hq, head_dim] contiguous in out_dtype (the CPU backend writes fp32 only);
  // LSE [lq, hq] fp32, natural log of the softmax denominator, -inf where no key is visible
  // (then O is 0). Rows are normalised, so partial results over disjoint KV sets merge exactly.
  DType out_dtype = DType::kF32;
  void* o = nullptr;
  float* lse = nullptr;
  // A partial result that is only merged by LSE (which skips -inf rows) may leave O unwritten
  // where the mask row is empty: the CPU backend then never touches those rows' pages.
  bool empty_rows_lse_only = false;
};

// acc <- merge(acc, part) for `rows` (row, head) entries of head_dim values each:
// lse = log(exp(lse_a) + exp(lse_b)); o = o_a * exp(lse_a - lse) + o_b * exp(lse_b - lse).
// The part is contiguous; acc may be strided in runs: entry i of the part merges into acc
// entry (i / run) * acc_run_stride + i % run (a partial that holds some heads of some rows of
// a [rows][heads] output: run = its heads, acc_run_stride = the output's heads).
struct LseMergeParams {
  float* o_acc = nullptr;         // [entries, head_dim], strided as above
  float* lse_acc = nullptr;       // [entries], strided as above
  const float* o_part = nullptr;  // [rows, head_dim]
  const float* lse_part = nullptr;
  int64_t rows = 0;
  int head_dim = 0;
  int64_t run = 0;             // 0: acc is contiguous like the part
  int64_t acc_run_stride = 0;  // entries between the starts of acc's runs (>= run)

  // run >= 0 and, when strided, runs that do not overlap.
  bool RunsValid() const { return run == 0 || (run > 0 && acc_run_stride >= run); }
  // The acc entry that part entry i merges into.
  int64_t AccEntry(int64_t i) const { return run > 0 ? (i / run) * acc_run_stride + i % run : i; }
};

}  // namespace prefill
