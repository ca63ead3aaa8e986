#include "parallel/nccl/nccl_communicator.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/status_macros.h"
#include "parallel/mpi_check.h"
#include "parallel/nccl/memory_kind.h"
#include "parallel/nccl/nccl_check.h"

static_assert(NCCL_VERSION_CODE >= NCCL_VERSION(2, 18, 0),
              "NcclCommunicator::Split needs ncclCommSplit (NCCL 2.18)");

namespace prefill {

struct NcclCommunicator::PendingBatch {
  struct Op {
    bool send;
    void* data;
    size_t bytes;
    int peer;
  };
  std::vector<Op> ops;
  cudaEvent_t posted = nullptr;  // compute stream state at the latest post
  bool flushed = false;
  absl::Status status;
  ~PendingBatch() {
    if (posted) (void)cudaEventDestroy(posted);
  }
};

namespace {

using Clock = std::chrono::steady_clock;

class NcclPendingTransfer final : public PendingTransfer {
 public:
  NcclPendingTransfer(std::shared_ptr<NcclCommunicator::PendingBatch> batch,
                      std::function<absl::Status()> flush)
      : batch_(std::move(batch)), flush_(std::move(flush)) {}
  absl::Status Wait() override {
    if (!batch_->flushed) {
      PREFILL_RETURN_IF_ERROR(flush_());
    }
    return batch_->status;
  }

 private:
  std::shared_ptr<NcclCommunicator::PendingBatch> batch_;
  std::function<absl::Status()> flush_;
};

int EnvInt(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return -1;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  return (end && *end == '\0' && x >= 0) ? static_cast<int>(x) : -1;
}

absl::Status CheckSpans(std::span<const size_t> counts, std::span<const size_t> displs, int size,
                        const char* what) {
  if (static_cast<int>(counts.size()) != size || static_cast<int>(displs.size()) != size) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": counts and displacements need one entry per rank (", size, ")"));
  }
  return absl::OkStatus();
}

}  // namespace

int ChooseLocalDevice(int device_id_flag, int device_count) {
  if (device_id_flag >= 0) return device_id_flag;
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID"}) {
    const int local = EnvInt(name);
    if (local >= 0) return device_count > 0 ? local % device_count : 0;
  }
  return 0;
}

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Prepare(
    MPI_Comm owned_mpi_comm, int device_id, cudaStream_t compute_stream,
    double comm_timeout_seconds) {
  std::unique_ptr<NcclCommunicator> c(new NcclCommunicator());
  c->mpi_comm_ = owned_mpi_comm;  // the destructor frees it from here on
  MPI_CHECK(MPI_Comm_set_errhandler(c->mpi_comm_, MPI_ERRORS_RETURN));
  MPI_CHECK(MPI_Comm_rank(c->mpi_comm_, &c->rank_));
  MPI_CHECK(MPI_Comm_size(c->mpi_comm_, &c->size_));
  c->timeout_seconds_ = comm_timeout_seconds;
  c->compute_stream_ = compute_stream;

  int count = 0;
  CUDA_CHECK(cudaGetDeviceCount(&count));
  c->device_ = ChooseLocalDevice(device_id, count);
  if (c->device_ >= count) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", c->rank_, ": device ", c->device_,
                                                   " but only ", count, " CUDA devices"));
  }
  CUDA_CHECK(cudaSetDevice(c->device_));
  CUDA_CHECK(cudaStreamCreateWithFlags(&c->comm_stream_, cudaStreamNonBlocking));
  c->watchdog_ = std::thread([raw = c.get()] { raw->WatchdogLoop(); });
  return c;
}

void NcclCommunicator::Attach(ncclComm_t comm) {
  std::lock_guard<std::mutex> lock(mu_);  // the watchdog reads comm_
  comm_ = comm;
}

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(
    const NcclOptions& options) {
  MPI_Comm dup = MPI_COMM_NULL;
  MPI_CHECK(MPI_Comm_dup(options.mpi_comm, &dup));
  absl::StatusOr<std::unique_ptr<NcclCommunicator>> prepared =
      Prepare(dup, options.device_id, options.compute_stream, options.comm_timeout_seconds);
  if (!prepared.ok()) return prepared.status();
  std::unique_ptr<NcclCommunicator> c = std::move(*prepared);

  ncclUniqueId id;
  if (c->rank_ == 0) NCCL_CHECK(ncclGetUniqueId(&id));
  MPI_CHECK(MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, c->mpi_comm_));
  c->BeginBlocking("ncclCommInitRank");
  ncclComm_t comm = nullptr;
  const ncclResult_t init = ncclCommInitRank(&comm, c->size_, id, c->rank_);
  c->EndBlocking();
  NCCL_CHECK(init);
  c->Attach(comm);
  return c;
}

absl::StatusOr<std::unique_ptr<Communicator>> NcclCommunicator::Split(int color, int key) {
  PREFILL_RETURN_IF_ERROR(FlushPending());
  CUDA_CHECK(cudaSetDevice(device_));
  // Both splits order by (key, rank here), and the NCCL ranks here are the MPI ranks, so the
  // two new communicators rank their members alike (checked below). Both are collective over
  // this communicator, members or not, and watched: a rank that never calls Split turns the
  // others' wait into an abort.
  const bool member = color >= 0;
  MPI_Comm split = MPI_COMM_NULL;
  BeginBlocking("MPI_Comm_split");
  const int split_rc = MPI_Comm_split(mpi_comm_, member ? color : MPI_UNDEFINED, key, &split);
  EndBlocking();
  MPI_CHECK(split_rc);
  std::unique_ptr<NcclCommunicator> c;
  if (split != MPI_COMM_NULL) {
    absl::StatusOr<std::unique_ptr<NcclCommunicator>> prepared =
        Prepare(split, device_, compute_stream_, timeout_seconds_);
    if (!prepared.ok()) return prepared.status();
    c = std::move(*prepared);
  }
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  ncclComm_t comm = nullptr;
  BeginBlocking("ncclCommSplit");
  const ncclResult_t r =
      ncclCommSplit(comm_, member ? color : NCCL_SPLIT_NOCOLOR, key, &comm, &config);
  EndBlocking();
  NCCL_CHECK(r);
  if (!member && color != kNoColor) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", rank_, ": Split color ", color, " is neither >= 0 nor kNoColor"));
  }
  if (c == nullptr) return std::unique_ptr<Communicator>();
  if (comm == nullptr) {
    return absl::InternalError(
        absl::StrCat("rank ", rank_, ": ncclCommSplit returned no communicator"));
  }
  c->Attach(comm);  // destroyed with `c` from here on
  int nccl_rank = -1, nccl_size = -1;
  NCCL_CHECK(ncclCommUserRank(comm, &nccl_rank));
  NCCL_CHECK(ncclCommCount(comm, &nccl_size));
  if (nccl_rank != c->rank_ || nccl_size != c->size_) {
    return absl::InternalError(absl::StrCat("rank ", rank_, ": split NCCL rank ", nccl_rank, " of ",
                                            nccl_size, " but MPI rank ", c->rank_, " of ",
                                            c->size_));
  }
  return std::unique_ptr<Communicator>(std::move(c));
}

NcclCommunicator::~NcclCommunicator() {
  (void)cudaSetDevice(device_);
  if (comm_ != nullptr) {
    (void)FlushPending();
    if (absl::StatusOr<cudaEvent_t> done = FinishOnCommStream("teardown"); done.ok()) {
      (void)HostWait(*done, "teardown");
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  if (watchdog_.joinable()) watchdog_.join();
  if (comm_ != nullptr) (void)ncclCommDestroy(comm_);
  pending_.reset();
  for (cudaEvent_t e : all_events_) (void)cudaEventDestroy(e);
  if (stage_ != nullptr) (void)cudaFree(stage_);
  if (comm_stream_ != nullptr) (void)cudaStreamDestroy(comm_stream_);
  if (mpi_comm_ != MPI_COMM_NULL) MPI_Comm_free(&mpi_comm_);
}

absl::StatusOr<cudaEvent_t> NcclCommunicator::TakeEvent() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!free_events_.empty()) {
    cudaEvent_t e = free_events_.back();
    free_events_.pop_back();
    return e;
  }
  cudaEvent_t e = nullptr;
  CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  all_events_.push_back(e);
  return e;
}

absl::Status NcclCommunicator::OrderAfterCompute() {
  absl::StatusOr<cudaEvent_t> e = TakeEvent();
  if (!e.ok()) return e.status();
  CUDA_CHECK(cudaEventRecord(*e, compute_stream_));
  CUDA_CHECK(cudaStreamWaitEvent(comm_stream_, *e, 0));
  std::lock_guard<std::mutex> lock(mu_);
  // Reusable once the wait is queued: a later record does not change what was waited on.
  free_events_.push_back(*e);
  return absl::OkStatus();
}

absl::StatusOr<cudaEvent_t> NcclCommunicator::FinishOnCommStream(const std::string& what) {
  absl::StatusOr<cudaEvent_t> e = TakeEvent();
  if (!e.ok()) return e.status();
  CUDA_CHECK(cudaEventRecord(*e, comm_stream_));
  CUDA_CHECK(cudaStreamWaitEvent(compute_stream_, *e, 0));
  std::lock_guard<std::mutex> lock(mu_);
  in_flight_.push_back({*e, Clock::now(), what});
  return *e;
}

absl::Status NcclCommunicator::HostWait(cudaEvent_t event, const std::string& what) {
  const Clock::time_point start = Clock::now();
  for (;;) {
    const cudaError_t q = cudaEventQuery(event);
    if (q == cudaSuccess) return absl::OkStatus();
    if (q != cudaErrorNotReady) CUDA_CHECK(q);
    ncclResult_t async = ncclSuccess;
    NCCL_CHECK(ncclCommGetAsyncError(comm_, &async));
    NCCL_CHECK(async);
    if (std::chrono::duration<double>(Clock::now() - start).count() > timeout_seconds_) {
      Abort(3, absl::StrCat("NCCL ", what, " not finished after ", timeout_seconds_, " s"));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

void NcclCommunicator::BeginBlocking(const std::string& what) {
  std::lock_guard<std::mutex> lock(mu_);
  blocking_ = true;
  blocking_since_ = Clock::now();
  blocking_what_ = what;
}

void NcclCommunicator::EndBlocking() {
  std::lock_guard<std::mutex> lock(mu_);
  blocking_ = false;
}

absl::Status NcclCommunicator::FlushPending() {
  if (!pending_) return absl::OkStatus();
  std::shared_ptr<PendingBatch> batch = std::move(pending_);
  pending_.reset();
  batch->flushed = true;
  batch->status = [&]() -> absl::Status {
    CUDA_CHECK(cudaSetDevice(device_));
    CUDA_CHECK(cudaStreamWaitEvent(comm_stream_, batch->posted, 0));
    BeginBlocking("point-to-point group");
    NCCL_CHECK(ncclGroupStart());
    for (const PendingBatch::Op& op : batch->ops) {
      if (op.peer == rank_) continue;  // self transfers are copies, below
      if (op.send) {
        NCCL_CHECK(ncclSend(op.data, op.bytes, ncclUint8, op.peer, comm_, comm_stream_));
      } else {
        NCCL_CHECK(ncclRecv(op.data, op.bytes, ncclUint8, op.peer, comm_, comm_stream_));
      }
    }
    const ncclResult_t end = ncclGroupEnd();
    EndBlocking();
    NCCL_CHECK(end);
    // Sends to self pair with receives from self in posting order.
    std::vector<const PendingBatch::Op*> self_sends, self_recvs;
    for (const PendingBatch::Op& op : batch->ops) {
      if (op.peer == rank_) (op.send ? self_sends : self_recvs).push_back(&op);
    }
    if (self_sends.size() != self_recvs.size()) {
      return absl::InvalidArgumentError(absl::StrCat("rank ", rank_, ": ", self_sends.size(),
                                                     " sends to self but ", self_recvs.size(),
                                                     " receives"));
    }
    for (size_t i = 0; i < self_sends.size(); ++i) {
      if (self_sends[i]->bytes != self_recvs[i]->bytes) {
        return absl::InvalidArgumentError("send to self and receive from self differ in size");
      }
      CUDA_CHECK(cudaMemcpyAsync(self_recvs[i]->data, self_sends[i]->data, self_sends[i]->bytes,
                                 cudaMemcpyDeviceToDevice, comm_stream_));
    }
    absl::StatusOr<cudaEvent_t> done =
        FinishOnCommStream(absl::StrCat(batch->ops.size(), " send/recv"));
    return done.status();
  }();
  return batch->status;
}

absl::StatusOr<std::unique_ptr<PendingTransfer>> NcclCommunicator::Send(const void* data,
                                                                        size_t bytes, int peer,
                                                                        int /*tag*/) {
  if (peer < 0 || peer >= size_)
    return absl::InvalidArgumentError(absl::StrCat("Send: peer ", peer, " out of range"));
  CUDA_CHECK(cudaSetDevice(device_));
  if (!pending_) {
    pending_ = std::make_shared<PendingBatch>();
    CUDA_CHECK(cudaEventCreateWithFlags(&pending_->posted, cudaEventDisableTiming));
  }
  pending_->ops.push_back({true, const_cast<void*>(data), bytes, peer});
  CUDA_CHECK(cudaEventRecord(pending_->posted, compute_stream_));
  return std::unique_ptr<PendingTransfer>(
      new NcclPendingTransfer(pending_, [this] { return FlushPending(); }));
}

absl::StatusOr<std::unique_ptr<PendingTransfer>> NcclCommunicator::Recv(void* data, size_t bytes,
                                                                        int peer, int /*tag*/) {
  if (peer < 0 || peer >= size_)
    return absl::InvalidArgumentError(absl::StrCat("Recv: peer ", peer, " out of range"));
  CUDA_CHECK(cudaSetDevice(device_));
  if (!pending_) {
    pending_ = std::make_shared<PendingBatch>();
    CUDA_CHECK(cudaEventCreateWithFlags(&pending_->posted, cudaEventDisableTiming));
  }
  pending_->ops.push_back({false, data, bytes, peer});
  CUDA_CHECK(cudaEventRecord(pending_->posted, compute_stream_));
  return std::unique_ptr<PendingTransfer>(
      new NcclPendingTransfer(pending_, [this] { return FlushPending(); }));
}

absl::StatusOr<char*> NcclCommunicator::Stage(size_t bytes) {
  if (stage_capacity_ < bytes) {
    // Work queued on the comm stream may still read the old buffer.
    CUDA_CHECK(cudaStreamSynchronize(comm_stream_));
    if (stage_ != nullptr) CUDA_CHECK(cudaFree(stage_));
    stage_ = nullptr;
    stage_capacity_ = 0;
    CUDA_CHECK(cudaMalloc(&stage_, bytes));
    stage_capacity_ = bytes;
  }
  return stage_;
}

absl::Status NcclCommunicator::StagedAllGather(const void* send, size_t bytes, void* recv) {
  CUDA_CHECK(cudaSetDevice(device_));
  absl::StatusOr<char*> stage = Stage(bytes * (size_ + 1));
  if (!stage.ok()) return stage.status();
  char* dev_recv = *stage;
  char* dev_send = *stage + bytes * size_;
  CUDA_CHECK(cudaMemcpyAsync(dev_send, send, bytes, cudaMemcpyDefault, comm_stream_));
  PREFILL_RETURN_IF_ERROR(AllGather(dev_send, bytes, dev_recv));
  CUDA_CHECK(cudaMemcpyAsync(recv, dev_recv, bytes * size_, cudaMemcpyDefault, comm_stream_));
  absl::StatusOr<cudaEvent_t> done = FinishOnCommStream("AllGather (host memory)");
  if (!done.ok()) return done.status();
  return HostWait(*done, "AllGather (host memory)");
}

absl::Status NcclCommunicator::StagedExchange(const void* send, std::span<const size_t> send_counts,
                                              std::span<const size_t> send_displs, void* recv,
                                              std::span<const size_t> recv_counts,
                                              std::span<const size_t> recv_displs,
                                              const char* what) {
  size_t send_bytes = 0, recv_bytes = 0;
  for (int p = 0; p < size_; ++p) {
    send_bytes = std::max(send_bytes, send_displs[p] + send_counts[p]);
    recv_bytes = std::max(recv_bytes, recv_displs[p] + recv_counts[p]);
  }
  CUDA_CHECK(cudaSetDevice(device_));
  const size_t recv_at = (send_bytes + 255) / 256 * 256;
  absl::StatusOr<char*> stage = Stage(recv_at + recv_bytes + 1);
  if (!stage.ok()) return stage.status();
  char* dev_send = *stage;
  char* dev_recv = *stage + recv_at;
  if (send_bytes > 0)
    CUDA_CHECK(cudaMemcpyAsync(dev_send, send, send_bytes, cudaMemcpyDefault, comm_stream_));
  absl::Status s =
      GroupedExchange(dev_send, send_counts, send_displs, dev_recv, recv_counts, recv_displs, what);
  if (!s.ok()) return s;
  if (recv_bytes > 0)
    CUDA_CHECK(cudaMemcpyAsync(recv, dev_recv, recv_bytes, cudaMemcpyDefault, comm_stream_));
  absl::StatusOr<cudaEvent_t> done = FinishOnCommStream(what);
  if (!done.ok()) return done.status();
  return HostWait(*done, what);
}

absl::Status NcclCommunicator::AllGather(const void* send, size_t bytes, void* recv) {
  PREFILL_RETURN_IF_ERROR(FlushPending());
  if (IsHostMemory(send) || IsHostMemory(recv)) return StagedAllGather(send, bytes, recv);
  CUDA_CHECK(cudaSetDevice(device_));
  PREFILL_RETURN_IF_ERROR(OrderAfterCompute());
  BeginBlocking("ncclAllGather");
  const ncclResult_t r = ncclAllGather(send, recv, bytes, ncclUint8, comm_, comm_stream_);
  EndBlocking();
  NCCL_CHECK(r);
  return FinishOnCommStream("AllGather").status();
}

absl::Status NcclCommunicator::GroupedExchange(const void* send,
                                               std::span<const size_t> send_counts,
                                               std::span<const size_t> send_displs, void* recv,
                                               std::span<const size_t> recv_counts,
                                               std::span<const size_t> recv_displs,
                                               const char* what) {
  PREFILL_RETURN_IF_ERROR(FlushPending());
  if (IsHostMemory(send) || IsHostMemory(recv)) {
    return StagedExchange(send, send_counts, send_displs, recv, recv_counts, recv_displs, what);
  }
  CUDA_CHECK(cudaSetDevice(device_));
  PREFILL_RETURN_IF_ERROR(OrderAfterCompute());
  const auto* src = static_cast<const char*>(send);
  auto* dst = static_cast<char*>(recv);
  BeginBlocking(what);
  ncclResult_t r = ncclGroupStart();
  for (int peer = 0; peer < size_ && r == ncclSuccess; ++peer) {
    if (peer == rank_) continue;
    if (send_counts[peer] > 0) {
      r = ncclSend(src + send_displs[peer], send_counts[peer], ncclUint8, peer, comm_,
                   comm_stream_);
    }
    if (r == ncclSuccess && recv_counts[peer] > 0) {
      r = ncclRecv(dst + recv_displs[peer], recv_counts[peer], ncclUint8, peer, comm_,
                   comm_stream_);
    }
  }
  const ncclResult_t end = ncclGroupEnd();
  EndBlocking();
  NCCL_CHECK(r);
  NCCL_CHECK(end);
  if (send_counts[rank_] != recv_counts[rank_]) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": rank ", rank_, " sends ", send_counts[rank_],
                     " bytes to itself but expects ", recv_counts[rank_]));
  }
  if (send_counts[rank_] > 0) {
    CUDA_CHECK(cudaMemcpyAsync(dst + recv_displs[rank_], src + send_displs[rank_],
                               send_counts[rank_], cudaMemcpyDeviceToDevice, comm_stream_));
  }
  return FinishOnCommStream(what).status();
}

absl::Status NcclCommunicator::AllGatherV(const void* send, size_t bytes, void* recv,
                                          std::span<const size_t> recv_counts,
                                          std::span<const size_t> recv_displs) {
  PREFILL_RETURN_IF_ERROR(CheckSpans(recv_counts, recv_displs, size_, "AllGatherV"));
  const std::vector<size_t> send_counts(size_, bytes), send_displs(size_, 0);
  return GroupedExchange(send, send_counts, send_displs, recv, recv_counts, recv_displs,
                         "AllGatherV");
}

absl::Status NcclCommunicator::AllToAllV(const void* send, std::span<const size_t> send_counts,
                                         std::span<const size_t> send_displs, void* recv,
                                         std::span<const size_t> recv_counts,
                                         std::span<const size_t> recv_displs) {
  PREFILL_RETURN_IF_ERROR(CheckSpans(send_counts, send_displs, size_, "AllToAllV"));
  PREFILL_RETURN_IF_ERROR(CheckSpans(recv_counts, recv_displs, size_, "AllToAllV"));
  return GroupedExchange(send, send_counts, send_displs, recv, recv_counts, recv_displs,
                         "AllToAllV");
}

absl::Status NcclCommunicator::AllReduce(double* values, size_t count, ncclRedOp_t op) {
  PREFILL_RETURN_IF_ERROR(FlushPending());
  if (count == 0) return absl::OkStatus();
  CUDA_CHECK(cudaSetDevice(device_));
  const bool on_device = !IsHostMemory(values);
  PREFILL_RETURN_IF_ERROR(OrderAfterCompute());
  double* buffer = values;
  if (!on_device) {
    absl::StatusOr<char*> stage = Stage(count * sizeof(double));
    if (!stage.ok()) return stage.status();
    buffer = reinterpret_cast<double*>(*stage);
    CUDA_CHECK(cudaMemcpyAsync(buffer, values, count * sizeof(double), cudaMemcpyHostToDevice,
                               comm_stream_));
  }
  BeginBlocking("ncclAllReduce");
  const ncclResult_t r = ncclAllReduce(buffer, buffer, count, ncclFloat64, op, comm_, comm_stream_);
  EndBlocking();
  NCCL_CHECK(r);
  if (!on_device) {
    CUDA_CHECK(cudaMemcpyAsync(values, buffer, count * sizeof(double), cudaMemcpyDeviceToHost,
                               comm_stream_));
  }
  absl::StatusOr<cudaEvent_t> done = FinishOnCommStream("AllReduce");
  if (!done.ok()) return done.status();
  return on_device ? absl::OkStatus() : HostWait(*done, "AllReduce");
}

absl::Status NcclCommunicator::AllReduceSum(double* values, size_t count) {
  return AllReduce(values, count, ncclSum);
}

absl::Status NcclCommunicator::AllReduceMax(double* values, size_t count) {
  return AllReduce(values, count, ncclMax);
}

absl::Status NcclCommunicator::Barrier() {
  double one = 1.0;
  PREFILL_RETURN_IF_ERROR(AllReduce(&one, 1, ncclSum));
  CUDA_CHECK(cudaSetDevice(device_));
  absl::StatusOr<cudaEvent_t> e = TakeEvent();
  if (!e.ok()) return e.status();
  CUDA_CHECK(cudaEventRecord(*e, compute_stream_));
  {
    std::lock_guard<std::mutex> lock(mu_);
    in_flight_.push_back({*e, Clock::now(), "compute work before Barrier"});
  }
  return HostWait(*e, "Barrier");
}

void NcclCommunicator::Abort(int exit_code, std::string_view reason) {
  std::fprintf(stderr, "prefill: rank %d (GPU %d) aborting the job: %.*s\n", rank_, device_,
               static_cast<int>(reason.size()), reason.data());
  std::fflush(stderr);
  if (comm_ != nullptr) (void)ncclCommAbort(comm_);
  MPI_Abort(mpi_comm_ != MPI_COMM_NULL ? mpi_comm_ : MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);
}

void NcclCommunicator::AbortFromWatchdog(const std::string& reason) {
  std::fprintf(stderr, "prefill: rank %d (GPU %d) NCCL watchdog: %s; aborting the job\n", rank_,
               device_, reason.c_str());
  std::fflush(stderr);
  if (comm_ != nullptr) (void)ncclCommAbort(comm_);
  // MPI_Abort from a second thread is not promised by the standard below MPI_THREAD_MULTIPLE;
  // Open MPI and MPICH honour it. If it returns, exit anyway: never hang.
  MPI_Abort(MPI_COMM_WORLD, 4);
  std::_Exit(4);
}

void NcclCommunicator::WatchdogLoop() {
  (void)cudaSetDevice(device_);
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    stop_cv_.wait_for(lock, std::chrono::milliseconds(100));
    if (stop_) break;
    const Clock::time_point now = Clock::now();
    auto age = [&](Clock::time_point since) {
      return std::chrono::duration<double>(now - since).count();
    };
    if (blocking_ && age(blocking_since_) > timeout_seconds_) {
      const std::string what = blocking_what_;
      lock.unlock();
      AbortFromWatchdog(absl::StrCat(what, " blocked for more than ", timeout_seconds_, " s"));
    }
    while (!in_flight_.empty()) {
      const InFlight& front = in_flight_.front();
      const cudaError_t q = cudaEventQuery(front.event);
      if (q == cudaSuccess) {
        free_events_.push_back(front.event);
        in_flight_.pop_front();
        continue;
      }
      if (q != cudaErrorNotReady) {
        const std::string what = front.what;
        lock.unlock();
        AbortFromWatchdog(absl::StrCat(what, ": CUDA error ", cudaGetErrorString(q)));
      }
      if (age(front.since) > timeout_seconds_) {
        const std::string what = front.what;
        lock.unlock();
        AbortFromWatchdog(absl::StrCat(what, " not finished after ", timeout_seconds_, " s"));
      }
      break;
    }
    if (comm_ != nullptr) {
      ncclResult_t async = ncclSuccess;
      if (ncclCommGetAsyncError(comm_, &async) == ncclSuccess && async != ncclSuccess &&
          async != ncclInProgress) {
        lock.unlock();
        AbortFromWatchdog(absl::StrCat("asynchronous NCCL error: ", ncclGetErrorString(async)));
      }
    }
  }
}

}  // namespace prefill
