#include "launch/job_metrics.h"

#include <chrono>
#include <thread>

namespace prefill {

void AddMetricsFlags(CLI::App& cmd, MetricsFlags& flags) {
  cmd.add_option("--metrics-port", flags.port,
                 "Serve Prometheus /metrics on this port + the local rank (0: off)")
      ->capture_default_str();
  cmd.add_option("--metrics-address", flags.address,
                 "Address /metrics binds to (0.0.0.0 for remote scrapes)")
      ->capture_default_str();
  cmd.add_option("--metrics-linger", flags.linger_seconds,
                 "Seconds /metrics stays up after the work ends")
      ->capture_default_str();
}

JobMetrics::~JobMetrics() {
  if (endpoint.enabled() && linger_seconds > 0) {
    std::this_thread::sleep_for(std::chrono::duration<double>(linger_seconds));
  }
}

absl::StatusOr<std::unique_ptr<JobMetrics>> StartJobMetrics(const MetricsFlags& flags,
                                                            int world_rank,
                                                            const std::string& model_name) {
  auto job = std::make_unique<JobMetrics>();
  job->linger_seconds = flags.linger_seconds;
  auto registry = std::make_shared<monitoring::Registry>();
  absl::StatusOr<monitoring::PrefillMetricsIdentity> identity =
      monitoring::PrefillMetricsIdentity::FromEnvironment(world_rank, model_name);
  if (!identity.ok()) return identity.status();
  absl::StatusOr<std::unique_ptr<monitoring::PrefillMetrics>> metrics =
      monitoring::PrefillMetrics::Create(registry, *identity);
  if (!metrics.ok()) return metrics.status();
  job->metrics = std::move(*metrics);
  if (flags.port == 0) return job;
  monitoring::MetricsEndpointOptions options;
  options.base_port = flags.port;
  options.bind_host = flags.address;
  absl::StatusOr<monitoring::MetricsEndpoint> endpoint =
      monitoring::MetricsEndpoint::Start(options, registry);
  if (!endpoint.ok()) return endpoint.status();
  job->endpoint = std::move(*endpoint);
  return job;
}

}  // namespace prefill
