#include "launch/attention_command.h"

#include <cstdio>
#include <memory>

#include "launch/device_flags.h"
#include "launch/enum_flags.h"
#include "runtime/attention_job.h"

namespace prefill {

namespace {

// This rank's share of the job, as the service's metrics count it.
void RecordAttentionJob(const AttentionJobReport& report, int rank,
                        monitoring::PrefillMetrics& metrics) {
  const RankStats& mine = report.ranks[rank];
  monitoring::PrefillRequestRecord r;
  r.prompt_tokens = report.config.seq_len / report.world_size;
  r.prefill_seconds = mine.total_seconds;
  r.phase_seconds[static_cast<int>(monitoring::PrefillPhase::kMaskEstimation)] =
      mine.estimate_seconds;
  r.phase_seconds[static_cast<int>(monitoring::PrefillPhase::kKvExchange)] = mine.exchange_seconds;
  r.phase_seconds[static_cast<int>(monitoring::PrefillPhase::kAttention)] = mine.attention_seconds;
  if (report.config.mode == AttentionMode::kSparse && mine.visible_blocks > 0) {
    r.attention_density = static_cast<double>(mine.selected_blocks) / mine.visible_blocks;
  }
  r.kv_bytes_sent = mine.kv_bytes_sent;
  r.kv_bytes_dense_ring = report.kv_bytes_dense_ring / report.world_size;
  if (report.config.mode == AttentionMode::kSparse) {
    const nlohmann::json j = report.ToJson();
    r.selected_blocks = mine.selected_blocks;
    r.computed_blocks = mine.computed_blocks;
    r.balance_bytes_sent = mine.balance_bytes_sent;
    r.selected_blocks_imbalance = j["selected_blocks_imbalance"].get<double>();
    r.computed_blocks_imbalance = j["computed_blocks_imbalance"].get<double>();
  }
  metrics.RecordRequest(r);
  if (report.device_memory_used_bytes >= 0)
    metrics.SetGpuMemoryUsedBytes(report.device_memory_used_bytes);
}

}  // namespace

CLI::App* AddAttentionFlags(CLI::App& app, AttentionFlags& flags) {
  AttentionJobConfig& c = flags.config;
  CLI::App* cmd = app.add_subcommand(
      "attention",
      "Run one context-parallel attention layer over the ranks of this job: each rank holds a\n"
      "shard of Q, K, V (layout contiguous or zigzag); --mode sparse all-gathers stride-pooled\n"
      "keys, estimates a block mask by round-robin sampling, fetches only the selected KV\n"
      "blocks and merges partial results by log-sum-exp; --mode dense runs ring attention.");
  cmd->add_option("--workload", c.workload,
                  "Synthetic input: random, needle, stripes, sinks, video, heavy")
      ->capture_default_str();
  cmd->add_option(
      "--qkv", c.qkv_path,
      "Safetensors file with q [L,H,D], k and v [L,Hkv,D] (f32, bf16, f16) instead of a workload");
  cmd->add_option("--seq-len", c.seq_len,
                  "Tokens in the sequence (a multiple of ranks x block; zigzag: 2 x ranks x block)")
      ->capture_default_str();
  cmd->add_option("--heads", c.heads, "Query heads")->capture_default_str();
  cmd->add_option("--kv-heads", c.kv_heads, "KV heads (divides --heads)")->capture_default_str();
  cmd->add_option("--head-dim", c.head_dim, "Head dimension")->capture_default_str();
  cmd->add_option("--seed", c.seed, "Seed of the synthetic workload")->capture_default_str();
  cmd->add_option(
         "--concentration", c.concentration,
         "Synthetic workloads: multiplies every structured logit (> 1 sharper, < 1 more diffuse)")
      ->capture_default_str();
  cmd->add_flag(
      "--slash-heads", c.slash_heads,
      "Synthetic workloads: every 4th head looks back by a fixed offset (docs/workloads.md)");
  AddEnumOption(*cmd, "--dtype", c.dtype, "Storage of synthetic Q/K/V: f32, bf16, f16", ParseDType,
                DTypeName);
  AddEnumOption(*cmd, "--mode", c.mode,
                "sparse (estimated block mask) or dense (ring attention, exact)",
                ParseAttentionMode, AttentionModeName);
  AddEnumOption(*cmd, "--layout", c.layout, "contiguous or zigzag (balances causal work)",
                ParseLayoutKind, LayoutKindName);
  cmd->add_flag("--causal,!--no-causal", c.causal, "Causal attention (default on)");
  cmd->add_option("--block", c.block, "Block size of the mask, in tokens")->capture_default_str();
  AddEnumOption(*cmd, "--estimator", c.estimator,
                "Mask estimator: rr (round robin over stride-pooled keys) or rr+heavy (plus each "
                "block's most "
                "deviating key, unpooled: catches isolated heavy tokens; docs/rrattention.md)",
                ParseMaskEstimator, MaskEstimatorName);
  cmd->add_option("--stride", c.stride,
                  "Estimation stride S: keys pooled per S, one query sampled per S")
      ->capture_default_str();
  cmd->add_option("--tau", c.tau,
                  "Keep the fewest blocks whose estimated attention mass reaches tau")
      ->capture_default_str();
  cmd->add_option("--dense-above", c.dense_above,
                  "Several ranks: at this estimated density or more the dense ring runs instead "
                  "(above 1: never)")
      ->capture_default_str();
  AddEnumOption(
      *cmd, "--balance", c.balance,
      "Several ranks, sparse: auto moves mask entries to the rank holding their KV blocks until "
      "every rank computes about as many (only Q rows and partial results travel); off",
      ParseBalanceMode, BalanceModeName);
  cmd->add_flag("--no-keep-recent", flags.no_keep_recent,
                "Do not force the last query block dense");
  cmd->add_option("--threads", c.threads,
                  "Threads per rank (0: the node's cores / ranks on the node)")
      ->capture_default_str();
  AddDeviceFlags(*cmd, c.device, c.device_id, c.comm);
  cmd->add_flag("--check", c.check,
                "Also compute fp64 dense attention and report the output's error");
  cmd->add_option("--out", c.out_path,
                  "Write the output o [L,H,D] f32 in token order to this safetensors file");
  cmd->add_option("--json", flags.json_path, "Write the report as JSON to this file");
  AddMetricsFlags(*cmd, flags.metrics);
  return cmd;
}

std::function<int()> AddAttentionCommand(CLI::App& app, const MpiSession& session) {
  auto flags = std::make_shared<AttentionFlags>();
  AddAttentionFlags(app, *flags);
  return [flags, &session]() -> int {
    AttentionJobConfig c = flags->config;
    const std::string* json_path = &flags->json_path;
    c.keep_recent = !flags->no_keep_recent;
    if (c.threads <= 0) c.threads = DefaultThreadsPerRank();
    absl::StatusOr<std::unique_ptr<MpiCommunicator>> comm = MpiCommunicator::Create(MPI_COMM_WORLD);
    if (!comm.ok()) return ExitCodeFor(comm.status(), session.world_rank());
    absl::StatusOr<std::unique_ptr<JobMetrics>> metrics =
        StartJobMetrics(flags->metrics, session.world_rank(), "attention");
    if (absl::Status s = AgreeOnStatus(**comm, metrics.status()); !s.ok())
      return ExitCodeFor(s, session.world_rank());
    (*metrics)->metrics->SetRequestsRunning(1);
    absl::StatusOr<AttentionJobReport> report = RunAttentionJob(c, **comm);
    (*metrics)->metrics->SetRequestsRunning(0);
    if (!report.ok()) return ExitCodeFor(report.status(), session.world_rank());
    RecordAttentionJob(*report, session.world_rank(), *(*metrics)->metrics);
    absl::Status written;
    if (session.world_rank() == 0) {
      std::fputs(report->Summary().c_str(), stdout);
      std::fflush(stdout);
      if (!json_path->empty())
        written = WriteFileAtomically(*json_path, report->ToJson().dump(2) + "\n");
    }
    return ExitCodeFor(AgreeOnStatus(**comm, written), session.world_rank());
  };
}

}  // namespace prefill
