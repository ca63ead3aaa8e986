// StagedDownloader: device -> host copies on a thread and a copy stream of their own.
//
// Destinations in the HostArena's page-locked part (AttentionBackend::PrepareHost, before the
// request) take one DMA straight in. Others go through a small page-locked ring: page-locking
// every destination costs ~0.55 s per GB (H200 host) under the driver's lock, which stalled
// the compute thread's launches when done during a request (0.3 s of a 0.6 s prefill at 32K
// tokens). Two slots of a few MiB are page-locked once; the copy engine fills one while the
// worker thread copies the other out with memcpy (which also takes the destination's
// first-touch page faults, off the compute thread).
#pragma once

#include <cuda_runtime_api.h>

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace prefill::cuda {

struct StagedDownload {
  const void* src = nullptr;  // device memory, ready once `ready` has completed
  size_t bytes = 0;
  void* host_dst = nullptr;     // pageable or page-locked host memory
  cudaEvent_t ready = nullptr;  // owned by the download: destroyed once waited on
  void* free_after = nullptr;   // stream-ordered device memory freed after the copy (or null)
};

class StagedDownloader {
 public:
  static absl::StatusOr<std::unique_ptr<StagedDownloader>> Create(int device, size_t slot_bytes);
  StagedDownloader(const StagedDownloader&) = delete;
  StagedDownloader& operator=(const StagedDownloader&) = delete;
  ~StagedDownloader();  // finishes the queued downloads

  // Queues the download; returns at once.
  void Start(const StagedDownload& d);
  int64_t started() const;  // downloads queued so far: the ticket of the last one
  // Waits until the downloads up to `ticket` have landed (in order); the first error so far.
  absl::Status WaitLanded(int64_t ticket);
  // Waits until every queued download has landed; the first error since the last Finish.
  absl::Status Finish();

 private:
  static constexpr int kSlots = 2;
  explicit StagedDownloader(int device, size_t slot_bytes)
      : device_(device), slot_bytes_(slot_bytes) {}
  absl::Status Init();
  void Run();
  absl::Status Copy(const StagedDownload& d);
  absl::Status Issue(const StagedDownload& d, size_t chunk, int slot);
  void Release(const StagedDownload& d);

  const int device_;
  const size_t slot_bytes_;
  cudaStream_t stream_ = nullptr;
  void* slots_[kSlots] = {};
  cudaEvent_t landed_[kSlots] = {};  // the slot's DMA has finished

  mutable std::mutex mu_;
  std::condition_variable changed_;
  std::deque<StagedDownload> queue_;  // guarded by mu_
  bool busy_ = false;                 // guarded by mu_: the worker holds a download
  bool stopping_ = false;             // guarded by mu_
  int64_t started_count_ = 0;         // guarded by mu_
  int64_t done_count_ = 0;            // guarded by mu_: landed or released after an error
  absl::Status status_;               // guarded by mu_
  std::thread worker_;
};

}  // namespace prefill::cuda
