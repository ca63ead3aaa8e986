// The flash attention forward on AVX-512 (compiled with the AVX-512 flags, called only when
// the CPU has them). 6 x 4 register block: 24 zmm accumulators, 4 zmm of queries or
// probabilities loaded per step, one K or V scalar broadcast per row.

// GCC 12's intrinsics take their unused merge source from _mm512_undefined_ps(), which
// -W(maybe-)uninitialized misreports (GCC bug 105593, fixed in 12.3).
#pragma GCC diagnostic push
#ifndef __clang__
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cmath>

#include "kernels/cpu/block_sparse_attention_flash.h"
#include "kernels/cpu/block_sparse_attention_isa.h"

namespace prefill::cpu {
namespace {

struct Avx512 {
  using Vec = __m512;
  static constexpr int kLanes = 16;
  static constexpr int kTileRows = 6;
  static constexpr int kTileVecs = 4;

  static Vec Zero() { return _mm512_setzero_ps(); }
  static Vec Set1(float x) { return _mm512_set1_ps(x); }
  static Vec Load(const float* p) { return _mm512_loadu_ps(p); }
  static void Store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
  static Vec Add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
  static Vec Sub(Vec a, Vec b) { return _mm512_sub_ps(a, b); }
  static Vec Mul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
  static Vec Max(Vec a, Vec b) { return _mm512_max_ps(a, b); }
  static Vec Fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
  static Vec RoundToNearest(Vec x) {
    return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  static Vec ScaleByPow2(Vec x, Vec n) { return _mm512_scalef_ps(x, n); }
  static Vec ZeroWhereLess(Vec v, Vec x, float bound) {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, Set1(bound), _CMP_NLT_UQ), v);
  }
  static Vec HideLaterKeys(Vec s, const int32_t* q_pos, int32_t k_pos) {
    const __mmask16 later =
        _mm512_cmpgt_epi32_mask(_mm512_set1_epi32(k_pos), _mm512_loadu_si512(q_pos));
    return _mm512_mask_mov_ps(s, later, Set1(-INFINITY));
  }
  static void ConvertRow(DType type, const void* src, float* dst, int n) {
    const auto* half = static_cast<const __m256i*>(src);
    for (int i = 0; i < n; i += kLanes) {
      switch (type) {
        case DType::kF32:
          Store(dst + i, Load(static_cast<const float*>(src) + i));
          break;
        case DType::kBF16: {  // bf16 is the high half of an fp32
          const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(half + i / kLanes));
          Store(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16)));
          break;
        }
        case DType::kF16:
          Store(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(half + i / kLanes)));
          break;
      }
    }
  }
};

}  // namespace

void RunBlockSparseAttentionAvx512(const AttentionParams& p, int threads) {
  flash::Run<Avx512>(p, threads);
}

}  // namespace prefill::cpu
