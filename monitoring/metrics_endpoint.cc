#include "monitoring/metrics_endpoint.h"

#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace prefill::monitoring {

absl::StatusOr<int> LocalRankFromEnvironment() {
  for (const char* variable : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID"}) {
    const char* value = std::getenv(variable);
    if (!value || !*value) continue;
    int rank = -1;
    if (!absl::SimpleAtoi(value, &rank) || rank < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(variable, "='", value, "' is not a local rank (a non-negative integer)"));
    }
    return rank;
  }
  return 0;
}

absl::StatusOr<int> MetricsPortForRank(int base_port, int local_rank) {
  if (base_port < 0 || base_port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics port ", base_port, " is outside [0, 65535]"));
  }
  if (local_rank < 0)
    return absl::InvalidArgumentError(absl::StrCat("local rank ", local_rank, " is negative"));
  if (base_port == 0) return 0;
  if (base_port + local_rank > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("metrics port ", base_port, " + local rank ",
                                                   local_rank,
                                                   " passes 65535: choose a lower metrics port"));
  }
  return base_port + local_rank;
}

absl::StatusOr<MetricsEndpoint> MetricsEndpoint::Start(
    const MetricsEndpointOptions& options, const std::shared_ptr<Collectable>& collectable) {
  int local_rank = 0;
  if (options.local_rank) {
    local_rank = *options.local_rank;
  } else {
    absl::StatusOr<int> from_env = LocalRankFromEnvironment();
    if (!from_env.ok()) return from_env.status();
    local_rank = *from_env;
  }
  absl::StatusOr<int> port = MetricsPortForRank(options.base_port, local_rank);
  if (!port.ok()) return port.status();
  MetricsEndpoint endpoint;
  if (*port == 0) return endpoint;
  std::string host = options.bind_host.empty() ? "127.0.0.1" : options.bind_host;
  if (host.find(':') != std::string::npos && host.front() != '[')
    host = absl::StrCat("[", host, "]");
  absl::StatusOr<std::unique_ptr<Exposer>> exposer =
      Exposer::Create(absl::StrCat(host, ":", *port), options.num_threads);
  if (!exposer.ok()) return exposer.status();
  (*exposer)->RegisterCollectable(collectable);
  endpoint.exposer_ = std::move(*exposer);
  return endpoint;
}

}  // namespace prefill::monitoring
