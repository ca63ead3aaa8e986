// The CPU LayerBackend: fp32 activations, projections through OpenBLAS sgemm on fp32 weights
// (the caller's when they are fp32, else a converted copy), the elementwise ops as plain loops
// over rows spread with ParallelFor.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/parallel_for.h"
#include "kernels/dtype.h"
#include "kernels/layer_backend.h"

namespace prefill {
namespace {

absl::Status Invalid(const char* op, const char* what) {
  return absl::InvalidArgumentError(absl::StrCat(op, ": ", what));
}

constexpr const char* kF32Only = "the CPU backend's activations are fp32";
constexpr int64_t kConvertChunk = int64_t{1} << 20;  // values per conversion task

class CpuLayerBackend final : public LayerBackend {
 public:
  explicit CpuLayerBackend(int threads) : threads_(threads > 0 ? threads : 1) {
    openblas_set_num_threads(threads_);
  }

  std::string_view name() const override { return "cpu"; }
  DType activation_dtype() const override { return DType::kF32; }

  using LayerBackend::PrepareMatrix;
  // One fp32 source is multiplied in place; others (bf16 / f16, or several stacked) through
  // an fp32 copy.
  absl::StatusOr<WeightMatrix> PrepareMatrix(std::span<const MatrixSource> stacked) override {
    absl::StatusOr<int64_t> rows = StackedRows(stacked);
    if (!rows.ok()) return rows.status();
    WeightMatrix m;
    m.rows = *rows;
    m.cols = stacked[0].cols;
    if (stacked.size() == 1 && stacked[0].dtype == DType::kF32) {
      m.data = stacked[0].data;
      return m;
    }
    auto* copy = new float[static_cast<size_t>(m.rows * m.cols)];
    m.owned = BackendBuffer(copy, [](void* p) { delete[] static_cast<float*>(p); });
    m.data = copy;
    for (const MatrixSource& source : stacked) {
      const int64_t n = source.rows * source.cols;
      cpu::ParallelFor((n + kConvertChunk - 1) / kConvertChunk, threads_, [&](int64_t c) {
        const int64_t begin = c * kConvertChunk, count = std::min(kConvertChunk, n - begin);
        ConvertToF32(source.dtype,
                     static_cast<const char*>(source.data) + begin * DTypeSize(source.dtype),
                     copy + begin, count);
      });
      copy += n;
    }
    return m;
  }

  absl::Status Linear(const LinearParams& p) override {
    if (!p.w || !p.w->data || !p.x || !p.y || p.rows < 0)
      return Invalid("Linear", "null pointer or negative rows");
    if (p.x == p.y) return Invalid("Linear", "y must not alias x");
    if (p.x_dtype != DType::kF32 || p.y_dtype != DType::kF32) return Invalid("Linear", kF32Only);
    const int64_t in = p.w->cols, out = p.w->rows;
    const int64_t x_stride = p.x_row_stride ? p.x_row_stride : in;
    if (x_stride < in) return Invalid("Linear", "x_row_stride < w.cols");
    if (p.rows == 0) return absl::OkStatus();
    auto* y = static_cast<float*>(p.y);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(p.rows),
                static_cast<int>(out), static_cast<int>(in), 1.0f, static_cast<const float*>(p.x),
                static_cast<int>(x_stride), static_cast<const float*>(p.w->data),
                static_cast<int>(in), p.accumulate ? 1.0f : 0.0f, y, static_cast<int>(out));
    if (p.bias) {
      cpu::ParallelFor(p.rows, threads_, [&](int64_t r) {
        for (int64_t o = 0; o < out; ++o) y[r * out + o] += p.bias[o];
      });
    }
    return absl::OkStatus();
  }

  absl::Status RmsNorm(const RmsNormParams& p) override {
    if (!p.x || !p.y || !p.weight || p.rows < 0 || p.features < 1)
      return Invalid("RmsNorm", "null pointer or bad size");
    if (p.y_dtype != DType::kF32) return Invalid("RmsNorm", kF32Only);
    cpu::ParallelFor(p.rows, threads_, [&](int64_t r) {
      const float* x = p.x + r * p.features;
      float* y = static_cast<float*>(p.y) + r * p.features;
      double sum = 0;
      for (int64_t i = 0; i < p.features; ++i) sum += double{x[i]} * x[i];
      const float inv = static_cast<float>(1.0 / std::sqrt(sum / p.features + p.eps));
      for (int64_t i = 0; i < p.features; ++i) y[i] = x[i] * inv * p.weight[i];
    });
    return absl::OkStatus();
  }

  absl::Status SplitQkv(const QkvSplitParams& p) override {
    if (!p.qkv || !p.q || !p.positions || !p.inv_freq || p.rows < 0 || p.heads < 1 ||
        p.kv_heads < 0 || p.head_dim < 2 || p.head_dim % 2 || (p.kv_heads > 0 && (!p.k || !p.v))) {
      return Invalid("SplitQkv", "null pointer, or heads < 1, kv_heads < 0, or head_dim not even");
    }
    if (p.dtype != DType::kF32) return Invalid("SplitQkv", kF32Only);
    const int half = p.head_dim / 2;
    const int64_t d = p.head_dim, row_in = (p.heads + 2 * int64_t{p.kv_heads}) * d;
    cpu::ParallelFor(p.rows, threads_, [&](int64_t r) {
      std::vector<float> cos_t(half), sin_t(half);
      for (int i = 0; i < half; ++i) {
        const double angle = p.positions[r] * p.inv_freq[i];
        cos_t[i] = static_cast<float>(std::cos(angle));
        sin_t[i] = static_cast<float>(std::sin(angle));
      }
      const float* in = static_cast<const float*>(p.qkv) + r * row_in;
      auto value = [&](int64_t j) {
        return p.bias ? in[j] + p.bias[j] : in[j];
      };  // j: index in the row
      auto rotate = [&](int64_t from, float* dst) {
        for (int i = 0; i < half; ++i) {
          const float a = value(from + i), b = value(from + i + half);
          dst[i] = a * cos_t[i] - b * sin_t[i];
          dst[i + half] = b * cos_t[i] + a * sin_t[i];
        }
      };
      for (int h = 0; h < p.heads; ++h)
        rotate(h * d, static_cast<float*>(p.q) + (r * p.heads + h) * d);
      const int64_t k_in = p.heads * d, v_in = k_in + p.kv_heads * d;
      for (int h = 0; h < p.kv_heads; ++h)
        rotate(k_in + h * d, static_cast<float*>(p.k) + (r * p.kv_heads + h) * d);
      float* v = static_cast<float*>(p.v) + r * p.kv_heads * d;
      for (int64_t j = 0; j < p.kv_heads * d; ++j) v[j] = value(v_in + j);
    });
    return absl::OkStatus();
  }

  absl::Status SwiGlu(const SwiGluParams& p) override {
    if (!p.gate || !p.up || p.n < 0 || p.rows < 0)
      return Invalid("SwiGlu", "null pointer or negative size");
    if (p.dtype != DType::kF32) return Invalid("SwiGlu", kF32Only);
    const int64_t stride = p.row_stride ? p.row_stride : p.n;
    cpu::ParallelFor(p.rows, threads_, [&](int64_t r) {
      float* gate = static_cast<float*>(p.gate) + r * stride;
      const float* up = static_cast<const float*>(p.up) + r * stride;
      for (int64_t i = 0; i < p.n; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
    });
    return absl::OkStatus();
  }

  absl::Status Embed(const EmbedParams& p) override {
    if (!p.ids || !p.table || !p.table->data || !p.y || p.rows < 0)
      return Invalid("Embed", "null pointer or negative rows");
    const int64_t hidden = p.table->cols;
    const auto* table = static_cast<const float*>(p.table->data);
    cpu::ParallelFor(p.rows, threads_, [&](int64_t r) {
      float* y = p.y + r * hidden;
      const int32_t id = p.ids[r];
      if (id < 0 || id >= p.table->rows) {
        std::fill(y, y + hidden, 0.0f);
      } else {
        std::copy(table + id * hidden, table + (id + 1) * hidden, y);
      }
    });
    return absl::OkStatus();
  }

 private:
  int threads_;
};

}  // namespace

std::unique_ptr<LayerBackend> MakeCpuLayerBackend(int threads) {
  return std::make_unique<CpuLayerBackend>(threads);
}

}  // namespace prefill
