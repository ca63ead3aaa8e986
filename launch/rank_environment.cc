#include "launch/rank_environment.h"

#include <cstdlib>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "kernels/status_macros.h"

namespace prefill {
namespace {

// The variable as a non-negative integer; nullopt when unset.
absl::StatusOr<std::optional<int>> ReadCount(const EnvironmentLookup& env,
                                             const std::string& name) {
  std::optional<std::string> text = env(name);
  if (!text.has_value()) return std::optional<int>();
  int value = 0;
  if (!absl::SimpleAtoi(absl::string_view(text->data(), text->size()), &value) || value < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, "='", *text,
                     "' is not a non-negative integer (is the launcher's environment damaged?)"));
  }
  return std::optional<int>(value);
}

// Slurm's tasks per node, "4(x2),3" -> {4, 4, 3}.
absl::StatusOr<std::vector<int>> ExpandTasksPerNode(const std::string& name,
                                                    const std::string& spec) {
  std::vector<int> counts;
  const auto bad = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat(name, "='", spec, "' is not a list like 4(x2),3"));
  };
  for (absl::string_view item : absl::StrSplit(absl::string_view(spec.data(), spec.size()), ',')) {
    int count = 0, times = 1;
    const size_t open = item.find("(x");
    if (open != absl::string_view::npos) {
      if (item.back() != ')' ||
          !absl::SimpleAtoi(item.substr(open + 2, item.size() - open - 3), &times)) {
        return bad();
      }
      item = item.substr(0, open);
    }
    if (!absl::SimpleAtoi(item, &count) || count < 0 || times < 1) return bad();
    counts.insert(counts.end(), times, count);
  }
  return counts;
}

std::string PmiFixMessage(int slurm_tasks, int mpi_world_size, const EnvironmentLookup& env) {
  std::string message =
      absl::StrCat("Slurm says ", slurm_tasks, " tasks but MPI sees a world of ", mpi_world_size,
                   ": launch with `srun --mpi=pmix` (Debian's OpenMPI has no PMI2 support) or "
                   "mpirun inside the allocation");
  if (std::optional<std::string> mpi_type = env("SLURM_MPI_TYPE"); mpi_type.has_value()) {
    absl::StrAppend(&message, " (this step was started with --mpi=", *mpi_type, ")");
  } else if (!env("SLURM_STEP_ID").has_value()) {
    absl::StrAppend(&message, " (this process was run straight from the job script, not by srun)");
  }
  return message;
}

absl::Status CheckInside(const char* what, int value, int size) {
  if (value < size) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat("the launcher says ", what, " ", value, " of ",
                                                    size, ", which is outside [0, ", size, ")"));
}

}  // namespace

EnvironmentLookup ProcessEnvironment() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
}

EnvironmentLookup MapEnvironment(std::map<std::string, std::string> variables) {
  return [variables = std::move(variables)](const std::string& name) -> std::optional<std::string> {
    auto it = variables.find(name);
    if (it == variables.end()) return std::nullopt;
    return it->second;
  };
}

absl::StatusOr<RankEnvironment> DiscoverRankEnvironment(const EnvironmentLookup& env,
                                                        int mpi_world_rank, int mpi_world_size) {
  RankEnvironment where;
  if (std::optional<std::string> job = env("SLURM_JOB_ID"); job.has_value()) where.job_id = *job;
  absl::StatusOr<std::optional<int>> cpus = ReadCount(env, "SLURM_CPUS_PER_TASK");
  if (!cpus.ok()) return cpus.status();
  where.cpus_per_task = cpus->value_or(0);

  // Reads the four figures of one launcher; all or nothing but the local ones.
  struct Names {
    const char *rank, *local_rank, *size, *local_size;
  };
  const auto read = [&](const Names& n) -> absl::Status {
    for (auto [name, field] :
         {std::pair{n.rank, &where.rank}, std::pair{n.local_rank, &where.local_rank},
          std::pair{n.size, &where.world_size}, std::pair{n.local_size, &where.local_size}}) {
      if (name == nullptr) continue;
      absl::StatusOr<std::optional<int>> value = ReadCount(env, name);
      if (!value.ok()) return value.status();
      if (value->has_value()) *field = **value;
    }
    return absl::OkStatus();
  };

  if (env("OMPI_COMM_WORLD_SIZE").has_value()) {
    where.launcher = "openmpi";
    if (absl::Status s = read({"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK",
                               "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE"});
        !s.ok()) {
      return s;
    }
    if (where.world_size != mpi_world_size) {
      return absl::FailedPreconditionError(absl::StrCat(
          "mpirun says ", where.world_size, " ranks but MPI sees a world of ", mpi_world_size));
    }
  } else if (env("SLURM_PROCID").has_value()) {
    where.launcher = "slurm";
    where.world_size = mpi_world_size;  // SLURM_NTASKS may be unset (sbatch without -n)
    if (absl::Status s = read({"SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS", nullptr}); !s.ok())
      return s;
    if (where.world_size != mpi_world_size) {
      return absl::FailedPreconditionError(PmiFixMessage(where.world_size, mpi_world_size, env));
    }
    // Ranks on this node: this node's entry of the step's (srun) or the job's (batch
    // script) tasks per node; one node holds them all.
    where.local_size = where.world_size;
    for (const char* name : {"SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"}) {
      std::optional<std::string> spec = env(name);
      if (!spec.has_value()) continue;
      absl::StatusOr<std::vector<int>> counts = ExpandTasksPerNode(name, *spec);
      if (!counts.ok()) return counts.status();
      absl::StatusOr<std::optional<int>> node = ReadCount(env, "SLURM_NODEID");
      if (!node.ok()) return node.status();
      const int index = node->value_or(0);
      if (index >= static_cast<int>(counts->size())) {
        return absl::FailedPreconditionError(absl::StrCat("SLURM_NODEID=", index, " but ", name,
                                                          "='", *spec, "' lists ", counts->size(),
                                                          " nodes"));
      }
      where.local_size = (*counts)[index];
      break;
    }
  } else {
    where.rank = mpi_world_rank;
    where.world_size = mpi_world_size;
    where.local_size = mpi_world_size;
    if (absl::Status s = read({nullptr, "MPI_LOCALRANKID", nullptr, "MPI_LOCALNRANKS"}); !s.ok())
      return s;
  }
  if (where.rank != mpi_world_rank) {
    return absl::FailedPreconditionError(
        absl::StrCat("the launcher says rank ", where.rank, " but MPI says rank ", mpi_world_rank));
  }
  PREFILL_RETURN_IF_ERROR(CheckInside("rank", where.rank, where.world_size));
  if (absl::Status s = CheckInside("local rank", where.local_rank, where.local_size); !s.ok())
    return s;
  return where;
}

absl::StatusOr<int> GpuForLocalRank(const RankEnvironment& where, int visible_gpus) {
  if (visible_gpus <= 0) {
    return absl::FailedPreconditionError(
        "no GPU visible: ask Slurm for them (--gpus-per-node) or check CUDA_VISIBLE_DEVICES");
  }
  if (visible_gpus == 1) return 0;
  if (where.local_size > visible_gpus) {
    return absl::FailedPreconditionError(
        absl::StrCat(where.local_size, " ranks on this node share ", visible_gpus,
                     " GPUs: one rank per GPU (--ntasks-per-node = --gpus-per-node)"));
  }
  return where.local_rank;
}

}  // namespace prefill
