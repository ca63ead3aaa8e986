// MpiCommunicator: the Communicator of CPU ranks, over an MPI communicator (host memory).
#pragma once

#include <mpi.h>

#include <memory>

#include "absl/status/statusor.h"
#include "parallel/communicator.h"

namespace prefill {

class MpiCommunicator final : public Communicator {
 public:
  // Duplicates `comm` (MPI_COMM_WORLD for the whole job, a split for a CP group) and makes
  // its errors return instead of aborting, so failures surface as statuses.
  static absl::StatusOr<std::unique_ptr<MpiCommunicator>> Create(MPI_Comm comm);
  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  MPI_Comm comm() const { return comm_; }

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
  [[noreturn]] void Abort(int exit_code, std::string_view reason) override;

 private:
  MpiCommunicator(MPI_Comm comm, int rank, int size) : comm_(comm), rank_(rank), size_(size) {}
  MPI_Comm comm_;
  int rank_;
  int size_;
};

}  // namespace prefill
