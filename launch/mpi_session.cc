#include "launch/mpi_session.h"

#include <mpi.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "launch/launcher_watch.h"

namespace prefill {
namespace {

// The running session's rank environment, for DefaultThreadsPerRank.
const RankEnvironment* session_environment = nullptr;

}  // namespace

MpiSession::MpiSession(int* argc, char*** argv, int thread_level) {
  MPI_Init_thread(argc, argv, thread_level, &thread_level_);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  where_ = DiscoverRankEnvironment(ProcessEnvironment(), rank_, size_);
  // All ranks refuse together, so none is left waiting for a peer that has gone.
  int bad = where_.ok() ? 0 : 1, any_bad = 0;
  MPI_Allreduce(&bad, &any_bad, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (where_.ok() && any_bad != 0) {
    where_ = absl::FailedPreconditionError(
        "another rank refused its launch environment (see its message)");
  }
  if (where_.ok()) session_environment = &*where_;
  if (where_.ok() && where_->launcher != "none") WatchLauncher(rank_);
}

MpiSession::~MpiSession() {
  session_environment = nullptr;
  MPI_Finalize();
}

int ExitCodeFor(const absl::Status& status, int rank) {
  if (status.ok()) return 0;
  if (rank == 0) {
    std::fprintf(stderr, "prefill: error: %s\n", std::string(status.message()).c_str());
    std::fflush(stderr);
  }
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kResourceExhausted:  // refused up front: too large for this job
      return 2;
    default:
      return 1;
  }
}

int DefaultThreadsPerRank() {
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  if (session_environment == nullptr) return static_cast<int>(cores);
  if (session_environment->cpus_per_task > 0) return session_environment->cpus_per_task;
  return std::max(1, static_cast<int>(cores) / std::max(1, session_environment->local_size));
}

}  // namespace prefill
