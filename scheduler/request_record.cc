#include "scheduler/request_record.h"

namespace prefill {

using nlohmann::json;

json ErrorRecord(const std::string& id, int64_t tokens, const std::string& error) {
  return {{"id", id},           {"status", "error"}, {"tokens", tokens},
          {"density", nullptr}, {"seconds", 0.0},    {"error", error}};
}

json ResultRecord(const std::string& id, int64_t tokens, int ranks,
                  const PrefillRequestOptions& options, const absl::StatusOr<json>& result,
                  double seconds) {
  if (!result.ok()) return ErrorRecord(id, tokens, std::string(result.status().message()));
  const json& r = *result;
  json record = {{"id", id},
                 {"status", "ok"},
                 {"tokens", tokens},
                 {"ranks", ranks},
                 {"mode", AttentionModeName(options.mode)},
                 {"density", r["density"]},
                 {"seconds", seconds},
                 {"prefill_seconds", r["prefill_seconds"]},
                 {"phase_seconds", r["phase_seconds"]},
                 {"op_seconds", r["op_seconds"]},
                 {"kv_host_prepare_seconds", r["kv_host_prepare_seconds"]},
                 {"activations_prepare_seconds", r["activations_prepare_seconds"]},
                 {"error", nullptr},
                 {"kv_cache", options.kv_out},
                 {"top_logits", r["top_logits"]}};
  // A KV handoff is part of the request: PrefillRequest returned OK only after the decode
  // server acknowledged it, so an ok record here means acknowledged.
  if (!options.kv_target.empty()) record["kv_target"] = options.kv_target;
  return record;
}

void RecordRequestMetrics(const absl::StatusOr<json>& result, int64_t shard_tokens, double seconds,
                          monitoring::PrefillMetrics& metrics) {
  monitoring::PrefillRequestRecord r;
  r.status = result.status().code();
  r.prompt_tokens = shard_tokens;
  r.prefill_seconds = seconds;
  if (result.ok()) {
    const json& phases = (*result)["phase_seconds"];
    using monitoring::PrefillPhase;
    for (auto [phase, key] : {std::pair{PrefillPhase::kMaskEstimation, "mask_estimation"},
                              std::pair{PrefillPhase::kKvExchange, "kv_exchange"},
                              std::pair{PrefillPhase::kAttention, "attention"},
                              std::pair{PrefillPhase::kGemm, "gemm"}}) {
      r.phase_seconds[static_cast<int>(phase)] = phases.value(key, 0.0);
    }
    if ((*result)["mode"] == "sparse") r.attention_density = (*result)["density"].get<double>();
    r.kv_bytes_sent = static_cast<int64_t>((*result)["kv_bytes_sent_rank"].get<double>());
    r.kv_bytes_dense_ring = static_cast<int64_t>((*result)["kv_bytes_dense_ring"].get<double>()) /
                            (*result)["world_size"].get<int>();
    for (const json& h : (*result)["kv_handoff"]) {
      if (h["sink"] == "ucx") r.kv_transfer_bytes += h["bytes"].get<int64_t>();
    }
    RecordBalanceFigures(*result, r);
  }
  metrics.RecordRequest(r);
}

void RecordBalanceFigures(const nlohmann::json& report, monitoring::PrefillRequestRecord& record) {
  if (report["mode"] != "sparse") return;
  const nlohmann::json& b = report["balance_figures"];
  record.selected_blocks = static_cast<int64_t>(b["selected_blocks_rank"].get<double>());
  record.computed_blocks = static_cast<int64_t>(b["computed_blocks_rank"].get<double>());
  record.balance_bytes_sent = static_cast<int64_t>(b["balance_bytes_sent_rank"].get<double>());
  record.selected_blocks_imbalance = b["selected_blocks_imbalance"].get<double>();
  record.computed_blocks_imbalance = b["computed_blocks_imbalance"].get<double>();
}

}  // namespace prefill
