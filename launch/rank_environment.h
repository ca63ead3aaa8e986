// RankEnvironment: who this process is in its job, as the launcher says, checked against
// what MPI says after MPI_Init.
//
// Where the figures come from, first match wins:
//   openmpi: OMPI_COMM_WORLD_RANK / _SIZE / _LOCAL_RANK / _LOCAL_SIZE (mpirun, also mpirun
//            inside a Slurm allocation: checked first because the ranks it starts inherit
//            the batch step's SLURM_PROCID=0 and SLURM_LOCALID=0);
//   slurm:   SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS, and the tasks on this node from
//            SLURM_STEP_TASKS_PER_NODE ("4(x2),3") at SLURM_NODEID (srun --mpi=pmix, or a
//            process run straight from a batch script);
//   none:    no launcher variables: MPI's rank and size; local rank and size from
//            MPI_LOCALRANKID / MPI_LOCALNRANKS (MPICH, Intel MPI) when set, else 0 and 1.
// job_id is SLURM_JOB_ID whenever it is set (mpirun inside an allocation too), else "".
//
// The one failure that matters in practice: under srun without a PMI that this OpenMPI
// speaks, every task starts as its own singleton ("rank 0 of 1") and all of them would
// compute the whole job alone. Slurm says N tasks, MPI sees 1: FailedPrecondition, with
// the launch that fixes it.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace prefill {

struct RankEnvironment {
  int rank = 0;                   // this process in the world, [0, world_size)
  int local_rank = 0;             // this process among the ranks on its node, [0, local_size)
  int world_size = 1;             // ranks in the job (equals MPI's world size)
  int local_size = 1;             // ranks on this node
  std::string launcher = "none";  // "openmpi", "slurm" or "none"
  std::string job_id;             // SLURM_JOB_ID, "" outside Slurm
  int cpus_per_task = 0;          // SLURM_CPUS_PER_TASK, 0 when unset
};

// Looks a variable up: its value, or nullopt when it is unset.
using EnvironmentLookup = std::function<std::optional<std::string>(const std::string& name)>;

// The process's environment (getenv).
EnvironmentLookup ProcessEnvironment();
// A fixed environment, for tests.
EnvironmentLookup MapEnvironment(std::map<std::string, std::string> variables);

// Pure: reads only `env` and the figures MPI reported after MPI_Init.
//   FailedPrecondition: the launcher's world size differs from MPI's (the PMI is not wired:
//     the message says how to launch instead), or a rank lies outside its world;
//   InvalidArgument: a launcher variable is set but is not a number ("4(x2),3" lists too).
absl::StatusOr<RankEnvironment> DiscoverRankEnvironment(const EnvironmentLookup& env,
                                                        int mpi_world_rank, int mpi_world_size);

// One GPU per local rank: the GPU ordinal this rank drives, given the GPUs it can see.
// One visible GPU is device 0 (Slurm's --gpus-per-task / --gpu-bind gave each task its own);
// otherwise local_rank, and FailedPrecondition when the node has more ranks than GPUs
// (--ntasks-per-node must equal --gpus-per-node) or sees none.
absl::StatusOr<int> GpuForLocalRank(const RankEnvironment& where, int visible_gpus);

}  // namespace prefill
