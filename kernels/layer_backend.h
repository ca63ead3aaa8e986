// LayerBackend: the dense math of a Llama-family decoder layer (projections, RMSNorm, RoPE,
// SwiGLU, residual adds), one implementation per device like AttentionBackend, and sharing
// its memory: every pointer is backend memory (host on the CPU, device memory of the
// attention backend's GPU on CUDA) and CUDA work is queued on the attention backend's
// stream, so the two interleave without extra synchronisation.
//
// Activations are [rows, features] row-major in the backend's activation_dtype(): fp32 on the
// CPU; bf16 on CUDA, where the GEMMs read them at full speed and no conversion pass sits
// between ops. The residual stream (RmsNorm's x, Linear's y when it accumulates) stays fp32 on
// both. Weight matrices are prepared once per process (PrepareMatrix) from the checkpoint's own
// bytes (bf16, f16 or f32, e.g. in place in a mapped safetensors file): the CPU multiplies
// fp32 weights (in place when the checkpoint is f32, else a converted copy) with OpenBLAS
// sgemm; CUDA keeps a bf16 copy (a bf16 checkpoint is uploaded as it is) and multiplies bf16 x
// bf16 with fp32 accumulation (cuBLAS), rounding an fp32 input to bf16 on the way in.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "kernels/backend.h"
#include "kernels/dtype.h"

namespace prefill {

// A weight matrix [rows, cols] (Hugging Face [out, in]) in the form the backend's Linear
// reads. `owned` holds the backend's copy when it made one; the CPU points at the caller's
// values when they are fp32, which must then outlive the matrix.
struct WeightMatrix {
  const void* data = nullptr;
  int64_t rows = 0, cols = 0;
  BackendBuffer owned{nullptr, [](void*) {}};
};

// A matrix as the checkpoint stores it: rows * cols values of `dtype`, row-major, host memory.
struct MatrixSource {
  DType dtype = DType::kF32;
  const void* data = nullptr;
  int64_t rows = 0, cols = 0;
};

// y = x * w^T (+ bias), or y += x * w^T (+ bias) when accumulate (the residual add folded
// into the GEMM): x [rows, w.cols], y [rows, w.rows].
struct LinearParams {
  const void* x = nullptr;
  DType x_dtype = DType::kF32;
  int64_t rows = 0;
  const WeightMatrix* w = nullptr;
  const float* bias = nullptr;  // [w.rows] or null
  void* y = nullptr;            // must not alias x
  DType y_dtype = DType::kF32;
  bool accumulate = false;
};

// y = x / sqrt(mean(x^2) + eps) * weight, per row, rounded to y_dtype. y may alias x when
// both are fp32.
struct RmsNormParams {
  const float* x = nullptr;
  const float* weight = nullptr;  // [features]
  int64_t rows = 0, features = 0;
  float eps = 0.f;
  void* y = nullptr;
  DType y_dtype = DType::kF32;
};

// Rotates x [rows, heads, head_dim] in place (Hugging Face rotate_half: dimension i pairs
// with i + head_dim/2); row r sits at absolute position positions[r]. Angles are computed in
// double: position * inv_freq reaches 1e6 radians at a million tokens, where fp32 keeps
// no fraction of a turn.
struct RopeParams {
  void* x = nullptr;
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int heads = 0, head_dim = 0;
  const int32_t* positions = nullptr;  // [rows]
  const double* inv_freq = nullptr;    // [head_dim / 2]
};

// gate <- silu(gate) * up, elementwise over n values of dtype (computed in fp32).
struct SwiGluParams {
  void* gate = nullptr;
  const void* up = nullptr;
  DType dtype = DType::kF32;
  int64_t n = 0;
};

class LayerBackend {
 public:
  virtual ~LayerBackend() = default;
  virtual std::string_view name() const = 0;
  // The dtype of activations between ops (see the file comment).
  virtual DType activation_dtype() const = 0;

  virtual absl::StatusOr<WeightMatrix> PrepareMatrix(const MatrixSource& source) = 0;
  // values: [rows * cols] fp32 on the host.
  absl::StatusOr<WeightMatrix> PrepareMatrix(std::span<const float> values, int64_t rows, int64_t cols) {
    if (static_cast<int64_t>(values.size()) != rows * cols) {
      return absl::InvalidArgumentError(absl::StrCat("PrepareMatrix: ", values.size(), " values for a [", rows,
                                                     ", ", cols, "] matrix"));
    }
    return PrepareMatrix(MatrixSource{DType::kF32, values.data(), rows, cols});
  }
  virtual absl::Status Linear(const LinearParams& p) = 0;
  virtual absl::Status RmsNorm(const RmsNormParams& p) = 0;
  virtual absl::Status Rope(const RopeParams& p) = 0;
  virtual absl::Status SwiGlu(const SwiGluParams& p) = 0;
};

// threads <= 0: one thread (the GEMM's; ranks sharing a node must not oversubscribe it).
std::unique_ptr<LayerBackend> MakeCpuLayerBackend(int threads);

}  // namespace prefill
