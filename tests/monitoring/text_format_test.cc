// The text exposition format 0.0.4, byte for byte: golden output for a registry with a
// labelled counter, a gauge and a histogram; escaping; value formatting.
#include "monitoring/text_format.h"

#include <cmath>
#include <memory>

#include "gtest/gtest.h"
#include "monitoring/registry.h"

namespace prefill::monitoring {
namespace {

TEST(TextFormatTest, GoldenCounterGaugeHistogram) {
  Registry registry;
  auto requests = BuildCounter()
                      .Name("demo_requests_total")
                      .Help("Requests by status.")
                      .Labels({{"rank", "1"}})
                      .Register(registry);
  ASSERT_TRUE(requests.ok()) << requests.status();
  (*requests)->Add({{"status", "ok"}}).Increment(3);
  (*requests)->Add({{"status", "error"}}).Increment();
  auto queue = BuildGauge().Name("demo_queue_depth").Help("Queued requests.").Register(registry);
  ASSERT_TRUE(queue.ok());
  (*queue)->Add({}).Set(-2.5);
  auto latency = BuildHistogram()
                     .Name("demo_latency_seconds")
                     .Help("Latency.")
                     .Buckets({0.1, 1, 10})
                     .Register(registry);
  ASSERT_TRUE(latency.ok());
  Histogram& h = (*latency)->Add({{"phase", "attention"}});
  for (double v : {0.05, 0.1, 0.5, 2.0, 20.0}) h.Observe(v);

  const std::string expected =
      "# HELP demo_latency_seconds Latency.\n"
      "# TYPE demo_latency_seconds histogram\n"
      "demo_latency_seconds_bucket{phase=\"attention\",le=\"0.1\"} 2\n"
      "demo_latency_seconds_bucket{phase=\"attention\",le=\"1\"} 3\n"
      "demo_latency_seconds_bucket{phase=\"attention\",le=\"10\"} 4\n"
      "demo_latency_seconds_bucket{phase=\"attention\",le=\"+Inf\"} 5\n"
      "demo_latency_seconds_sum{phase=\"attention\"} 22.65\n"
      "demo_latency_seconds_count{phase=\"attention\"} 5\n"
      "# HELP demo_queue_depth Queued requests.\n"
      "# TYPE demo_queue_depth gauge\n"
      "demo_queue_depth -2.5\n"
      "# HELP demo_requests_total Requests by status.\n"
      "# TYPE demo_requests_total counter\n"
      "demo_requests_total{rank=\"1\",status=\"error\"} 1\n"
      "demo_requests_total{rank=\"1\",status=\"ok\"} 3\n";
  EXPECT_EQ(SerializeText(registry.Collect()), expected);
}

TEST(TextFormatTest, ConstantLabelsMergeSortedWithChildLabels) {
  Registry registry;
  auto family =
      BuildGauge().Name("g").Help("h").Labels({{"b", "2"}, {"z", "9"}}).Register(registry);
  ASSERT_TRUE(family.ok());
  (*family)->Add({{"a", "1"}}).Set(1);
  (*family)->Add({{"c", "3"}}).Set(2);
  EXPECT_EQ(SerializeText(registry.Collect()),
            "# HELP g h\n# TYPE g gauge\n"
            "g{a=\"1\",b=\"2\",z=\"9\"} 1\n"
            "g{b=\"2\",c=\"3\",z=\"9\"} 2\n");
}

TEST(TextFormatTest, EscapesHelpAndLabelValues) {
  EXPECT_EQ(EscapeHelp("a\\b\nc \"q\""), "a\\\\b\\nc \"q\"");
  EXPECT_EQ(EscapeLabelValue("a\\b\nc \"q\""), "a\\\\b\\nc \\\"q\\\"");

  Registry registry;
  auto family = BuildCounter().Name("x_total").Help("line one\nback\\slash").Register(registry);
  ASSERT_TRUE(family.ok());
  (*family)->Add({{"path", "C:\\tmp\n\"x\""}}).Increment();
  EXPECT_EQ(SerializeText(registry.Collect()),
            "# HELP x_total line one\\nback\\\\slash\n"
            "# TYPE x_total counter\n"
            "x_total{path=\"C:\\\\tmp\\n\\\"x\\\"\"} 1\n");
}

TEST(TextFormatTest, FormatsValues) {
  EXPECT_EQ(FormatValue(0), "0");
  EXPECT_EQ(FormatValue(-0.0), "0");
  EXPECT_EQ(FormatValue(800000), "800000");
  EXPECT_EQ(FormatValue(3221225472.0), "3221225472");
  EXPECT_EQ(FormatValue(-7), "-7");
  EXPECT_EQ(FormatValue(0.1), "0.1");
  EXPECT_EQ(FormatValue(1.5e-7), "1.5e-07");
  EXPECT_EQ(FormatValue(1e300), "1e+300");
  EXPECT_EQ(FormatValue(NAN), "NaN");
  EXPECT_EQ(FormatValue(INFINITY), "+Inf");
  EXPECT_EQ(FormatValue(-INFINITY), "-Inf");
  for (double v : {0.1 + 0.2, 1.0 / 3, 2560.5, 1e-300}) {
    EXPECT_EQ(std::stod(FormatValue(v)), v) << FormatValue(v);  // round-trips
  }
}

TEST(TextFormatTest, FamiliesWithoutChildrenAreLeftOut) {
  Registry registry;
  ASSERT_TRUE(BuildGauge().Name("empty").Help("never added").Register(registry).ok());
  EXPECT_EQ(SerializeText(registry.Collect()), "");
}

TEST(TextFormatTest, EveryLineEndsInNewlineAndEachSeriesAppearsOnce) {
  Registry registry;
  auto family = BuildCounter().Name("c_total").Help("c").Register(registry);
  ASSERT_TRUE(family.ok());
  for (int i = 0; i < 3; ++i) (*family)->Add({{"k", "v"}}).Increment();  // same child each time
  const std::string text = SerializeText(registry.Collect());
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  EXPECT_EQ(text, "# HELP c_total c\n# TYPE c_total counter\nc_total{k=\"v\"} 3\n");
}

}  // namespace
}  // namespace prefill::monitoring
