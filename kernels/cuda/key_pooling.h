// Key pooling per stride on the GPU (see PoolKeysParams): fp32 sums of `stride` keys.
#pragma once

#include "absl/status/status.h"
#include "kernels/cuda/device_context.h"
#include "kernels/mask_estimation_params.h"

namespace prefill::cuda {

absl::Status PoolKeys(const PoolKeysParams& p, const DeviceContext& ctx);

}  // namespace prefill::cuda
