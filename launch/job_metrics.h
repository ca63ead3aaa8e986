// JobMetrics: the Prometheus side of a `prefill` command. Every rank registers the service's
// metrics and, with --metrics-port P (0: off), serves /metrics on P + its local rank, bound
// to --metrics-address (127.0.0.1 unless the operator opts into 0.0.0.0).
#pragma once

#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/statusor.h"
#include "monitoring/metrics_endpoint.h"
#include "monitoring/prefill_metrics.h"

namespace prefill {

struct MetricsFlags {
  int port = 0;
  std::string address = "127.0.0.1";
  // Seconds the endpoint stays up after the work ends, so a scrape sees the final values of
  // a short job (Prometheus scrapes every few seconds).
  double linger_seconds = 0;
};

void AddMetricsFlags(CLI::App& cmd, MetricsFlags& flags);

struct JobMetrics {
  std::unique_ptr<monitoring::PrefillMetrics> metrics;
  monitoring::MetricsEndpoint endpoint;  // disabled when --metrics-port is 0
  double linger_seconds = 0;
  ~JobMetrics();  // lingers, then stops the endpoint
};

absl::StatusOr<std::unique_ptr<JobMetrics>> StartJobMetrics(const MetricsFlags& flags,
                                                            int world_rank,
                                                            const std::string& model_name);

}  // namespace prefill
