// Operands of the estimator's tensor-core GEMM. A value x (fp32 pooled keys, or f16/f32
// queries) becomes hi = bf16(x) and, where the precision asks for it, lo = bf16(x - hi): hi + lo
// carries 16 mantissa bits, so hi*hi + hi*lo + lo*hi accumulated in fp32 give logits within
// ~1e-5 relative of fp32 math; hi alone is plain bf16 (2^-9 relative per operand). bf16
// queries are exact in hi alone. A null lo pointer means: hi only.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/cuda/estimation/estimator_kernels.h"

namespace prefill::cuda {
namespace {

__device__ __forceinline__ void SplitBf16(float x, uint16_t* hi, uint16_t* lo) {
  const __nv_bfloat16 h = __float2bfloat16_rn(x);
  *hi = __bfloat16_as_ushort(h);
  if (lo) *lo = __bfloat16_as_ushort(__float2bfloat16_rn(x - __bfloat162float(h)));
}

// Eight consecutive values -> one 16-byte chunk of hi [and of lo].
__device__ __forceinline__ void SplitStore8(const float (&x)[8], uint16_t* hi, uint16_t* lo) {
  uint16_t h[8], l[8];
#pragma unroll
  for (int k = 0; k < 8; ++k) SplitBf16(x[k], h + k, l + k);
  *reinterpret_cast<uint4*>(hi) = *reinterpret_cast<const uint4*>(h);
  if (lo) *reinterpret_cast<uint4*>(lo) = *reinterpret_cast<const uint4*>(l);
}

// pooled [num_strides][hkv][D] fp32 -> k_hi/k_lo [hkv][num_strides][D], 8 values a thread.
__global__ void __launch_bounds__(256)
    SplitPooledKeysKernel(const float* __restrict__ pooled, int num_strides, int hkv, int dim,
                          bool aligned, uint16_t* __restrict__ k_hi, uint16_t* __restrict__ k_lo) {
  const int chunks = dim / 8;
  const int64_t total = static_cast<int64_t>(num_strides) * hkv * chunks;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t jg = idx / chunks;
    const int c = static_cast<int>(idx - jg * chunks);
    const int64_t j = jg / hkv;
    const int g = static_cast<int>(jg - j * hkv);
    const float* src = pooled + jg * dim + c * 8;
    float x[8];
    if (aligned) {
      const float4 a = reinterpret_cast<const float4*>(src)[0],
                   b = reinterpret_cast<const float4*>(src)[1];
      x[0] = a.x, x[1] = a.y, x[2] = a.z, x[3] = a.w, x[4] = b.x, x[5] = b.y, x[6] = b.z,
      x[7] = b.w;
    } else {
#pragma unroll
      for (int k = 0; k < 8; ++k) x[k] = src[k];
    }
    const int64_t out = (static_cast<int64_t>(g) * num_strides + j) * dim + c * 8;
    SplitStore8(x, k_hi + out, k_lo ? k_lo + out : nullptr);
  }
}

template <typename T>
__device__ __forceinline__ float LoadF32(const T* p) {
  if constexpr (std::is_same_v<T, float>) {
    return *p;
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __bfloat162float(*p);
  } else {
    return __half2float(*p);
  }
}

// Sampled query of (head h, local query block qb, stride i): local row qb*B + i*S + (h % S)
// (offset 0 for every head when !rotate_offsets).
template <typename T>
__global__ void __launch_bounds__(256)
    GatherSampledQueriesKernel(const T* __restrict__ q, int64_t q_row_stride, int64_t q_head_stride,
                               const EstimatorShape shape, int q_block_begin, int chunk_rows,
                               uint16_t* __restrict__ q_hi, uint16_t* __restrict__ q_lo) {
  const int dim = shape.head_dim;
  const int chunks = dim / 8;
  const int64_t total = static_cast<int64_t>(shape.hkv) * chunk_rows * chunks;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t gt = idx / chunks;
    const int c = static_cast<int>(idx - gt * chunks);
    const int g = static_cast<int>(gt / chunk_rows);
    const int t = static_cast<int>(gt - static_cast<int64_t>(g) * chunk_rows);
    const int i = t % shape.rows_per_block;
    const int head_in_group = (t / shape.rows_per_block) % shape.group;
    const int qb = q_block_begin + t / (shape.rows_per_block * shape.group);
    const int h = g * shape.group + head_in_group;
    const int64_t row = static_cast<int64_t>(qb) * shape.block_size + i * shape.stride +
                        (shape.rotate_offsets ? h % shape.stride : 0);
    const T* src = q + row * q_row_stride + static_cast<int64_t>(h) * q_head_stride + c * 8;
    float x[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) x[k] = LoadF32(src + k);
    SplitStore8(x, q_hi + gt * dim + c * 8, q_lo ? q_lo + gt * dim + c * 8 : nullptr);
  }
}

unsigned GridFor(int64_t total, int sm_count) {
  const int64_t want = (total + 255) / 256;
  const int64_t cap = static_cast<int64_t>(sm_count) * 32;
  const int64_t blocks = want < cap ? want : cap;
  return static_cast<unsigned>(blocks > 0 ? blocks : 1);
}

}  // namespace

cudaError_t LaunchSplitPooledKeys(const float* pooled, const EstimatorShape& shape, uint16_t* k_hi,
                                  uint16_t* k_lo, int sm_count, cudaStream_t stream) {
  const int64_t total = static_cast<int64_t>(shape.num_strides) * shape.hkv * shape.head_dim / 8;
  SplitPooledKeysKernel<<<GridFor(total, sm_count), 256, 0, stream>>>(
      pooled, shape.num_strides, shape.hkv, shape.head_dim,
      reinterpret_cast<uintptr_t>(pooled) % 16 == 0, k_hi, k_lo);
  return cudaGetLastError();
}

cudaError_t LaunchGatherSampledQueries(DType dtype, const void* q, int64_t q_row_stride,
                                       int64_t q_head_stride, const EstimatorShape& shape,
                                       int q_block_begin, int q_block_end, uint16_t* q_hi,
                                       uint16_t* q_lo, int sm_count, cudaStream_t stream) {
  const int chunk_rows = (q_block_end - q_block_begin) * shape.group * shape.rows_per_block;
  const int64_t total = static_cast<int64_t>(shape.hkv) * chunk_rows * shape.head_dim / 8;
  const unsigned grid = GridFor(total, sm_count);
  switch (dtype) {
    case DType::kF32:
      GatherSampledQueriesKernel<float>
          <<<grid, 256, 0, stream>>>(static_cast<const float*>(q), q_row_stride, q_head_stride,
                                     shape, q_block_begin, chunk_rows, q_hi, q_lo);
      break;
    case DType::kBF16:
      GatherSampledQueriesKernel<__nv_bfloat16>
          <<<grid, 256, 0, stream>>>(static_cast<const __nv_bfloat16*>(q), q_row_stride,
                                     q_head_stride, shape, q_block_begin, chunk_rows, q_hi, q_lo);
      break;
    case DType::kF16:
      GatherSampledQueriesKernel<__half>
          <<<grid, 256, 0, stream>>>(static_cast<const __half*>(q), q_row_stride, q_head_stride,
                                     shape, q_block_begin, chunk_rows, q_hi, q_lo);
      break;
  }
  return cudaGetLastError();
}

}  // namespace prefill::cuda
