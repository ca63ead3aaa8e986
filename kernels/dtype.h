// Element types of stored tensors, and the scalar conversions every backend agrees on.
// Accumulation is always fp32 (fp64 in the reference); these types describe storage only.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

#include "absl/status/statusor.h"

namespace prefill {

enum class DType : uint8_t { kF32, kBF16, kF16 };

constexpr int DTypeSize(DType t) { return t == DType::kF32 ? 4 : 2; }

std::string_view DTypeName(
    DType t);  // "f32", "bf16", "f16" (safetensors spells them F32, BF16, F16)
absl::StatusOr<DType> ParseDType(std::string_view name);  // accepts both spellings

inline float Bf16ToF32(uint16_t bits) {
  uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Round to nearest even, NaN kept quiet: the same rounding as __float2bfloat16_rn on the GPU.
inline uint16_t F32ToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float F16ToF32(uint16_t bits);
uint16_t F32ToF16(float f);

// Converts n elements of `src` (stored as `type`) to fp32.
void ConvertToF32(DType type, const void* src, float* dst, int64_t n);
// Converts n fp32 values into storage of `type`.
void ConvertFromF32(DType type, const float* src, void* dst, int64_t n);

}  // namespace prefill
