#include "monitoring/prefill_metrics.h"

#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "monitoring/metrics_endpoint.h"

#ifndef PREFILL_VERSION
#define PREFILL_VERSION "unknown"
#endif
#ifndef PREFILL_REVISION
#define PREFILL_REVISION "unknown"
#endif

namespace prefill::monitoring {

const char* PrefillVersion() { return PREFILL_VERSION; }
const char* PrefillRevision() { return PREFILL_REVISION; }

const char* PrefillPhaseName(PrefillPhase phase) {
  switch (phase) {
    case PrefillPhase::kMaskEstimation:
      return "mask_estimation";
    case PrefillPhase::kKvExchange:
      return "kv_exchange";
    case PrefillPhase::kAttention:
      return "attention";
    case PrefillPhase::kGemm:
      return "gemm";
  }
  return "unknown";
}

const Histogram::BucketBoundaries& PrefillTimeBuckets() {
  static const Histogram::BucketBoundaries buckets = {
      0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25, 0.5,  0.75,  1.0,
      2.5,   5.0,   7.5,  10.0, 20.0, 40.0, 80.0, 160., 320., 640., 1280., 2560.};
  return buckets;
}

const Histogram::BucketBoundaries& AttentionDensityBuckets() {
  static const Histogram::BucketBoundaries buckets = Histogram::LinearBuckets(0.05, 0.05, 20);
  return buckets;
}

int64_t ProcessResidentMemoryBytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return -1;
  long long size_pages = 0, resident_pages = 0;
  const int read = std::fscanf(f, "%lld %lld", &size_pages, &resident_pages);
  std::fclose(f);
  if (read != 2) return -1;
  return static_cast<int64_t>(resident_pages) * sysconf(_SC_PAGESIZE);
}

absl::StatusOr<PrefillMetricsIdentity> PrefillMetricsIdentity::FromEnvironment(
    int rank, const std::string& model_name) {
  PrefillMetricsIdentity id;
  id.rank = rank;
  absl::StatusOr<int> local_rank = LocalRankFromEnvironment();
  if (!local_rank.ok()) return local_rank.status();
  id.local_rank = *local_rank;
  char host[256] = "";
  if (gethostname(host, sizeof host - 1) != 0 || !host[0])
    std::snprintf(host, sizeof host, "unknown");
  id.host = host;
  const char* job = std::getenv("SLURM_JOB_ID");
  id.job_id = job && *job ? job : "none";
  id.model_name = model_name.empty() ? "none" : model_name;
  return id;
}

Labels PrefillMetricsIdentity::ToLabels() const {
  return {{"rank", absl::StrCat(rank)},
          {"local_rank", absl::StrCat(local_rank)},
          {"host", host},
          {"job_id", job_id},
          {"model_name", model_name}};
}

struct PrefillMetrics::Parts {
  Family<Counter>* requests;
  Counter* requests_ok;
  Counter* prompt_tokens;
  Histogram* request_prefill_time;
  Histogram* request_queue_time;
  Histogram* time_to_kv_handoff;
  Counter* kv_transfer_bytes;
  std::array<Counter*, kNumPrefillPhases> phase_seconds;
  std::array<Histogram*, kNumPrefillPhases> phase_duration;
  Histogram* attention_density;
  Counter* kv_bytes_sent;
  Counter* kv_bytes_dense_ring;
  Counter* selected_blocks;
  Counter* computed_blocks;
  Counter* balance_bytes_sent;
  Gauge* selected_blocks_imbalance;
  Gauge* computed_blocks_imbalance;
  Gauge* requests_waiting;
  Gauge* requests_running;
  Gauge* resident_memory;
  Family<Gauge>* gpu_memory_used;
  Gauge* build_info;
};

namespace {

std::string StatusLabel(absl::StatusCode code) {
  std::string label = absl::StatusCodeToString(code);
  for (char& c : label) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return label.empty() ? absl::StrCat("code_", static_cast<int>(code)) : label;
}

}  // namespace

absl::StatusOr<std::unique_ptr<PrefillMetrics>> PrefillMetrics::Create(
    std::shared_ptr<Registry> registry, const PrefillMetricsIdentity& identity) {
  if (!registry) return absl::InvalidArgumentError("PrefillMetrics needs a registry");
  const Labels constant = identity.ToLabels();
  Registry& r = *registry;
  absl::Status failed;
  // Each helper registers one family and keeps the first error.
  auto counter = [&](const std::string& name, const std::string& help) -> Family<Counter>* {
    auto f = BuildCounter().Name(name).Help(help).Labels(constant).Register(r);
    if (!f.ok() && failed.ok()) failed = f.status();
    return f.ok() ? *f : nullptr;
  };
  auto gauge = [&](const std::string& name, const std::string& help) -> Family<Gauge>* {
    auto f = BuildGauge().Name(name).Help(help).Labels(constant).Register(r);
    if (!f.ok() && failed.ok()) failed = f.status();
    return f.ok() ? *f : nullptr;
  };
  auto histogram = [&](const std::string& name, const std::string& help,
                       const Histogram::BucketBoundaries& buckets) -> Family<Histogram>* {
    auto f = BuildHistogram().Name(name).Help(help).Labels(constant).Buckets(buckets).Register(r);
    if (!f.ok() && failed.ok()) failed = f.status();
    return f.ok() ? *f : nullptr;
  };

  Family<Counter>* requests = counter(
      "prefill_requests_total",
      "Prefill requests this rank took part in, by outcome: ok, or the lower-case status code "
      "(invalid_argument, unavailable, ...). A job's count is its rank-0 series.");
  Family<Counter>* prompt_tokens = counter("prefill_prompt_tokens_total",
                                           "Prompt tokens prefilled by this rank (its shard of "
                                           "each sequence); the sum over ranks is the "
                                           "prompt tokens.");
  Family<Histogram>* prefill_time = histogram("prefill_request_prefill_time_seconds",
                                              "Wall time of a request's prefill on this rank, from "
                                              "the start of its first layer to the end of "
                                              "its last.",
                                              PrefillTimeBuckets());
  Family<Histogram>* queue_time = histogram("prefill_request_queue_time_seconds",
                                            "prefill serve (rank 0): seconds a request waited in "
                                            "the queue before its CP group started it.",
                                            PrefillTimeBuckets());
  Family<Histogram>* to_handoff = histogram("prefill_time_to_kv_handoff_seconds",
                                            "prefill serve (rank 0): seconds from a request's "
                                            "arrival to its KV cache acknowledged by the "
                                            "decode server (requests with a kv_target).",
                                            PrefillTimeBuckets());
  Family<Counter>* kv_transfer = counter(
      "prefill_kv_transfer_bytes_total",
      "KV cache bytes this rank handed to a decode server over UCX (its shards; the sum over ranks "
      "is the caches sent).");
  Family<Counter>* phase_seconds =
      counter("prefill_phase_seconds_total",
              "Seconds this rank spent in each phase of prefill: mask_estimation, kv_exchange "
              "(time waiting on "
              "KV transfers), attention, gemm. A rank whose rate stands out is a straggler.");
  Family<Histogram>* phase_duration =
      histogram("prefill_phase_duration_seconds",
                "Seconds one request spent in each phase on this rank.", PrefillTimeBuckets());
  Family<Histogram>* density = histogram("prefill_attention_density",
                                         "Fraction of the causally visible KV blocks that this "
                                         "rank's sparse mask selected, per request "
                                         "(1 = dense).",
                                         AttentionDensityBuckets());
  Family<Counter>* kv_sent =
      counter("prefill_kv_bytes_sent_total", "KV cache bytes this rank sent to its peers.");
  Family<Counter>* kv_dense = counter(
      "prefill_kv_bytes_dense_ring_total",
      "KV cache bytes this rank would have sent in a dense ring for the same requests; minus "
      "prefill_kv_bytes_sent_total, the bytes the sparse exchange saved.");
  Family<Counter>* selected = counter("prefill_attention_selected_blocks_total",
                                      "(head, query block, KV block) entries this rank's sparse "
                                      "masks selected; max over mean across "
                                      "ranks is the work imbalance before balancing.");
  Family<Counter>* computed = counter(
      "prefill_attention_computed_blocks_total",
      "Entries this rank computed after balancing: its own left plus those other ranks moved to it "
      "(--balance auto); the job runs at the speed of the rank with the most.");
  Family<Counter>* balance_sent = counter(
      "prefill_balance_bytes_sent_total",
      "Q rows, mask rows and partial results this rank sent to balance sparse work (not KV).");
  Family<Gauge>* selected_imbalance = gauge(
      "prefill_selected_blocks_imbalance",
      "Last request: the most selected entries of a rank over the mean of all ranks (1 = even).");
  Family<Gauge>* computed_imbalance = gauge("prefill_computed_blocks_imbalance",
                                            "Last request: the most computed entries of a rank "
                                            "over the mean, after balancing (1 = even).");
  Family<Gauge>* waiting =
      gauge("prefill_num_requests_waiting", "Requests queued, not yet started.");
  Family<Gauge>* running = gauge("prefill_num_requests_running", "Requests being prefilled.");
  Family<Gauge>* resident =
      gauge("prefill_process_resident_memory_bytes",
            "Resident memory of this rank's process (from /proc/self/statm).");
  Family<Gauge>* gpu =
      gauge("prefill_gpu_memory_used_bytes",
            "Device memory this rank's CUDA backend holds; absent on CPU-only ranks.");
  Family<Gauge>* build = gauge("prefill_build_info",
                               "Always 1; the labels say which build of prefill this rank runs.");
  if (!failed.ok()) return failed;

  Parts p;
  p.requests = requests;
  p.requests_ok = &requests->Add({{"status", "ok"}});
  p.prompt_tokens = &prompt_tokens->Add({});
  p.request_prefill_time = &prefill_time->Add({});
  p.request_queue_time = &queue_time->Add({});
  p.time_to_kv_handoff = &to_handoff->Add({});
  p.kv_transfer_bytes = &kv_transfer->Add({});
  for (int i = 0; i < kNumPrefillPhases; ++i) {
    const Labels phase = {{"phase", PrefillPhaseName(static_cast<PrefillPhase>(i))}};
    p.phase_seconds[i] = &phase_seconds->Add(phase);
    p.phase_duration[i] = &phase_duration->Add(phase);
  }
  p.attention_density = &density->Add({});
  p.kv_bytes_sent = &kv_sent->Add({});
  p.kv_bytes_dense_ring = &kv_dense->Add({});
  p.selected_blocks = &selected->Add({});
  p.computed_blocks = &computed->Add({});
  p.balance_bytes_sent = &balance_sent->Add({});
  p.selected_blocks_imbalance = &selected_imbalance->Add({});
  p.computed_blocks_imbalance = &computed_imbalance->Add({});
  p.requests_waiting = &waiting->Add({});
  p.requests_running = &running->Add({});
  p.resident_memory = &resident->Add({});
  p.gpu_memory_used = gpu;
  p.build_info = &build->Add({{"version", PrefillVersion()}, {"revision", PrefillRevision()}});
  p.build_info->Set(1);

  std::unique_ptr<PrefillMetrics> metrics(new PrefillMetrics(std::move(registry), identity, p));
  // The hook holds the gauge (owned by the registry), not the PrefillMetrics, so it stays
  // valid when the PrefillMetrics goes first.
  Gauge* resident_gauge = p.resident_memory;
  metrics->registry_->AddCollectHook([resident_gauge] {
    const int64_t bytes = ProcessResidentMemoryBytes();
    if (bytes >= 0) resident_gauge->Set(static_cast<double>(bytes));
  });
  metrics->UpdateProcessMetrics();
  return metrics;
}

PrefillMetrics::PrefillMetrics(std::shared_ptr<Registry> registry, PrefillMetricsIdentity identity,
                               const Parts& p)
    : requests(*p.requests),
      requests_ok(*p.requests_ok),
      prompt_tokens(*p.prompt_tokens),
      request_prefill_time(*p.request_prefill_time),
      request_queue_time(*p.request_queue_time),
      time_to_kv_handoff(*p.time_to_kv_handoff),
      kv_transfer_bytes(*p.kv_transfer_bytes),
      phase_seconds(p.phase_seconds),
      phase_duration(p.phase_duration),
      attention_density(*p.attention_density),
      kv_bytes_sent(*p.kv_bytes_sent),
      kv_bytes_dense_ring(*p.kv_bytes_dense_ring),
      selected_blocks(*p.selected_blocks),
      computed_blocks(*p.computed_blocks),
      balance_bytes_sent(*p.balance_bytes_sent),
      selected_blocks_imbalance(*p.selected_blocks_imbalance),
      computed_blocks_imbalance(*p.computed_blocks_imbalance),
      requests_waiting(*p.requests_waiting),
      requests_running(*p.requests_running),
      resident_memory(*p.resident_memory),
      gpu_memory_used(*p.gpu_memory_used),
      build_info(*p.build_info),
      registry_(std::move(registry)),
      identity_(std::move(identity)) {}

Counter& PrefillMetrics::RequestsWithStatus(absl::StatusCode status) {
  if (status == absl::StatusCode::kOk) return requests_ok;
  return requests.Add({{"status", StatusLabel(status)}});
}

void PrefillMetrics::RecordRequest(const PrefillRequestRecord& record) {
  RequestsWithStatus(record.status).Increment();
  prompt_tokens.Increment(static_cast<double>(record.prompt_tokens));
  request_prefill_time.Observe(record.prefill_seconds);
  for (int i = 0; i < kNumPrefillPhases; ++i) {
    if (!(record.phase_seconds[i] > 0)) continue;  // the phase did not run (dense: no mask)
    phase_seconds[i]->Increment(record.phase_seconds[i]);
    phase_duration[i]->Observe(record.phase_seconds[i]);
  }
  if (record.attention_density) attention_density.Observe(*record.attention_density);
  kv_bytes_sent.Increment(static_cast<double>(record.kv_bytes_sent));
  kv_transfer_bytes.Increment(static_cast<double>(record.kv_transfer_bytes));
  kv_bytes_dense_ring.Increment(static_cast<double>(record.kv_bytes_dense_ring));
  selected_blocks.Increment(static_cast<double>(record.selected_blocks));
  computed_blocks.Increment(static_cast<double>(record.computed_blocks));
  balance_bytes_sent.Increment(static_cast<double>(record.balance_bytes_sent));
  if (record.selected_blocks_imbalance)
    selected_blocks_imbalance.Set(*record.selected_blocks_imbalance);
  if (record.computed_blocks_imbalance)
    computed_blocks_imbalance.Set(*record.computed_blocks_imbalance);
}

void PrefillMetrics::SetGpuMemoryUsedBytes(int64_t bytes) {
  Gauge* child = gpu_memory_child_.load(std::memory_order_acquire);
  if (!child) {
    child = &gpu_memory_used.Add({});  // idempotent: racing callers get the same child
    gpu_memory_child_.store(child, std::memory_order_release);
  }
  child->Set(static_cast<double>(bytes));
}

void PrefillMetrics::UpdateProcessMetrics() {
  const int64_t bytes = ProcessResidentMemoryBytes();
  if (bytes >= 0) resident_memory.Set(static_cast<double>(bytes));
}

}  // namespace prefill::monitoring
