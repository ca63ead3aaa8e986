// The dense layer kernels of the CUDA LayerBackend. All are memory-bound: each reads and writes
// its tensors once, four values per access (16 bytes of fp32, 8 of bf16) when the pointers and
// row lengths allow it, in grid-stride loops over a grid of a few blocks per SM. Activations are
// fp32 or bf16 (one template per dtype); the arithmetic is fp32.
//   RMSNorm: one block per row, fp32 sum of squares (per-thread partials, warp shuffles, then
//            the warps' partials), then y = x * (1 / sqrt(mean + eps)) * weight.
//   QKV split: one block per row; the row's cos/sin table (angles in double, rounded to fp32
//            once) goes to shared memory and is reused by every q and k head of the row.
//   SwiGLU, embedding gather, bias add, dtype conversion: elementwise.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/layer_ops.h"

namespace prefill::cuda {
namespace {

constexpr int kRowThreads = 256;          // RMSNorm and the QKV split: threads per row block
constexpr int kElementwiseThreads = 256;  // SwiGLU, bias add, conversion
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

// Four consecutive values of T as fp32, and back (round to nearest even). kAlign: the
// alignment of a four-value access.
template <typename T>
struct Quad;
template <>
struct Quad<float> {
  static constexpr uintptr_t kAlign = 16;
  static __device__ float4 Load(const float* p) { return *reinterpret_cast<const float4*>(p); }
  static __device__ void Store(float* p, float4 v) { *reinterpret_cast<float4*>(p) = v; }
  static __device__ float One(float v) { return v; }
  static __device__ float ToFloat(float v) { return v; }
};
template <>
struct Quad<__nv_bfloat16> {
  static constexpr uintptr_t kAlign = 8;
  static __device__ float4 Load(const __nv_bfloat16* p) {
    const uint2 raw = *reinterpret_cast<const uint2*>(p);
    const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.x));
    const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.y));
    return make_float4(a.x, a.y, b.x, b.y);
  }
  static __device__ void Store(__nv_bfloat16* p, float4 v) {
    __nv_bfloat162* out = reinterpret_cast<__nv_bfloat162*>(p);
    out[0] = __floats2bfloat162_rn(v.x, v.y);
    out[1] = __floats2bfloat162_rn(v.z, v.w);
  }
  static __device__ __nv_bfloat16 One(float v) { return __float2bfloat16_rn(v); }
  static __device__ float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }
};
template <>
struct Quad<__half> {
  static constexpr uintptr_t kAlign = 8;
  static __device__ void Store(__half* p, float4 v) {
    __half2* out = reinterpret_cast<__half2*>(p);
    out[0] = __floats2half2_rn(v.x, v.y);
    out[1] = __floats2half2_rn(v.z, v.w);
  }
  static __device__ __half One(float v) { return __float2half_rn(v); }
};

// x: [rows, features] fp32, y: the same of Out; y may be x when Out is float (each element is
// read and written by one thread, and all reads of the first pass finish at BlockSum's barrier).
template <typename Out, bool kVec4>
__global__ void __launch_bounds__(kRowThreads) RmsNormKernel(const RmsNormParams p) {
  __shared__ float warp_sums[kRowThreads / 32];
  for (int64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    const float* x = p.x + row * p.features;
    Out* y = static_cast<Out*>(p.y) + row * p.features;
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
        Quad<Out>::Store(y + 4 * i, make_float4(v.x * inv * w.x, v.y * inv * w.y, v.z * inv * w.z,
                                                v.w * inv * w.w));
      }
    } else {
      for (int64_t i = threadIdx.x; i < p.features; i += kRowThreads)
        y[i] = Quad<Out>::One(x[i] * inv * p.weight[i]);
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

// qkv: [rows, heads + 2 kv_heads, head_dim] of T -> q and k rotated, v copied. Dynamic shared
// memory: cos [half], sin [half]. kVec4: half % 4 == 0 and every pointer aligned for a
// four-value access, so every (head, i..i+3) slice is.
template <typename T, bool kVec4>
__global__ void __launch_bounds__(kRowThreads) SplitQkvKernel(const QkvSplitParams p) {
  extern __shared__ float4 rope_table[];
  const int half = p.head_dim / 2;
  float* cos_t = reinterpret_cast<float*>(rope_table);
  float* sin_t = cos_t + half;
  const int all_heads =
      p.heads + 2 * p.kv_heads;  // fits in int, as heads * head_dim: checked by the entry
  const int64_t row_in = int64_t{all_heads} * p.head_dim;
  constexpr int kLanes = kVec4 ? 4 : 1;
  const int units = half / kLanes;  // per head
  for (int64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    const double position = static_cast<double>(p.positions[row]);
    for (int i = threadIdx.x; i < half; i += kRowThreads) {
      double s, c;
      SinCosDouble(position * p.inv_freq[i], &s, &c);
      cos_t[i] = static_cast<float>(c);
      sin_t[i] = static_cast<float>(s);
    }
    __syncthreads();
    const T* in = static_cast<const T*>(p.qkv) + row * row_in;
    for (int w = threadIdx.x; w < all_heads * units; w += kRowThreads) {
      const int h = w / units;
      const int i = (w - h * units) * kLanes;
      T* out;
      bool rotate = true;
      if (h < p.heads) {
        out = static_cast<T*>(p.q) + (row * p.heads + h) * p.head_dim;
      } else if (h < p.heads + p.kv_heads) {
        out = static_cast<T*>(p.k) + (row * p.kv_heads + h - p.heads) * p.head_dim;
      } else {
        out = static_cast<T*>(p.v) + (row * p.kv_heads + h - p.heads - p.kv_heads) * p.head_dim;
        rotate = false;
      }
      const T* src = in + int64_t{h} * p.head_dim + i;
      const float* bias = p.bias ? p.bias + int64_t{h} * p.head_dim + i : nullptr;
      if constexpr (kVec4) {
        float4 a = Quad<T>::Load(src), b = Quad<T>::Load(src + half);
        if (bias) {
          const float4 ba = *reinterpret_cast<const float4*>(bias),
                       bb = *reinterpret_cast<const float4*>(bias + half);
          a = make_float4(a.x + ba.x, a.y + ba.y, a.z + ba.z, a.w + ba.w);
          b = make_float4(b.x + bb.x, b.y + bb.y, b.z + bb.z, b.w + bb.w);
        }
        if (!rotate) {
          Quad<T>::Store(out + i, a);
          Quad<T>::Store(out + i + half, b);
          continue;
        }
        const float4 c = *reinterpret_cast<const float4*>(cos_t + i);
        const float4 s = *reinterpret_cast<const float4*>(sin_t + i);
        Quad<T>::Store(out + i, make_float4(a.x * c.x - b.x * s.x, a.y * c.y - b.y * s.y,
                                            a.z * c.z - b.z * s.z, a.w * c.w - b.w * s.w));
        Quad<T>::Store(out + i + half, make_float4(b.x * c.x + a.x * s.x, b.y * c.y + a.y * s.y,
                                                   b.z * c.z + a.z * s.z, b.w * c.w + a.w * s.w));
      } else {
        const float a = Quad<T>::ToFloat(src[0]) + (bias ? bias[0] : 0.f);
        const float b = Quad<T>::ToFloat(src[half]) + (bias ? bias[half] : 0.f);
        out[i] = Quad<T>::One(rotate ? a * cos_t[i] - b * sin_t[i] : a);
        out[i + half] = Quad<T>::One(rotate ? b * cos_t[i] + a * sin_t[i] : b);
      }
    }
    __syncthreads();  // the table is rewritten for the next row
  }
}

// Fast exp and reciprocal (a few ulp, far below bf16's rounding): fewer instructions per
// element in a kernel that should run at memory speed. g -> -inf: exp -> inf,
// reciprocal -> 0, product -> -0, as the exact form gives.
__device__ float SiluTimes(float g, float u) { return g * __frcp_rn(1.f + __expf(-g)) * u; }

// gate, up: rows of n values of T, row r at r * row_stride; up may be gate. blockIdx.y strides
// over rows, x over a row's values (four at a time when kVec4: n and row_stride multiples of 4
// and both pointers aligned for them).
template <typename T, bool kVec4>
__global__ void __launch_bounds__(kElementwiseThreads) SwiGluKernel(const SwiGluParams p) {
  constexpr int kLanes = kVec4 ? 4 : 1;
  const int64_t units = p.n / kLanes;
  const int64_t stride = p.row_stride ? p.row_stride : p.n;
  for (int64_t row = blockIdx.y; row < p.rows; row += gridDim.y) {
    T* gate = static_cast<T*>(p.gate) + row * stride;
    const T* up = static_cast<const T*>(p.up) + row * stride;
    for (int64_t u = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; u < units;
         u += int64_t{gridDim.x} * blockDim.x) {
      if constexpr (kVec4) {
        const float4 g = Quad<T>::Load(gate + 4 * u), v = Quad<T>::Load(up + 4 * u);
        Quad<T>::Store(gate + 4 * u, make_float4(SiluTimes(g.x, v.x), SiluTimes(g.y, v.y),
                                                 SiluTimes(g.z, v.z), SiluTimes(g.w, v.w)));
      } else {
        gate[u] = Quad<T>::One(SiluTimes(Quad<T>::ToFloat(gate[u]), Quad<T>::ToFloat(up[u])));
      }
    }
  }
}

// y[r] = table[ids[r]] (bf16 [vocab, hidden]) as fp32, zeros for an id out of range. kVec4:
// hidden % 4 == 0 and table, y aligned for four-value accesses. blockIdx.y strides over rows.
template <bool kVec4>
__global__ void __launch_bounds__(kElementwiseThreads)
    EmbedKernel(const int32_t* __restrict__ ids, int64_t rows,
                const __nv_bfloat16* __restrict__ table, int64_t vocab, int64_t hidden,
                float* __restrict__ y) {
  constexpr int kLanes = kVec4 ? 4 : 1;
  const int64_t units = hidden / kLanes;
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const int32_t id = ids[row];
    const bool valid = id >= 0 && id < vocab;
    const __nv_bfloat16* src = table + (valid ? id : 0) * hidden;
    float* dst = y + row * hidden;
    for (int64_t u = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; u < units;
         u += int64_t{gridDim.x} * blockDim.x) {
      if constexpr (kVec4) {
        reinterpret_cast<float4*>(dst)[u] =
            valid ? Quad<__nv_bfloat16>::Load(src + 4 * u) : make_float4(0, 0, 0, 0);
      } else {
        dst[u] = valid ? __bfloat162float(src[u]) : 0.f;
      }
    }
  }
}

// A grid of x-blocks covering `units` per row and y-blocks over the rows, near GridFor's cap.
dim3 RowGrid(int64_t units, int64_t rows, const DeviceContext& ctx) {
  const int64_t x_blocks = (units + kElementwiseThreads - 1) / kElementwiseThreads;
  const int64_t cap = int64_t{std::max(ctx.sm_count, 1)} * kBlocksPerSm;
  const int64_t y_blocks =
      std::clamp<int64_t>(cap / std::max<int64_t>(x_blocks, 1), 1, std::min<int64_t>(rows, 65535));
  return dim3(static_cast<unsigned>(std::clamp<int64_t>(x_blocks, 1, cap)),
              static_cast<unsigned>(y_blocks));
}

// y: [rows, cols] of T += bias [cols]. blockIdx.y strides over rows, x over the row's columns
// (in four-value units when kVec4: cols % 4 == 0 and both pointers aligned for them).
template <typename T, bool kVec4>
__global__ void __launch_bounds__(kElementwiseThreads) BiasAddKernel(const BiasAddParams p) {
  const int64_t units = kVec4 ? p.cols / 4 : p.cols;
  for (int64_t row = blockIdx.y; row < p.rows; row += gridDim.y) {
    T* y_row = static_cast<T*>(p.y) + row * p.cols;
    for (int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; c < units;
         c += int64_t{gridDim.x} * blockDim.x) {
      if constexpr (kVec4) {
        const float4 b = reinterpret_cast<const float4*>(p.bias)[c];
        const float4 v = Quad<T>::Load(y_row + 4 * c);
        Quad<T>::Store(y_row + 4 * c, make_float4(v.x + b.x, v.y + b.y, v.z + b.z, v.w + b.w));
      } else {
        y_row[c] = Quad<T>::One(Quad<T>::ToFloat(y_row[c]) + p.bias[c]);
      }
    }
  }
}

template <typename In, typename Out, bool kVec4>
__global__ void __launch_bounds__(kElementwiseThreads)
    ConvertKernel(const In* __restrict__ src, Out* __restrict__ dst, int64_t n) {
  const int64_t start = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  int64_t done = 0;
  if constexpr (kVec4) {
    const int64_t quads = n / 4;
    for (int64_t i = start; i < quads; i += stride)
      Quad<Out>::Store(dst + 4 * i, Quad<In>::Load(src + 4 * i));
    done = quads * 4;
  }
  for (int64_t i = done + start; i < n; i += stride)
    dst[i] = Quad<Out>::One(Quad<In>::ToFloat(src[i]));
}

// Runs launch(std::true_type) -- the four-value variant of a kernel -- when vec4, else
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

// Calls f(T*) with T the element type of an activation dtype (f32 or bf16; the entry checks).
template <typename F>
absl::Status WithActivationType(DType dtype, F&& f) {
  if (dtype == DType::kBF16) return f(static_cast<__nv_bfloat16*>(nullptr));
  return f(static_cast<float*>(nullptr));
}

}  // namespace

absl::Status LaunchRmsNorm(const RmsNormParams& p, const DeviceContext& ctx) {
  if (p.rows == 0) return absl::OkStatus();
  const unsigned grid = GridFor(p.rows, 1, ctx);  // one block per row
  return WithActivationType(p.y_dtype, [&](auto* typed) {
    using Out = std::remove_pointer_t<decltype(typed)>;
    const bool vec4 = p.features % 4 == 0 && Aligned(p.x, 16) && Aligned(p.y, Quad<Out>::kAlign) &&
                      Aligned(p.weight, 16);
    return LaunchVectorised(vec4, [&](auto v) {
      RmsNormKernel<Out, decltype(v)::value><<<grid, kRowThreads, 0, ctx.stream>>>(p);
    });
  });
}

absl::Status LaunchSplitQkv(const QkvSplitParams& p, const DeviceContext& ctx) {
  if (p.rows == 0) return absl::OkStatus();
  const unsigned grid = GridFor(p.rows, 1, ctx);  // one block per row
  const size_t smem = static_cast<size_t>(p.head_dim) * sizeof(float);
  return WithActivationType(p.dtype, [&](auto* typed) {
    using T = std::remove_pointer_t<decltype(typed)>;
    const uintptr_t a = Quad<T>::kAlign;
    const bool vec4 = (p.head_dim / 2) % 4 == 0 && Aligned(p.qkv, a) && Aligned(p.q, a) &&
                      (p.kv_heads == 0 || (Aligned(p.k, a) && Aligned(p.v, a))) &&
                      Aligned(p.bias, 16);
    return LaunchVectorised(vec4, [&](auto v) {
      SplitQkvKernel<T, decltype(v)::value><<<grid, kRowThreads, smem, ctx.stream>>>(p);
    });
  });
}

absl::Status LaunchSwiGlu(const SwiGluParams& p, const DeviceContext& ctx) {
  if (p.n == 0 || p.rows == 0) return absl::OkStatus();
  return WithActivationType(p.dtype, [&](auto* typed) {
    using T = std::remove_pointer_t<decltype(typed)>;
    const bool vec4 = p.n % 4 == 0 && p.row_stride % 4 == 0 && Aligned(p.gate, Quad<T>::kAlign) &&
                      Aligned(p.up, Quad<T>::kAlign);
    const dim3 grid = RowGrid(vec4 ? p.n / 4 : p.n, p.rows, ctx);
    return LaunchVectorised(vec4, [&](auto v) {
      SwiGluKernel<T, decltype(v)::value><<<grid, kElementwiseThreads, 0, ctx.stream>>>(p);
    });
  });
}

absl::Status LaunchEmbed(const EmbedLaunch& p, const DeviceContext& ctx) {
  if (p.rows == 0) return absl::OkStatus();
  const bool vec4 = p.hidden % 4 == 0 && Aligned(p.table, 8) && Aligned(p.y, 16);
  const dim3 grid = RowGrid(vec4 ? p.hidden / 4 : p.hidden, p.rows, ctx);
  const auto* table = static_cast<const __nv_bfloat16*>(p.table);
  return LaunchVectorised(vec4, [&](auto v) {
    EmbedKernel<decltype(v)::value><<<grid, kElementwiseThreads, 0, ctx.stream>>>(
        p.ids, p.rows, table, p.vocab, p.hidden, p.y);
  });
}

absl::Status LaunchBiasAdd(const BiasAddParams& p, const DeviceContext& ctx) {
  if (p.rows == 0 || p.cols == 0) return absl::OkStatus();
  return WithActivationType(p.dtype, [&](auto* typed) {
    using T = std::remove_pointer_t<decltype(typed)>;
    const bool vec4 = p.cols % 4 == 0 && Aligned(p.y, Quad<T>::kAlign) && Aligned(p.bias, 16);
    const int64_t units = vec4 ? p.cols / 4 : p.cols;
    // Enough x-blocks to cover a row, rows spread over y; the total stays near GridFor's cap.
    const int64_t x_blocks = (units + kElementwiseThreads - 1) / kElementwiseThreads;
    const int64_t cap = int64_t{std::max(ctx.sm_count, 1)} * kBlocksPerSm;
    const int64_t y_blocks =
        std::clamp<int64_t>(cap / x_blocks, 1, std::min<int64_t>(p.rows, 65535));
    const dim3 grid(static_cast<unsigned>(std::min<int64_t>(x_blocks, cap)),
                    static_cast<unsigned>(y_blocks));
    return LaunchVectorised(vec4, [&](auto v) {
      BiasAddKernel<T, decltype(v)::value><<<grid, kElementwiseThreads, 0, ctx.stream>>>(p);
    });
  });
}

absl::Status LaunchConvert(const ConvertParams& p, const DeviceContext& ctx) {
  if (p.n == 0) return absl::OkStatus();
  if (p.dtype == p.src_dtype) {
    CUDA_CHECK(cudaMemcpyAsync(p.dst, p.src, p.n * DTypeSize(p.dtype), cudaMemcpyDeviceToDevice,
                               ctx.stream));
    return absl::OkStatus();
  }
  auto launch = [&](auto* src, auto* dst) {
    using In = std::remove_const_t<std::remove_pointer_t<decltype(src)>>;
    using Out = std::remove_pointer_t<decltype(dst)>;
    const bool vec4 = Aligned(src, Quad<In>::kAlign) && Aligned(dst, Quad<Out>::kAlign);
    const unsigned grid = GridFor(vec4 ? p.n / 4 : p.n, kElementwiseThreads, ctx);
    return LaunchVectorised(vec4, [&](auto v) {
      ConvertKernel<In, Out, decltype(v)::value>
          <<<grid, kElementwiseThreads, 0, ctx.stream>>>(src, dst, p.n);
    });
  };
  auto to = [&](auto* src) {
    if (p.dtype == DType::kF16) return launch(src, static_cast<__half*>(p.dst));
    if (p.dtype == DType::kBF16) return launch(src, static_cast<__nv_bfloat16*>(p.dst));
    return launch(src, static_cast<float*>(p.dst));
  };
  if (p.src_dtype == DType::kBF16) return to(static_cast<const __nv_bfloat16*>(p.src));
  if (p.src_dtype == DType::kF32) return to(static_cast<const float*>(p.src));
  return absl::InvalidArgumentError("Convert: the source must be f32 or bf16");
}

}  // namespace prefill::cuda
