// fp32 -> packed bf16 copy of a strided [count_a][count_b][dim] tensor (attention inputs).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace prefill::cuda {

// dst[(a * count_b + b) * dim + e] = bf16(src[a * stride_a + b * stride_b + e]).
cudaError_t LaunchConvertF32ToBf16(const float* src, int64_t stride_a, int64_t stride_b,
                                   int64_t count_a, int64_t count_b, int dim, void* dst,
                                   int sm_count, cudaStream_t stream);

}  // namespace prefill::cuda
