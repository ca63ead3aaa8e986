#include "parallel/mpi_communicator.h"

#include <climits>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "parallel/mpi_check.h"

namespace prefill {

absl::Status MpiError(int code, const char* call, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  int rank = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  // A lost peer is the common cause of a failing collective: Unavailable says "retry the job".
  return absl::UnavailableError(absl::StrCat(
      "rank ", rank, ": ", call, " failed: ", std::string(text, len), " (", file, ":", line, ")"));
}

namespace {

// MPI counts are ints: larger messages must be split by the caller's plan.
absl::StatusOr<std::vector<int>> ToInts(std::span<const size_t> values, const char* what) {
  std::vector<int> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    if (values[i] > static_cast<size_t>(INT_MAX)) {
      return absl::InvalidArgumentError(absl::StrCat(what, "[", i, "] = ", values[i],
                                                     " bytes exceeds MPI's 2 GiB message limit"));
    }
    out[i] = static_cast<int>(values[i]);
  }
  return out;
}

class MpiTransfer final : public PendingTransfer {
 public:
  explicit MpiTransfer(MPI_Request request) : request_(request) {}
  ~MpiTransfer() override {
    if (request_ != MPI_REQUEST_NULL) MPI_Wait(&request_, MPI_STATUS_IGNORE);
  }
  absl::Status Wait() override {
    MPI_CHECK(MPI_Wait(&request_, MPI_STATUS_IGNORE));
    return absl::OkStatus();
  }

 private:
  MPI_Request request_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<MpiCommunicator>> MpiCommunicator::Adopt(MPI_Comm owned) {
  std::unique_ptr<MpiCommunicator> c(new MpiCommunicator(owned));  // frees `owned` from here on
  MPI_CHECK(MPI_Comm_set_errhandler(c->comm_, MPI_ERRORS_RETURN));
  MPI_CHECK(MPI_Comm_rank(c->comm_, &c->rank_));
  MPI_CHECK(MPI_Comm_size(c->comm_, &c->size_));
  return c;
}

absl::StatusOr<std::unique_ptr<MpiCommunicator>> MpiCommunicator::Create(MPI_Comm comm) {
  MPI_Comm dup;
  MPI_CHECK(MPI_Comm_dup(comm, &dup));
  return Adopt(dup);
}

absl::StatusOr<std::unique_ptr<MpiCommunicator>> MpiCommunicator::CreateRange(MPI_Comm parent,
                                                                              int first, int count,
                                                                              int tag) {
  MPI_Group all = MPI_GROUP_NULL, members = MPI_GROUP_NULL;
  MPI_CHECK(MPI_Comm_group(parent, &all));
  int range[1][3] = {{first, first + count - 1, 1}};
  const int included = MPI_Group_range_incl(all, 1, range, &members);
  MPI_Group_free(&all);
  MPI_CHECK(included);
  MPI_Comm comm = MPI_COMM_NULL;
  const int made = MPI_Comm_create_group(parent, members, tag, &comm);
  MPI_Group_free(&members);
  MPI_CHECK(made);
  return Adopt(comm);
}

MpiCommunicator::~MpiCommunicator() { MPI_Comm_free(&comm_); }

absl::StatusOr<std::unique_ptr<Communicator>> MpiCommunicator::Split(int color, int key) {
  const bool member = color >= 0;
  MPI_Comm split = MPI_COMM_NULL;
  MPI_CHECK(MPI_Comm_split(comm_, member ? color : MPI_UNDEFINED, key, &split));
  if (!member && color != kNoColor) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", rank_, ": Split color ", color, " is neither >= 0 nor kNoColor"));
  }
  if (split == MPI_COMM_NULL) return std::unique_ptr<Communicator>();
  return Adopt(split);
}

absl::Status MpiCommunicator::AllGather(const void* send, size_t bytes, void* recv) {
  if (bytes > static_cast<size_t>(INT_MAX)) {
    return absl::InvalidArgumentError(absl::StrCat("AllGather of ", bytes, " bytes exceeds 2 GiB"));
  }
  const int n = static_cast<int>(bytes);
  MPI_CHECK(MPI_Allgather(send, n, MPI_BYTE, recv, n, MPI_BYTE, comm_));
  return absl::OkStatus();
}

absl::Status MpiCommunicator::AllGatherV(const void* send, size_t bytes, void* recv,
                                         std::span<const size_t> recv_counts,
                                         std::span<const size_t> recv_displs) {
  const size_t sizes[1] = {bytes};
  absl::StatusOr<std::vector<int>> send_n = ToInts(sizes, "send bytes");
  absl::StatusOr<std::vector<int>> counts = ToInts(recv_counts, "recv_counts");
  absl::StatusOr<std::vector<int>> displs = ToInts(recv_displs, "recv_displs");
  for (const auto* s : {&send_n, &counts, &displs}) {
    if (!s->ok()) return s->status();
  }
  MPI_CHECK(MPI_Allgatherv(send, (*send_n)[0], MPI_BYTE, recv, counts->data(), displs->data(),
                           MPI_BYTE, comm_));
  return absl::OkStatus();
}

absl::Status MpiCommunicator::AllToAllV(const void* send, std::span<const size_t> send_counts,
                                        std::span<const size_t> send_displs, void* recv,
                                        std::span<const size_t> recv_counts,
                                        std::span<const size_t> recv_displs) {
  absl::StatusOr<std::vector<int>> sc = ToInts(send_counts, "send_counts");
  absl::StatusOr<std::vector<int>> sd = ToInts(send_displs, "send_displs");
  absl::StatusOr<std::vector<int>> rc = ToInts(recv_counts, "recv_counts");
  absl::StatusOr<std::vector<int>> rd = ToInts(recv_displs, "recv_displs");
  for (const auto* s : {&sc, &sd, &rc, &rd}) {
    if (!s->ok()) return s->status();
  }
  MPI_CHECK(MPI_Alltoallv(send, sc->data(), sd->data(), MPI_BYTE, recv, rc->data(), rd->data(),
                          MPI_BYTE, comm_));
  return absl::OkStatus();
}

absl::Status MpiCommunicator::AllReduceSum(double* values, size_t count) {
  MPI_CHECK(
      MPI_Allreduce(MPI_IN_PLACE, values, static_cast<int>(count), MPI_DOUBLE, MPI_SUM, comm_));
  return absl::OkStatus();
}

absl::Status MpiCommunicator::AllReduceMax(double* values, size_t count) {
  MPI_CHECK(
      MPI_Allreduce(MPI_IN_PLACE, values, static_cast<int>(count), MPI_DOUBLE, MPI_MAX, comm_));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<PendingTransfer>> MpiCommunicator::Send(const void* data,
                                                                       size_t bytes, int peer,
                                                                       int tag) {
  if (bytes > static_cast<size_t>(INT_MAX)) {
    return absl::InvalidArgumentError(absl::StrCat("Send of ", bytes, " bytes exceeds 2 GiB"));
  }
  MPI_Request request;
  MPI_CHECK(MPI_Isend(data, static_cast<int>(bytes), MPI_BYTE, peer, tag, comm_, &request));
  return std::unique_ptr<PendingTransfer>(new MpiTransfer(request));
}

absl::StatusOr<std::unique_ptr<PendingTransfer>> MpiCommunicator::Recv(void* data, size_t bytes,
                                                                       int peer, int tag) {
  if (bytes > static_cast<size_t>(INT_MAX)) {
    return absl::InvalidArgumentError(absl::StrCat("Recv of ", bytes, " bytes exceeds 2 GiB"));
  }
  MPI_Request request;
  MPI_CHECK(MPI_Irecv(data, static_cast<int>(bytes), MPI_BYTE, peer, tag, comm_, &request));
  return std::unique_ptr<PendingTransfer>(new MpiTransfer(request));
}

absl::Status MpiCommunicator::Barrier() {
  MPI_CHECK(MPI_Barrier(comm_));
  return absl::OkStatus();
}

void MpiCommunicator::Abort(int exit_code, std::string_view reason) {
  std::fprintf(stderr, "prefill: rank %d aborting the job: %.*s\n", rank_,
               static_cast<int>(reason.size()), reason.data());
  std::fflush(stderr);
  MPI_Abort(comm_, exit_code);
  std::abort();
}

}  // namespace prefill
