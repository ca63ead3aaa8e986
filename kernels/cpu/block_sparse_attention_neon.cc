// The flash attention forward on aarch64 Advanced SIMD (NEON: FMA and the fp16 conversions are
// part of ARMv8-A, so no flags and no run-time check). 32 vector registers of 4 floats: the
// register block is PREFILL_NEON_TILE_ROWS x PREFILL_NEON_TILE_VECS accumulators, one
// register per vector of queries or probabilities, and each K or V scalar a by-element
// operand of fmla (GCC folds the broadcast into it): 5 x 4 takes 20 + 4 + 5 registers and
// its inner loops (GCC 12 -O3) spill nothing, where 6 x 4 and 4 x 6 do; 4 vectors divide the
// 32 of a 128-query block, so only a few key rows fall in an edge tile.
// NEON's fmax and fmaxnm both differ from x86 max on NaN, so Max is a compare and a select.
#include <arm_neon.h>

#include <cmath>

#include "kernels/cpu/block_sparse_attention_flash.h"
#include "kernels/cpu/block_sparse_attention_isa.h"

#ifndef PREFILL_NEON_TILE_ROWS
#define PREFILL_NEON_TILE_ROWS 5
#endif
#ifndef PREFILL_NEON_TILE_VECS
#define PREFILL_NEON_TILE_VECS 4
#endif

namespace prefill::cpu {
namespace {

struct Neon {
  using Vec = float32x4_t;
  static constexpr int kLanes = 4;
  static constexpr int kTileRows = PREFILL_NEON_TILE_ROWS;
  static constexpr int kTileVecs = PREFILL_NEON_TILE_VECS;

  static Vec Zero() { return vdupq_n_f32(0.f); }
  static Vec Set1(float x) { return vdupq_n_f32(x); }
  static Vec Load(const float* p) { return vld1q_f32(p); }
  static void Store(float* p, Vec v) { vst1q_f32(p, v); }
  static Vec Add(Vec a, Vec b) { return vaddq_f32(a, b); }
  static Vec Sub(Vec a, Vec b) { return vsubq_f32(a, b); }
  static Vec Mul(Vec a, Vec b) { return vmulq_f32(a, b); }
  // a > b ? a : b: b where either is NaN, as x86 max and the portable path do.
  static Vec Max(Vec a, Vec b) { return vbslq_f32(vcgtq_f32(a, b), a, b); }
  static Vec Fma(Vec a, Vec b, Vec c) { return vfmaq_f32(c, a, b); }
  static Vec RoundToNearest(Vec x) { return vrndnq_f32(x); }  // ties to even
  // n integral in [-126, 0]: add it to the exponent field, as the portable path does.
  static Vec ScaleByPow2(Vec x, Vec n) {
    const int32x4_t shifted = vshlq_n_s32(vcvtq_s32_f32(n), 23);
    return vreinterpretq_f32_s32(vaddq_s32(vreinterpretq_s32_f32(x), shifted));
  }
  // x < bound is false for NaN x, so NaN keeps v.
  static Vec ZeroWhereLess(Vec v, Vec x, float bound) {
    return vreinterpretq_f32_u32(
        vbicq_u32(vreinterpretq_u32_f32(v), vcltq_f32(x, vdupq_n_f32(bound))));
  }
  static Vec HideLaterKeys(Vec s, const int32_t* q_pos, int32_t k_pos) {
    const uint32x4_t later = vcgtq_s32(vdupq_n_s32(k_pos), vld1q_s32(q_pos));
    return vbslq_f32(later, vdupq_n_f32(-INFINITY), s);
  }
  static void ConvertRow(DType type, const void* src, float* dst, int n) {
    const auto* half = static_cast<const uint16_t*>(src);
    for (int i = 0; i < n; i += kLanes) {
      switch (type) {
        case DType::kF32:
          Store(dst + i, Load(static_cast<const float*>(src) + i));
          break;
        case DType::kBF16:  // bf16 is the high half of an fp32
          Store(dst + i, vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(half + i), 16)));
          break;
        case DType::kF16:
          Store(dst + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(half + i))));
          break;
      }
    }
  }
};

}  // namespace

void RunBlockSparseAttentionNeon(const AttentionParams& p, int threads) {
  flash::Run<Neon>(p, threads);
}

}  // namespace prefill::cpu
