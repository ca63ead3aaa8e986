// The flash attention forward on AVX2 + FMA + F16C (compiled with those flags, called only
// when the CPU has them). With 16 ymm registers and no embedded broadcast, the register block
// is PREFILL_AVX2_TILE_ROWS x PREFILL_AVX2_TILE_VECS accumulators, one ymm per vector of
// queries or probabilities, and one broadcast of a K or V scalar reused across the vectors.
#include <immintrin.h>

#include <cmath>

#include "kernels/cpu/block_sparse_attention_flash.h"
#include "kernels/cpu/block_sparse_attention_isa.h"

#ifndef PREFILL_AVX2_TILE_ROWS
#define PREFILL_AVX2_TILE_ROWS 6
#endif
#ifndef PREFILL_AVX2_TILE_VECS
#define PREFILL_AVX2_TILE_VECS 2
#endif

namespace prefill::cpu {
namespace {

struct Avx2 {
  using Vec = __m256;
  static constexpr int kLanes = 8;
  static constexpr int kTileRows = PREFILL_AVX2_TILE_ROWS;
  static constexpr int kTileVecs = PREFILL_AVX2_TILE_VECS;

  static Vec Zero() { return _mm256_setzero_ps(); }
  static Vec Set1(float x) { return _mm256_set1_ps(x); }
  static Vec Load(const float* p) { return _mm256_loadu_ps(p); }
  static void Store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
  static Vec Add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
  static Vec Sub(Vec a, Vec b) { return _mm256_sub_ps(a, b); }
  static Vec Mul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
  static Vec Max(Vec a, Vec b) { return _mm256_max_ps(a, b); }  // b where either is NaN
  static Vec Fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
  static Vec RoundToNearest(Vec x) {
    return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  // n integral in [-126, 0]: add it to the exponent field, as the portable path does.
  static Vec ScaleByPow2(Vec x, Vec n) {
    const __m256i shifted = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23);
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(x), shifted));
  }
  static Vec ZeroWhereLess(Vec v, Vec x, float bound) {
    return _mm256_and_ps(_mm256_cmp_ps(x, Set1(bound), _CMP_NLT_UQ), v);
  }
  static Vec HideLaterKeys(Vec s, const int32_t* q_pos, int32_t k_pos) {
    const __m256i later = _mm256_cmpgt_epi32(
        _mm256_set1_epi32(k_pos), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q_pos)));
    return _mm256_blendv_ps(s, Set1(-INFINITY), _mm256_castsi256_ps(later));
  }
  static void ConvertRow(DType type, const void* src, float* dst, int n) {
    const auto* half = static_cast<const __m128i*>(src);
    for (int i = 0; i < n; i += kLanes) {
      switch (type) {
        case DType::kF32:
          Store(dst + i, Load(static_cast<const float*>(src) + i));
          break;
        case DType::kBF16: {  // bf16 is the high half of an fp32
          const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(half + i / kLanes));
          Store(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16)));
          break;
        }
        case DType::kF16:
          Store(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(half + i / kLanes)));
          break;
      }
    }
  }
};

}  // namespace

void RunBlockSparseAttentionAvx2(const AttentionParams& p, int threads) {
  flash::Run<Avx2>(p, threads);
}

}  // namespace prefill::cpu
