// The control messages of `prefill serve` between rank 0's dispatcher and every rank's
// worker loop: JSON text over a communicator of their own (a duplicate of the world), so
// they never match a message of a request's own collectives.
//   dispatcher -> rank   kAssignTag  {"op": "run", "request", "first_rank", "ranks", "tokens",
//   "queue_seconds"}
//                                    {"op": "stop"}
//   group leader -> 0    kDoneTag    {"id", "ok", "record"}
//   any rank -> 0        kStopTag    {} (this rank got SIGTERM/SIGINT: drain the service)
#pragma once

#include <mpi.h>

#include <list>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace prefill {

inline constexpr int kAssignTag = 1;
inline constexpr int kDoneTag = 2;
inline constexpr int kStopTag = 3;

// A message waiting at `comm` from `source` (MPI_ANY_SOURCE allowed) with `tag`, received;
// nullopt when none is there. *from: who sent it.
absl::StatusOr<std::optional<nlohmann::json>> TryReceiveJson(MPI_Comm comm, int source, int tag,
                                                             int* from = nullptr);

// Non-blocking sends whose buffers live until they complete.
class PendingSends {
 public:
  ~PendingSends();  // waits for what is still in flight
  absl::Status Send(MPI_Comm comm, int dest, int tag, const nlohmann::json& message);
  absl::Status Progress();  // frees the completed ones
  absl::Status WaitAll();

 private:
  struct InFlight {
    std::string bytes;
    MPI_Request request = MPI_REQUEST_NULL;
  };
  std::list<InFlight> sends_;
};

}  // namespace prefill
