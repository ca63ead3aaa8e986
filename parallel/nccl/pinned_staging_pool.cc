#include "parallel/nccl/pinned_staging_pool.h"

#include "kernels/cuda/cuda_check.h"

namespace prefill {

PinnedStagingPool::~PinnedStagingPool() {
  absl::MutexLock lock(&mu_);
  for (Buffer& b : free_) {
    (void)cudaEventSynchronize(b.last_copy);
    (void)cudaEventDestroy(b.last_copy);
    (void)cudaFreeHost(b.data);
  }
}

absl::StatusOr<PinnedStagingPool::Buffer> PinnedStagingPool::Take(size_t bytes) {
  {
    absl::MutexLock lock(&mu_);
    auto best = free_.end();
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      if (it->bytes >= bytes && (best == free_.end() || it->bytes < best->bytes)) best = it;
    }
    if (best != free_.end()) {
      Buffer b = *best;
      free_.erase(best);
      CUDA_CHECK(cudaEventSynchronize(b.last_copy));
      return b;
    }
  }
  Buffer b;
  b.bytes = bytes;
  CUDA_CHECK(cudaHostAlloc(&b.data, bytes, cudaHostAllocPortable));
  if (const cudaError_t e = cudaEventCreateWithFlags(&b.last_copy, cudaEventDisableTiming);
      e != cudaSuccess) {
    (void)cudaFreeHost(b.data);
    CUDA_CHECK(e);
  }
  return b;
}

void PinnedStagingPool::Return(Buffer buffer) {
  absl::MutexLock lock(&mu_);
  free_.push_back(buffer);
}

}  // namespace prefill
