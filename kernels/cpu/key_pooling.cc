// Key pooling: pooled[j, g, :] = sum over t < S of K[j*S + t, g, :], accumulated in fp32 in
// t order, so every rank that pools the same keys gets the same bits.
#include "kernels/cpu/key_pooling.h"

#include <algorithm>
#include <cstddef>
#include <vector>

#include "absl/strings/str_cat.h"

namespace prefill::cpu {
namespace {

absl::Status Invalid(const auto&... parts) {
  return absl::InvalidArgumentError(absl::StrCat("PoolKeys: ", parts...));
}

absl::Status Validate(const PoolKeysParams& p) {
  if (p.k == nullptr) return Invalid("k must not be null");
  if (p.pooled == nullptr) return Invalid("pooled must not be null");
  if (p.hkv < 1) return Invalid("hkv (", p.hkv, ") must be >= 1");
  if (p.head_dim < 1) return Invalid("head_dim (", p.head_dim, ") must be >= 1");
  if (p.stride < 1) return Invalid("stride (", p.stride, ") must be >= 1");
  if (p.lk < 0 || p.lk % p.stride != 0) {
    return Invalid("lk (", p.lk, ") must be a non-negative multiple of stride (", p.stride, ")");
  }
  const int64_t width = int64_t{p.hkv} * p.head_dim;
  if (p.k_row_stride < width) {
    return Invalid("k_row_stride (", p.k_row_stride, ") must be >= hkv * head_dim (", width, ")");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status PoolKeys(const PoolKeysParams& p) {
  if (absl::Status s = Validate(p); !s.ok()) return s;
  const int64_t width = int64_t{p.hkv} * p.head_dim;  // one key row: every KV head
  const int64_t row_bytes = p.k_row_stride * DTypeSize(p.dtype);
  const auto* k = static_cast<const std::byte*>(p.k);
  std::vector<float> row(width);
  for (int64_t j = 0; j < p.lk / p.stride; ++j) {
    float* out = p.pooled + j * width;
    std::fill(out, out + width, 0.f);
    for (int64_t t = j * p.stride; t < (j + 1) * p.stride; ++t) {
      ConvertToF32(p.dtype, k + t * row_bytes, row.data(), width);
      for (int64_t e = 0; e < width; ++e) out[e] += row[e];
    }
  }
  return absl::OkStatus();
}

}  // namespace prefill::cpu
