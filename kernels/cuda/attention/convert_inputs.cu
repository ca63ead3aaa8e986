// fp32 attention inputs are converted to bf16 on entry (the tensor cores take 16-bit
// operands): a strided [a][b][d] fp32 tensor becomes a packed [a][b][d] bf16 copy in scratch.
// Rounding is round-to-nearest-even, the same as F32ToBf16 on the host.
#include <cuda_bf16.h>

#include "kernels/cuda/attention/convert_inputs.h"

namespace prefill::cuda {
namespace {

__global__ void __launch_bounds__(256)
    ConvertF32ToBf16Kernel(const float* __restrict__ src, int64_t stride_a, int64_t stride_b,
                           int64_t count_a, int64_t count_b, int dim,
                           __nv_bfloat16* __restrict__ dst) {
  const int64_t total = count_a * count_b * dim;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t ab = idx / dim;
    const int e = static_cast<int>(idx - ab * dim);
    const int64_t a = ab / count_b;
    const int64_t b = ab - a * count_b;
    dst[idx] = __float2bfloat16_rn(src[a * stride_a + b * stride_b + e]);
  }
}

}  // namespace

cudaError_t LaunchConvertF32ToBf16(const float* src, int64_t stride_a, int64_t stride_b,
                                   int64_t count_a, int64_t count_b, int dim, void* dst,
                                   int sm_count, cudaStream_t stream) {
  const int64_t total = count_a * count_b * dim;
  if (total == 0) return cudaSuccess;
  const int64_t want = (total + 255) / 256;
  const int64_t cap = static_cast<int64_t>(sm_count) * 32;
  ConvertF32ToBf16Kernel<<<static_cast<unsigned>(want < cap ? want : cap), 256, 0, stream>>>(
      src, stride_a, stride_b, count_a, count_b, dim, static_cast<__nv_bfloat16*>(dst));
  return cudaGetLastError();
}

}  // namespace prefill::cuda
