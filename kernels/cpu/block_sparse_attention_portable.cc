// The flash attention forward in plain C++: GCC vector extensions of 16 floats, no target
// flags, for CPUs without AVX-512 (and for tests, through PREFILL_CPU_ISA=portable). Without
// fused multiply-add (-ffp-contract=off) Fma rounds twice; results differ from the AVX-512
// path by rounding only. The register block is small because baseline x86-64 has 16 xmm
// registers and one 16-float vector takes four of them.

// 64-byte vectors are passed in memory without AVX-512, unlike with it; GCC warns about the
// ABI difference, which cannot matter for these functions: all are internal to this file.
#pragma GCC diagnostic ignored "-Wpsabi"

#include <cmath>
#include <cstring>

#include "kernels/cpu/block_sparse_attention_flash.h"
#include "kernels/cpu/block_sparse_attention_isa.h"

namespace prefill::cpu {
namespace {

struct Portable {
  using Vec = float __attribute__((vector_size(64)));
  using Ints = int32_t __attribute__((vector_size(64)));
  using Halves = uint16_t __attribute__((vector_size(32)));
  using Words = uint32_t __attribute__((vector_size(64)));
  static constexpr int kLanes = 16;
  static constexpr int kTileRows = 2;
  static constexpr int kTileVecs = 1;

  static Vec Zero() { return Vec{}; }
  // x - 0 is x for every x, so GCC drops the subtraction (not the add of Vec{} + x: -0 + 0 is +0).
  static Vec Set1(float x) { return x - Vec{}; }
  static Vec Load(const float* p) {
    Vec v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  static void Store(float* p, Vec v) { std::memcpy(p, &v, sizeof v); }
  static Vec Add(Vec a, Vec b) { return a + b; }
  static Vec Sub(Vec a, Vec b) { return a - b; }
  static Vec Mul(Vec a, Vec b) { return a * b; }
  static Vec Max(Vec a, Vec b) { return a > b ? a : b; }
  static Vec Fma(Vec a, Vec b, Vec c) { return a * b + c; }
  // Adding 1.5 * 2^23 pushes the fraction out of the mantissa: round to nearest even, as the
  // AVX-512 roundscale does, for |x| < 2^22.
  static Vec RoundToNearest(Vec x) {
    constexpr float kShifter = 12582912.f;
    return (x + kShifter) - kShifter;
  }
  static Vec ScaleByPow2(Vec x, Vec n) {
    return reinterpret_cast<Vec>(reinterpret_cast<Ints>(x) +
                                 (__builtin_convertvector(n, Ints) << 23));
  }
  static Vec ZeroWhereLess(Vec v, Vec x, float bound) { return x < bound ? Vec{} : v; }
  static Vec HideLaterKeys(Vec s, const int32_t* q_pos, int32_t k_pos) {
    Ints q;
    std::memcpy(&q, q_pos, sizeof q);
    return k_pos > q ? Set1(-INFINITY) : s;
  }
  static void ConvertRow(DType type, const void* src, float* dst, int n) {
    if (type == DType::kF16) {
      ConvertToF32(type, src, dst, n);
      return;
    }
    if (type == DType::kF32) {
      std::memcpy(dst, src, n * sizeof(float));
      return;
    }
    for (int i = 0; i < n; i += kLanes) {  // bf16 is the high half of an fp32
      Halves h;
      std::memcpy(&h, static_cast<const uint16_t*>(src) + i, sizeof h);
      const Words wide = __builtin_convertvector(h, Words) << 16;
      std::memcpy(dst + i, &wide, sizeof wide);
    }
  }
};

}  // namespace

void RunBlockSparseAttentionPortable(const AttentionParams& p, int threads) {
  flash::Run<Portable>(p, threads);
}

}  // namespace prefill::cpu
