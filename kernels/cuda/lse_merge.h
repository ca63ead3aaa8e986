// Merge of partial attention results by log-sum-exp on the GPU (see LseMergeParams).
#pragma once

#include "absl/status/status.h"
#include "kernels/attention_params.h"
#include "kernels/cuda/device_context.h"

namespace prefill::cuda {

absl::Status MergeByLse(const LseMergeParams& p, const DeviceContext& ctx);

}  // namespace prefill::cuda
