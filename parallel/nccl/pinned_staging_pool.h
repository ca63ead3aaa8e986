// PinnedStagingPool: page-locked host buffers that a HostStagedCommunicator's point-to-point
// transfers stage device bytes through, kept for reuse. From page-locked memory a copy is
// truly asynchronous (from pageable memory the copy call blocks until the driver has staged
// every byte, which also waits for the work queued before it), and cudaHostAlloc of the
// hundreds of MB a ring step moves costs tens of milliseconds, so buffers are not freed
// between steps. A buffer comes back with the event of its last asynchronous copy; the next
// Take of it waits for that copy first.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace prefill {

class PinnedStagingPool {
 public:
  struct Buffer {
    void* data = nullptr;
    size_t bytes = 0;
    cudaEvent_t last_copy = nullptr;  // record an asynchronous copy of `data` here
  };

  PinnedStagingPool() = default;
  PinnedStagingPool(const PinnedStagingPool&) = delete;
  PinnedStagingPool& operator=(const PinnedStagingPool&) = delete;
  ~PinnedStagingPool();  // waits for the buffers' last copies, then frees them

  // The smallest free buffer of at least `bytes` once its last copy is done, else a new one.
  absl::StatusOr<Buffer> Take(size_t bytes);
  void Return(Buffer buffer);

 private:
  absl::Mutex mu_;
  std::vector<Buffer> free_ ABSL_GUARDED_BY(mu_);
};

}  // namespace prefill
