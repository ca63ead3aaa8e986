// Key pooling: pooled[j, g, :] = sum over t < S of K[j*S + t, g, :], accumulated in fp32 in
// t order, so every rank that pools the same keys gets the same bits. With `heavy`, also each
// block's key farthest from its stride's mean, chosen in fp64 by the order the CUDA kernel
// follows too (kernels/cuda/key_pooling.cu), so both pick the same key.
#include "kernels/cpu/key_pooling.h"

#include <algorithm>
#include <cstddef>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

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
  if (p.heavy != nullptr &&
      (p.block_size < p.stride || p.block_size % p.stride != 0 || p.lk % p.block_size != 0)) {
    return Invalid("heavy keys need block_size (", p.block_size, ") a multiple of stride (",
                   p.stride, ") dividing lk (", p.lk, ")");
  }
  return absl::OkStatus();
}

// heavy[b, g, :] = the key of block b farthest from its stride's mean (after `pooled`).
void SelectHeavyKeys(const PoolKeysParams& p) {
  const int64_t width = int64_t{p.hkv} * p.head_dim;
  const int64_t row_bytes = p.k_row_stride * DTypeSize(p.dtype);
  const auto* k = static_cast<const std::byte*>(p.k);
  std::vector<float> row(width);
  for (int64_t b = 0; b < p.lk / p.block_size; ++b) {
    for (int g = 0; g < p.hkv; ++g) {
      double best = -1;
      int64_t best_t = 0;
      for (int64_t t = b * p.block_size; t < (b + 1) * p.block_size; ++t) {
        ConvertToF32(p.dtype, k + t * row_bytes + g * p.head_dim * DTypeSize(p.dtype), row.data(),
                     p.head_dim);
        const float* mean_sum = p.pooled + (t / p.stride) * width + g * p.head_dim;
        double dev = 0;  // -ffp-contract=off: a product, then a sum, as __dmul_rn / __dadd_rn
        for (int e = 0; e < p.head_dim; ++e) {
          const double d =
              static_cast<double>(row[e]) - static_cast<double>(mean_sum[e]) / p.stride;
          dev += d * d;
        }
        if (dev > best) {
          best = dev;
          best_t = t;
        }
      }
      ConvertToF32(p.dtype, k + best_t * row_bytes + g * p.head_dim * DTypeSize(p.dtype),
                   p.heavy + (b * p.hkv + g) * p.head_dim, p.head_dim);
    }
  }
}

}  // namespace

absl::Status PoolKeys(const PoolKeysParams& p) {
  PREFILL_RETURN_IF_ERROR(Validate(p));
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
  if (p.heavy != nullptr) SelectHeavyKeys(p);
  return absl::OkStatus();
}

}  // namespace prefill::cpu
