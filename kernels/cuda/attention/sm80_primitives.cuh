// Warp-level building blocks of the sm80 kernels (attention, mask estimation): cp.async,
// ldmatrix, mma.sync m16n8k16 with bf16/f16 operands and fp32 accumulators, and the
// register packing between them. All of it is plain sm_80 PTX and runs on Hopper too.
//
// Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k16"), lane l, g = l/4, c = l%4:
//   A (16x16, row-major): a0 = (g, 2c..2c+1), a1 = (g+8, 2c..), a2 = (g, 8+2c..), a3 = (g+8,
//   8+2c..) B (16x8, "col"):      b0 = (k 2c..2c+1, n g), b1 = (k 8+2c.., n g) C/D (16x8 fp32):
//   d0,d1 = (g, 2c..2c+1), d2,d3 = (g+8, 2c..2c+1)
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "kernels/attention_params.h"

namespace prefill::cuda::sm80 {

__device__ __forceinline__ uint32_t SmemAddress(const void* ptr) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(ptr));
}

// 16-byte global -> shared copy that bypasses L1 (streamed tiles).
__device__ __forceinline__ void CpAsync16(uint32_t smem_addr, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr), "l"(gmem)
               : "memory");
}
__device__ __forceinline__ void CpAsync4(uint32_t smem_addr, const void* gmem) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(smem_addr), "l"(gmem) : "memory");
}
__device__ __forceinline__ void CpAsyncCommit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

__device__ __forceinline__ void LdMatrixX4(uint32_t smem_addr, uint32_t& r0, uint32_t& r1,
                                           uint32_t& r2, uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(smem_addr));
}
__device__ __forceinline__ void LdMatrixX4Trans(uint32_t smem_addr, uint32_t& r0, uint32_t& r1,
                                                uint32_t& r2, uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(smem_addr));
}

// d += a * b, m16n8k16, fp32 accumulators. Element is __nv_bfloat16 or __half.
template <typename Element>
__device__ __forceinline__ void Mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  if constexpr (std::is_same_v<Element, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// Two fp32 -> one register of two 16-bit values, `lo` in the low half (the lower column).
template <typename Element>
__device__ __forceinline__ uint32_t PackPair(float lo, float hi) {
  if constexpr (std::is_same_v<Element, __nv_bfloat16>) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  } else {
    const __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  }
}

__device__ __forceinline__ float WarpQuadMax(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float WarpQuadSum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// A finished row of the online softmax (exp2 domain, its partial sums spread over a quad):
// the factor that normalises O, and the row's log-sum-exp in natural log (-inf, and O = 0,
// for a row that saw no key).
struct FinishedRow {
  float inv_sum;
  float lse;
};
__device__ __forceinline__ FinishedRow FinishRow(float row_max, float quad_partial_sum) {
  constexpr float kLn2 = 0.6931471805599453f;
  const float total = WarpQuadSum(quad_partial_sum);
  if (total > 0.f) return {1.f / total, (row_max + log2f(total)) * kLn2};
  return {0.f, -INFINITY};
}

// O[index], O[index + 1] = x0, x1 in p.out_dtype (the epilogue of both attention kernels).
__device__ __forceinline__ void StoreOutputPair(const AttentionParams& p, int64_t index, float x0,
                                                float x1) {
  if (p.out_dtype == DType::kF32) {
    *reinterpret_cast<float2*>(static_cast<float*>(p.o) + index) = make_float2(x0, x1);
  } else if (p.out_dtype == DType::kBF16) {
    *reinterpret_cast<__nv_bfloat162*>(static_cast<__nv_bfloat16*>(p.o) + index) =
        __floats2bfloat162_rn(x0, x1);
  } else {
    *reinterpret_cast<__half2*>(static_cast<__half*>(p.o) + index) = __floats2half2_rn(x0, x1);
  }
}

// Swizzled row-major tile of 16-bit values with kCols columns (kCols/8 16-byte chunks per
// row, at least 8): chunk c of row r lives at chunk c ^ (r % 8), so the 8 rows an ldmatrix
// reads at one logical chunk hit 8 different bank groups.
template <int kCols>
struct SwizzledTile {
  static_assert(kCols % 64 == 0, "rows must hold a multiple of 8 chunks of 16 bytes");
  // Element offset of (row, chunk).
  __device__ __forceinline__ static int Offset(int row, int chunk) {
    return row * kCols + ((chunk ^ (row & 7)) << 3);
  }
};

}  // namespace prefill::cuda::sm80
