// The one list of attention scenarios every backend's kernel test runs (CPU:
// block_sparse_attention_test on each ISA path; CUDA: cuda_attention_test), as ggml's
// test-backend-ops keeps one case list: storage dtype x head dim x causal or not x GQA or MHA x
// dense or sparse mask. Each backend applies a case to its own base problem (sizes and block
// its kernel takes) and compares with the fp64 reference.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <tuple>

#include "kernels/dtype.h"
#include "tests/kernels/attention_test_problem.h"

namespace prefill::attention_test {

// dtype, head_dim, causal, GQA (hq = 8 over hkv = 2) or MHA, mask density.
using AttentionCase = std::tuple<DType, int, bool, bool, double>;

inline auto AllAttentionCases() {
  return ::testing::Combine(::testing::Values(DType::kBF16, DType::kF16, DType::kF32),
                            ::testing::Values(64, 128), ::testing::Bool(), ::testing::Bool(),
                            ::testing::Values(1.0, 0.4));
}

// `base` with the case's dtype, head dim, causality, KV heads, density and seed.
inline ProblemSpec ApplyCase(ProblemSpec base, const AttentionCase& c) {
  const auto [dtype, head_dim, causal, gqa, density] = c;
  base.dtype = dtype;
  base.head_dim = head_dim;
  base.causal = causal;
  base.hkv = gqa ? 2 : base.hq;
  base.density = density;
  base.seed = 7 + head_dim + (causal ? 1 : 0) + (gqa ? 2 : 0);
  return base;
}

inline std::string AttentionCaseName(const ::testing::TestParamInfo<AttentionCase>& info) {
  const auto [dtype, head_dim, causal, gqa, density] = info.param;
  return std::string(DTypeName(dtype)) + "_d" + std::to_string(head_dim) +
         (causal ? "_causal" : "_full") + (gqa ? "_gqa" : "_mha") +
         (density == 1.0 ? "_dense" : "_sparse");
}

}  // namespace prefill::attention_test
