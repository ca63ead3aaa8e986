// LayerBackend: the dense math of a Llama-family decoder layer (projections, RMSNorm, RoPE,
// SwiGLU, residual adds), one implementation per device like AttentionBackend, and sharing
// its memory: every pointer is backend memory (host on the CPU, device memory of the
// attention backend's GPU on CUDA) and CUDA work is queued on the attention backend's
// stream, so the two interleave without extra synchronisation.
//
// Activations are fp32 [rows, features] row-major on both backends. Weight matrices are
// prepared once per process (PrepareMatrix): the CPU multiplies the fp32 weights in place
// (OpenBLAS sgemm); CUDA keeps a bf16 copy and multiplies bf16 x bf16 with fp32
// accumulation and output (cuBLAS), rounding the activation to bf16 on the way in.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace prefill {

// A weight matrix [rows, cols] (Hugging Face [out, in]) in the form the backend's Linear
// reads. `owned` holds the backend's copy when it made one (CUDA); the CPU points at the
// caller's fp32 values, which must then outlive the matrix.
struct WeightMatrix {
  const void* data = nullptr;
  int64_t rows = 0, cols = 0;
  BackendBuffer owned{nullptr, [](void*) {}};
};

// y = x * w^T (+ bias): x [rows, w.cols], y [rows, w.rows].
struct LinearParams {
  const float* x = nullptr;
  int64_t rows = 0;
  const WeightMatrix* w = nullptr;
  const float* bias = nullptr;  // [w.rows] or null
  float* y = nullptr;           // must not alias x
};

// y = x / sqrt(mean(x^2) + eps) * weight, per row. y may alias x.
struct RmsNormParams {
  const float* x = nullptr;
  const float* weight = nullptr;  // [features]
  int64_t rows = 0, features = 0;
  float eps = 0.f;
  float* y = nullptr;
};

// Rotates x [rows, heads, head_dim] in place (Hugging Face rotate_half: dimension i pairs
// with i + head_dim/2); row r sits at absolute position positions[r]. Angles are computed in
// double: position * inv_freq reaches 1e6 radians at a million tokens, where fp32 keeps
// no fraction of a turn.
struct RopeParams {
  float* x = nullptr;
  int64_t rows = 0;
  int heads = 0, head_dim = 0;
  const int32_t* positions = nullptr;  // [rows]
  const double* inv_freq = nullptr;    // [head_dim / 2]
};

// gate <- silu(gate) * up, elementwise over n values.
struct SwiGluParams {
  float* gate = nullptr;
  const float* up = nullptr;
  int64_t n = 0;
};

// acc <- acc + x, elementwise over n values.
struct AddParams {
  float* acc = nullptr;
  const float* x = nullptr;
  int64_t n = 0;
};

class LayerBackend {
 public:
  virtual ~LayerBackend() = default;
  virtual std::string_view name() const = 0;

  // values: [rows * cols] fp32 on the host.
  virtual absl::StatusOr<WeightMatrix> PrepareMatrix(std::span<const float> values, int64_t rows, int64_t cols) = 0;
  virtual absl::Status Linear(const LinearParams& p) = 0;
  virtual absl::Status RmsNorm(const RmsNormParams& p) = 0;
  virtual absl::Status Rope(const RopeParams& p) = 0;
  virtual absl::Status SwiGlu(const SwiGluParams& p) = 0;
  virtual absl::Status Add(const AddParams& p) = 0;
};

// threads <= 0: one thread (the GEMM's; ranks sharing a node must not oversubscribe it).
std::unique_ptr<LayerBackend> MakeCpuLayerBackend(int threads);

}  // namespace prefill
