#include "launch/mpi_session.h"

#include <mpi.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"

namespace prefill {

MpiSession::MpiSession(int* argc, char*** argv) {
  int provided = 0;
  MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
}

MpiSession::~MpiSession() { MPI_Finalize(); }

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
  int local_ranks = 1;
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE", "MPI_LOCALNRANKS"}) {
    if (const char* v = std::getenv(var); v != nullptr && std::atoi(v) > 0) {
      local_ranks = std::atoi(v);
      break;
    }
  }
  return std::max(1, static_cast<int>(cores) / local_ranks);
}

}  // namespace prefill
