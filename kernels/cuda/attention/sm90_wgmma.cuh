// Warpgroup MMA (sm_90a wgmma.mma_async) wrappers used by the sm90 attention kernel, and
// the shared-memory matrix descriptors they take. Each wrapper is one instruction, written
// once for bf16 and f16 (the long operand lists are macros):
//   WgmmaSS<N>: D[64 x N] (+)= A[64 x 16] (smem, K-major) * B[16 x N] (smem, K-major), used
//               for S = Q K^T with N = 128 keys;
//   WgmmaRS<N>: D[64 x N] (+)= A[64 x 16] (registers) * B[16 x N] (smem, MN-major, i.e.
//               transposed: V rows are keys, N = head dim contiguous), used for O += P V.
// scale_d = 0 overwrites D (first k-step), 1 accumulates. Compiled only for sm_90a.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace prefill::cuda::sm90 {

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define PREFILL_SM90A_ENABLED 1
#endif

// Shared-memory matrix descriptor (PTX ISA "Matrix Descriptor Format"): start address,
// leading and stride byte offsets (all >> 4), swizzle mode in bits 62-63 (1 = 128-byte).
// Tiles are 1024-byte aligned, so the base-offset field stays 0.
__device__ __forceinline__ uint64_t MakeSmemDesc(uint32_t smem_addr, uint32_t leading_bytes,
                                                 uint32_t stride_bytes) {
  uint64_t desc = 0;
  desc |= static_cast<uint64_t>((smem_addr & 0x3FFFF) >> 4);
  desc |= static_cast<uint64_t>((leading_bytes >> 4) & 0x3FFF) << 16;
  desc |= static_cast<uint64_t>((stride_bytes >> 4) & 0x3FFF) << 32;
  desc |= uint64_t{1} << 62;  // SWIZZLE_128B
  return desc;
}

__device__ __forceinline__ void WgmmaFence() {
#ifdef PREFILL_SM90A_ENABLED
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void WgmmaCommit() {
#ifdef PREFILL_SM90A_ENABLED
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int kPending>
__device__ __forceinline__ void WgmmaWait() {
#ifdef PREFILL_SM90A_ENABLED
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
#endif
}
// Keeps the compiler from moving register reads/writes of an accumulator across the async MMA.
template <int kN>
__device__ __forceinline__ void FenceOperands(float (&d)[kN]) {
#pragma unroll
  for (int i = 0; i < kN; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
template <int kN>
__device__ __forceinline__ void FenceOperands(uint32_t (&d)[kN]) {
#pragma unroll
  for (int i = 0; i < kN; ++i) asm volatile("" : "+r"(d[i])::"memory");
}

// The accumulator operands of an m64nN wgmma (N / 2 floats per thread), in register order,
// and the matching "{%0, ..., %K}" list: shared by the bf16 and f16 forms of each shape.
// clang-format off
#define PREFILL_WGMMA_D32_REGS "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define PREFILL_WGMMA_D64_REGS "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
#define PREFILL_WGMMA_D32(d) "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
#define PREFILL_WGMMA_D64(d) PREFILL_WGMMA_D32(d), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
// clang-format on

// The PTX type of an element ("bf16" or "f16"), spliced into the instruction string.
#define PREFILL_WGMMA_TYPE(T) "." T "." T " "

template <typename Element>
__device__ __forceinline__ void WgmmaSS128(float (&d)[64], uint64_t desc_a, uint64_t desc_b,
                                           int scale_d) {
#ifdef PREFILL_SM90A_ENABLED
#define PREFILL_WGMMA_SS128(T)                                                                   \
  asm volatile(                                                                                  \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"                                               \
      "wgmma.mma_async.sync.aligned.m64n128k16.f32" PREFILL_WGMMA_TYPE(T) PREFILL_WGMMA_D64_REGS \
      ", %64, %65, p, 1, 1, 0, 0;\n}\n"                                                          \
      : PREFILL_WGMMA_D64(d)                                                                     \
      : "l"(desc_a), "l"(desc_b), "r"(scale_d))
  if constexpr (std::is_same_v<Element, __nv_bfloat16>) {
    PREFILL_WGMMA_SS128("bf16");
  } else {
    PREFILL_WGMMA_SS128("f16");
  }
#undef PREFILL_WGMMA_SS128
#endif
}

// RS: A from registers; scale_a = 1, scale_b = 1, B transposed (tnspB = 1).
template <typename Element>
__device__ __forceinline__ void WgmmaRS64(float (&d)[32], const uint32_t (&a)[4], uint64_t desc_b,
                                          int scale_d) {
#ifdef PREFILL_SM90A_ENABLED
#define PREFILL_WGMMA_RS64(T)                                                                   \
  asm volatile(                                                                                 \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"                                              \
      "wgmma.mma_async.sync.aligned.m64n64k16.f32" PREFILL_WGMMA_TYPE(T) PREFILL_WGMMA_D32_REGS \
      ", {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"                                           \
      : PREFILL_WGMMA_D32(d)                                                                    \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d))
  if constexpr (std::is_same_v<Element, __nv_bfloat16>) {
    PREFILL_WGMMA_RS64("bf16");
  } else {
    PREFILL_WGMMA_RS64("f16");
  }
#undef PREFILL_WGMMA_RS64
#endif
}

template <typename Element>
__device__ __forceinline__ void WgmmaRS128(float (&d)[64], const uint32_t (&a)[4], uint64_t desc_b,
                                           int scale_d) {
#ifdef PREFILL_SM90A_ENABLED
#define PREFILL_WGMMA_RS128(T)                                                                   \
  asm volatile(                                                                                  \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"                                               \
      "wgmma.mma_async.sync.aligned.m64n128k16.f32" PREFILL_WGMMA_TYPE(T) PREFILL_WGMMA_D64_REGS \
      ", {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"                                            \
      : PREFILL_WGMMA_D64(d)                                                                     \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d))
  if constexpr (std::is_same_v<Element, __nv_bfloat16>) {
    PREFILL_WGMMA_RS128("bf16");
  } else {
    PREFILL_WGMMA_RS128("f16");
  }
#undef PREFILL_WGMMA_RS128
#endif
}

}  // namespace prefill::cuda::sm90
