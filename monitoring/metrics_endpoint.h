// MetricsEndpoint: one rank's /metrics endpoint as the command line asks for it.
//   port = base_port + local_rank, so the ranks that share a host never share a port;
//   base_port 0 turns the endpoint off (no thread, no socket);
//   the bind host defaults to 127.0.0.1: pass 0.0.0.0 (or the node's address) when a
//   Prometheus on another host scrapes the job.
// The local rank comes from the launcher's environment: OMPI_COMM_WORLD_LOCAL_RANK
// (mpirun; checked first because mpirun inside an sbatch allocation inherits the batch
// step's SLURM_LOCALID=0), then SLURM_LOCALID (srun), then MPI_LOCALRANKID (MPICH, Intel
// MPI), else 0 for a process started on its own.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "monitoring/collectable.h"
#include "monitoring/exposer.h"

namespace prefill::monitoring {

struct MetricsEndpointOptions {
  int base_port = 0;                    // 0: no endpoint
  std::string bind_host = "127.0.0.1";  // IPv4, or IPv6 with or without brackets
  std::optional<int> local_rank;        // unset: LocalRankFromEnvironment()
  int num_threads = 2;
};

// The local rank the launcher set, 0 when none did; InvalidArgument when a variable is set
// but is not a non-negative integer.
absl::StatusOr<int> LocalRankFromEnvironment();

// base_port + local_rank; 0 when base_port is 0. InvalidArgument when base_port is outside
// [0, 65535] or the sum passes 65535.
absl::StatusOr<int> MetricsPortForRank(int base_port, int local_rank);

class MetricsEndpoint {
 public:
  // Listens when options.base_port != 0 and serves `collectable` (held weakly).
  static absl::StatusOr<MetricsEndpoint> Start(const MetricsEndpointOptions& options,
                                               const std::shared_ptr<Collectable>& collectable);
  MetricsEndpoint() = default;  // disabled

  bool enabled() const { return exposer_ != nullptr; }
  int port() const { return exposer_ ? exposer_->port() : 0; }
  std::string url() const { return exposer_ ? exposer_->url() : std::string(); }
  Exposer* exposer() const { return exposer_.get(); }

 private:
  std::unique_ptr<Exposer> exposer_;
};

}  // namespace prefill::monitoring
