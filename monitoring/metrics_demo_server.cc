// metrics_demo_server: a process that exposes PrefillMetrics with a few recorded requests,
// for the Prometheus end-to-end test, `promtool check metrics` and trying dashboards.
//   metrics_demo_server --print                         exposition on stdout, then exit
//   metrics_demo_server --port 0 --port-file F --seconds 20
//                                                       serve /metrics; F gets the port
// The recorded values are fixed: 3 ok requests of 4096 tokens and 1 invalid_argument
// request of 1024 tokens, so prefill_prompt_tokens_total is 13312.
#include <csignal>
#include <cstdio>
#include <fstream>
#include <thread>

#include "CLI/CLI.hpp"
#include "monitoring/metrics_endpoint.h"
#include "monitoring/prefill_metrics.h"
#include "monitoring/text_format.h"

namespace {

volatile std::sig_atomic_t stop_requested = 0;
void RequestStop(int) { stop_requested = 1; }

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "metrics_demo_server: error: %s\n", std::string(status.message()).c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace prefill::monitoring;
  int port = 0;
  std::string host = "127.0.0.1";
  double seconds = 20;
  std::string port_file;
  bool print = false;
  CLI::App app("metrics_demo_server: PrefillMetrics with fixed values on /metrics",
               "metrics_demo_server");
  app.add_option("--port", port, "port to listen on; 0 picks a free one")
      ->check(CLI::Range(0, 65535));
  app.add_option("--host", host, "address to bind");
  app.add_option("--seconds", seconds, "serve this long, then exit (SIGTERM/SIGINT end it sooner)");
  app.add_option("--port-file", port_file, "write the bound port here once listening");
  app.add_flag("--print", print, "print the exposition on stdout and exit");
  CLI11_PARSE(app, argc, argv);

  auto registry = std::make_shared<Registry>();
  absl::StatusOr<PrefillMetricsIdentity> identity =
      PrefillMetricsIdentity::FromEnvironment(0, "demo-model");
  if (!identity.ok()) return Fail(identity.status());
  absl::StatusOr<std::unique_ptr<PrefillMetrics>> metrics =
      PrefillMetrics::Create(registry, *identity);
  if (!metrics.ok()) return Fail(metrics.status());
  PrefillMetrics& m = **metrics;
  for (int i = 0; i < 3; ++i) {
    PrefillRequestRecord r;
    r.prompt_tokens = 4096;
    r.prefill_seconds = 0.5 + i;
    r.phase_seconds = {0.05, 0.1 + 0.01 * i, 0.3, 0.02};
    r.attention_density = 0.25 + 0.1 * i;
    r.kv_bytes_sent = 1 << 20;
    r.kv_bytes_dense_ring = 4 << 20;
    m.RecordRequest(r);
  }
  PrefillRequestRecord failed;
  failed.status = absl::StatusCode::kInvalidArgument;
  failed.prompt_tokens = 1024;
  failed.prefill_seconds = 0.01;
  m.RecordRequest(failed);
  m.SetRequestsWaiting(2);
  m.SetRequestsRunning(1);
  m.SetGpuMemoryUsedBytes(int64_t{3} << 30);

  if (print) {
    std::fputs(SerializeText(registry->Collect()).c_str(), stdout);
    return 0;
  }
  absl::StatusOr<std::unique_ptr<Exposer>> exposer =
      Exposer::Create(host + ":" + std::to_string(port));
  if (!exposer.ok()) return Fail(exposer.status());
  (*exposer)->RegisterCollectable(registry);
  if (!port_file.empty()) {
    const std::string tmp = port_file + ".tmp";
    std::ofstream(tmp) << (*exposer)->port() << "\n";
    std::rename(tmp.c_str(), port_file.c_str());
  }
  std::printf("metrics_demo_server: serving %s for %g s\n", (*exposer)->url().c_str(), seconds);
  std::fflush(stdout);
  std::signal(SIGTERM, RequestStop);
  std::signal(SIGINT, RequestStop);
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (!stop_requested && std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return 0;
}
