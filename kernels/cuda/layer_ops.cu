// The dense layer kernels of the CUDA LayerBackend. All are memory-bound: each reads and writes
// its tensors once, 16 bytes per access (float4) when the pointers and row lengths allow it, in
// grid-stride loops over a grid of a few blocks per SM.
//   RMSNorm: one block per row, fp32 sum of squares (per-thread partials, warp shuffles, then
//            the warps' partials), then y = x * (1 / sqrt(mean + eps)) * weight.
//   RoPE:    one block per row; the row's cos/sin table (angles in double, rounded to fp32
//            once) goes to shared memory and is reused by every head of the row.
//   SwiGLU, Add, bias add, fp32 -> bf16: elementwise.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/layer_ops.h"

namespace prefill::cuda {
namespace {

constexpr int kRowThreads = 256;          // RMSNorm and RoPE: threads per row block
constexpr int kElementwiseThreads = 256;  // SwiGLU, Add, bias add, conversion
constexpr int kBlocksPerSm = 8;

bool Aligned(const void* ptr, uintptr_t bytes) {
  return reinterpret_cast<uintptr_t>(ptr) % bytes == 0;
}

// Blocks for `work` items of `threads` per block: enough to cover the work once, at most
// kBlocksPerSm per SM (the loops stride over the rest).
unsigned GridFor(int64_t work, int threads, const DeviceContext& ctx) {
  const int64_t want = (work + threads - 1) / threads;
  const int64_t cap = int64_t{std::max(ctx.sm_count, 1)} * kBlocksPerSm;
  return static_cast<unsigned>(std::clamp<int64_t>(want, 1, cap));
}

// Sum over the block of every thread's v; every thread gets the total. warp_sums is reused by
// the next call once all threads have returned from this one.
__device__ float BlockSum(float v, float* warp_sums /* [kRowThreads / 32] */) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  v = lane < kRowThreads / 32 ? warp_sums[lane] : 0.f;
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  __syncthreads();
  return v;
}

// x, y: [rows, features]; y may be x (each element is read and written by one thread, and all
// reads of the first pass finish at BlockSum's barrier).
template <bool kVec4>
__global__ void __launch_bounds__(kRowThreads) RmsNormKernel(const RmsNormParams p) {
  __shared__ float warp_sums[kRowThreads / 32];
  for (int64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    const float* x = p.x + row * p.features;
    float* y = p.y + row * p.features;
    float sum = 0.f;
    if constexpr (kVec4) {
      const int64_t quads = p.features / 4;
      for (int64_t i = threadIdx.x; i < quads; i += kRowThreads) {
        const float4 v = reinterpret_cast<const float4*>(x)[i];
        sum += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
      }
    } else {
      for (int64_t i = threadIdx.x; i < p.features; i += kRowThreads) sum += x[i] * x[i];
    }
    sum = BlockSum(sum, warp_sums);
    const float inv = 1.f / sqrtf(sum / static_cast<float>(p.features) + p.eps);
    if constexpr (kVec4) {
      const int64_t quads = p.features / 4;
      for (int64_t i = threadIdx.x; i < quads; i += kRowThreads) {
        const float4 v = reinterpret_cast<const float4*>(x)[i];
        const float4 w = reinterpret_cast<const float4*>(p.weight)[i];
        reinterpret_cast<float4*>(y)[i] =
            make_float4(v.x * inv * w.x, v.y * inv * w.y, v.z * inv * w.z, v.w * inv * w.w);
      }
    } else {
      for (int64_t i = threadIdx.x; i < p.features; i += kRowThreads)
        y[i] = x[i] * inv * p.weight[i];
    }
  }
}

// sin and cos of a double angle, |angle| up to ~1e15. position * inv_freq reaches ~1e6 rad at a
// million tokens: the angle and its reduction stay in double, only the finished cos/sin are
// rounded to fp32 by the caller. sincos() would do, but its Payne-Hanek path for huge arguments
// keeps a table in local memory (a ptxas warning in every build); instead a two-constant
// Cody-Waite step reduces to r in [-pi, pi] (the fma makes angle - k * kTwoPiHi exact, so r
// is within a few 1e-16 of the double angle mod 2 pi), then sincospi(r / pi) has no reduction
// left to do.
__device__ void SinCosDouble(double angle, double* s, double* c) {
  constexpr double kTwoPiHi = 6.283185307179586232;    // 2 pi rounded to double
  constexpr double kTwoPiLo = 2.4492935982947064e-16;  // 2 pi - kTwoPiHi
  constexpr double kInvTwoPi = 0.15915494309189535;
  constexpr double kInvPi = 0.3183098861837907;
  const double k = rint(angle * kInvTwoPi);
  double r = fma(-k, kTwoPiHi, angle);
  r = fma(-k, kTwoPiLo, r);
  sincospi(r * kInvPi, s, c);
}

// x: [rows, heads, head_dim], rotated in place. Dynamic shared memory: cos [half], sin [half].
// kVec4: half % 4 == 0 and x 16-byte aligned, so every (head, i..i+3) slice is aligned.
template <bool kVec4>
__global__ void __launch_bounds__(kRowThreads) RopeKernel(const RopeParams p) {
  extern __shared__ float4 rope_table[];
  const int half = p.head_dim / 2;
  float* cos_t = reinterpret_cast<float*>(rope_table);
  float* sin_t = cos_t + half;
  const int row_elems = p.heads * p.head_dim;  // fits in int: checked by the entry
  for (int64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    const double position = static_cast<double>(p.positions[row]);
    for (int i = threadIdx.x; i < half; i += kRowThreads) {
      double s, c;
      SinCosDouble(position * p.inv_freq[i], &s, &c);
      cos_t[i] = static_cast<float>(c);
      sin_t[i] = static_cast<float>(s);
    }
    __syncthreads();
    float* x = p.x + row * row_elems;
    if constexpr (kVec4) {
      const int quads = half / 4;
      const int work = p.heads * quads;
      for (int w = threadIdx.x; w < work; w += kRowThreads) {
        const int h = w / quads;
        const int i = (w - h * quads) * 4;
        float4* lo = reinterpret_cast<float4*>(x + h * p.head_dim + i);
        float4* hi = reinterpret_cast<float4*>(x + h * p.head_dim + half + i);
        const float4 a = *lo, b = *hi;
        const float4 c = *reinterpret_cast<const float4*>(cos_t + i);
        const float4 s = *reinterpret_cast<const float4*>(sin_t + i);
        *lo = make_float4(a.x * c.x - b.x * s.x, a.y * c.y - b.y * s.y, a.z * c.z - b.z * s.z,
                          a.w * c.w - b.w * s.w);
        *hi = make_float4(b.x * c.x + a.x * s.x, b.y * c.y + a.y * s.y, b.z * c.z + a.z * s.z,
                          b.w * c.w + a.w * s.w);
      }
    } else {
      const int work = p.heads * half;
      for (int w = threadIdx.x; w < work; w += kRowThreads) {
        const int h = w / half;
        const int i = w - h * half;
        float* v = x + h * p.head_dim;
        const float a = v[i], b = v[i + half];
        v[i] = a * cos_t[i] - b * sin_t[i];
        v[i + half] = b * cos_t[i] + a * sin_t[i];
      }
    }
    __syncthreads();  // the table is rewritten for the next row
  }
}

__device__ float SiluTimes(float g, float u) { return g / (1.f + expf(-g)) * u; }

// gate, up: [n]; up may be gate.
template <bool kVec4>
__global__ void __launch_bounds__(kElementwiseThreads) SwiGluKernel(const SwiGluParams p) {
  const int64_t start = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  int64_t done = 0;
  if constexpr (kVec4) {
    const int64_t quads = p.n / 4;
    for (int64_t i = start; i < quads; i += stride) {
      const float4 g = reinterpret_cast<const float4*>(p.gate)[i];
      const float4 u = reinterpret_cast<const float4*>(p.up)[i];
      reinterpret_cast<float4*>(p.gate)[i] = make_float4(SiluTimes(g.x, u.x), SiluTimes(g.y, u.y),
                                                         SiluTimes(g.z, u.z), SiluTimes(g.w, u.w));
    }
    done = quads * 4;
  }
  for (int64_t i = done + start; i < p.n; i += stride) p.gate[i] = SiluTimes(p.gate[i], p.up[i]);
}

// acc, x: [n]; x may be acc.
template <bool kVec4>
__global__ void __launch_bounds__(kElementwiseThreads) AddKernel(const AddParams p) {
  const int64_t start = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  int64_t done = 0;
  if constexpr (kVec4) {
    const int64_t quads = p.n / 4;
    for (int64_t i = start; i < quads; i += stride) {
      const float4 a = reinterpret_cast<const float4*>(p.acc)[i];
      const float4 b = reinterpret_cast<const float4*>(p.x)[i];
      reinterpret_cast<float4*>(p.acc)[i] = make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
    }
    done = quads * 4;
  }
  for (int64_t i = done + start; i < p.n; i += stride) p.acc[i] += p.x[i];
}

// y: [rows, cols] += bias [cols]. blockIdx.y strides over rows, x over the row's columns (in
// float4 units when kVec4: cols % 4 == 0 and both pointers 16-byte aligned).
template <bool kVec4>
__global__ void __launch_bounds__(kElementwiseThreads) BiasAddKernel(const BiasAddParams p) {
  const int64_t units = kVec4 ? p.cols / 4 : p.cols;
  for (int64_t row = blockIdx.y; row < p.rows; row += gridDim.y) {
    for (int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; c < units;
         c += int64_t{gridDim.x} * blockDim.x) {
      if constexpr (kVec4) {
        float4* y = reinterpret_cast<float4*>(p.y + row * p.cols) + c;
        const float4 b = reinterpret_cast<const float4*>(p.bias)[c];
        const float4 v = *y;
        *y = make_float4(v.x + b.x, v.y + b.y, v.z + b.z, v.w + b.w);
      } else {
        p.y[row * p.cols + c] += p.bias[c];
      }
    }
  }
}

// Out: __nv_bfloat16 or __half. kVec4: src 16-byte and dst 4-byte aligned; four values in,
// two pairs out.
template <typename Out>
struct PairOf;
template <>
struct PairOf<__nv_bfloat16> {
  using type = __nv_bfloat162;
  static __device__ type Make(float a, float b) { return __floats2bfloat162_rn(a, b); }
  static __device__ __nv_bfloat16 One(float a) { return __float2bfloat16_rn(a); }
};
template <>
struct PairOf<__half> {
  using type = __half2;
  static __device__ type Make(float a, float b) { return __floats2half2_rn(a, b); }
  static __device__ __half One(float a) { return __float2half_rn(a); }
};

template <typename Out, bool kVec4>
__global__ void __launch_bounds__(kElementwiseThreads)
    ConvertFromF32Kernel(const float* __restrict__ src, Out* __restrict__ dst, int64_t n) {
  using Pair = PairOf<Out>;
  const int64_t start = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  int64_t done = 0;
  if constexpr (kVec4) {
    const int64_t quads = n / 4;
    for (int64_t i = start; i < quads; i += stride) {
      const float4 v = reinterpret_cast<const float4*>(src)[i];
      typename Pair::type* out = reinterpret_cast<typename Pair::type*>(dst) + 2 * i;
      out[0] = Pair::Make(v.x, v.y);
      out[1] = Pair::Make(v.z, v.w);
    }
    done = quads * 4;
  }
  for (int64_t i = done + start; i < n; i += stride) dst[i] = Pair::One(src[i]);
}

// Runs launch(std::true_type) -- the float4 variant of a kernel -- when vec4, else
// launch(std::false_type), and checks the launch.
template <typename Launch>
absl::Status LaunchVectorised(bool vec4, Launch&& launch) {
  if (vec4) {
    launch(std::true_type{});
  } else {
    launch(std::false_type{});
  }
  CUDA_CHECK(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace

absl::Status LaunchRmsNorm(const RmsNormParams& p, const DeviceContext& ctx) {
  if (p.rows == 0) return absl::OkStatus();
  const unsigned grid = GridFor(p.rows, 1, ctx);  // one block per row
  const bool vec4 =
      p.features % 4 == 0 && Aligned(p.x, 16) && Aligned(p.y, 16) && Aligned(p.weight, 16);
  return LaunchVectorised(vec4, [&](auto v) { RmsNormKernel<decltype(v)::value><<<grid, kRowThreads, 0, ctx.stream>>>(p); });
}

absl::Status LaunchRope(const RopeParams& p, const DeviceContext& ctx) {
  if (p.rows == 0) return absl::OkStatus();
  const unsigned grid = GridFor(p.rows, 1, ctx);  // one block per row
  const size_t smem = static_cast<size_t>(p.head_dim) * sizeof(float);
  const bool vec4 = (p.head_dim / 2) % 4 == 0 && Aligned(p.x, 16);
  return LaunchVectorised(vec4, [&](auto v) { RopeKernel<decltype(v)::value><<<grid, kRowThreads, smem, ctx.stream>>>(p); });
}

absl::Status LaunchSwiGlu(const SwiGluParams& p, const DeviceContext& ctx) {
  if (p.n == 0) return absl::OkStatus();
  const bool vec4 = Aligned(p.gate, 16) && Aligned(p.up, 16);
  const unsigned grid = GridFor(vec4 ? p.n / 4 : p.n, kElementwiseThreads, ctx);
  return LaunchVectorised(vec4, [&](auto v) { SwiGluKernel<decltype(v)::value><<<grid, kElementwiseThreads, 0, ctx.stream>>>(p); });
}

absl::Status LaunchAdd(const AddParams& p, const DeviceContext& ctx) {
  if (p.n == 0) return absl::OkStatus();
  const bool vec4 = Aligned(p.acc, 16) && Aligned(p.x, 16);
  const unsigned grid = GridFor(vec4 ? p.n / 4 : p.n, kElementwiseThreads, ctx);
  return LaunchVectorised(vec4, [&](auto v) { AddKernel<decltype(v)::value><<<grid, kElementwiseThreads, 0, ctx.stream>>>(p); });
}

absl::Status LaunchBiasAdd(const BiasAddParams& p, const DeviceContext& ctx) {
  if (p.rows == 0 || p.cols == 0) return absl::OkStatus();
  const bool vec4 = p.cols % 4 == 0 && Aligned(p.y, 16) && Aligned(p.bias, 16);
  const int64_t units = vec4 ? p.cols / 4 : p.cols;
  // Enough x-blocks to cover a row, rows spread over y; the total stays near GridFor's cap.
  const int64_t x_blocks = (units + kElementwiseThreads - 1) / kElementwiseThreads;
  const int64_t cap = int64_t{std::max(ctx.sm_count, 1)} * kBlocksPerSm;
  const int64_t y_blocks = std::clamp<int64_t>(cap / x_blocks, 1, std::min<int64_t>(p.rows, 65535));
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>(x_blocks, cap)),
                  static_cast<unsigned>(y_blocks));
  return LaunchVectorised(vec4, [&](auto v) { BiasAddKernel<decltype(v)::value><<<grid, kElementwiseThreads, 0, ctx.stream>>>(p); });
}

absl::Status LaunchConvertFromF32(const ConvertFromF32Params& p, const DeviceContext& ctx) {
  if (p.n == 0) return absl::OkStatus();
  if (p.dtype == DType::kF32) {
    CUDA_CHECK(cudaMemcpyAsync(p.dst, p.src, p.n * sizeof(float), cudaMemcpyDeviceToDevice, ctx.stream));
    return absl::OkStatus();
  }
  const bool vec4 = Aligned(p.src, 16) && Aligned(p.dst, 4);
  const unsigned grid = GridFor(vec4 ? p.n / 4 : p.n, kElementwiseThreads, ctx);
  auto launch = [&](auto* dst) {
    using Out = std::remove_pointer_t<decltype(dst)>;
    return LaunchVectorised(vec4, [&](auto v) {
      ConvertFromF32Kernel<Out, decltype(v)::value><<<grid, kElementwiseThreads, 0, ctx.stream>>>(p.src, dst, p.n);
    });
  };
  if (p.dtype == DType::kF16) return launch(static_cast<__half*>(p.dst));
  return launch(static_cast<__nv_bfloat16*>(p.dst));
}

}  // namespace prefill::cuda
