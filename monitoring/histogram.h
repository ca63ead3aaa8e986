// Histogram: counts observations into buckets `le` (less than or equal to an upper bound),
// plus their sum and count. Observe is a binary search over the bounds and two relaxed
// atomic adds; the buckets are kept non-cumulative and summed only when scraped, so the
// exposition's `+Inf` bucket always equals `_count`.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "monitoring/collectable.h"

namespace prefill::monitoring {

class Histogram {
 public:
  static constexpr const char* kTypeName = "histogram";
  // Finite upper bounds in strictly ascending order; a trailing +Inf may be given and is
  // dropped (the +Inf bucket is always there).
  using BucketBoundaries = std::vector<double>;

  // OK when `bounds` is usable: no NaN, no -Inf, strictly ascending.
  static absl::Status ValidateBuckets(const BucketBoundaries& bounds);
  // start, start*factor, ... (count bounds); start > 0, factor > 1.
  static BucketBoundaries ExponentialBuckets(double start, double factor, int count);
  // start, start+width, ... (count bounds), each rounded to 12 significant digits so that
  // 0.05 steps print as 0.15, not 0.15000000000000002.
  static BucketBoundaries LinearBuckets(double start, double width, int count);

  // `bounds` must pass ValidateBuckets (Family checks it at Add).
  explicit Histogram(const BucketBoundaries& bounds);

  // NaN is ignored.
  void Observe(double value);

  HistogramSnapshot Snapshot() const;
  const BucketBoundaries& bounds() const { return bounds_; }

 private:
  BucketBoundaries bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // bounds_.size() + 1, not cumulative
  std::atomic<double> sum_{0.0};
};

}  // namespace prefill::monitoring
