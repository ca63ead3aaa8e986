// NcclCommunicator: the Communicator of GPU ranks (one device per rank, device memory).
//
// Ordering. Every transfer runs on the communicator's own stream, ordered after the work the
// compute stream (the CUDA backend's, CudaBackendStream) had queued when the call was made,
// and the compute stream is made to wait for its completion. So the calls return once queued
// and the data they move are valid for anything queued on the compute stream afterwards
// (CopyToHost, attention, ...). AllReduceSum/Max on host doubles and Barrier do block.
//
// Send/Recv. NCCL matches point-to-point transfers by order, not by tag, and a send issued
// alone can block its stream until the peer posts the receive, which deadlocks a ring whose
// ranks all send first. So Send/Recv only record their transfer (and an event of the compute
// stream: what a send reads is ready then); the pending transfers go out together, in one
// ncclGroupStart/End, at StartPosted() (the ring and the sparse exchange call it once a
// step's transfers are posted), the first Wait() of any of them, or the next collective. The
// group runs on the communication stream concurrently with whatever the compute stream got
// in between (the ring step's attention), and Wait() makes the compute stream wait for it,
// without blocking the host. Contract: the two sides post the transfers between a pair of
// ranks in the same order (tags are not matched), and the communicator outlives its
// PendingTransfers.
//
// Failure. A watchdog thread polls ncclCommGetAsyncError and the completion events of the
// transfers in flight; an NCCL error, or a transfer (or a blocking NCCL call such as
// initialisation) still unfinished after comm_timeout_seconds, aborts the job with a message
// naming this rank: ncclCommAbort, then MPI_Abort. A hang becomes an abort.
//
// Split. ncclCommSplit (NCCL >= 2.18) of the NCCL communicator plus MPI_Comm_split of the MPI
// one beside it: the new communicator has the same device and compute stream, and its own
// comm stream, watchdog and event pool.
#pragma once

#include <cuda_runtime_api.h>
#include <mpi.h>
#include <nccl.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "parallel/communicator.h"

namespace prefill {

// The GPU of this rank: device_id_flag when >= 0 (--device-id), else the node-local rank
// (OMPI_COMM_WORLD_LOCAL_RANK, SLURM_LOCALID, MPI_LOCALRANKID, in that order) modulo
// device_count, else 0.
int ChooseLocalDevice(int device_id_flag, int device_count);

struct NcclOptions {
  MPI_Comm mpi_comm = MPI_COMM_WORLD;     // ranks of the NCCL communicator (rank 0 makes the id)
  int device_id = -1;                     // -1: ChooseLocalDevice
  cudaStream_t compute_stream = nullptr;  // the CUDA backend's stream (nullptr: legacy default)
  double comm_timeout_seconds = 600.0;    // in flight this long: abort the job
};

class NcclCommunicator final : public Communicator {
 public:
  // Collective over options.mpi_comm: rank 0 creates the ncclUniqueId, MPI_Bcast shares it,
  // every rank calls ncclCommInitRank on its device.
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Create(const NcclOptions& options);
  ~NcclCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int device() const { return device_; }
  cudaStream_t comm_stream() const { return comm_stream_; }

  absl::Status AllGather(const void* send, size_t bytes, void* recv) override;
  absl::Status AllGatherV(const void* send, size_t bytes, void* recv,
                          std::span<const size_t> recv_counts,
                          std::span<const size_t> recv_displs) override;
  absl::Status AllToAllV(const void* send, std::span<const size_t> send_counts,
                         std::span<const size_t> send_displs, void* recv,
                         std::span<const size_t> recv_counts,
                         std::span<const size_t> recv_displs) override;
  // Every collective takes host or device memory: host buffers (the plans' small metadata,
  // e.g. the lists of requested KV blocks) go through a device staging buffer and the call
  // returns with the result in place; device buffers are stream-ordered as above.
  absl::Status AllReduceSum(double* values, size_t count) override;
  absl::Status AllReduceMax(double* values, size_t count) override;
  absl::StatusOr<std::unique_ptr<PendingTransfer>> Send(const void* data, size_t bytes, int peer,
                                                        int tag) override;
  absl::StatusOr<std::unique_ptr<PendingTransfer>> Recv(void* data, size_t bytes, int peer,
                                                        int tag) override;
  // Issues the pending batch as one group now, on the comm stream (see the file comment).
  absl::Status StartPosted() override { return FlushPending(); }
  // Returns when every rank has reached it and this rank's queued compute work is done.
  absl::Status Barrier() override;
  // Issues pending Send/Recv first, like any collective. Blocks until every rank of this
  // communicator has called it (watched: a missing rank aborts after comm_timeout_seconds).
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key) override;
  [[noreturn]] void Abort(int exit_code, std::string_view reason) override;

  // Transfers posted by Send/Recv and not yet issued (see the file comment).
  struct PendingBatch;

 private:
  NcclCommunicator() = default;

  // What Create and Split share: everything but the NCCL communicator. Takes ownership of
  // `owned_mpi_comm` (freed on failure too), makes its errors return, picks the device
  // (ChooseLocalDevice(device_id, ...)), creates the comm stream and starts the watchdog.
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Prepare(MPI_Comm owned_mpi_comm,
                                                                   int device_id,
                                                                   cudaStream_t compute_stream,
                                                                   double comm_timeout_seconds);
  // Hands the initialised NCCL communicator to this object (and its watchdog).
  void Attach(ncclComm_t comm);

  // Issues the pending point-to-point batch, if any, as one group.
  absl::Status FlushPending();
  // comm stream waits for the compute stream's work queued so far.
  absl::Status OrderAfterCompute();
  // Records completion on the comm stream, makes the compute stream wait for it, and hands
  // the event to the watchdog. Returns the event (owned by the pool; valid until the
  // watchdog sees it complete, so only HostWait right after may use it).
  absl::StatusOr<cudaEvent_t> FinishOnCommStream(const std::string& what);
  absl::StatusOr<cudaEvent_t> TakeEvent();
  // Blocks the host until `event` completes, polling for errors; aborts past the timeout.
  absl::Status HostWait(cudaEvent_t event, const std::string& what);
  absl::Status AllReduce(double* values, size_t count, ncclRedOp_t op);
  // At least `bytes` of stage_, valid for work on the comm stream.
  absl::StatusOr<char*> Stage(size_t bytes);
  // AllGather / GroupedExchange where send or recv is host memory: through stage_, blocking.
  absl::Status StagedAllGather(const void* send, size_t bytes, void* recv);
  absl::Status StagedExchange(const void* send, std::span<const size_t> send_counts,
                              std::span<const size_t> send_displs, void* recv,
                              std::span<const size_t> recv_counts,
                              std::span<const size_t> recv_displs, const char* what);
  absl::Status GroupedExchange(const void* send, std::span<const size_t> send_counts,
                               std::span<const size_t> send_displs, void* recv,
                               std::span<const size_t> recv_counts,
                               std::span<const size_t> recv_displs, const char* what);
  // Marks a blocking NCCL call for the watchdog (cleared by EndBlocking).
  void BeginBlocking(const std::string& what);
  void EndBlocking();
  void WatchdogLoop();
  [[noreturn]] void AbortFromWatchdog(const std::string& reason);

  MPI_Comm mpi_comm_ = MPI_COMM_NULL;
  ncclComm_t comm_ = nullptr;
  int rank_ = 0;
  int size_ = 1;
  int device_ = 0;
  double timeout_seconds_ = 600.0;
  cudaStream_t compute_stream_ = nullptr;
  cudaStream_t comm_stream_ = nullptr;
  // Device staging of collectives on host memory (grow-only; used on the comm stream only).
  char* stage_ = nullptr;
  size_t stage_capacity_ = 0;
  std::shared_ptr<PendingBatch> pending_;

  struct InFlight {
    cudaEvent_t event;
    std::chrono::steady_clock::time_point since;
    std::string what;
  };
  std::mutex mu_;  // guards the members below (shared with the watchdog)
  std::condition_variable stop_cv_;
  bool stop_ = false;
  std::deque<InFlight> in_flight_;
  std::vector<cudaEvent_t> free_events_;
  std::vector<cudaEvent_t> all_events_;
  bool blocking_ = false;
  std::chrono::steady_clock::time_point blocking_since_;
  std::string blocking_what_;
  std::thread watchdog_;
};

}  // namespace prefill
