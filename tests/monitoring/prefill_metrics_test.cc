// PrefillMetrics: every metric the dashboards and users expect, with the constant labels
// rank, local_rank, host, job_id, model_name; RecordRequest updates them.
#include "monitoring/prefill_metrics.h"

#include <cstdlib>
#include <regex>

#include "gtest/gtest.h"
#include "monitoring/text_format.h"
#include "tests/monitoring/exposition_parse.h"

namespace prefill::monitoring {
namespace {

PrefillMetricsIdentity TestIdentity() {
  PrefillMetricsIdentity id;
  id.rank = 5;
  id.local_rank = 1;
  id.host = "node07";
  id.job_id = "1234";
  id.model_name = "llama-3-8b";
  return id;
}

std::string Exposition(const Registry& registry) { return SerializeText(registry.Collect()); }

bool Contains(const std::string& text, const std::string& fragment) {
  return text.find(fragment) != std::string::npos;
}

TEST(PrefillMetricsTest, ExportsTheServiceMetricsWithTheirTypes) {
  auto registry = std::make_shared<Registry>();
  auto metrics = PrefillMetrics::Create(registry, TestIdentity());
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  (*metrics)->SetGpuMemoryUsedBytes(1 << 20);
  const std::string text = Exposition(*registry);
  for (const char* typed : {
           "prefill_requests_total counter",
           "prefill_prompt_tokens_total counter",
           "prefill_request_prefill_time_seconds histogram",
           "prefill_request_queue_time_seconds histogram",
           "prefill_time_to_kv_handoff_seconds histogram",
           "prefill_kv_transfer_bytes_total counter",
           "prefill_phase_seconds_total counter",
           "prefill_phase_duration_seconds histogram",
           "prefill_attention_density histogram",
           "prefill_kv_bytes_sent_total counter",
           "prefill_kv_bytes_dense_ring_total counter",
           "prefill_attention_selected_blocks_total counter",
           "prefill_attention_computed_blocks_total counter",
           "prefill_balance_bytes_sent_total counter",
           "prefill_selected_blocks_imbalance gauge",
           "prefill_computed_blocks_imbalance gauge",
           "prefill_num_requests_waiting gauge",
           "prefill_num_requests_running gauge",
           "prefill_process_resident_memory_bytes gauge",
           "prefill_gpu_memory_used_bytes gauge",
           "prefill_build_info gauge",
       }) {
    EXPECT_TRUE(Contains(text, std::string("# TYPE ") + typed + "\n")) << typed;
  }
  for (const char* phase : {"mask_estimation", "kv_exchange", "attention", "gemm"}) {
    EXPECT_TRUE(Contains(text, std::string("phase=\"") + phase + "\"")) << phase;
  }
  EXPECT_TRUE(Contains(text, "le=\"2560\""));
  EXPECT_TRUE(Contains(text, "le=\"0.001\""));
  EXPECT_TRUE(
      Contains(text,
               "prefill_attention_density_bucket{host=\"node07\",job_id=\"1234\",local_rank=\"1\","
               "model_name=\"llama-3-8b\",rank=\"5\",le=\"0.05\"} 0\n"));
  EXPECT_TRUE(Contains(text, "le=\"0.15\""));
  EXPECT_TRUE(std::regex_search(
      text, std::regex("prefill_build_info\\{[^}]*revision=\"[^\"]+\",version=\"[^\"]+\"\\} 1\n")));
}

TEST(PrefillMetricsTest, EverySampleCarriesTheConstantLabels) {
  auto registry = std::make_shared<Registry>();
  auto metrics = PrefillMetrics::Create(registry, TestIdentity());
  ASSERT_TRUE(metrics.ok());
  std::istringstream in(Exposition(*registry));
  std::string line;
  int samples = 0;
  while (std::getline(in, line)) {
    if (line[0] == '#') continue;
    ++samples;
    ASSERT_TRUE(Contains(
        line, "host=\"node07\",job_id=\"1234\",local_rank=\"1\",model_name=\"llama-3-8b\""))
        << line;
    ASSERT_TRUE(Contains(line, "rank=\"5\"")) << line;
    ASSERT_EQ(line.rfind("prefill_", 0), 0u) << line;
  }
  EXPECT_GT(samples, 100);
}

TEST(PrefillMetricsTest, NamesFollowPrometheusConventions) {
  auto registry = std::make_shared<Registry>();
  auto metrics = PrefillMetrics::Create(registry, TestIdentity());
  ASSERT_TRUE(metrics.ok());
  (*metrics)->SetGpuMemoryUsedBytes(1);
  for (const FamilySnapshot& f : registry->Collect()) {
    EXPECT_EQ(f.name.find(':'), std::string::npos) << f.name;  // colons: recording rules only
    if (f.type == MetricType::kCounter) {
      EXPECT_TRUE(f.name.ends_with("_total")) << f.name;
    }
    if (f.name.find("time") != std::string::npos || f.name.find("duration") != std::string::npos) {
      EXPECT_TRUE(f.name.ends_with("_seconds") || f.name.ends_with("_seconds_total")) << f.name;
    }
    if (f.name.find("memory") != std::string::npos) {
      EXPECT_TRUE(f.name.ends_with("_bytes")) << f.name;
    }
  }
}

TEST(PrefillMetricsTest, RecordRequestUpdatesEveryMetric) {
  auto registry = std::make_shared<Registry>();
  auto created = PrefillMetrics::Create(registry, TestIdentity());
  ASSERT_TRUE(created.ok());
  PrefillMetrics& m = **created;
  PrefillRequestRecord r;
  r.prompt_tokens = 8192;
  r.prefill_seconds = 1.5;
  r.phase_seconds = {0.25, 0.5, 0.75, 0};  // no gemm phase
  r.attention_density = 0.3;
  r.kv_bytes_sent = 1000;
  r.kv_bytes_dense_ring = 4000;
  r.selected_blocks = 300;
  r.computed_blocks = 200;
  r.balance_bytes_sent = 50;
  r.selected_blocks_imbalance = 1.9;
  r.computed_blocks_imbalance = 1.05;
  m.RecordRequest(r);
  m.RecordRequest(r);
  PrefillRequestRecord failed;
  failed.status = absl::StatusCode::kUnavailable;
  failed.prompt_tokens = 10;
  m.RecordRequest(failed);

  EXPECT_EQ(m.requests_ok.Value(), 2);
  EXPECT_EQ(m.RequestsWithStatus(absl::StatusCode::kUnavailable).Value(), 1);
  EXPECT_EQ(m.prompt_tokens.Value(), 16394);
  EXPECT_EQ(m.request_prefill_time.Snapshot().count, 3u);
  EXPECT_EQ(m.request_prefill_time.Snapshot().sum, 3.0);
  EXPECT_EQ(m.phase_seconds[static_cast<int>(PrefillPhase::kKvExchange)]->Value(), 1.0);
  EXPECT_EQ(m.phase_duration[static_cast<int>(PrefillPhase::kAttention)]->Snapshot().count, 2u);
  EXPECT_EQ(m.phase_duration[static_cast<int>(PrefillPhase::kGemm)]->Snapshot().count, 0u);
  EXPECT_EQ(m.attention_density.Snapshot().count, 2u);  // the failed request had none
  EXPECT_EQ(m.kv_bytes_sent.Value(), 2000);
  EXPECT_EQ(m.kv_bytes_dense_ring.Value(), 8000);
  EXPECT_EQ(m.selected_blocks.Value(), 600);
  EXPECT_EQ(m.computed_blocks.Value(), 400);
  EXPECT_EQ(m.balance_bytes_sent.Value(), 100);
  EXPECT_EQ(m.selected_blocks_imbalance.Value(), 1.9);  // the failed request measured none
  EXPECT_EQ(m.computed_blocks_imbalance.Value(), 1.05);

  const std::string text = Exposition(*registry);
  EXPECT_TRUE(Contains(text, "model_name=\"llama-3-8b\",rank=\"5\",status=\"unavailable\"} 1\n"));
  EXPECT_TRUE(Contains(text, "model_name=\"llama-3-8b\",rank=\"5\",status=\"ok\"} 2\n"));
  EXPECT_TRUE(
      Contains(text,
               "prefill_prompt_tokens_total{host=\"node07\",job_id=\"1234\",local_rank=\"1\","
               "model_name=\"llama-3-8b\",rank=\"5\"} 16394\n"));
}

TEST(PrefillMetricsTest, GaugesAndProcessMemory) {
  auto registry = std::make_shared<Registry>();
  auto created = PrefillMetrics::Create(registry, TestIdentity());
  ASSERT_TRUE(created.ok());
  PrefillMetrics& m = **created;
  EXPECT_FALSE(Contains(Exposition(*registry), "prefill_gpu_memory_used_bytes{"));  // CPU: absent
  m.SetGpuMemoryUsedBytes(int64_t{5} << 30);
  m.SetRequestsWaiting(7);
  m.SetRequestsRunning(2);
  const std::string text = Exposition(*registry);
  EXPECT_TRUE(Contains(text, "rank=\"5\"} 5368709120\n"));
  EXPECT_EQ(m.requests_waiting.Value(), 7);
  EXPECT_EQ(m.requests_running.Value(), 2);
  EXPECT_GT(ProcessResidentMemoryBytes(), 1 << 20);
  m.resident_memory.Set(0);
  registry->Collect();  // the collect hook reads /proc/self/statm
  EXPECT_GT(m.resident_memory.Value(), 1 << 20);
}

TEST(PrefillMetricsTest, HookOutlivesThePrefillMetrics) {
  auto registry = std::make_shared<Registry>();
  {
    auto created = PrefillMetrics::Create(registry, TestIdentity());
    ASSERT_TRUE(created.ok());
  }
  EXPECT_TRUE(Contains(Exposition(*registry), "prefill_process_resident_memory_bytes{"));
}

TEST(PrefillMetricsTest, CreateTwiceSharesFamiliesAndClashesAreErrors) {
  auto registry = std::make_shared<Registry>();
  auto a = PrefillMetrics::Create(registry, TestIdentity());
  auto b = PrefillMetrics::Create(registry, TestIdentity());
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(&(*a)->prompt_tokens, &(*b)->prompt_tokens);

  auto taken = std::make_shared<Registry>();
  ASSERT_TRUE(BuildGauge().Name("prefill_attention_density").Help("x").Register(*taken).ok());
  auto clash = PrefillMetrics::Create(taken, TestIdentity());
  ASSERT_FALSE(clash.ok());
  EXPECT_EQ(clash.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(PrefillMetrics::Create(nullptr, TestIdentity()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(PrefillMetricsTest, IdentityFromEnvironment) {
  setenv("SLURM_JOB_ID", "777", 1);
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "2", 1);
  auto id = PrefillMetricsIdentity::FromEnvironment(9, "");
  unsetenv("SLURM_JOB_ID");
  unsetenv("OMPI_COMM_WORLD_LOCAL_RANK");
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(id->rank, 9);
  EXPECT_EQ(id->local_rank, 2);
  EXPECT_EQ(id->job_id, "777");
  EXPECT_EQ(id->model_name, "none");
  EXPECT_FALSE(id->host.empty());
  auto plain = PrefillMetricsIdentity::FromEnvironment(0, "m");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->job_id, "none");
  EXPECT_EQ(plain->ToLabels(), (Labels{{"host", plain->host},
                                       {"job_id", "none"},
                                       {"local_rank", "0"},
                                       {"model_name", "m"},
                                       {"rank", "0"}}));
}

}  // namespace
}  // namespace prefill::monitoring
