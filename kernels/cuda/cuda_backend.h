// The CUDA AttentionBackend: every op runs on the backend's one compute stream of one device;
// pointers in the params are device pointers (memory from Allocate, or any cudaMalloc'ed
// memory of that device). Ops are stream-ordered and return once queued, except
// EstimateMask and CopyToHost, which hand results to the host and so wait for the stream
// (EstimateMaskInBackend waits for the row offsets only; its ids are ready in stream order).
#pragma once

#include <cuda_runtime_api.h>

#include <memory>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/cuda/device_context.h"

namespace prefill {

struct CudaBackendOptions {
  int device_id = 0;
  // kAuto picks the sm90a attention kernel on Hopper; tests force kSm80 to check the fallback.
  cuda::AttentionPath attention_path = cuda::AttentionPath::kAuto;
};

// Creates the backend (cudaSetDevice, a non-blocking stream). Fails with Unavailable when the
// device does not exist or the driver is missing.
absl::StatusOr<std::unique_ptr<AttentionBackend>> CreateCudaBackend(
    const CudaBackendOptions& options);

// The factory of the backend table: nullptr when the device cannot be used (the reason is
// printed to stderr); CreateCudaBackend says why instead.
std::unique_ptr<AttentionBackend> MakeCudaBackend(int device_id);

// The compute stream of a backend made here (the NCCL communicator orders its transfers
// after it); nullptr for any other backend.
cudaStream_t CudaBackendStream(const AttentionBackend& backend);
// Its device ordinal, -1 for any other backend.
int CudaBackendDevice(const AttentionBackend& backend);

// True when a CUDA device is usable from this process (tests skip otherwise).
bool CudaDeviceAvailable();

}  // namespace prefill
