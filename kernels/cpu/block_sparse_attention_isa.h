// The instantiations of the flash attention forward (block_sparse_attention_flash.h), one
// per instruction set. Private to kernels/cpu: block_sparse_attention.cc validates the params
// and picks one at run time.
#pragma once

#include "kernels/attention_params.h"

namespace prefill::cpu {

// Needs AVX-512 F, BW, DQ, VL with FMA and F16C on the running CPU.
void RunBlockSparseAttentionAvx512(const AttentionParams& p, int threads);

// Plain C++ with GCC vector extensions: any CPU.
void RunBlockSparseAttentionPortable(const AttentionParams& p, int threads);

}  // namespace prefill::cpu
