// sm90a attention (wgmma + TMA, warp-specialized, persistent): host side of the dispatch.
#pragma once

#include "absl/status/status.h"
#include "kernels/cuda/attention/attention_kernel_params.h"
#include "kernels/cuda/device_context.h"

namespace prefill::cuda {

// Ok when the sm90a kernel can run this call: a compute capability 9.0 device, a binary
// that carries sm_90a code, and TMA-compatible Q/K/V (16-byte aligned bases and strides).
// Otherwise says why (the entry then uses the sm80 kernel, unless kSm90 was forced).
absl::Status Sm90Eligible(const AttentionKernelParams& kp, const DeviceContext& ctx);

// Builds the tensor maps and launches the persistent kernel. Requires Sm90Eligible.
absl::Status RunAttentionSm90(const AttentionKernelParams& kp, const DeviceContext& ctx);

}  // namespace prefill::cuda
