// Key pooling: pooled[j, g, e] = sum over t < stride of k[(j*stride + t), g, e], fp32 sums in
// ascending t (the CPU's order, so results match it bitwise). One thread per output element;
// consecutive threads read consecutive e, so each key row is read coalesced. Heavy keys
// (rr+heavy): one warp per (block, KV head), lane l scoring keys l, l + 32, ... with the CPU's
// fp64 operations in the CPU's order (no contraction), so both pick the same key.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/key_pooling.h"

namespace prefill::cuda {
namespace {

template <typename T>
__device__ __forceinline__ float ToF32(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return x;
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __bfloat162float(x);
  } else {
    return __half2float(x);
  }
}

// k: [lk, hkv, head_dim] (row stride k_row_stride); pooled: [lk/stride, hkv, head_dim] fp32.
template <typename T>
__global__ void __launch_bounds__(256) PoolKeysKernel(const PoolKeysParams p) {
  const int64_t per_stride = static_cast<int64_t>(p.hkv) * p.head_dim;
  const int64_t total = static_cast<int64_t>(p.lk / p.stride) * per_stride;
  const T* k = static_cast<const T*>(p.k);
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t j = idx / per_stride;
    const int64_t ge = idx - j * per_stride;  // g * head_dim + e
    const T* src = k + j * p.stride * p.k_row_stride + ge;
    float acc = 0.f;
    for (int t = 0; t < p.stride; ++t) acc += ToF32(src[t * p.k_row_stride]);
    p.pooled[idx] = acc;
  }
}

// heavy[b, g, :] = the key of block b farthest from its stride's mean (pooled must be complete).
template <typename T>
__global__ void __launch_bounds__(256) HeavyKeysKernel(const PoolKeysParams p) {
  const int64_t item = blockIdx.x * int64_t{8} + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (item >= static_cast<int64_t>(p.lk / p.block_size) * p.hkv) return;
  const int64_t b = item / p.hkv;
  const int g = static_cast<int>(item - b * p.hkv);
  const int64_t width = static_cast<int64_t>(p.hkv) * p.head_dim;
  const T* k = static_cast<const T*>(p.k);
  double best = -1;
  int64_t best_t = 0;
  for (int64_t t = b * p.block_size + lane; t < (b + 1) * p.block_size; t += 32) {
    const T* key = k + t * p.k_row_stride + g * p.head_dim;
    const float* mean_sum = p.pooled + (t / p.stride) * width + g * p.head_dim;
    double dev = 0;
    for (int e = 0; e < p.head_dim; ++e) {
      const double d = __dsub_rn(ToF32(key[e]), __ddiv_rn(mean_sum[e], p.stride));
      dev = __dadd_rn(dev, __dmul_rn(d, d));
    }
    if (dev > best) {
      best = dev;
      best_t = t;
    }
  }
#pragma unroll
  for (int offset = 16; offset >= 1; offset /= 2) {  // the largest, the first key on ties
    const double other = __shfl_xor_sync(0xffffffffu, best, offset);
    const int64_t other_t = __shfl_xor_sync(0xffffffffu, best_t, offset);
    if (other > best || (other == best && other_t < best_t)) {
      best = other;
      best_t = other_t;
    }
  }
  for (int e = lane; e < p.head_dim; e += 32) {
    p.heavy[item * p.head_dim + e] = ToF32(k[best_t * p.k_row_stride + g * p.head_dim + e]);
  }
}

template <typename T>
cudaError_t LaunchPoolKeys(const PoolKeysParams& p, int sm_count, cudaStream_t stream) {
  const int64_t total = static_cast<int64_t>(p.lk / p.stride) * p.hkv * p.head_dim;
  const int64_t want = (total + 255) / 256;
  const int64_t cap = static_cast<int64_t>(sm_count) * 16;
  const int blocks = static_cast<int>(want < cap ? want : cap);
  PoolKeysKernel<T><<<(blocks > 0 ? blocks : 1), 256, 0, stream>>>(p);
  if (p.heavy != nullptr) {
    const int64_t items = static_cast<int64_t>(p.lk / p.block_size) * p.hkv;
    if (items > 0)
      HeavyKeysKernel<T><<<static_cast<unsigned>((items + 7) / 8), 256, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

}  // namespace

absl::Status PoolKeys(const PoolKeysParams& p, const DeviceContext& ctx) {
  if (p.k == nullptr || p.pooled == nullptr) {
    return absl::InvalidArgumentError("PoolKeysParams: null k or pooled");
  }
  if (p.stride <= 0 || p.lk < 0 || p.lk % p.stride != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "PoolKeysParams: lk (", p.lk, ") must be a multiple of stride (", p.stride, ")"));
  }
  if (p.hkv <= 0 || p.head_dim <= 0) {
    return absl::InvalidArgumentError("PoolKeysParams: hkv and head_dim must be positive");
  }
  if (p.k_row_stride < static_cast<int64_t>(p.hkv) * p.head_dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("PoolKeysParams.k_row_stride (", p.k_row_stride, ") < hkv * head_dim"));
  }
  if (p.heavy != nullptr &&
      (p.block_size < p.stride || p.block_size % p.stride != 0 || p.lk % p.block_size != 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("PoolKeysParams: heavy keys need block_size (", p.block_size,
                     ") a multiple of stride dividing lk (", p.lk, ")"));
  }
  if (p.lk == 0) return absl::OkStatus();
  switch (p.dtype) {
    case DType::kF32:
      CUDA_CHECK(LaunchPoolKeys<float>(p, ctx.sm_count, ctx.stream));
      break;
    case DType::kBF16:
      CUDA_CHECK(LaunchPoolKeys<__nv_bfloat16>(p, ctx.sm_count, ctx.stream));
      break;
    case DType::kF16:
      CUDA_CHECK(LaunchPoolKeys<__half>(p, ctx.sm_count, ctx.stream));
      break;
  }
  return absl::OkStatus();
}

}  // namespace prefill::cuda
