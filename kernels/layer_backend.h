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

// The rows of `stacked` together, once each source is checked (non-null values, rows >= 1,
// the same cols >= 1): the shape PrepareMatrix makes of them.
inline absl::StatusOr<int64_t> StackedRows(std::span<const MatrixSource> stacked) {
  if (stacked.empty()) return absl::InvalidArgumentError("PrepareMatrix: no source");
  int64_t rows = 0;
  for (const MatrixSource& m : stacked) {
    if (!m.data) return absl::InvalidArgumentError("PrepareMatrix: null values");
    if (m.rows < 1 || m.cols < 1 || m.cols != stacked[0].cols) {
      return absl::InvalidArgumentError(absl::StrCat("PrepareMatrix: a [", m.rows, ", ", m.cols,
                                                     "] source among sources of ", stacked[0].cols,
                                                     " columns (rows and cols must be >= 1)"));
    }
    rows += m.rows;
  }
  return rows;
}

// y = x * w^T (+ bias), or y += x * w^T (+ bias) when accumulate (the residual add folded
// into the GEMM): x [rows, w.cols] (row r at x + r * x_row_stride), y [rows, w.rows].
struct LinearParams {
  const void* x = nullptr;
  DType x_dtype = DType::kF32;
  int64_t rows = 0;
  const WeightMatrix* w = nullptr;
  const float* bias = nullptr;  // [w.rows] or null
  void* y = nullptr;            // must not alias x
  DType y_dtype = DType::kF32;
  bool accumulate = false;
  int64_t x_row_stride = 0;  // values; 0: w.cols (x contiguous)
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

// q, k and v apart from the fused QKV projection qkv [rows, (heads + 2 kv_heads) * head_dim]
// (each row: the q heads, the k heads, the v heads), RoPE applied to q and k (Hugging Face
// rotate_half: dimension i pairs with i + head_dim/2); row r sits at absolute position
// positions[r]. Angles are computed in double: position * inv_freq reaches 1e6 radians at a
// million tokens, where fp32 keeps no fraction of a turn. kv_heads may be 0 (q alone).
struct QkvSplitParams {
  const void* qkv = nullptr;
  DType dtype = DType::kF32;  // of qkv, q, k and v
  int64_t rows = 0;
  int heads = 0, kv_heads = 0, head_dim = 0;
  const int32_t* positions = nullptr;  // [rows]
  const double* inv_freq = nullptr;    // [head_dim / 2]
  void* q = nullptr;                   // [rows, heads, head_dim]; none of q, k, v overlaps qkv
  void* k = nullptr;                   // [rows, kv_heads, head_dim]
  void* v = nullptr;                   // [rows, kv_heads, head_dim]
  // fp32 [(heads + 2 kv_heads) * head_dim] added to every row before the rotation, or null:
  // the projection's bias (Qwen2) costs no pass of its own and no extra rounding of bf16 rows.
  const float* bias = nullptr;
};

// gate <- silu(gate) * up over `rows` rows of n values of dtype (computed in fp32); row r of
// gate and of up starts r * row_stride values after its first. The fused gate/up projection
// [rows, 2 n] is gate = its first column, up = gate + n, row_stride = 2 n.
struct SwiGluParams {
  void* gate = nullptr;
  const void* up = nullptr;
  DType dtype = DType::kF32;
  int64_t n = 0;
  int64_t rows = 1;
  int64_t row_stride = 0;  // values; 0: n (contiguous rows)
};

// y[r] = table[ids[r]] as fp32 (the input embeddings); a row whose id is negative (padding) or
// not below table.rows is zeros.
struct EmbedParams {
  const int32_t* ids = nullptr;  // [rows], backend memory
  int64_t rows = 0;
  const WeightMatrix* table = nullptr;  // [vocab, hidden], prepared by this backend
  float* y = nullptr;                   // [rows, hidden]
};

class LayerBackend {
 public:
  virtual ~LayerBackend() = default;
  virtual std::string_view name() const = 0;
  // The dtype of activations between ops (see the file comment).
  virtual DType activation_dtype() const = 0;

  // The sources stacked by rows into one matrix (they share cols): the fused QKV and gate/up
  // projections are one GEMM each.
  virtual absl::StatusOr<WeightMatrix> PrepareMatrix(std::span<const MatrixSource> stacked) = 0;
  absl::StatusOr<WeightMatrix> PrepareMatrix(const MatrixSource& source) {
    return PrepareMatrix(std::span<const MatrixSource>(&source, 1));
  }
  // values: [rows * cols] fp32 on the host.
  absl::StatusOr<WeightMatrix> PrepareMatrix(std::span<const float> values, int64_t rows,
                                             int64_t cols) {
    if (static_cast<int64_t>(values.size()) != rows * cols) {
      return absl::InvalidArgumentError(absl::StrCat(
          "PrepareMatrix: ", values.size(), " values for a [", rows, ", ", cols, "] matrix"));
    }
    return PrepareMatrix(MatrixSource{DType::kF32, values.data(), rows, cols});
  }
  virtual absl::Status Linear(const LinearParams& p) = 0;
  virtual absl::Status RmsNorm(const RmsNormParams& p) = 0;
  virtual absl::Status SplitQkv(const QkvSplitParams& p) = 0;
  virtual absl::Status SwiGlu(const SwiGluParams& p) = 0;
  virtual absl::Status Embed(const EmbedParams& p) = 0;
  // Rows of the GEMMs that PrepareModel runs once per kind of Linear (and the attention
  // kernel once), so that a library's first use of each (cuBLAS: ~0.1 s on an H100) is paid
  // at load, not by the first request; 0 where there is nothing to warm.
  virtual int64_t warm_up_rows() const { return 0; }
};

// threads <= 0: one thread (the GEMM's; ranks sharing a node must not oversubscribe it).
std::unique_ptr<LayerBackend> MakeCpuLayerBackend(int threads);

}  // namespace prefill
