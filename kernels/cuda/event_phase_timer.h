// The CUDA PhaseTimer: an event recorded on the stream at every phase change; the spans'
// seconds are the elapsed times between consecutive events, read once the last has completed.
#pragma once

#include <cuda_runtime_api.h>

#include <memory>

#include "absl/status/statusor.h"
#include "kernels/phase_timer.h"

namespace prefill::cuda {

absl::StatusOr<std::unique_ptr<PhaseTimer>> MakeEventPhaseTimer(int device, cudaStream_t stream);

}  // namespace prefill::cuda
