// Registration: name rules return errors instead of crashing; re-registration merges or is
// refused; Add returns stable references and reports bad labels through TryAdd.
#include "monitoring/registry.h"

#include "gtest/gtest.h"
#include "monitoring/metric_names.h"
#include "monitoring/text_format.h"

namespace prefill::monitoring {
namespace {

TEST(MetricNamesTest, MetricNames) {
  for (const char* ok : {"a", "_x", "prefill_requests_total", "rule:ratio:rate5m", "A9_b"}) {
    EXPECT_TRUE(ValidateMetricName(ok).ok()) << ok;
  }
  for (const char* bad : {"", "9lives", "has-dash", "has space", "dot.ted", "caf\xc3\xa9"}) {
    absl::Status s = ValidateMetricName(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(MetricNamesTest, LabelNames) {
  for (const char* ok : {"rank", "_x", "a1", "local_rank", "_"})
    EXPECT_TRUE(ValidateLabelName(ok).ok()) << ok;
  for (const char* bad : {"", "1a", "a:b", "__name__", "__x", "a-b"}) {
    EXPECT_EQ(ValidateLabelName(bad).code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_NE(std::string(ValidateLabelName("__x").message()).find("reserved"), std::string::npos);
}

TEST(MetricNamesTest, Utf8) {
  EXPECT_TRUE(IsValidUtf8("plain"));
  EXPECT_TRUE(IsValidUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xc3"));          // truncated
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));      // overlong
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));  // surrogate
  EXPECT_FALSE(IsValidUtf8("\xff"));
}

TEST(RegistryTest, RegisterRejectsBadDefinitionsWithoutCrashing) {
  Registry registry;
  auto expect_invalid = [](const auto& result, const std::string& fragment) {
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(result.status().message()).find(fragment), std::string::npos)
        << result.status();
  };
  expect_invalid(BuildGauge().Name("bad-name").Help("h").Register(registry), "bad-name");
  expect_invalid(BuildGauge().Name("").Help("h").Register(registry), "empty");
  expect_invalid(BuildCounter().Name("requests").Help("h").Register(registry), "_total");
  expect_invalid(BuildGauge().Name("g").Help("h").Labels({{"a:b", "1"}}).Register(registry), "a:b");
  expect_invalid(BuildGauge().Name("g").Help("h").Labels({{"__meta", "1"}}).Register(registry),
                 "reserved");
  expect_invalid(BuildGauge().Name("g").Help("h").Labels({{"a", "\xff"}}).Register(registry),
                 "UTF-8");
  expect_invalid(BuildGauge().Name("g").Help("\xff").Register(registry), "UTF-8");
  expect_invalid(BuildHistogram().Name("h").Help("h").Buckets({1, 0.5}).Register(registry),
                 "ascend");
  expect_invalid(BuildHistogram().Name("h").Help("h").Buckets({1, NAN}).Register(registry),
                 "bound");
  expect_invalid(
      BuildHistogram().Name("h").Help("h").Labels({{"le", "1"}}).Buckets({1}).Register(registry),
      "le");
  EXPECT_EQ(SerializeText(registry.Collect()), "");
}

TEST(RegistryTest, SameDefinitionMergesOtherIsAlreadyExists) {
  Registry registry;
  auto a = BuildCounter().Name("x_total").Help("h").Labels({{"rank", "0"}}).Register(registry);
  auto b = BuildCounter().Name("x_total").Help("h").Labels({{"rank", "0"}}).Register(registry);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
  EXPECT_EQ(BuildCounter().Name("x_total").Help("other").Register(registry).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(BuildGauge().Name("x_total").Help("h").Register(registry).status().code(),
            absl::StatusCode::kAlreadyExists);
}

TEST(RegistryTest, HistogramSeriesNamesCannotBeReused) {
  Registry registry;
  ASSERT_TRUE(BuildHistogram().Name("lat_seconds").Help("h").Buckets({1}).Register(registry).ok());
  EXPECT_EQ(BuildGauge().Name("lat_seconds_count").Help("h").Register(registry).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(
      BuildCounter().Name("lat_seconds_bucket_total").Help("h").Register(registry).status().code(),
      absl::StatusCode::kOk);  // not a series of the histogram
  ASSERT_TRUE(BuildGauge().Name("size_sum").Help("h").Register(registry).ok());
  EXPECT_EQ(BuildHistogram().Name("size").Help("h").Buckets({1}).Register(registry).status().code(),
            absl::StatusCode::kAlreadyExists);
}

TEST(RegistryTest, AddReturnsStableReferences) {
  Registry registry;
  auto family = BuildCounter().Name("c_total").Help("c").Register(registry);
  ASSERT_TRUE(family.ok());
  Counter& first = (*family)->Add({{"k", "0"}});
  for (int i = 1; i < 1000; ++i) (*family)->Add({{"k", std::to_string(i)}});  // map grows
  EXPECT_EQ(&first, &(*family)->Add({{"k", "0"}}));
  first.Increment(2);
  EXPECT_EQ((*family)->Add({{"k", "0"}}).Value(), 2);
}

TEST(RegistryTest, BadChildLabelsAreErrorsAtTryAddAndDetachedAtAdd) {
  Registry registry;
  auto family = BuildCounter().Name("c_total").Help("c").Labels({{"rank", "0"}}).Register(registry);
  ASSERT_TRUE(family.ok());
  EXPECT_EQ((*family)->TryAdd({{"rank", "1"}}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*family)->TryAdd({{"bad-name", "1"}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*family)->TryAdd({{"__x", "1"}}).status().code(), absl::StatusCode::kInvalidArgument);
  Counter& detached = (*family)->Add({{"bad-name", "1"}});
  detached.Increment();  // usable, but not exported
  EXPECT_EQ(detached.Value(), 1);
  EXPECT_EQ(SerializeText(registry.Collect()), "");

  auto hist = BuildHistogram().Name("h").Help("h").Register(registry);  // no default buckets
  ASSERT_TRUE(hist.ok());
  EXPECT_EQ((*hist)->TryAdd({}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*hist)->TryAdd({{"le", "1"}}, {1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*hist)->TryAdd({}, {2, 1}).status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE((*hist)->TryAdd({}, {1, 2}).ok());
  EXPECT_TRUE((*hist)->TryAdd({}, {1, 2, INFINITY}).ok());  // the same buckets
  EXPECT_EQ((*hist)->TryAdd({}, {1, 3}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(RegistryTest, CollectHooksRunBeforeValuesAreRead) {
  Registry registry;
  auto family = BuildGauge().Name("g").Help("h").Register(registry);
  ASSERT_TRUE(family.ok());
  Gauge& g = (*family)->Add({});
  int calls = 0;
  registry.AddCollectHook([&] { g.Set(++calls); });
  EXPECT_EQ(SerializeText(registry.Collect()), "# HELP g h\n# TYPE g gauge\ng 1\n");
  EXPECT_EQ(SerializeText(registry.Collect()), "# HELP g h\n# TYPE g gauge\ng 2\n");
}

}  // namespace
}  // namespace prefill::monitoring
