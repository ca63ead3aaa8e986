// Block-sparse flash attention forward on the CPU: online softmax over the KV blocks of a
// CSR mask, fp32 accumulation, storage fp32 or bf16 (f16 too), GQA, causal by absolute
// positions. Dense attention is this kernel with every block selected.
// Vectorized with AVX-512 where the CPU has it (runtime dispatch), a portable path otherwise;
// threaded over (query head, query block) work items.
#pragma once

#include "absl/status/status.h"
#include "kernels/attention_params.h"

namespace prefill::cpu {

// Validates `p` (InvalidArgument naming the field) and runs. threads <= 0: all hardware threads.
absl::Status BlockSparseAttention(const AttentionParams& p, int threads);

// True when the AVX-512 path is compiled in and this CPU runs it.
bool BlockSparseAttentionUsesAvx512();

}  // namespace prefill::cpu
