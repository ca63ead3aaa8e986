// Gauge: a value that goes up and down (queue depth, memory in use). Each operation is one
// relaxed atomic: safe and cheap from any thread.
#pragma once

#include <atomic>
#include <chrono>

namespace prefill::monitoring {

class Gauge {
 public:
  static constexpr const char* kTypeName = "gauge";

  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Increment(double v = 1.0) { value_.fetch_add(v, std::memory_order_relaxed); }
  void Decrement(double v = 1.0) { value_.fetch_sub(v, std::memory_order_relaxed); }
  // Seconds since the Unix epoch (for "last success" style gauges).
  void SetToCurrentTime() {
    Set(std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
  }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

}  // namespace prefill::monitoring
