// Many threads on one metric: exact totals, and scrapes that run meanwhile always see a
// consistent histogram (+Inf == count) and counters that never go down.
#include <algorithm>
#include <atomic>
#include <functional>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "monitoring/registry.h"

namespace prefill::monitoring {
namespace {

constexpr int kThreads = 8;
constexpr int kPerThread = 100000;

void RunThreads(const std::function<void(int)>& body) {
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(body, t);
  for (auto& t : threads) t.join();
}

TEST(ConcurrencyTest, CounterIncrementsGiveTheExactTotal) {
  Registry registry;
  auto family = BuildCounter().Name("c_total").Help("c").Register(registry);
  ASSERT_TRUE(family.ok());
  Counter& c = (*family)->Add({});
  RunThreads([&](int) {
    for (int i = 0; i < kPerThread; ++i) c.Increment();
  });
  EXPECT_EQ(c.Value(), static_cast<double>(kThreads) * kPerThread);
}

TEST(ConcurrencyTest, GaugeIncrementsAndDecrementsCancel) {
  Gauge g;
  RunThreads([&](int t) {
    for (int i = 0; i < kPerThread; ++i) (t % 2) ? g.Increment(2) : g.Decrement(2);
  });
  EXPECT_EQ(g.Value(), 0);
}

TEST(ConcurrencyTest, HistogramObservesFromManyThreads) {
  Histogram h({1, 2, 3});
  RunThreads([&](int t) {
    for (int i = 0; i < kPerThread; ++i) h.Observe((t + i) % 4 + 0.5);  // 0.5, 1.5, 2.5, 3.5
  });
  const HistogramSnapshot s = h.Snapshot();
  const uint64_t n = static_cast<uint64_t>(kThreads) * kPerThread;
  EXPECT_EQ(s.count, n);
  EXPECT_EQ(s.cumulative_counts, (std::vector<uint64_t>{n / 4, n / 2, 3 * n / 4, n}));
  EXPECT_EQ(s.sum, (0.5 + 1.5 + 2.5 + 3.5) * n / 4);  // exact: multiples of 0.5 below 2^53
}

TEST(ConcurrencyTest, ConcurrentAddOfOneLabelSetYieldsOneChild) {
  Registry registry;
  auto family = BuildCounter().Name("c_total").Help("c").Register(registry);
  ASSERT_TRUE(family.ok());
  std::vector<Counter*> seen(kThreads);
  RunThreads([&](int t) {
    for (int i = 0; i < 1000; ++i) {
      Counter& c = (*family)->Add({{"status", "ok"}});
      c.Increment();
      seen[t] = &c;
    }
  });
  for (Counter* c : seen) EXPECT_EQ(c, seen[0]);
  EXPECT_EQ(seen[0]->Value(), kThreads * 1000.0);
  EXPECT_EQ(registry.Collect()[0].metrics.size(), 1u);
}

TEST(ConcurrencyTest, ScrapesDuringUpdatesAreConsistent) {
  Registry registry;
  auto counters = BuildCounter().Name("c_total").Help("c").Register(registry);
  auto hists = BuildHistogram().Name("h_seconds").Help("h").Buckets({0.1, 1}).Register(registry);
  ASSERT_TRUE(counters.ok() && hists.ok());
  Counter& c = (*counters)->Add({});
  Histogram& h = (*hists)->Add({});
  std::atomic<bool> done{false};
  std::thread scraper([&] {
    double last = 0;
    while (!done.load()) {
      for (const FamilySnapshot& f : registry.Collect()) {
        for (const MetricSnapshot& m : f.metrics) {
          if (f.type == MetricType::kCounter) {
            EXPECT_GE(m.value, last);
            last = m.value;
          } else {
            const auto& cum = m.histogram.cumulative_counts;
            EXPECT_EQ(cum.back(), m.histogram.count);
            EXPECT_TRUE(std::is_sorted(cum.begin(), cum.end()));
          }
        }
      }
    }
  });
  RunThreads([&](int t) {
    for (int i = 0; i < kPerThread / 10; ++i) {
      c.Increment();
      h.Observe(0.01 * (t + 1) * (i % 20));
    }
  });
  done = true;
  scraper.join();
  EXPECT_EQ(c.Value(), kThreads * (kPerThread / 10.0));
  EXPECT_EQ(h.Snapshot().count, static_cast<uint64_t>(kThreads) * (kPerThread / 10));
}

}  // namespace
}  // namespace prefill::monitoring
