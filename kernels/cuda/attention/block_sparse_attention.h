// Block-sparse flash attention forward on the GPU (AttentionParams): bf16/f16 storage (fp32
// inputs are converted to bf16 in scratch first), fp32 accumulation, O in fp32/bf16/f16,
// LSE fp32 natural log, GQA, causal by absolute positions, CSR block mask, head dims 64 and
// 128, block size 128. Two kernel families behind this one entry:
//   sm80: mma.sync + ldmatrix + cp.async double buffering (runs on Ampere and Hopper);
//   sm90: wgmma + TMA + mbarrier pipeline, producer/consumer warpgroups, persistent grid
//         over (head, query block) items sorted longest-first (Hopper, sm_90a build).
#pragma once

#include "absl/status/status.h"
#include "kernels/attention_params.h"
#include "kernels/cuda/device_context.h"

namespace prefill::cuda {

// Validates (InvalidArgument naming the field), converts fp32 inputs, builds the schedule
// and dispatches by head dim, dtype and architecture. Stream-ordered; returns once queued.
absl::Status BlockSparseAttention(const AttentionParams& p, const DeviceContext& ctx);

}  // namespace prefill::cuda
