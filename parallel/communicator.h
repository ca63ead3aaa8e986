// Communicator: how bytes move between the ranks of a context-parallel group.
// Implementations: MpiCommunicator (host memory, CPU ranks) and NcclCommunicator (device
// memory, one GPU per rank). The plans (ring order, sparse exchange) are written once
// against this interface.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace prefill {

// A posted non-blocking send or receive; Wait() completes it.
class PendingTransfer {
 public:
  virtual ~PendingTransfer() = default;
  virtual absl::Status Wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // recv holds size() slots of `bytes` each, in rank order.
  virtual absl::Status AllGather(const void* send, size_t bytes, void* recv) = 0;
  // recv_counts[r] bytes from rank r land at recv + recv_displs[r].
  virtual absl::Status AllGatherV(const void* send, size_t bytes, void* recv,
                                  std::span<const size_t> recv_counts,
                                  std::span<const size_t> recv_displs) = 0;
  // Byte counts and displacements per peer, both directions.
  virtual absl::Status AllToAllV(const void* send, std::span<const size_t> send_counts,
                                 std::span<const size_t> send_displs, void* recv,
                                 std::span<const size_t> recv_counts,
                                 std::span<const size_t> recv_displs) = 0;
  virtual absl::Status AllReduceSum(double* values, size_t count) = 0;
  virtual absl::Status AllReduceMax(double* values, size_t count) = 0;

  virtual absl::StatusOr<std::unique_ptr<PendingTransfer>> Send(const void* data, size_t bytes,
                                                                int peer, int tag) = 0;
  virtual absl::StatusOr<std::unique_ptr<PendingTransfer>> Recv(void* data, size_t bytes, int peer,
                                                                int tag) = 0;
  // Starts the transfers posted by Send/Recv that have not started yet, so that they move
  // while the caller computes (ring-flash-attention's commit()): MPI's start when posted
  // (nothing to do); NCCL defers them to batch a ring's sends and receives into one group.
  // Call it once every transfer of a step is posted.
  virtual absl::Status StartPosted() { return absl::OkStatus(); }
  virtual absl::Status Barrier() = 0;

  // Collective over this communicator: ranks passing the same color >= 0 form one new
  // communicator, ordered by key (ties by rank); a rank passing kNoColor takes part but gets
  // nullptr. The new communicator moves the same kind of memory as this one.
  // This one stays usable, and the two are independent: either may be destroyed first.
  // A rank passing another negative color takes part as kNoColor and gets InvalidArgument,
  // so the other ranks are not left waiting.
  static constexpr int kNoColor = -1;
  virtual absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) = 0;

  // Ends every rank of the job now, with `reason` printed by this rank. Never returns.
  [[noreturn]] virtual void Abort(int exit_code, std::string_view reason) = 0;
};

// Every rank learns whether all ranks succeeded; the returned status is the first failing
// rank's (lowest rank), so every rank can report the same error and exit the same way
// instead of leaving the others waiting in a collective.
absl::Status AgreeOnStatus(Communicator& comm, const absl::Status& local);

}  // namespace prefill
