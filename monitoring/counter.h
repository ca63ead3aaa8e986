// Counter: a monotonically increasing value (requests, tokens, bytes, seconds spent).
// Increment is one relaxed atomic add: safe and cheap from any thread.
#pragma once

#include <atomic>
#include <cmath>

namespace prefill::monitoring {

class Counter {
 public:
  static constexpr const char* kTypeName = "counter";

  // Adds v; a negative or NaN v is ignored, so the counter never goes down.
  void Increment(double v = 1.0) {
    if (!(v >= 0)) return;
    value_.fetch_add(v, std::memory_order_relaxed);
  }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

}  // namespace prefill::monitoring
