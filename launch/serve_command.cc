#include "launch/serve_command.h"

#include <mpi.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "launch/device_flags.h"
#include "launch/job_metrics.h"
#include "launch/request_flags.h"
#include "launch/termination_signal.h"
#include "monitoring/http_server.h"
#include "runtime/execution_context.h"
#include "runtime/kvhandoff/ucx_kv_sink.h"
#include "runtime/memory_estimate.h"
#include "scheduler/serve_api.h"
#include "scheduler/serve_worker.h"

namespace prefill {
namespace {

struct ServeFlags {
  std::string model_dir;
  std::string listen = "127.0.0.1:8000";
  std::string api_key_file;
  std::string files_root = ".";
  std::string scratch_dir = "/tmp";
  int http_threads = 4;
  int max_queued = 256;
  int64_t max_inline_tokens = int64_t{1} << 22;
  int64_t max_tokens_per_rank = 131072;
  int64_t min_tokens_per_rank = 8192;
  PrefillRequestOptions defaults;
  MetricsFlags metrics;
  std::string device = "cpu";
  int device_id = -1;
  std::string comm = "auto";
};

absl::StatusOr<std::string> ReadApiKey(const std::string& path) {
  if (path.empty()) return std::string();
  std::ifstream in(path);
  std::string key;
  if (!in || !std::getline(in, key))
    return absl::NotFoundError(absl::StrCat("--api-key-file ", path, ": cannot read a key"));
  key = std::string(absl::StripAsciiWhitespace(key));
  if (key.empty())
    return absl::InvalidArgumentError(absl::StrCat("--api-key-file ", path, ": the key is empty"));
  return key;
}

// Rank 0's side: the request table, the HTTP API and the dispatcher thread.
struct Front {
  std::unique_ptr<RequestTable> table;
  std::unique_ptr<ServeApi> api;
  std::unique_ptr<monitoring::HttpServer> server;
};

absl::StatusOr<Front> StartFront(const ServeFlags& f, const LoadedModel& model, int world_size,
                                 const std::string& device) {
  absl::StatusOr<std::string> key = ReadApiKey(f.api_key_file);
  if (!key.ok()) return key.status();
  std::error_code ec;
  const std::filesystem::path root =
      std::filesystem::weakly_canonical(std::filesystem::absolute(f.files_root), ec);
  if (ec || !std::filesystem::is_directory(root)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--files-root ", f.files_root, " is not a folder"));
  }
  Front front;
  front.table = std::make_unique<RequestTable>(f.max_queued);
  ServeApiOptions o;
  o.limits = {root, f.max_inline_tokens};
  o.placement = {world_size, f.min_tokens_per_rank, f.max_tokens_per_rank};
  o.config = model.config;
  o.memory_per_rank = f.defaults.memory_per_rank > 0
                          ? f.defaults.memory_per_rank
                          : (device == "cpu" ? DefaultMemoryPerRank() : 0);
  o.api_key = *key;
  front.api = std::make_unique<ServeApi>(*front.table, std::move(o));
  ServeApi* api = front.api.get();
  absl::StatusOr<std::unique_ptr<monitoring::HttpServer>> server = monitoring::HttpServer::Create(
      f.listen, "prefill service", f.http_threads,
      [api](const monitoring::HttpRequest& r) { return api->Handle(r); },
      static_cast<size_t>(f.max_inline_tokens) * 12 + (1 << 16));
  if (!server.ok()) return server.status();
  front.server = *std::move(server);
  return front;
}

int Serve(const ServeFlags& flags, const MpiSession& session) {
  ServeFlags f = flags;
  const int rank = session.world_rank();
  if (session.thread_level() < MPI_THREAD_MULTIPLE) {
    return ExitCodeFor(
        absl::FailedPreconditionError("prefill serve needs an MPI with MPI_THREAD_MULTIPLE"), rank);
  }
  if (f.defaults.threads <= 0) f.defaults.threads = DefaultThreadsPerRank();
  InstallTerminationHandlers();
  absl::StatusOr<std::unique_ptr<MpiCommunicator>> world = MpiCommunicator::Create(MPI_COMM_WORLD);
  if (!world.ok()) return ExitCodeFor(world.status(), rank);
  absl::StatusOr<std::unique_ptr<JobMetrics>> metrics =
      StartJobMetrics(f.metrics, rank, std::filesystem::path(f.model_dir).filename().string());
  if (absl::Status s = AgreeOnStatus(**world, metrics.status()); !s.ok())
    return ExitCodeFor(s, rank);
  absl::StatusOr<ExecutionContext> ctx =
      MakeExecutionContext(f.device, f.defaults.threads, f.device_id, **world, f.comm);
  if (absl::Status s = AgreeOnStatus(**world, ctx.status()); !s.ok()) return ExitCodeFor(s, rank);
  ctx->remote_kv_sink = &MakeUcxKvSink;
  absl::StatusOr<LoadedModel> model = LoadModel(f.model_dir);
  absl::StatusOr<PreparedModel> prepared =
      model.ok() ? PrepareModel(model->config, model->weights, *ctx->backend, *ctx->layers)
                 : model.status();
  if (absl::Status s = AgreeOnStatus(**world, prepared.status()); !s.ok())
    return ExitCodeFor(s, rank);
  absl::StatusOr<Front> front =
      rank == 0 ? StartFront(f, *model, (*world)->size(), f.device) : Front{};
  if (absl::Status s = AgreeOnStatus(**world, front.status()); !s.ok()) return ExitCodeFor(s, rank);
  absl::StatusOr<std::unique_ptr<MpiCommunicator>> control =
      MpiCommunicator::Create(MPI_COMM_WORLD);
  if (absl::Status s = AgreeOnStatus(**world, control.status()); !s.ok())
    return ExitCodeFor(s, rank);

  absl::Status dispatched;
  std::thread dispatcher;
  if (rank == 0) {
    std::printf(
        "prefill serve: %s on %d ranks (%s), listening on http://%s:%d (POST /v1/prefill)\n",
        f.model_dir.c_str(), (*world)->size(), ctx->device_name.c_str(),
        front->server->host().c_str(), front->server->port());
    std::fflush(stdout);
    ServeDispatcherOptions d{(*control)->comm(), (*world)->size(), front->table.get(),
                             (*metrics)->metrics.get(), [] { return TerminationRequested(); }};
    dispatcher = std::thread([d, &dispatched] { dispatched = RunServeDispatcher(d); });
  }
  ServeWorkerOptions w;
  w.world = world->get();
  w.control = (*control)->comm();
  w.ctx = &*ctx;
  w.model = &*model;
  w.prepared = &*prepared;
  w.defaults = f.defaults;
  w.metrics = (*metrics)->metrics.get();
  w.stop_requested = [] { return TerminationRequested(); };
  w.scratch_dir = f.scratch_dir;
  absl::Status worked = RunServeWorker(w);
  if (dispatcher.joinable()) dispatcher.join();
  if (worked.ok()) worked = dispatched;
  if (rank == 0 && worked.ok()) {
    std::printf("prefill serve: stopped (drained)\n");
    std::fflush(stdout);
  }
  return ExitCodeFor(worked, rank);
}

}  // namespace

std::function<int()> AddServeCommand(CLI::App& app, const MpiSession& session) {
  auto flags = std::make_shared<ServeFlags>();
  ServeFlags& f = *flags;
  CLI::App* cmd = app.add_subcommand(
      "serve",
      "Run the prefill service: load the model once per rank, take requests over HTTP on rank 0\n"
      "(POST /v1/prefill, GET|DELETE /v1/requests/{id}, /healthz, /readyz; docs/serve.md) and\n"
      "prefill each on a CP group sized to its length, several groups at once. SIGTERM stops\n"
      "admission, finishes the running requests and exits 0.");
  cmd->add_option("--model", f.model_dir, "Model folder: config.json + safetensors")->required();
  cmd->add_option("--listen", f.listen,
                  "host:port of the API on rank 0 (0.0.0.0 to take requests from other hosts)")
      ->capture_default_str();
  cmd->add_option(
      "--api-key-file", f.api_key_file,
      "File whose first line is the API key: /v1/ then needs 'Authorization: Bearer <key>'");
  cmd->add_option("--files-root", f.files_root,
                  "Folder under which requests name their tokens_file, embeddings_file and kv_out")
      ->capture_default_str();
  cmd->add_option("--scratch-dir", f.scratch_dir,
                  "Node-local folder for inline prompts while they run")
      ->capture_default_str();
  cmd->add_option("--http-threads", f.http_threads, "HTTP worker threads on rank 0")
      ->capture_default_str();
  cmd->add_option("--max-queued", f.max_queued,
                  "Queued requests beyond which a submission gets 429")
      ->capture_default_str();
  cmd->add_option("--max-inline-tokens", f.max_inline_tokens,
                  "Largest inline 'tokens' array (longer prompts: tokens_file)")
      ->capture_default_str();
  cmd->add_option("--max-tokens-per-rank", f.max_tokens_per_rank,
                  "Memory budget: the most tokens one rank holds")
      ->capture_default_str();
  cmd->add_option("--min-tokens-per-rank", f.min_tokens_per_rank,
                  "Below this per rank, CP costs more than it saves")
      ->capture_default_str();
  AddDeviceFlags(*cmd, f.device, f.device_id, f.comm);
  AddMetricsFlags(*cmd, f.metrics);
  AddRequestFlags(*cmd, f.defaults);
  return [flags, &session]() -> int { return Serve(*flags, session); };
}

}  // namespace prefill
