#include "monitoring/histogram.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace prefill::monitoring {

absl::Status Histogram::ValidateBuckets(const BucketBoundaries& bounds) {
  for (size_t i = 0; i < bounds.size(); ++i) {
    const double b = bounds[i];
    if (std::isnan(b) || b == -INFINITY) {
      return absl::InvalidArgumentError(absl::StrCat("histogram bucket bound ", i, " is ", b));
    }
    if (b == INFINITY && i + 1 != bounds.size()) {
      return absl::InvalidArgumentError("histogram bucket bound +Inf may only come last");
    }
    if (i > 0 && !(bounds[i - 1] < b)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "histogram bucket bounds must ascend strictly: ", bounds[i - 1], " then ", b));
    }
  }
  return absl::OkStatus();
}

Histogram::BucketBoundaries Histogram::ExponentialBuckets(double start, double factor, int count) {
  BucketBoundaries bounds;
  double b = start;
  for (int i = 0; i < count; ++i, b *= factor) bounds.push_back(b);
  return bounds;
}

Histogram::BucketBoundaries Histogram::LinearBuckets(double start, double width, int count) {
  BucketBoundaries bounds;
  for (int i = 0; i < count; ++i) {
    char text[32];
    std::snprintf(text, sizeof text, "%.12g", start + width * i);
    bounds.push_back(std::strtod(text, nullptr));
  }
  return bounds;
}

Histogram::Histogram(const BucketBoundaries& bounds) : bounds_(bounds) {
  if (!bounds_.empty() && bounds_.back() == INFINITY) bounds_.pop_back();
  counts_ = std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1);
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double value) {
  if (std::isnan(value)) return;
  // The first bound >= value: the bucket `le` that value falls into (the last is +Inf).
  const size_t bucket = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  counts_[bucket].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

HistogramSnapshot Histogram::Snapshot() const {
  HistogramSnapshot s;
  s.upper_bounds = bounds_;
  s.cumulative_counts.resize(bounds_.size() + 1);
  uint64_t running = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    running += counts_[i].load(std::memory_order_relaxed);
    s.cumulative_counts[i] = running;
  }
  // The count is the buckets' total, so +Inf == _count holds even during concurrent
  // observes; the sum may then include an observation a bucket has not counted yet.
  s.count = running;
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace prefill::monitoring
