// What one prefill request leaves behind, alike for `prefill run` and `prefill serve`: the
// result record (records/<id>.json, results.jsonl, GET /v1/requests/{id}) and this rank's
// share of it in the Prometheus metrics.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "monitoring/prefill_metrics.h"
#include "nlohmann/json.hpp"
#include "runtime/model_job.h"

namespace prefill {

// {"id", "status": "error", "tokens", "density": null, "seconds": 0, "error"}.
nlohmann::json ErrorRecord(const std::string& id, int64_t tokens, const std::string& error);

// The record of a request that ran on `ranks` ranks for `seconds`: status ok with its
// phases, density, KV cache folder and top logits, or ErrorRecord with the failure.
nlohmann::json ResultRecord(const std::string& id, int64_t tokens, int ranks,
                            const PrefillRequestOptions& options,
                            const absl::StatusOr<nlohmann::json>& result, double seconds);

// This rank's share of a finished request (shard tokens, wall seconds on this rank).
void RecordRequestMetrics(const absl::StatusOr<nlohmann::json>& result, int64_t shard_tokens,
                          double seconds, monitoring::PrefillMetrics& metrics);

// The sparse balancing figures of a model report ("balance_figures") into a metrics record.
void RecordBalanceFigures(const nlohmann::json& report, monitoring::PrefillRequestRecord& record);

}  // namespace prefill
