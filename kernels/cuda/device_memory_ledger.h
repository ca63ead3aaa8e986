// DeviceMemoryLedger: what a job reports as its peak GPU memory. Counts the device memory the
// CUDA backend holds (buffers from Allocate, the grow-only scratch) and keeps two high-water
// marks: of those bytes, and of the device's used memory (cudaMemGetInfo: the CUDA context,
// cuBLAS and NCCL included), sampled after every allocation the backend makes, the only
// moments at which it can have grown through the backend. Process-wide: a rank drives one GPU.
#pragma once

#include <cstddef>
#include <cstdint>

namespace prefill::cuda {

struct DeviceMemoryPeak {
  int64_t held_bytes = 0;              // backend buffers + scratch now
  int64_t held_peak_bytes = 0;         // their high-water mark
  int64_t device_used_peak_bytes = 0;  // cudaMemGetInfo total - free, high-water of the samples
};

// After a successful allocation of `bytes` on the current device.
void NoteDeviceAllocation(size_t bytes);
// When `bytes` of a noted allocation are released.
void NoteDeviceRelease(size_t bytes);
DeviceMemoryPeak GetDeviceMemoryPeak();

}  // namespace prefill::cuda
