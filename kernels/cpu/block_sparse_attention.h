// Block-sparse flash attention forward on the CPU: online softmax over the KV blocks of a
// CSR mask, fp32 accumulation, storage fp32 or bf16 (f16 too), GQA, causal by absolute
// positions. Dense attention is this kernel with every block selected.
// Vectorized for AVX-512, AVX2+FMA or NEON, picked at run time (kernels/cpu/cpu_isa.h), with
// a portable path as the reference and the fallback; threaded over (query head, query block)
// work items.
#pragma once

#include "absl/status/status.h"
#include "kernels/attention_params.h"

namespace prefill::cpu {

// Validates `p` (InvalidArgument naming the field) and runs. threads <= 0: all hardware threads.
absl::Status BlockSparseAttention(const AttentionParams& p, int threads);

}  // namespace prefill::cpu
