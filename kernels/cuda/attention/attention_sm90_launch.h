// Launch interface of the sm90a attention kernel (host side includes this; the kernel itself
// is in attention_sm90.cuh, instantiated per head dim in attention_sm90_hdim*.cu).
#pragma once

#include <cuda.h>
#include <cuda_runtime_api.h>

#include <cstddef>

#include "kernels/cuda/attention/attention_kernel_params.h"

namespace prefill::cuda {

// Everything the sm90 kernel reads: the tensor maps first (64-byte aligned in param space).
struct Sm90KernelParams {
  CUtensorMap tma_q;  // Q [lq][hq][D] as dims {D, hq, lq}, box {64, 1, 128}, 128B swizzle
  CUtensorMap tma_k;  // K [hkv][lk][D] as dims {D, lk, hkv}, box {64, 128, 1}, 128B swizzle
  CUtensorMap tma_v;  // V, like K
  AttentionKernelParams kp;
};

// Shared-memory plan of the kernel, known to the host for the eligibility check: 1 KiB
// alignment slack + Q (128 rows) + kStages K and V tiles (128 keys) + the mbarriers
// (Q full/empty, K full/empty and V full/empty per stage) + 8 bytes of tile info per stage.
constexpr int Sm90KvStages(int head_dim) { return head_dim == 128 ? 2 : 4; }
constexpr int Sm90NumBarriers(int stages) { return 2 + 4 * stages; }
constexpr size_t Sm90SmemBytes(int head_dim, int stages) {
  return 1024 + 128 * head_dim * 2 + 2 * stages * 128 * head_dim * 2 + Sm90NumBarriers(stages) * 8 +
         stages * 8;
}

// Persistent launch: `grid` CTAs (at most one per SM) walk kp.schedule round-robin.
template <int kHeadDim, typename Element>
cudaError_t LaunchAttentionSm90(const Sm90KernelParams& params, int grid, cudaStream_t stream);

// Whether this binary carries sm_90a code for the current device (a probe kernel runs once
// and reports; false on non-Hopper devices or builds without the 90a target).
cudaError_t ProbeSm90aKernels(bool* available);

}  // namespace prefill::cuda
