// monitoring/dashboards/prefill.json: valid JSON in Grafana's classic model, and every
// metric and label its queries use is one PrefillMetrics exports.
#include <cctype>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "gtest/gtest.h"
#include "monitoring/prefill_metrics.h"
#include "monitoring/text_format.h"
#include "nlohmann/json.hpp"
#include "tests/monitoring/exposition_parse.h"

namespace prefill::monitoring {
namespace {

nlohmann::json LoadDashboard() {
  std::ifstream in(std::string(PREFILL_SOURCE_DIR) + "/monitoring/dashboards/prefill.json");
  EXPECT_TRUE(in.good());
  return nlohmann::json::parse(in);  // throws, failing the test, on invalid JSON
}

testing::ExpositionNames ExportedNames() {
  auto registry = std::make_shared<Registry>();
  PrefillMetricsIdentity id;
  auto metrics = PrefillMetrics::Create(registry, id);
  EXPECT_TRUE(metrics.ok());
  (*metrics)->SetGpuMemoryUsedBytes(1);  // the one lazily created series
  PrefillRequestRecord failed;
  failed.status = absl::StatusCode::kInternal;
  (*metrics)->RecordRequest(failed);
  return testing::ParseExpositionNames(SerializeText(registry->Collect()));
}

// Metric names and label names a PromQL expression refers to.
struct ExprNames {
  std::set<std::string> metrics;
  std::set<std::string> labels;
};

ExprNames NamesInExpr(std::string expr) {
  ExprNames names;
  std::smatch m;
  // Label matchers {name op "value", ...} and grouping by/without (a, b).
  static const std::regex matcher(
      R"re(([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*")re");
  static const std::regex grouping(R"(\b(by|without|on|ignoring)\s*\(([^)]*)\))");
  for (auto it = std::sregex_iterator(expr.begin(), expr.end(), matcher);
       it != std::sregex_iterator(); ++it) {
    names.labels.insert((*it)[1]);
  }
  for (auto it = std::sregex_iterator(expr.begin(), expr.end(), grouping);
       it != std::sregex_iterator(); ++it) {
    std::stringstream list((*it)[2].str());
    std::string label;
    while (std::getline(list, label, ',')) {
      label.erase(0, label.find_first_not_of(' '));
      label.erase(label.find_last_not_of(' ') + 1);
      if (!label.empty()) names.labels.insert(label);
    }
  }
  // What is left once selectors, groupings, ranges, variables and strings are gone: metric
  // names, and function or aggregation names (those are followed by '(').
  expr = std::regex_replace(expr, std::regex(R"re("(?:[^"\\]|\\.)*")re"), "\"\"");
  expr = std::regex_replace(expr, std::regex(R"(\{[^}]*\})"), " ");
  expr = std::regex_replace(expr, grouping, " ");
  expr = std::regex_replace(expr, std::regex(R"(\[[^\]]*\])"), " ");
  expr = std::regex_replace(expr, std::regex(R"(\$[a-zA-Z_]+)"), " ");
  static const std::regex identifier(R"(([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?)");
  static const std::set<std::string> keywords = {"and",    "or",         "unless",     "bool",
                                                 "offset", "group_left", "group_right"};
  for (auto it = std::sregex_iterator(expr.begin(), expr.end(), identifier);
       it != std::sregex_iterator(); ++it) {
    const std::string name = (*it)[1];
    if ((*it)[2].matched || keywords.count(name)) continue;
    // A number like 0.99 or 1e3 does not start an identifier, but its exponent part could.
    if (it->position() > 0 && std::isdigit(static_cast<unsigned char>(expr[it->position() - 1])))
      continue;
    names.metrics.insert(name);
  }
  return names;
}

TEST(DashboardTest, ExprParserFindsNames) {
  ExprNames n = NamesInExpr(
      "histogram_quantile(0.99, sum by (le, phase) "
      "(rate(x_bucket{job_id=~\"$job_id\",a=\"}\"}[$__rate_interval]))) "
      "/ ignoring(b) y");
  EXPECT_EQ(n.metrics, (std::set<std::string>{"x_bucket", "y"}));
  EXPECT_EQ(n.labels, (std::set<std::string>{"a", "b", "job_id", "le", "phase"}));
}

TEST(DashboardTest, IsAGrafanaClassicDashboard) {
  const nlohmann::json d = LoadDashboard();
  EXPECT_TRUE(d["id"].is_null());
  EXPECT_FALSE(d["uid"].get<std::string>().empty());
  EXPECT_GE(d["schemaVersion"].get<int>(), 36);
  EXPECT_TRUE(d["time"].contains("from"));
  bool has_datasource_variable = false;
  for (const auto& v : d["templating"]["list"]) {
    if (v["name"] == "DS_PROMETHEUS" && v["type"] == "datasource" && v["query"] == "prometheus") {
      has_datasource_variable = true;
    }
  }
  EXPECT_TRUE(has_datasource_variable);
  std::set<int> ids;
  ASSERT_GE(d["panels"].size(), 8u);
  bool has_service_row = false;
  for (const auto& p : d["panels"]) {
    const std::string title = p["title"];
    EXPECT_TRUE(ids.insert(p["id"].get<int>()).second) << title;
    if (p["type"] == "row") {  // a header over the panels below it: no query of its own
      has_service_row = has_service_row || title.find("Service") != std::string::npos;
      continue;
    }
    EXPECT_EQ(p["datasource"]["uid"], "${DS_PROMETHEUS}") << title;
    EXPECT_EQ(p["datasource"]["type"], "prometheus") << title;
    const auto& g = p["gridPos"];
    EXPECT_GE(g["x"].get<int>(), 0) << title;
    EXPECT_LE(g["x"].get<int>() + g["w"].get<int>(), 24) << title;
    EXPECT_GT(g["h"].get<int>(), 0) << title;
    ASSERT_FALSE(p["targets"].empty()) << title;
    for (const auto& t : p["targets"]) {
      EXPECT_FALSE(t["expr"].get<std::string>().empty()) << title;
      EXPECT_FALSE(t["refId"].get<std::string>().empty()) << title;
    }
  }
  EXPECT_TRUE(has_service_row) << "prefill serve's panels sit under a Service row";
}

TEST(DashboardTest, QueriesUseOnlyExportedMetricsAndLabels) {
  const testing::ExpositionNames exported = ExportedNames();
  std::set<std::string> used;
  const nlohmann::json dashboard = LoadDashboard();
  for (const auto& p : dashboard["panels"]) {
    if (p["type"] == "row") continue;
    for (const auto& t : p["targets"]) {
      const std::string expr = t["expr"];
      const ExprNames names = NamesInExpr(expr);
      for (const std::string& metric : names.metrics) {
        EXPECT_TRUE(exported.samples.count(metric))
            << "panel '" << p["title"] << "' queries " << metric
            << ", which PrefillMetrics does not export: " << expr;
        used.insert(metric);
      }
      for (const std::string& label : names.labels) {
        EXPECT_TRUE(exported.labels.count(label))
            << "panel '" << p["title"] << "' uses label " << label;
      }
    }
  }
  // The panels the issue asks for are there.
  for (const char* needed :
       {"prefill_prompt_tokens_total", "prefill_request_prefill_time_seconds_bucket",
        "prefill_attention_density_bucket", "prefill_attention_density_sum",
        "prefill_kv_bytes_dense_ring_total", "prefill_kv_bytes_sent_total",
        "prefill_phase_seconds_total", "prefill_requests_total", "prefill_num_requests_waiting",
        "prefill_num_requests_running", "prefill_process_resident_memory_bytes",
        "prefill_gpu_memory_used_bytes", "prefill_request_queue_time_seconds_bucket",
        "prefill_time_to_kv_handoff_seconds_bucket", "prefill_kv_transfer_bytes_total"}) {
    EXPECT_TRUE(used.count(needed)) << needed << " is on no panel";
  }
}

}  // namespace
}  // namespace prefill::monitoring
