#include "scheduler/serve_control.h"

#include "parallel/mpi_check.h"

namespace prefill {

absl::StatusOr<std::optional<nlohmann::json>> TryReceiveJson(MPI_Comm comm, int source, int tag,
                                                             int* from) {
  int waiting = 0;
  MPI_Status status;
  MPI_CHECK(MPI_Iprobe(source, tag, comm, &waiting, &status));
  if (!waiting) return std::optional<nlohmann::json>();
  int count = 0;
  MPI_CHECK(MPI_Get_count(&status, MPI_CHAR, &count));
  std::string bytes(static_cast<size_t>(count), '\0');
  MPI_CHECK(
      MPI_Recv(bytes.data(), count, MPI_CHAR, status.MPI_SOURCE, tag, comm, MPI_STATUS_IGNORE));
  if (from != nullptr) *from = status.MPI_SOURCE;
  nlohmann::json message = nlohmann::json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (message.is_discarded()) return absl::InternalError("serve: a control message is not JSON");
  return std::optional<nlohmann::json>(std::move(message));
}

PendingSends::~PendingSends() { (void)WaitAll(); }

absl::Status PendingSends::Send(MPI_Comm comm, int dest, int tag, const nlohmann::json& message) {
  InFlight& s = sends_.emplace_back();
  s.bytes = message.dump();
  MPI_CHECK(MPI_Isend(s.bytes.data(), static_cast<int>(s.bytes.size()), MPI_CHAR, dest, tag, comm,
                      &s.request));
  return absl::OkStatus();
}

absl::Status PendingSends::Progress() {
  for (auto it = sends_.begin(); it != sends_.end();) {
    int done = 0;
    MPI_CHECK(MPI_Test(&it->request, &done, MPI_STATUS_IGNORE));
    it = done ? sends_.erase(it) : std::next(it);
  }
  return absl::OkStatus();
}

absl::Status PendingSends::WaitAll() {
  for (InFlight& s : sends_) MPI_CHECK(MPI_Wait(&s.request, MPI_STATUS_IGNORE));
  sends_.clear();
  return absl::OkStatus();
}

}  // namespace prefill
