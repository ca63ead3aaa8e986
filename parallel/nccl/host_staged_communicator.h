// HostStagedCommunicator: the Communicator of GPU ranks that share a GPU (NCCL refuses two
// ranks on one device), so that N ranks of the CUDA backend run the same context-parallel
// code as on N GPUs (ring, sparse exchange, guests, LSE merges, Split) on a one-GPU machine:
// every device buffer goes through host memory and an MPI communicator.
//
// For testing, not speed: every call but a receive is synchronous. It first waits for the
// compute stream (the CUDA backend's, so what a call reads is final), copies device buffers
// to host staging, runs the MPI operation, and copies what arrived back before returning.
// Send and Recv stage through page-locked buffers kept in a pool (pinned_staging_pool.h);
// a Recv's Wait uploads what landed on a copy stream of its own and makes the compute stream
// wait for it, without waiting itself, so that the upload runs under the compute queued
// before the Wait (the ring's next K/V under the current step's attention). Host buffers pass
// straight through. Failures are the MPI communicator's.
#pragma once

#include <cuda_runtime_api.h>

#include <memory>
#include <utility>

#include "absl/status/statusor.h"
#include "parallel/communicator.h"
#include "parallel/nccl/pinned_staging_pool.h"

namespace prefill {

class HostStagedCommunicator final : public Communicator {
 public:
  // Moves bytes through `mpi` (a communicator over host memory); device buffers are on
  // `device`, written and read by work on `compute_stream`.
  static absl::StatusOr<std::unique_ptr<HostStagedCommunicator>> Create(
      std::unique_ptr<Communicator> mpi, int device, cudaStream_t compute_stream);
  ~HostStagedCommunicator() override;

  int rank() const override { return mpi_->rank(); }
  int size() const override { return mpi_->size(); }

  absl::Status AllGather(const void* send, size_t bytes, void* recv) override;
  absl::Status AllGatherV(const void* send, size_t bytes, void* recv,
                          std::span<const size_t> recv_counts,
                          std::span<const size_t> recv_displs) override;
  absl::Status AllToAllV(const void* send, std::span<const size_t> send_counts,
                         std::span<const size_t> send_displs, void* recv,
                         std::span<const size_t> recv_counts,
                         std::span<const size_t> recv_displs) override;
  absl::Status AllReduceSum(double* values, size_t count) override;
  absl::Status AllReduceMax(double* values, size_t count) override;
  absl::StatusOr<std::unique_ptr<PendingTransfer>> Send(const void* data, size_t bytes, int peer,
                                                        int tag) override;
  absl::StatusOr<std::unique_ptr<PendingTransfer>> Recv(void* data, size_t bytes, int peer,
                                                        int tag) override;
  absl::Status Barrier() override;
  // The MPI communicator's split, staged the same way (same device and stream).
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) override;
  [[noreturn]] void Abort(int exit_code, std::string_view reason) override;

 private:
  HostStagedCommunicator(std::unique_ptr<Communicator> mpi, int device, cudaStream_t compute_stream)
      : mpi_(std::move(mpi)), device_(device), stream_(compute_stream) {}
  // Waits for the compute stream's queued work.
  absl::Status Drain();
  absl::Status AllReduce(double* values, size_t count, bool sum);

  std::unique_ptr<Communicator> mpi_;
  int device_;
  cudaStream_t stream_;
  cudaStream_t copy_stream_ = nullptr;  // received bytes' uploads
  // Send/Recv staging; shared with the transfers, which may outlive a Split's communicator.
  std::shared_ptr<PinnedStagingPool> pool_ = std::make_shared<PinnedStagingPool>();
};

}  // namespace prefill
