#include "launch/run_command.h"

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "absl/strings/str_format.h"
#include "launch/device_flags.h"
#include "launch/job_metrics.h"
#include "launch/request_flags.h"
#include "launch/termination_signal.h"
#include "runtime/execution_context.h"
#include "runtime/kvhandoff/ucx_kv_sink.h"
#include "scheduler/batch_runner.h"

namespace prefill {

std::function<int()> AddRunCommand(CLI::App& app, const MpiSession& session) {
  auto options = std::make_shared<BatchOptions>();
  auto metrics_flags = std::make_shared<MetricsFlags>();
  auto device = std::make_shared<std::string>("cpu");
  auto device_id = std::make_shared<int>(-1);
  auto comm = std::make_shared<std::string>("auto");
  CLI::App* cmd = app.add_subcommand(
      "run",
      "Prefill every prompt of a manifest (JSON lines: {\"id\", \"tokens\" | \"embeddings\", "
      "\"mode\"?,\n"
      "\"tau\"?, \"priority\"?}) with one model. Requests are placed on CP groups sized to their\n"
      "length (scheduler/README.md), longest first, groups running concurrently. Output folder:\n"
      "kv/<id>/ (KV cache), records/<id>.json and results.jsonl. A rerun with the same --out "
      "skips\n"
      "what is done; SIGTERM/SIGINT finish the requests in flight and exit 0, resumable.");
  BatchOptions& o = *options;
  cmd->add_option("--manifest", o.manifest_path, "JSON-lines manifest of requests")->required();
  cmd->add_option("--model", o.model_dir, "Model folder: config.json + safetensors")->required();
  cmd->add_option("--out", o.out_dir, "Output folder (resumable)")->required();
  cmd->add_flag("--skip-invalid", o.skip_invalid,
                "Run the valid lines of a manifest with bad lines (listed)");
  cmd->add_option("--max-tokens-per-rank", o.max_tokens_per_rank,
                  "Memory budget: the most tokens one rank holds")
      ->capture_default_str();
  cmd->add_option("--min-tokens-per-rank", o.min_tokens_per_rank,
                  "Below this per rank, CP costs more than it saves")
      ->capture_default_str();
  AddDeviceFlags(*cmd, *device, *device_id, *comm);
  cmd->add_option("--progress", o.progress,
                  "auto, line (one line updated in place), log (a line per wave), off")
      ->capture_default_str();
  AddMetricsFlags(*cmd, *metrics_flags);
  PrefillRequestOptions& d = o.defaults;
  AddRequestFlags(*cmd, d);
  cmd->add_option("--kv-target", d.kv_target,
                  "Also stream each KV cache over UCX to a decode server (kv-receiver) at "
                  "HOST:PORT; a request is ok only once acknowledged");

  return [options, metrics_flags, device, device_id, comm, &session]() -> int {
    BatchOptions o = *options;
    if (o.defaults.threads <= 0) o.defaults.threads = DefaultThreadsPerRank();
    InstallTerminationHandlers();
    o.stop_requested = [] { return TerminationRequested(); };
    absl::StatusOr<std::unique_ptr<MpiCommunicator>> world =
        MpiCommunicator::Create(MPI_COMM_WORLD);
    if (!world.ok()) return ExitCodeFor(world.status(), session.world_rank());
    absl::StatusOr<std::unique_ptr<JobMetrics>> metrics =
        StartJobMetrics(*metrics_flags, session.world_rank(),
                        std::filesystem::path(o.model_dir).filename().string());
    if (absl::Status s = AgreeOnStatus(**world, metrics.status()); !s.ok())
      return ExitCodeFor(s, session.world_rank());
    o.metrics = (*metrics)->metrics.get();
    absl::StatusOr<ExecutionContext> ctx =
        MakeExecutionContext(*device, o.defaults.threads, *device_id, **world, *comm);
    if (absl::Status s = AgreeOnStatus(**world, ctx.status()); !s.ok())
      return ExitCodeFor(s, session.world_rank());
    ctx->remote_kv_sink = &MakeUcxKvSink;
    absl::StatusOr<BatchSummary> summary = RunBatch(o, **world, *ctx);
    if (const int64_t used = ctx->device_memory_used(); used >= 0)
      o.metrics->SetGpuMemoryUsedBytes(used);
    if (!summary.ok()) return ExitCodeFor(summary.status(), session.world_rank());
    if (session.world_rank() == 0) {
      std::printf(
          "prefill run: %d ok, %d failed, %d already done, %d invalid lines skipped; %.1f s -> "
          "%s/results.jsonl%s\n",
          summary->succeeded, summary->failed, summary->skipped, summary->invalid, summary->seconds,
          o.out_dir.c_str(), summary->stopped ? " (stopped by a signal: rerun to finish)" : "");
      std::fflush(stdout);
    }
    return 0;
  };
}

}  // namespace prefill
