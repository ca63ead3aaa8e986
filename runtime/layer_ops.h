// The dense math of a Llama-family layer on the CPU: RMSNorm, linear projections (OpenBLAS
// sgemm, fp32), SwiGLU, residual adds. Activations are [rows, features] row-major.
#pragma once

#include <cstdint>
#include <vector>

namespace prefill {

// y = x * w^T (+ bias): x [rows, in], w [out, in] (Hugging Face layout), y [rows, out].
void Linear(const float* x, int64_t rows, int64_t in, const std::vector<float>& w,
            const std::vector<float>& bias, int64_t out, float* y);

// y = x / rms(x) * weight per row (fp32; the mean of squares in double).
void RmsNorm(const float* x, int64_t rows, int64_t features, const std::vector<float>& weight,
             double eps, float* y);

// gate <- silu(gate) * up, elementwise.
void SwiGlu(float* gate, const float* up, int64_t n);

void AddInPlace(float* acc, const float* x, int64_t n);

// Caps OpenBLAS's threads so ranks sharing a node do not oversubscribe it.
void SetGemmThreads(int threads);

}  // namespace prefill
