// PrefillMetrics: the service's metrics, registered once per process on a Registry, named
// the way vLLM and SGLang users know them (`vllm:prompt_tokens_total` ->
// `prefill_prompt_tokens_total`). The prefix is `prefill_`, not vLLM's `prefill:`, because
// Prometheus reserves colons for recording rules (docs/monitoring.md says more).
//
// Every metric carries the constant labels rank, local_rank, host, job_id and model_name.
// Each rank records what it did itself, so sums over ranks are job totals:
//   prefill_prompt_tokens_total      tokens of this rank's shard (sum over ranks = prompt)
//   prefill_kv_bytes_sent_total      KV bytes this rank sent to peers
//   prefill_kv_bytes_dense_ring_total  the bytes it would have sent in a dense ring
//   prefill_attention_selected_blocks_total / _computed_blocks_total  sparse mask entries
//       this rank selected / computed after balancing (max over mean across ranks: imbalance)
//   prefill_balance_bytes_sent_total   Q rows and partial results it sent for balancing
// whereas every rank counts each request it took part in (prefill_requests_total), so a
// job's request count is its rank-0 series.
//
// Hot paths touch only atomics: RecordRequest does a few relaxed adds and binary searches;
// the children are added once, in Create.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "monitoring/registry.h"

namespace prefill::monitoring {

enum class PrefillPhase { kMaskEstimation = 0, kKvExchange = 1, kAttention = 2, kGemm = 3 };
inline constexpr int kNumPrefillPhases = 4;
// "mask_estimation", "kv_exchange", "attention", "gemm": the `phase` label values.
const char* PrefillPhaseName(PrefillPhase phase);

// The constant labels of every metric of one process.
struct PrefillMetricsIdentity {
  int rank = 0;
  int local_rank = 0;
  std::string host;             // gethostname()
  std::string job_id = "none";  // SLURM_JOB_ID, or "none"
  std::string model_name = "none";

  // `rank` from the caller (the world rank); local rank from the launcher's environment
  // (see LocalRankFromEnvironment), host and Slurm job id from the system. An empty
  // model_name becomes "none".
  static absl::StatusOr<PrefillMetricsIdentity> FromEnvironment(int rank,
                                                                const std::string& model_name);
  Labels ToLabels() const;
};

// What one rank did for one finished (or failed) request.
struct PrefillRequestRecord {
  absl::StatusCode status = absl::StatusCode::kOk;  // label: "ok", "invalid_argument", ...
  int64_t prompt_tokens = 0;                        // this rank's shard of the sequence
  double prefill_seconds = 0;                       // wall time of the request on this rank
  // Indexed by PrefillPhase; a phase with 0 s did not run and is not observed.
  std::array<double, kNumPrefillPhases> phase_seconds{};
  std::optional<double> attention_density;  // selected / visible blocks; unset for dense
  int64_t kv_bytes_sent = 0;
  int64_t kv_bytes_dense_ring = 0;  // this rank's share of the dense ring's bytes
  int64_t kv_transfer_bytes = 0;    // KV cache bytes handed to a decode server (UCX)
  // Sparse attention: (head, q block, kv block) entries this rank's mask selected, and those it
  // computed once balanced (its own left plus other ranks' moved to it); Q/partial bytes sent.
  int64_t selected_blocks = 0;
  int64_t computed_blocks = 0;
  int64_t balance_bytes_sent = 0;
  // The request's max over mean across ranks (alike on every rank); unset: not measured.
  std::optional<double> selected_blocks_imbalance;
  std::optional<double> computed_blocks_imbalance;
};

// The buckets of the time histograms: vLLM's TTFT buckets (0.001 s .. 2560 s) with 320 and
// 1280 added, since million-token prefills take minutes.
const Histogram::BucketBoundaries& PrefillTimeBuckets();
// 0.05, 0.10, ..., 1.00.
const Histogram::BucketBoundaries& AttentionDensityBuckets();

// Resident set size of this process from /proc/self/statm; -1 when it cannot be read.
int64_t ProcessResidentMemoryBytes();

// The build's version and git revision (configure time), the labels of prefill_build_info.
const char* PrefillVersion();
const char* PrefillRevision();

class PrefillMetrics {
 public:
  // Registers every family on `registry` (kept alive by the PrefillMetrics) and adds the
  // children with fixed labels. A second Create with the same identity on the same
  // registry shares the families; AlreadyExists when a name is taken by something else.
  static absl::StatusOr<std::unique_ptr<PrefillMetrics>> Create(
      std::shared_ptr<Registry> registry, const PrefillMetricsIdentity& identity);

  // One request: its status, tokens, times, density and bytes.
  void RecordRequest(const PrefillRequestRecord& record);
  // Counter of this status (ok is added at Create; others on first use, under a lock).
  Counter& RequestsWithStatus(absl::StatusCode status);

  void SetRequestsWaiting(int64_t n) { requests_waiting.Set(static_cast<double>(n)); }
  void SetRequestsRunning(int64_t n) { requests_running.Set(static_cast<double>(n)); }
  // The CUDA backend calls this; the series is absent until the first call, so CPU-only
  // processes do not report a GPU memory of 0.
  void SetGpuMemoryUsedBytes(int64_t bytes);
  // Reads /proc/self/statm into prefill_process_resident_memory_bytes. Runs at every
  // scrape through a collect hook; call it by hand only when not scraped.
  void UpdateProcessMetrics();

  const std::shared_ptr<Registry>& registry() const { return registry_; }
  const PrefillMetricsIdentity& identity() const { return identity_; }

  // The metrics themselves (owned by the registry) for finer-grained updates.
  Family<Counter>& requests;        // prefill_requests_total{status}
  Counter& requests_ok;             //   {status="ok"}
  Counter& prompt_tokens;           // prefill_prompt_tokens_total
  Histogram& request_prefill_time;  // prefill_request_prefill_time_seconds
  Histogram& request_queue_time;    // prefill_request_queue_time_seconds (serve)
  Histogram& time_to_kv_handoff;    // prefill_time_to_kv_handoff_seconds (serve)
  Counter& kv_transfer_bytes;       // prefill_kv_transfer_bytes_total
  std::array<Counter*, kNumPrefillPhases> phase_seconds;  // prefill_phase_seconds_total{phase}
  std::array<Histogram*, kNumPrefillPhases>
      phase_duration;                // prefill_phase_duration_seconds{phase}
  Histogram& attention_density;      // prefill_attention_density
  Counter& kv_bytes_sent;            // prefill_kv_bytes_sent_total
  Counter& kv_bytes_dense_ring;      // prefill_kv_bytes_dense_ring_total
  Counter& selected_blocks;          // prefill_attention_selected_blocks_total
  Counter& computed_blocks;          // prefill_attention_computed_blocks_total
  Counter& balance_bytes_sent;       // prefill_balance_bytes_sent_total
  Gauge& selected_blocks_imbalance;  // prefill_selected_blocks_imbalance (last request)
  Gauge& computed_blocks_imbalance;  // prefill_computed_blocks_imbalance (last request)
  Gauge& requests_waiting;           // prefill_num_requests_waiting
  Gauge& requests_running;           // prefill_num_requests_running
  Gauge& resident_memory;            // prefill_process_resident_memory_bytes
  Family<Gauge>& gpu_memory_used;    // prefill_gpu_memory_used_bytes (lazy child)
  Gauge& build_info;                 // prefill_build_info{version,revision} 1

 private:
  struct Parts;
  PrefillMetrics(std::shared_ptr<Registry> registry, PrefillMetricsIdentity identity,
                 const Parts& parts);

  std::shared_ptr<Registry> registry_;
  PrefillMetricsIdentity identity_;
  std::atomic<Gauge*> gpu_memory_child_{nullptr};
};

}  // namespace prefill::monitoring
