#include "launch/model_command.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "absl/strings/str_format.h"
#include "launch/device_flags.h"
#include "launch/enum_flags.h"
#include "launch/job_metrics.h"
#include "runtime/execution_context.h"
#include "runtime/kvhandoff/ucx_kv_sink.h"
#include "runtime/model_job.h"
#include "scheduler/request_record.h"

namespace prefill {
namespace {

// Seconds between marks, by phase name (this rank's).
class LoadTimer {
 public:
  void Mark(const char* phase) {
    const auto now = std::chrono::steady_clock::now();
    phases_[phase] = std::chrono::duration<double>(now - last_).count();
    last_ = now;
  }
  double total() const { return std::chrono::duration<double>(last_ - start_).count(); }
  const nlohmann::json& phases() const { return phases_; }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now(), last_ = start_;
  nlohmann::json phases_ = nlohmann::json::object();
};

struct ModelCommandConfig {
  std::string model_dir;
  PromptSource source;
  PrefillRequestOptions options;
  MetricsFlags metrics;
  std::string device = "cpu";
  int device_id = -1;
  std::string comm = "auto";
};

void PrintSummary(const nlohmann::json& r) {
  std::printf("prefill model: %s (%s), %d tokens on %d ranks, %s\n",
              r["model"].get<std::string>().c_str(), r["architecture"].get<std::string>().c_str(),
              r["seq_len"].get<int>(), r["world_size"].get<int>(),
              r["mode"].get<std::string>().c_str());
  const auto& p = r["phase_seconds"];
  std::printf(
      "  time       %.3f s prefill (%.0f tokens/s): setup %.3f, gemm %.3f, estimate %.3f, exchange "
      "%.3f, "
      "attention %.3f, logits %.3f\n",
      r["prefill_seconds"].get<double>(), r["tokens_per_second"].get<double>(),
      p["setup"].get<double>(), p["gemm"].get<double>(), p["mask_estimation"].get<double>(),
      p["kv_exchange"].get<double>(), p["attention"].get<double>(), p["logits"].get<double>());
  if (r.contains("load_seconds")) {
    const auto& l = r["load_phase_seconds"];
    std::printf(
        "  load       %.3f s: read %.3f, device init %.3f, weights %.3f, KV host memory %.3f, "
        "activations %.3f\n",
        r["load_seconds"].get<double>(), l["read"].get<double>(), l["device_init"].get<double>(),
        l["prepare_weights"].get<double>(), l["kv_host_prepare"].get<double>(),
        l["activations_prepare"].get<double>());
  }
  std::string densities;
  for (const auto& d : r["layer_density"]) densities += absl::StrFormat(" %.2f", d.get<double>());
  std::printf("  density   %s (per layer)\n", densities.c_str());
  if (r["mode"] == "sparse" && r["world_size"].get<int>() > 1) {
    const auto& b = r["balance_figures"];
    std::printf(
        "  balance    slowest rank / mean over the layers: %.2f selected, %.2f computed (--balance "
        "%s), "
        "%.1f MiB of Q rows and partials\n",
        b["selected_blocks_imbalance"].get<double>(), b["computed_blocks_imbalance"].get<double>(),
        r["balance"].get<std::string>().c_str(), b["balance_bytes_sent"].get<double>() / (1 << 20));
  }
  const auto& top = r["top_logits"];
  if (!top.empty()) {
    std::printf("  next token %d (logit %.3f)\n", top[0]["id"].get<int>(),
                top[0]["logit"].get<double>());
  }
  if (!r["kv_out"].get<std::string>().empty())
    std::printf("  KV cache   %s/index.json\n", r["kv_out"].get<std::string>().c_str());
  for (const auto& h : r["kv_handoff"]) {
    if (h["sink"] == "ucx") {
      std::printf(
          "  KV handoff %s: acknowledged, %.1f MiB in %.3f s (%.2f GB/s; %.2f GB/s after "
          "connecting)\n",
          h["destination"].get<std::string>().c_str(), h["bytes"].get<double>() / (1 << 20),
          h["seconds"].get<double>(), h["gb_per_second"].get<double>(),
          h["transfer_gb_per_second"].get<double>());
    }
  }
}

}  // namespace

std::function<int()> AddModelCommand(CLI::App& app, const MpiSession& session) {
  auto config = std::make_shared<ModelCommandConfig>();
  auto json_path = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand(
      "model",
      "Prefill a Hugging Face Llama-family model (Llama, Mistral, Qwen2) over the ranks of this\n"
      "job: the sequence is sharded (weights replicated), attention is context-parallel (sparse\n"
      "or dense ring). Writes the KV cache (one safetensors shard per rank + index.json) and\n"
      "reports the last token's logits.");
  ModelCommandConfig& mc = *config;
  PrefillRequestOptions& c = mc.options;
  cmd->add_option("--model", mc.model_dir,
                  "Model folder: config.json + model.safetensors (or an index and shards)")
      ->required();
  cmd->add_option("--tokens", mc.source.tokens_path,
                  "Prompt token ids: .npy (int32/int64) or a JSON array");
  cmd->add_option("--embeddings", mc.source.embeddings_path,
                  "Or precomputed input embeddings: safetensors [L, hidden] (vision/video tokens)");
  AddEnumOption(*cmd, "--mode", c.mode, "sparse or dense", ParseAttentionMode, AttentionModeName);
  AddDeviceFlags(*cmd, mc.device, mc.device_id, mc.comm);
  AddEnumOption(*cmd, "--layout", c.layout, "contiguous or zigzag", ParseLayoutKind,
                LayoutKindName);
  cmd->add_option("--block", c.block, "Block size of the mask")->capture_default_str();
  AddEnumOption(*cmd, "--estimator", c.estimator,
                "Mask estimator: rr or rr+heavy (docs/rrattention.md)", ParseMaskEstimator,
                MaskEstimatorName);
  cmd->add_option("--stride", c.stride, "Estimation stride")->capture_default_str();
  cmd->add_option("--tau", c.tau, "Attention mass the mask keeps")->capture_default_str();
  cmd->add_option("--dense-above", c.dense_above,
                  "Several ranks: a layer whose estimated density reaches this runs the dense ring "
                  "(above 1: never)")
      ->capture_default_str();
  AddEnumOption(*cmd, "--balance", c.balance,
                "Several ranks, sparse: auto evens each layer's work by moving mask entries to the "
                "rank holding their KV blocks; off",
                ParseBalanceMode, BalanceModeName);
  cmd->add_option("--threads", c.threads,
                  "Threads per rank (0: the node's cores / ranks on the node)")
      ->capture_default_str();
  cmd->add_option("--kv-out", c.kv_out, "Write the KV cache to this folder");
  cmd->add_option("--kv-target", c.kv_target,
                  "Also stream the KV cache over UCX to a decode server (kv-receiver) at "
                  "HOST:PORT; succeeds only once acknowledged");
  cmd->add_option(
         "--kv-timeout", c.kv_timeout,
         "Seconds without progress (connect, send, acknowledgement) before the KV handoff fails")
      ->capture_default_str();
  cmd->add_option("--memory-per-rank", c.memory_per_rank,
                  "Bytes one rank may hold, larger requests are refused up front: on cpu its host "
                  "memory (0: the node's available memory / its ranks), on cuda the GPU memory a "
                  "request adds to the weights (0: the GPU's free memory)")
      ->capture_default_str();
  AddEnumOption(*cmd, "--kv-dtype", c.kv_dtype, "KV cache storage: bf16, f16, f32", ParseDType,
                DTypeName);
  cmd->add_option("--top-k", c.top_k, "Top logits in the report")->capture_default_str();
  cmd->add_option("--json", *json_path, "Write the report as JSON to this file");
  AddMetricsFlags(*cmd, mc.metrics);

  return [config, json_path, &session]() -> int {
    ModelCommandConfig c = *config;
    if (c.options.threads <= 0) c.options.threads = DefaultThreadsPerRank();
    absl::StatusOr<std::unique_ptr<MpiCommunicator>> comm = MpiCommunicator::Create(MPI_COMM_WORLD);
    if (!comm.ok()) return ExitCodeFor(comm.status(), session.world_rank());
    // Load phases, apart from the prefill: map and check the checkpoint, start the device
    // (CUDA context, cuBLAS, NCCL), prepare the weights on it.
    LoadTimer load;
    absl::StatusOr<LoadedModel> model = LoadModel(c.model_dir);
    if (absl::Status s = AgreeOnStatus(**comm, model.status()); !s.ok())
      return ExitCodeFor(s, session.world_rank());
    load.Mark("read");
    absl::StatusOr<ExecutionContext> ctx =
        MakeExecutionContext(c.device, c.options.threads, c.device_id, **comm, c.comm);
    load.Mark("device_init");
    absl::StatusOr<PreparedModel> prepared =
        ctx.ok() ? PrepareModel(model->config, model->weights, *ctx->backend, *ctx->layers)
                 : ctx.status();
    if (absl::Status s = AgreeOnStatus(**comm, prepared.status()); !s.ok())
      return ExitCodeFor(s, session.world_rank());
    load.Mark("prepare_weights");
    PrefillWorkspace workspace;
    const ModelExecution on{ctx->backend.get(), ctx->layers.get(),  &*prepared, ctx->comm,
                            comm->get(),        ctx->device_memory, &workspace, &MakeUcxKvSink};
    absl::StatusOr<std::unique_ptr<JobMetrics>> metrics = StartJobMetrics(
        c.metrics, session.world_rank(), std::filesystem::path(c.model_dir).filename().string());
    if (absl::Status s = AgreeOnStatus(**comm, metrics.status()); !s.ok())
      return ExitCodeFor(s, session.world_rank());
    (*metrics)->metrics->SetRequestsRunning(1);
    absl::StatusOr<nlohmann::json> report = PrefillRequest(*model, c.source, c.options, on);
    if (report.ok()) {
      // The KV cache's host memory and the activations, made before the request's clock, are
      // start-up work too.
      const double kv_host = (*report)["kv_host_prepare_seconds"].get<double>();
      const double activations = (*report)["activations_prepare_seconds"].get<double>();
      (*report)["load_seconds"] = load.total() + kv_host + activations;
      (*report)["load_phase_seconds"] = load.phases();
      (*report)["load_phase_seconds"]["kv_host_prepare"] = kv_host;
      (*report)["load_phase_seconds"]["activations_prepare"] = activations;
    }
    (*metrics)->metrics->SetRequestsRunning(0);
    if (const int64_t used = ctx->device_memory_used(); used >= 0)
      (*metrics)->metrics->SetGpuMemoryUsedBytes(used);
    RecordRequestMetrics(
        report, report.ok() ? (*report)["seq_len"].get<int64_t>() / (*comm)->size() : 0,
        report.ok() ? (*report)["prefill_seconds"].get<double>() : 0.0, *(*metrics)->metrics);
    if (!report.ok()) return ExitCodeFor(report.status(), session.world_rank());
    absl::Status written;
    if (session.world_rank() == 0) {
      PrintSummary(*report);
      std::fflush(stdout);
      if (!json_path->empty()) written = WriteFileAtomically(*json_path, report->dump(2) + "\n");
    }
    return ExitCodeFor(AgreeOnStatus(**comm, written), session.world_rank());
  };
}

}  // namespace prefill
