// GatherRows on the GPU: packs byte rows at host-given offsets into one contiguous buffer.
// The offsets are uploaded to the backend's scratch on the compute stream.
#pragma once

#include "absl/status/status.h"
#include "kernels/backend.h"
#include "kernels/cuda/device_context.h"

namespace prefill::cuda {

absl::Status GatherRows(const GatherRowsParams& p, const DeviceContext& ctx);

}  // namespace prefill::cuda
