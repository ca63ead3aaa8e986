// HostArena: host memory for the KV cache's downloads, faulted in ahead of use and reused by
// the next request of the process.
//
// Why: a prefill hands its KV cache to the host (GBs: 2 GB for 4 layers of an 8B model at
// 128K tokens). Fresh pageable memory costs its first-touch page faults, ~1-2 GB/s on one
// thread: on an H100 (2026-12-07) the download of that memory, not the copy engine, ended
// 0.13 s (32K) to 0.36 s (128K) after the last layer's compute. Page-locking instead costs
// ~0.55 s per GB under the driver's lock (kernels/cuda/staged_download.h). The arena maps one
// region per size and faults it in on background threads (front first, as the layers fill
// it) while the GPU computes; the next request finds the pages resident.
//
// Where a request can be announced before it runs (a job's load, a service's start), Pin
// page-locks the region once (a backend's callback): downloads then go straight to it by DMA,
// with no staging copy; its cost is paid there, once per process, not by the request.
//
// One arena per process (HostArena::Process()); its regions live until the process ends or a
// larger Reserve replaces them once no buffer of theirs is alive.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>

#include "absl/status/statusor.h"
#include "kernels/backend.h"

namespace prefill {

class HostArena {
 public:
  static HostArena& Process();

  // Room for `bytes` of Allocate calls from now on, faulted in on background threads. When
  // the current region is too small and buffers of it are alive, nothing changes (later
  // Allocate calls that do not fit come from the heap).
  void Reserve(size_t bytes);
  // `bytes` of the region when they fit after the buffers allocated so far, else of the heap;
  // not zero-filled. Once every buffer of the region is released, the next Allocate starts
  // over at its beginning.
  absl::StatusOr<BackendBuffer> Allocate(size_t bytes);

  // Page-locks the first `max_bytes` of the current region, rounded up to whole 2 MiB pages
  // (all of it when that reaches its slack), once per region, with `pin`, which
  // returns false where it could not; `unpin` undoes it when the region goes. Returns the
  // bytes now page-locked.
  size_t Pin(size_t max_bytes, const std::function<bool(void*, size_t)>& pin,
             std::function<void(void*)> unpin);
  // True when [p, p + bytes) lies in the page-locked part of the current region.
  bool Pinned(const void* p, size_t bytes) const;

  // For tests: bytes of the current region (0: none) and its live buffers.
  size_t capacity() const;
  int live_buffers() const;

  struct Region;

 private:
  HostArena() = default;
  static void Release(void* ptr);
  int live_buffers_locked() const;  // mu_ held

  mutable std::mutex mu_;
  std::shared_ptr<Region> region_;  // guarded by mu_
  size_t used_ = 0;                 // guarded by mu_: bytes handed out of region_
};

}  // namespace prefill
