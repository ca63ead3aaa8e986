#include "kernels/cuda/staged_download.h"

#include <algorithm>
#include <cstring>

#include "kernels/cuda/cuda_check.h"
#include "kernels/host_arena.h"
#include "kernels/status_macros.h"

namespace prefill::cuda {

absl::StatusOr<std::unique_ptr<StagedDownloader>> StagedDownloader::Create(int device,
                                                                           size_t slot_bytes) {
  if (slot_bytes == 0)
    return absl::InvalidArgumentError("StagedDownloader: slot_bytes must be > 0");
  std::unique_ptr<StagedDownloader> d(new StagedDownloader(device, slot_bytes));
  PREFILL_RETURN_IF_ERROR(d->Init());
  d->worker_ = std::thread([p = d.get()] { p->Run(); });
  return d;
}

absl::Status StagedDownloader::Init() {
  CUDA_CHECK(cudaSetDevice(device_));
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  for (int i = 0; i < kSlots; ++i) {
    CUDA_CHECK(cudaHostAlloc(&slots_[i], slot_bytes_, cudaHostAllocDefault));
    // Blocking: the worker sleeps on the DMA instead of spinning a core the host needs.
    CUDA_CHECK(
        cudaEventCreateWithFlags(&landed_[i], cudaEventDisableTiming | cudaEventBlockingSync));
  }
  return absl::OkStatus();
}

StagedDownloader::~StagedDownloader() {
  if (worker_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    changed_.notify_all();
    worker_.join();
  }
  (void)cudaSetDevice(device_);
  if (stream_) (void)cudaStreamSynchronize(stream_);
  for (int i = 0; i < kSlots; ++i) {
    if (slots_[i]) (void)cudaFreeHost(slots_[i]);
    if (landed_[i]) (void)cudaEventDestroy(landed_[i]);
  }
  if (stream_) (void)cudaStreamDestroy(stream_);
}

void StagedDownloader::Start(const StagedDownload& d) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(d);
    ++started_count_;
  }
  changed_.notify_all();
}

int64_t StagedDownloader::started() const {
  std::lock_guard<std::mutex> lock(mu_);
  return started_count_;
}

absl::Status StagedDownloader::WaitLanded(int64_t ticket) {
  std::unique_lock<std::mutex> lock(mu_);
  changed_.wait(lock, [&] { return done_count_ >= ticket; });
  return status_;
}

absl::Status StagedDownloader::Finish() {
  std::unique_lock<std::mutex> lock(mu_);
  changed_.wait(lock, [&] { return queue_.empty() && !busy_; });
  absl::Status s = status_;
  status_ = absl::OkStatus();
  return s;
}

void StagedDownloader::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    changed_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and nothing left
    const StagedDownload d = queue_.front();
    queue_.pop_front();
    busy_ = true;
    const bool failed = !status_.ok();
    lock.unlock();
    // After a failure the rest are released uncopied: Finish reports the first error.
    absl::Status s = failed ? absl::OkStatus() : Copy(d);
    Release(d);
    lock.lock();
    if (status_.ok()) status_ = s;
    busy_ = false;
    ++done_count_;
    changed_.notify_all();
  }
}

absl::Status StagedDownloader::Issue(const StagedDownload& d, size_t chunk, int slot) {
  const size_t begin = chunk * slot_bytes_, bytes = std::min(slot_bytes_, d.bytes - begin);
  CUDA_CHECK(cudaMemcpyAsync(slots_[slot], static_cast<const char*>(d.src) + begin, bytes,
                             cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaEventRecord(landed_[slot], stream_));
  return absl::OkStatus();
}

// Page-locked destinations (the HostArena's pinned part) take one DMA; others go through the
// slots, chunk i+1's DMA running while chunk i is copied out of its slot.
absl::Status StagedDownloader::Copy(const StagedDownload& d) {
  if (d.bytes == 0) return absl::OkStatus();
  CUDA_CHECK(cudaSetDevice(device_));
  CUDA_CHECK(cudaStreamWaitEvent(stream_, d.ready, 0));
  if (HostArena::Process().Pinned(d.host_dst, d.bytes)) {
    CUDA_CHECK(cudaMemcpyAsync(d.host_dst, d.src, d.bytes, cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaEventRecord(landed_[0], stream_));
    CUDA_CHECK(cudaEventSynchronize(landed_[0]));
    return absl::OkStatus();
  }
  const size_t chunks = (d.bytes + slot_bytes_ - 1) / slot_bytes_;
  PREFILL_RETURN_IF_ERROR(Issue(d, 0, 0));
  for (size_t i = 0; i < chunks; ++i) {
    if (i + 1 < chunks) {
      PREFILL_RETURN_IF_ERROR(Issue(d, i + 1, static_cast<int>((i + 1) % kSlots)));
    }
    const int slot = static_cast<int>(i % kSlots);
    CUDA_CHECK(cudaEventSynchronize(landed_[slot]));
    const size_t begin = i * slot_bytes_;
    std::memcpy(static_cast<char*>(d.host_dst) + begin, slots_[slot],
                std::min(slot_bytes_, d.bytes - begin));
  }
  return absl::OkStatus();
}

void StagedDownloader::Release(const StagedDownload& d) {
  (void)cudaSetDevice(device_);
  if (d.free_after) (void)cudaFreeAsync(d.free_after, stream_);  // after this stream's copies
  if (d.ready) (void)cudaEventDestroy(d.ready);
}

}  // namespace prefill::cuda
