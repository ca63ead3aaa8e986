// What a scrape sees: a point-in-time copy of metric families, and the interface of
// anything that can produce one (a Registry; tests may add their own). The Exposer and the
// text serializer work on snapshots only, so no lock of a hot path is held while bytes go
// out on a socket.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "monitoring/metric_names.h"

namespace prefill::monitoring {

enum class MetricType { kCounter, kGauge, kHistogram };

const char* MetricTypeName(MetricType type);  // "counter", "gauge", "histogram"

struct HistogramSnapshot {
  std::vector<double> upper_bounds;         // ascending, finite; +Inf is implicit
  std::vector<uint64_t> cumulative_counts;  // upper_bounds.size() + 1; the last is +Inf
  uint64_t count = 0;                       // == cumulative_counts.back()
  double sum = 0;
};

struct MetricSnapshot {
  Labels labels;                // constant labels merged with the child's labels
  double value = 0;             // counter, gauge
  HistogramSnapshot histogram;  // histogram
};

struct FamilySnapshot {
  std::string name;
  std::string help;
  MetricType type = MetricType::kGauge;
  std::vector<MetricSnapshot> metrics;  // sorted by labels, each label set once
};

class Collectable {
 public:
  virtual ~Collectable() = default;
  // Families sorted by name; safe to call from any thread, concurrently with updates.
  virtual std::vector<FamilySnapshot> Collect() const = 0;
};

}  // namespace prefill::monitoring
