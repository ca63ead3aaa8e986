// KvHostBuffers: the host memory a request's KV cache downloads into, one buffer per layer
// (its K then its V), allocated on a thread of its own while the layers compute. On CUDA the
// buffers are page-locked (AttentionBackend::AllocateHost), which costs ~0.55 s per GB on
// the H200 host: made up front, that was 0.29 s of a 0.69 s prefill at 32K tokens; made
// layer by layer beside the GPU's work, only the first layer's is waited for.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace prefill {

class KvHostBuffers {
 public:
  // Starts allocating `layers` buffers of `layer_bytes` each; `backend` must outlive this.
  KvHostBuffers(AttentionBackend& backend, int layers, size_t layer_bytes);
  KvHostBuffers(const KvHostBuffers&) = delete;
  KvHostBuffers& operator=(const KvHostBuffers&) = delete;
  ~KvHostBuffers();  // waits for the allocating thread

  // Layer i's buffer, once allocated; the allocation's error if it failed.
  absl::StatusOr<std::byte*> Layer(int i);
  // Seconds this thread waited in Layer() so far.
  double wait_seconds() const { return wait_seconds_; }
  // Every buffer (after the last Layer() call): they now belong to the caller.
  std::vector<BackendBuffer> Release();

 private:
  void Allocate(AttentionBackend& backend, int layers, size_t layer_bytes);

  std::mutex mu_;
  std::condition_variable ready_;
  std::vector<BackendBuffer> buffers_;  // guarded by mu_; grows as layers are allocated
  absl::Status status_;                 // guarded by mu_
  double wait_seconds_ = 0;
  std::thread thread_;
};

}  // namespace prefill
