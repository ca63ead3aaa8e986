#include "runtime/layer_ops.h"

#include <cblas.h>

#include <cmath>

namespace prefill {

void Linear(const float* x, int64_t rows, int64_t in, const std::vector<float>& w,
            const std::vector<float>& bias, int64_t out, float* y) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(out),
              static_cast<int>(in), 1.0f, x, static_cast<int>(in), w.data(), static_cast<int>(in), 0.0f, y,
              static_cast<int>(out));
  if (bias.empty()) return;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t o = 0; o < out; ++o) y[r * out + o] += bias[o];
  }
}

void RmsNorm(const float* x, int64_t rows, int64_t features, const std::vector<float>& weight,
             double eps, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * features;
    double sum = 0;
    for (int64_t i = 0; i < features; ++i) sum += double{xr[i]} * xr[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(sum / features + eps));
    for (int64_t i = 0; i < features; ++i) y[r * features + i] = xr[i] * inv * weight[i];
  }
}

void SwiGlu(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void AddInPlace(float* acc, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] += x[i];
}

void SetGemmThreads(int threads) { openblas_set_num_threads(threads > 0 ? threads : 1); }

}  // namespace prefill
