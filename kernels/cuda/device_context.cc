#include "kernels/cuda/device_context.h"

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_memory_ledger.h"

namespace prefill::cuda {

DeviceScratch::~DeviceScratch() {
  if (data_ != nullptr) {
    // Stream-ordered free; errors at teardown have nowhere to go.
    (void)cudaFreeAsync(data_, last_stream_);
    NoteDeviceRelease(capacity_);
  }
}

absl::StatusOr<void*> DeviceScratch::Reserve(size_t bytes, cudaStream_t stream) {
  last_stream_ = stream;
  if (bytes <= capacity_ && data_ != nullptr) return data_;
  if (data_ != nullptr) {
    CUDA_CHECK(cudaFreeAsync(data_, stream));
    NoteDeviceRelease(capacity_);
    data_ = nullptr;
    capacity_ = 0;
  }
  // Round up generously so a slowly growing sequence of requests does not reallocate each time.
  size_t want = bytes < (size_t{1} << 20) ? (size_t{1} << 20) : bytes + bytes / 4;
  void* ptr = nullptr;
  CUDA_CHECK(cudaMallocAsync(&ptr, want, stream));
  NoteDeviceAllocation(want);
  data_ = ptr;
  capacity_ = want;
  return data_;
}

}  // namespace prefill::cuda
