// Launchers of the dense layer kernels behind the CUDA LayerBackend
// (kernels/cuda/cuda_layer_backend.cc): RMSNorm, the QKV split with RoPE, SwiGLU, the embedding
// gather, the bias add of Linear and the dtype conversion of Linear's fp32 input, of prepared
// weights and of the KV cache. Activations are fp32 or bf16 (the params' dtype). Each takes its
// params struct by value, sizes the grid from ctx.sm_count, queues on ctx.stream and checks the
// launch. The entry validates: a launcher trusts its params (sizes >= 0, non-null pointers,
// head_dim even and <= kMaxRopeHeadDim, exact aliasing only where the params allow it).
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/device_context.h"
#include "kernels/dtype.h"
#include "kernels/layer_backend.h"

namespace prefill::cuda {

// y[r, c] += bias[c] for r < rows, c < cols (in fp32, rounded to dtype).
struct BiasAddParams {
  void* y = nullptr;            // [rows, cols] of dtype (f32 or bf16)
  const float* bias = nullptr;  // [cols]; must not overlap y
  int64_t rows = 0, cols = 0;
  DType dtype = DType::kF32;
};

// dst[i] = dtype(src[i]) for i < n, round to nearest even (__float2bfloat16_rn,
// __float2half_rn); src f32 or bf16, dst f32, bf16 or f16; equal dtypes are a copy.
struct ConvertParams {
  const void* src = nullptr;  // [n] of src_dtype
  void* dst = nullptr;        // [n] of dtype; must not overlap src
  int64_t n = 0;
  DType dtype = DType::kBF16;
  DType src_dtype = DType::kF32;
};

// RoPE keeps a row's cos/sin table (head_dim floats) in shared memory.
inline constexpr int kMaxRopeHeadDim = 8192;

absl::Status LaunchRmsNorm(const RmsNormParams& p, const DeviceContext& ctx);
// EmbedParams with the table's device pointer and shape (a WeightMatrix lives on the host).
struct EmbedLaunch {
  const int32_t* ids = nullptr;
  int64_t rows = 0;
  const void* table = nullptr;  // bf16 [vocab, hidden]
  int64_t vocab = 0, hidden = 0;
  float* y = nullptr;
};

absl::Status LaunchSplitQkv(const QkvSplitParams& p, const DeviceContext& ctx);
absl::Status LaunchSwiGlu(const SwiGluParams& p, const DeviceContext& ctx);
absl::Status LaunchEmbed(const EmbedLaunch& p, const DeviceContext& ctx);
absl::Status LaunchBiasAdd(const BiasAddParams& p, const DeviceContext& ctx);
absl::Status LaunchConvert(const ConvertParams& p, const DeviceContext& ctx);

}  // namespace prefill::cuda
