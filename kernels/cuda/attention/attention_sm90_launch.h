// Launch interface of the sm90a attention kernel (host side includes this; the kernel itself
// is in attention_sm90.cuh, instantiated per head dim in attention_sm90_hdim*.cu).
#pragma once

#include <cuda.h>
#include <cuda_runtime_api.h>

#include "kernels/cuda/attention/attention_kernel_params.h"

namespace prefill::cuda {

// Everything the sm90 kernel reads: the tensor maps first (64-byte aligned in param space).
struct Sm90KernelParams {
  CUtensorMap tma_q;  // Q [lq][hq][D] as dims {D, hq, lq}, box {64, 1, 128}, 128B swizzle
  CUtensorMap tma_k;  // K [hkv][lk][D] as dims {D, lk, hkv}, box {64, 128, 1}, 128B swizzle
  CUtensorMap tma_v;  // V, like K
  AttentionKernelParams kp;
};

// Persistent launch: `grid` CTAs (at most one per SM) walk kp.schedule round-robin.
template <int kHeadDim, typename Element>
cudaError_t LaunchAttentionSm90(const Sm90KernelParams& params, int grid, cudaStream_t stream);

// Whether this binary carries sm_90a code for the current device (a probe kernel runs once
// and reports; false on non-Hopper devices or builds without the 90a target).
cudaError_t ProbeSm90aKernels(bool* available);

}  // namespace prefill::cuda
