#include "parallel/nccl/host_staged_communicator.h"

#include <algorithm>
#include <cstdlib>
#include <utility>
#include <vector>

#include "kernels/cuda/cuda_check.h"
#include "kernels/status_macros.h"
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
  static absl::StatusOr<std::unique_ptr<StagedBytes>> Pinned(
      const void* p, size_t bytes, std::shared_ptr<PinnedStagingPool> pool) {
    if (DeviceOrNull(p, bytes) == nullptr) return std::make_unique<StagedBytes>(p, bytes);
    absl::StatusOr<PinnedStagingPool::Buffer> buffer = pool->Take(bytes);
    if (!buffer.ok()) return buffer.status();
    return std::unique_ptr<StagedBytes>(new StagedBytes(p, bytes, std::move(pool), *buffer));
  }
  ~StagedBytes() {
    if (pool_) pool_->Return(pinned_);
  }
  void* host() const { return host_; }

  absl::Status Download(cudaStream_t stream) {
    return Copy(host_, device_, cudaMemcpyDeviceToHost, stream);
  }
  absl::Status Upload(cudaStream_t stream) {
    return Copy(device_, host_, cudaMemcpyHostToDevice, stream);
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
  StagedBytes(const void* p, size_t bytes, std::shared_ptr<PinnedStagingPool> pool,
              PinnedStagingPool::Buffer pinned)
      : device_(const_cast<void*>(p)),
        bytes_(bytes),
        host_(pinned.data),
        pool_(std::move(pool)),
        pinned_(pinned) {}
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

// A send or receive through a staging copy. A receive's bytes go to the device once they
// landed, on `copy` (null: a send), ordered before the compute stream's later work.
class StagedTransfer final : public PendingTransfer {
 public:
  // posted: the compute stream at posting (a receive's; owned).
  StagedTransfer(std::unique_ptr<StagedBytes> bytes, std::unique_ptr<PendingTransfer> mpi,
                 cudaStream_t compute, cudaStream_t copy, cudaEvent_t posted)
      : bytes_(std::move(bytes)),
        mpi_(std::move(mpi)),
        compute_(compute),
        copy_(copy),
        posted_(posted) {}
  ~StagedTransfer() override {
    if (posted_ != nullptr) (void)cudaEventDestroy(posted_);
  }
  absl::Status Wait() override {
    absl::Status s = mpi_->Wait();
    if (s.ok() && copy_ != nullptr) s = bytes_->UploadBefore(compute_, copy_, posted_);
    return s;
  }

 private:
  std::unique_ptr<StagedBytes> bytes_;  // outlives the MPI request that reads or writes it
  std::unique_ptr<PendingTransfer> mpi_;
  cudaStream_t compute_;
  cudaStream_t copy_;
  cudaEvent_t posted_;
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
  std::unique_ptr<HostStagedCommunicator> c(
      new HostStagedCommunicator(std::move(mpi), device, compute_stream));
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

absl::Status HostStagedCommunicator::Drain() {
  CUDA_CHECK(cudaSetDevice(device_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

absl::Status HostStagedCommunicator::AllGather(const void* send, size_t bytes, void* recv) {
  PREFILL_RETURN_IF_ERROR(Drain());
  StagedBytes in(send, bytes), out(recv, bytes * size());
  PREFILL_RETURN_IF_ERROR(in.Download(stream_));
  PREFILL_RETURN_IF_ERROR(mpi_->AllGather(in.host(), bytes, out.host()));
  return out.Upload(stream_);
}

absl::Status HostStagedCommunicator::AllGatherV(const void* send, size_t bytes, void* recv,
                                                std::span<const size_t> recv_counts,
                                                std::span<const size_t> recv_displs) {
  PREFILL_RETURN_IF_ERROR(Drain());
  StagedBytes in(send, bytes), out(recv, Extent(recv_counts, recv_displs));
  PREFILL_RETURN_IF_ERROR(in.Download(stream_));
  // The receive buffer's gaps keep what they held: staged, they start as the device's bytes.
  PREFILL_RETURN_IF_ERROR(out.Download(stream_));
  PREFILL_RETURN_IF_ERROR(mpi_->AllGatherV(in.host(), bytes, out.host(), recv_counts, recv_displs));
  return out.Upload(stream_);
}

absl::Status HostStagedCommunicator::AllToAllV(const void* send,
                                               std::span<const size_t> send_counts,
                                               std::span<const size_t> send_displs, void* recv,
                                               std::span<const size_t> recv_counts,
                                               std::span<const size_t> recv_displs) {
  PREFILL_RETURN_IF_ERROR(Drain());
  StagedBytes in(send, Extent(send_counts, send_displs)),
      out(recv, Extent(recv_counts, recv_displs));
  PREFILL_RETURN_IF_ERROR(in.Download(stream_));
  PREFILL_RETURN_IF_ERROR(out.Download(stream_));
  absl::Status s =
      mpi_->AllToAllV(in.host(), send_counts, send_displs, out.host(), recv_counts, recv_displs);
  if (!s.ok()) return s;
  return out.Upload(stream_);
}

absl::Status HostStagedCommunicator::AllReduce(double* values, size_t count, bool sum) {
  PREFILL_RETURN_IF_ERROR(Drain());
  StagedBytes v(values, count * sizeof(double));
  PREFILL_RETURN_IF_ERROR(v.Download(stream_));
  auto* host = static_cast<double*>(v.host());
  PREFILL_RETURN_IF_ERROR(sum ? mpi_->AllReduceSum(host, count) : mpi_->AllReduceMax(host, count));
  return v.Upload(stream_);
}

absl::Status HostStagedCommunicator::AllReduceSum(double* values, size_t count) {
  return AllReduce(values, count, /*sum=*/true);
}

absl::Status HostStagedCommunicator::AllReduceMax(double* values, size_t count) {
  return AllReduce(values, count, /*sum=*/false);
}

absl::StatusOr<std::unique_ptr<PendingTransfer>> HostStagedCommunicator::Send(const void* data,
                                                                              size_t bytes,
                                                                              int peer, int tag) {
  PREFILL_RETURN_IF_ERROR(Drain());
  absl::StatusOr<std::unique_ptr<StagedBytes>> pinned = StagedBytes::Pinned(data, bytes, pool_);
  if (!pinned.ok()) return pinned.status();
  std::unique_ptr<StagedBytes> staged = *std::move(pinned);
  PREFILL_RETURN_IF_ERROR(staged->Download(stream_));
  absl::StatusOr<std::unique_ptr<PendingTransfer>> mpi =
      mpi_->Send(staged->host(), bytes, peer, tag);
  if (!mpi.ok()) return mpi.status();
  return std::make_unique<StagedTransfer>(std::move(staged), *std::move(mpi), stream_,
                                          /*copy=*/nullptr,
                                          /*posted=*/nullptr);
}

absl::StatusOr<std::unique_ptr<PendingTransfer>> HostStagedCommunicator::Recv(void* data,
                                                                              size_t bytes,
                                                                              int peer, int tag) {
  CUDA_CHECK(cudaSetDevice(device_));
  absl::StatusOr<std::unique_ptr<StagedBytes>> pinned = StagedBytes::Pinned(data, bytes, pool_);
  if (!pinned.ok()) return pinned.status();
  std::unique_ptr<StagedBytes> staged = *std::move(pinned);
  cudaEvent_t posted = nullptr;
  CUDA_CHECK(cudaEventCreateWithFlags(&posted, cudaEventDisableTiming));
  absl::StatusOr<std::unique_ptr<PendingTransfer>> mpi =
      mpi_->Recv(staged->host(), bytes, peer, tag);
  const cudaError_t recorded = mpi.ok() ? cudaEventRecord(posted, stream_) : cudaSuccess;
  if (!mpi.ok() || recorded != cudaSuccess) {
    (void)cudaEventDestroy(posted);
    if (!mpi.ok()) return mpi.status();
    CUDA_CHECK(recorded);
  }
  return std::make_unique<StagedTransfer>(std::move(staged), *std::move(mpi), stream_, copy_stream_,
                                          posted);
}

absl::Status HostStagedCommunicator::Barrier() {
  PREFILL_RETURN_IF_ERROR(Drain());
  return mpi_->Barrier();
}

absl::StatusOr<std::unique_ptr<Communicator>> HostStagedCommunicator::Split(int color, int key) {
  absl::StatusOr<std::unique_ptr<Communicator>> split = mpi_->Split(color, key);
  if (!split.ok() || *split == nullptr) return split;
  absl::StatusOr<std::unique_ptr<HostStagedCommunicator>> staged =
      Create(*std::move(split), device_, stream_);
  if (!staged.ok()) return staged.status();
  return std::unique_ptr<Communicator>(*std::move(staged));
}

void HostStagedCommunicator::Abort(int exit_code, std::string_view reason) {
  mpi_->Abort(exit_code, reason);
  std::abort();  // not reached: the call above ends the job (a virtual's [[noreturn]] is not seen
                 // here)
}

}  // namespace prefill
