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
  // Ranks [first, first + count) of `parent` as a communicator of their own
  // (MPI_Comm_create_group): collective over those ranks only, so the others go on with
  // their own work. `tag` tells apart creations that overlap in time.
  static absl::StatusOr<std::unique_ptr<MpiCommunicator>> CreateRange(MPI_Comm parent, int first,
                                                                      int count, int tag);
  // Frees the MPI communicator it owns (its duplicate, or its split).
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
  // MPI_Comm_split; the new MpiCommunicator owns its MPI communicator.
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) override;
  [[noreturn]] void Abort(int exit_code, std::string_view reason) override;

 private:
  explicit MpiCommunicator(MPI_Comm owned) : comm_(owned) {}
  // Takes ownership of `owned` (freed on failure too) and makes its errors return.
  static absl::StatusOr<std::unique_ptr<MpiCommunicator>> Adopt(MPI_Comm owned);

  MPI_Comm comm_;
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace prefill
