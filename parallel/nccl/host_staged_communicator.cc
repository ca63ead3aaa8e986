#include "parallel/nccl/host_staged_communicator.h"

#include <algorithm>
#include <functional>
#include <cstdlib>
#include <utility>
#include <vector>

#include "kernels/cuda/cuda_check.h"
#include "parallel/nccl/memory_kind.h"
#include "parallel/nccl/pinned_staging_pool.h"

namespace prefill {
namespace {

// A host view of `bytes` of the caller's memory: that memory itself when it is host memory,
// else a staging copy that Download fills from the device and Upload writes back: pageable
// for the collectives (synchronous anyway), page-locked from the pool for Send and Recv.
class StagedBytes {
 public:
  StagedBytes(const void* p, size_t bytes) : device_(DeviceOrNull(p, bytes)), bytes_(bytes) {
    if (device_ != nullptr) storage_.resize(bytes);
    host_ = device_ != nullptr ? storage_.data() : const_cast<void*>(p);
  }
  static absl::StatusOr<std::unique_ptr<StagedBytes>> Pinned(const void* p, size_t bytes,
                                                             std::shared_ptr<PinnedStagingPool> pool) {
    if (DeviceOrNull(p, bytes) == nullptr) return std::make_unique<StagedBytes>(p, bytes);
    absl::StatusOr<PinnedStagingPool::Buffer> buffer = pool->Take(bytes);
    if (!buffer.ok()) return buffer.status();
    return std::unique_ptr<StagedBytes>(new StagedBytes(p, bytes, std::move(pool), *buffer));
  }
  ~StagedBytes() {
    if (pool_) pool_->Return(pinned_);
  }
  void* host() const { return host_; }

  absl::Status Download(cudaStream_t stream) { return Copy(host_, device_, cudaMemcpyDeviceToHost, stream); }
  absl::Status Upload(cudaStream_t stream) { return Copy(device_, host_, cudaMemcpyHostToDevice, stream); }
  // Page-locked only: downloads on `copy` once the compute stream's work queued so far is
  // done (the bytes are final there), and returns at once; WaitDownloaded blocks until the
  // bytes are on the host.
  absl::Status DownloadAfter(cudaStream_t compute, cudaStream_t copy) {
    if (device_ == nullptr) return absl::OkStatus();
    cudaEvent_t ready = nullptr;
    CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    cudaError_t e = cudaEventRecord(ready, compute);
    if (e == cudaSuccess) e = cudaStreamWaitEvent(copy, ready, 0);
    (void)cudaEventDestroy(ready);  // the wait holds what it needs
    CUDA_CHECK(e);
    CUDA_CHECK(cudaMemcpyAsync(host_, device_, bytes_, cudaMemcpyDeviceToHost, copy));
    CUDA_CHECK(cudaEventRecord(pinned_.last_copy, copy));
    return absl::OkStatus();
  }
  absl::Status WaitDownloaded() {
    if (device_ != nullptr) CUDA_CHECK(cudaEventSynchronize(pinned_.last_copy));
    return absl::OkStatus();
  }
  // Page-locked only: uploads on `copy` once `free` (the compute stream at the Recv's
  // posting: the buffer's earlier readers) has passed, makes `compute` wait for it, and
  // returns at once. The staging buffer goes back to the pool with the copy's event.
  absl::Status UploadBefore(cudaStream_t compute, cudaStream_t copy, cudaEvent_t free) {
    if (device_ == nullptr) return absl::OkStatus();
    CUDA_CHECK(cudaStreamWaitEvent(copy, free, 0));
    CUDA_CHECK(cudaMemcpyAsync(device_, host_, bytes_, cudaMemcpyHostToDevice, copy));
    CUDA_CHECK(cudaEventRecord(pinned_.last_copy, copy));
    CUDA_CHECK(cudaStreamWaitEvent(compute, pinned_.last_copy, 0));
    return absl::OkStatus();
  }

 private:
  StagedBytes(const void* p, size_t bytes, std::shared_ptr<PinnedStagingPool> pool, PinnedStagingPool::Buffer pinned)
      : device_(const_cast<void*>(p)), bytes_(bytes), host_(pinned.data), pool_(std::move(pool)), pinned_(pinned) {}
  static void* DeviceOrNull(const void* p, size_t bytes) {
    return p != nullptr && bytes > 0 && !IsHostMemory(p) ? const_cast<void*>(p) : nullptr;
  }
  absl::Status Copy(void* dst, const void* src, cudaMemcpyKind kind, cudaStream_t stream) {
    if (device_ == nullptr) return absl::OkStatus();
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes_, kind, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
    return absl::OkStatus();
  }

  void* device_;
  size_t bytes_;
  std::vector<char> storage_;
  void* host_ = nullptr;
  std::shared_ptr<PinnedStagingPool> pool_;  // set: host_ is pinned_.data
  PinnedStagingPool::Buffer pinned_;
};

}  // namespace

// A Send staged through page-locked memory: its download is queued on the copy stream and
// its MPI send (`mpi`) starts at the communicator's next blocking call.
struct DeferredSend {
  std::unique_ptr<StagedBytes> bytes;
  size_t size = 0;
  int peer = 0;
  int tag = 0;
  std::unique_ptr<PendingTransfer> mpi;
};

namespace {

// A receive through a staging copy: once landed, its bytes go to the device on `copy`,
// ordered before the compute stream's later work. Its Wait first starts the communicator's
// deferred sends: a peer may be waiting for them.
class StagedReceive final : public PendingTransfer {
 public:
  // posted: the compute stream at posting (owned).
  StagedReceive(std::unique_ptr<StagedBytes> bytes, std::unique_ptr<PendingTransfer> mpi, cudaStream_t compute,
                cudaStream_t copy, cudaEvent_t posted, std::function<absl::Status()> start_sends)
      : bytes_(std::move(bytes)), mpi_(std::move(mpi)), compute_(compute), copy_(copy), posted_(posted),
        start_sends_(std::move(start_sends)) {}
  ~StagedReceive() override { (void)cudaEventDestroy(posted_); }
  absl::Status Wait() override {
    absl::Status s = start_sends_();
    if (s.ok()) s = mpi_->Wait();
    if (s.ok()) s = bytes_->UploadBefore(compute_, copy_, posted_);
    return s;
  }

 private:
  std::unique_ptr<StagedBytes> bytes_;  // outlives the MPI request that writes it
  std::unique_ptr<PendingTransfer> mpi_;
  cudaStream_t compute_;
  cudaStream_t copy_;
  cudaEvent_t posted_;
  std::function<absl::Status()> start_sends_;
};

// A send whose MPI part starts once its bytes reached the host (StartDeferredSends).
class DeferredSendTransfer final : public PendingTransfer {
 public:
  DeferredSendTransfer(std::shared_ptr<DeferredSend> send, std::function<absl::Status()> start_sends)
      : send_(std::move(send)), start_sends_(std::move(start_sends)) {}
  absl::Status Wait() override {
    if (absl::Status s = start_sends_(); !s.ok()) return s;
    return send_->mpi->Wait();
  }

 private:
  std::shared_ptr<DeferredSend> send_;
  std::function<absl::Status()> start_sends_;
};

// Bytes a v-collective's buffer spans: the end of its furthest slot.
size_t Extent(std::span<const size_t> counts, std::span<const size_t> displs) {
  size_t end = 0;
  for (size_t i = 0; i < counts.size() && i < displs.size(); ++i) {
    if (counts[i] > 0) end = std::max(end, displs[i] + counts[i]);
  }
  return end;
}

}  // namespace

absl::StatusOr<std::unique_ptr<HostStagedCommunicator>> HostStagedCommunicator::Create(
    std::unique_ptr<Communicator> mpi, int device, cudaStream_t compute_stream) {
  std::unique_ptr<HostStagedCommunicator> c(new HostStagedCommunicator(std::move(mpi), device, compute_stream));
  CUDA_CHECK(cudaSetDevice(device));
  CUDA_CHECK(cudaStreamCreateWithFlags(&c->copy_stream_, cudaStreamNonBlocking));
  return c;
}

HostStagedCommunicator::~HostStagedCommunicator() {
  if (copy_stream_ != nullptr) {
    (void)cudaSetDevice(device_);
    (void)cudaStreamSynchronize(copy_stream_);
    (void)cudaStreamDestroy(copy_stream_);
  }
}

absl::Status HostStagedCommunicator::StartDeferredSends() {
  for (const std::shared_ptr<DeferredSend>& send : deferred_) {
    if (absl::Status s = send->bytes->WaitDownloaded(); !s.ok()) return s;
    absl::StatusOr<std::unique_ptr<PendingTransfer>> mpi = mpi_->Send(send->bytes->host(), send->size, send->peer,
                                                                      send->tag);
    if (!mpi.ok()) return mpi.status();
    send->mpi = *std::move(mpi);
  }
  deferred_.clear();
  return absl::OkStatus();
}

absl::Status HostStagedCommunicator::Drain() {
  if (absl::Status s = StartDeferredSends(); !s.ok()) return s;
  CUDA_CHECK(cudaSetDevice(device_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

absl::Status HostStagedCommunicator::AllGather(const void* send, size_t bytes, void* recv) {
  if (absl::Status s = Drain(); !s.ok()) return s;
  StagedBytes in(send, bytes), out(recv, bytes * size());
  if (absl::Status s = in.Download(stream_); !s.ok()) return s;
  if (absl::Status s = mpi_->AllGather(in.host(), bytes, out.host()); !s.ok()) return s;
  return out.Upload(stream_);
}

absl::Status HostStagedCommunicator::AllGatherV(const void* send, size_t bytes, void* recv,
                                                std::span<const size_t> recv_counts,
                                                std::span<const size_t> recv_displs) {
  if (absl::Status s = Drain(); !s.ok()) return s;
  StagedBytes in(send, bytes), out(recv, Extent(recv_counts, recv_displs));
  if (absl::Status s = in.Download(stream_); !s.ok()) return s;
  // The receive buffer's gaps keep what they held: staged, they start as the device's bytes.
  if (absl::Status s = out.Download(stream_); !s.ok()) return s;
  if (absl::Status s = mpi_->AllGatherV(in.host(), bytes, out.host(), recv_counts, recv_displs); !s.ok()) return s;
  return out.Upload(stream_);
}

absl::Status HostStagedCommunicator::AllToAllV(const void* send, std::span<const size_t> send_counts,
                                               std::span<const size_t> send_displs, void* recv,
                                               std::span<const size_t> recv_counts,
                                               std::span<const size_t> recv_displs) {
  if (absl::Status s = Drain(); !s.ok()) return s;
  StagedBytes in(send, Extent(send_counts, send_displs)), out(recv, Extent(recv_counts, recv_displs));
  if (absl::Status s = in.Download(stream_); !s.ok()) return s;
  if (absl::Status s = out.Download(stream_); !s.ok()) return s;
  absl::Status s = mpi_->AllToAllV(in.host(), send_counts, send_displs, out.host(), recv_counts, recv_displs);
  if (!s.ok()) return s;
  return out.Upload(stream_);
}

absl::Status HostStagedCommunicator::AllReduce(double* values, size_t count, bool sum) {
  if (absl::Status s = Drain(); !s.ok()) return s;
  StagedBytes v(values, count * sizeof(double));
  if (absl::Status s = v.Download(stream_); !s.ok()) return s;
  auto* host = static_cast<double*>(v.host());
  if (absl::Status s = sum ? mpi_->AllReduceSum(host, count) : mpi_->AllReduceMax(host, count); !s.ok()) return s;
  return v.Upload(stream_);
}

absl::Status HostStagedCommunicator::AllReduceSum(double* values, size_t count) {
  return AllReduce(values, count, /*sum=*/true);
}

absl::Status HostStagedCommunicator::AllReduceMax(double* values, size_t count) {
  return AllReduce(values, count, /*sum=*/false);
}

absl::StatusOr<std::unique_ptr<PendingTransfer>> HostStagedCommunicator::Send(const void* data, size_t bytes,
                                                                              int peer, int tag) {
  CUDA_CHECK(cudaSetDevice(device_));
  absl::StatusOr<std::unique_ptr<StagedBytes>> pinned = StagedBytes::Pinned(data, bytes, pool_);
  if (!pinned.ok()) return pinned.status();
  auto send = std::make_shared<DeferredSend>();
  send->bytes = *std::move(pinned);
  send->size = bytes;
  send->peer = peer;
  send->tag = tag;
  // The download runs on the copy stream under the compute queued after this call (the
  // ring's attention); the MPI send starts at the next blocking call.
  if (absl::Status s = send->bytes->DownloadAfter(stream_, copy_stream_); !s.ok()) return s;
  deferred_.push_back(send);
  return std::make_unique<DeferredSendTransfer>(std::move(send), [this] { return StartDeferredSends(); });
}

absl::StatusOr<std::unique_ptr<PendingTransfer>> HostStagedCommunicator::Recv(void* data, size_t bytes, int peer,
                                                                              int tag) {
  CUDA_CHECK(cudaSetDevice(device_));
  absl::StatusOr<std::unique_ptr<StagedBytes>> pinned = StagedBytes::Pinned(data, bytes, pool_);
  if (!pinned.ok()) return pinned.status();
  std::unique_ptr<StagedBytes> staged = *std::move(pinned);
  cudaEvent_t posted = nullptr;
  CUDA_CHECK(cudaEventCreateWithFlags(&posted, cudaEventDisableTiming));
  absl::StatusOr<std::unique_ptr<PendingTransfer>> mpi = mpi_->Recv(staged->host(), bytes, peer, tag);
  const cudaError_t recorded = mpi.ok() ? cudaEventRecord(posted, stream_) : cudaSuccess;
  if (!mpi.ok() || recorded != cudaSuccess) {
    (void)cudaEventDestroy(posted);
    if (!mpi.ok()) return mpi.status();
    CUDA_CHECK(recorded);
  }
  return std::make_unique<StagedReceive>(std::move(staged), *std::move(mpi), stream_, copy_stream_, posted,
                                        [this] { return StartDeferredSends(); });
}

absl::Status HostStagedCommunicator::Barrier() {
  if (absl::Status s = Drain(); !s.ok()) return s;
  return mpi_->Barrier();
}

absl::StatusOr<std::unique_ptr<Communicator>> HostStagedCommunicator::Split(int color, int key) {
  absl::StatusOr<std::unique_ptr<Communicator>> split = mpi_->Split(color, key);
  if (!split.ok() || *split == nullptr) return split;
  absl::StatusOr<std::unique_ptr<HostStagedCommunicator>> staged = Create(*std::move(split), device_, stream_);
  if (!staged.ok()) return staged.status();
  return std::unique_ptr<Communicator>(*std::move(staged));
}

void HostStagedCommunicator::Abort(int exit_code, std::string_view reason) {
  mpi_->Abort(exit_code, reason);
  std::abort();  // not reached: the call above ends the job (a virtual's [[noreturn]] is not seen here)
}

}  // namespace prefill
