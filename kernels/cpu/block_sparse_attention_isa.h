// The instantiations of the flash attention forward (block_sparse_attention_flash.h), one
// per instruction set. Private to kernels/cpu: block_sparse_attention.cc validates the params
// and picks one at run time.
#pragma once

#include "kernels/attention_params.h"

namespace prefill::cpu {

// Needs AVX-512 F, BW, DQ, VL with FMA and F16C on the running CPU (x86-64 builds only).
void RunBlockSparseAttentionAvx512(const AttentionParams& p, int threads);

// Needs AVX2, FMA and F16C (x86-64 builds only).
void RunBlockSparseAttentionAvx2(const AttentionParams& p, int threads);

// Advanced SIMD with FMA and fp16 conversions (aarch64 builds only).
void RunBlockSparseAttentionNeon(const AttentionParams& p, int threads);

// Plain C++ with GCC vector extensions: any CPU.
void RunBlockSparseAttentionPortable(const AttentionParams& p, int threads);

}  // namespace prefill::cpu
