#include "kernels/cpu/attention_validation.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace prefill::cpu {
namespace {

absl::Status CheckSizes(const AttentionParams& p, const std::string& entry) {
  auto invalid = [&](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(entry, ": ", parts...));
  };
  if (p.dtype != DType::kF32 && p.dtype != DType::kBF16 && p.dtype != DType::kF16) {
    return invalid("dtype ", static_cast<int>(p.dtype), " is not a known DType");
  }
  if (p.block_size <= 0) return invalid("block_size (", p.block_size, ") must be positive");
  if (p.lq < 0 || p.lq % p.block_size != 0) {
    return invalid("lq (", p.lq, ") must be a non-negative multiple of block_size (", p.block_size,
                   ")");
  }
  if (p.lk < 0 || p.lk % p.block_size != 0) {
    return invalid("lk (", p.lk, ") must be a non-negative multiple of block_size (", p.block_size,
                   ")");
  }
  if (p.hkv <= 0) return invalid("hkv (", p.hkv, ") must be positive");
  if (p.hq <= 0 || p.hq % p.hkv != 0) {
    return invalid("hq (", p.hq, ") must be a positive multiple of hkv (", p.hkv, ")");
  }
  if (p.head_dim <= 0) return invalid("head_dim (", p.head_dim, ") must be positive");
  return absl::OkStatus();
}

absl::Status CheckPointers(const AttentionParams& p, const std::string& entry) {
  auto null = [&](std::string_view field) {
    return absl::InvalidArgumentError(absl::StrCat(entry, ": ", std::string(field), " is null"));
  };
  if (p.q == nullptr) return null("q");
  if (p.k == nullptr) return null("k");
  if (p.v == nullptr) return null("v");
  if (p.causal && p.q_pos == nullptr) return null("q_pos");
  if (p.causal && p.k_pos == nullptr) return null("k_pos");
  if (p.mask_row_offsets == nullptr) return null("mask_row_offsets");
  const int rows = p.hq * (p.lq / p.block_size);
  if (p.mask_kv_blocks == nullptr && p.mask_row_offsets[rows] > 0) return null("mask_kv_blocks");
  return absl::OkStatus();
}

// Offsets start at 0 and never decrease; block ids ascend within a row and index K/V blocks.
absl::Status CheckMask(const AttentionParams& p, const std::string& entry) {
  const int rows = p.hq * (p.lq / p.block_size);
  const int kv_blocks = p.lk / p.block_size;
  if (p.mask_row_offsets[0] != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(entry, ": mask_row_offsets[0] is ", p.mask_row_offsets[0], ", not 0"));
  }
  for (int r = 0; r < rows; ++r) {
    const int32_t begin = p.mask_row_offsets[r], end = p.mask_row_offsets[r + 1];
    if (end < begin) {
      return absl::InvalidArgumentError(
          absl::StrCat(entry, ": mask_row_offsets decreases at row ", r));
    }
    for (int32_t e = begin; e < end; ++e) {
      const int32_t id = p.mask_kv_blocks[e];
      if (id < 0 || id >= kv_blocks) {
        return absl::InvalidArgumentError(absl::StrCat(entry, ": mask_kv_blocks[", e, "] = ", id,
                                                       " is out of range [0, ", kv_blocks, ")"));
      }
      if (e > begin && id <= p.mask_kv_blocks[e - 1]) {
        return absl::InvalidArgumentError(
            absl::StrCat(entry, ": mask_kv_blocks of row ", r, " do not ascend at entry ", e));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateAttentionInputs(const AttentionParams& p, std::string_view entry) {
  const std::string name(entry);
  PREFILL_RETURN_IF_ERROR(CheckSizes(p, name));
  PREFILL_RETURN_IF_ERROR(CheckPointers(p, name));
  return CheckMask(p, name);
}

}  // namespace prefill::cpu
