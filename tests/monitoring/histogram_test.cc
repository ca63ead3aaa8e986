// Histogram arithmetic: `le` is inclusive, buckets are cumulative, +Inf equals the count,
// the sum is the sum; bucket helpers.
#include "monitoring/histogram.h"

#include <cmath>

#include "gtest/gtest.h"

namespace prefill::monitoring {
namespace {

TEST(HistogramTest, CumulativeBucketsInfEqualsCountAndSum) {
  Histogram h({1, 2, 5});
  for (double v : {0.5, 1.0, 1.5, 2.0, 2.0, 4.9, 5.0, 5.1, 100.0, -3.0}) h.Observe(v);
  const HistogramSnapshot s = h.Snapshot();
  EXPECT_EQ(s.upper_bounds, (std::vector<double>{1, 2, 5}));
  // le=1: 0.5 1.0 -3 | le=2: +1.5 2 2 | le=5: +4.9 5.0 | +Inf: +5.1 100
  EXPECT_EQ(s.cumulative_counts, (std::vector<uint64_t>{3, 6, 8, 10}));
  EXPECT_EQ(s.count, 10u);
  EXPECT_EQ(s.cumulative_counts.back(), s.count);
  EXPECT_DOUBLE_EQ(s.sum, 0.5 + 1 + 1.5 + 2 + 2 + 4.9 + 5 + 5.1 + 100 - 3);
}

TEST(HistogramTest, NanIsIgnoredInfinitiesLandAtTheEnds) {
  Histogram h({1});
  h.Observe(NAN);
  h.Observe(INFINITY);
  h.Observe(-INFINITY);
  const HistogramSnapshot s = h.Snapshot();
  EXPECT_EQ(s.cumulative_counts, (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(s.count, 2u);
  EXPECT_TRUE(std::isnan(s.sum));  // +Inf + -Inf, as Prometheus would have it
}

TEST(HistogramTest, TrailingInfBoundIsImplicit) {
  Histogram h({1, 2, INFINITY});
  EXPECT_EQ(h.bounds(), (std::vector<double>{1, 2}));
  EXPECT_EQ(h.Snapshot().cumulative_counts.size(), 3u);
}

TEST(HistogramTest, EmptyBoundsHaveOnlyInf) {
  Histogram h({});
  h.Observe(3);
  EXPECT_EQ(h.Snapshot().cumulative_counts, (std::vector<uint64_t>{1}));
}

TEST(HistogramTest, ValidateBuckets) {
  EXPECT_TRUE(Histogram::ValidateBuckets({}).ok());
  EXPECT_TRUE(Histogram::ValidateBuckets({-1, 0, 1, INFINITY}).ok());
  EXPECT_FALSE(Histogram::ValidateBuckets({1, 1}).ok());
  EXPECT_FALSE(Histogram::ValidateBuckets({2, 1}).ok());
  EXPECT_FALSE(Histogram::ValidateBuckets({NAN}).ok());
  EXPECT_FALSE(Histogram::ValidateBuckets({-INFINITY, 1}).ok());
  EXPECT_FALSE(Histogram::ValidateBuckets({INFINITY, 1}).ok());
}

TEST(HistogramTest, BucketHelpers) {
  EXPECT_EQ(Histogram::ExponentialBuckets(1, 2, 4), (std::vector<double>{1, 2, 4, 8}));
  const auto linear = Histogram::LinearBuckets(0.05, 0.05, 20);
  ASSERT_EQ(linear.size(), 20u);
  EXPECT_EQ(linear[2], 0.15);  // not 0.15000000000000002
  EXPECT_EQ(linear.back(), 1.0);
}

}  // namespace
}  // namespace prefill::monitoring
