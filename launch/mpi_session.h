// MpiSession: MPI for the lifetime of one `prefill` process, and how a command's outcome
// becomes an exit code on every rank.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "launch/rank_environment.h"
#include "parallel/mpi_communicator.h"
#include "runtime/atomic_file.h"

namespace prefill {

class MpiSession {
 public:
  // thread_level: what MPI_Init_thread asks for (serve: MPI_THREAD_MULTIPLE, its dispatcher
  // thread and worker both call MPI on rank 0).
  MpiSession(int* argc, char*** argv, int thread_level);
  ~MpiSession();  // MPI_Finalize
  int world_rank() const { return rank_; }
  int world_size() const { return size_; }
  int thread_level() const { return thread_level_; }  // what MPI provided
  // Who this rank is, as the launcher says (launch/rank_environment.h); not OK when the
  // launch is wrong (Slurm's N tasks started as N singletons): main then refuses to run.
  const absl::StatusOr<RankEnvironment>& rank_environment() const { return where_; }

 private:
  int rank_ = 0;
  int size_ = 1;
  int thread_level_ = 0;
  absl::StatusOr<RankEnvironment> where_;
};

// 0 for OK, 2 for bad input (InvalidArgument, NotFound, OutOfRange, ResourceExhausted), 1
// otherwise. Rank 0 prints the message as one line; every rank returns the same code.
int ExitCodeFor(const absl::Status& status, int rank);

// Threads per rank when --threads is 0: SLURM_CPUS_PER_TASK when Slurm set it, else the
// node's cores shared by its ranks (the local size of the running MpiSession).
int DefaultThreadsPerRank();

}  // namespace prefill
