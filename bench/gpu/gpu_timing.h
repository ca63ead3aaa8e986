// Timing and error helpers shared by the GPU benchmarks: a checking macro for Status and
// cudaError_t that ends the benchmark with the place and the reason, and medians of timed
// runs (CUDA events for stream work, the host clock for calls that synchronise themselves).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace prefill::bench {

inline void Fail(const char* file, int line, const std::string& what) {
  std::fprintf(stderr, "%s:%d: %s\n", file, line, what.c_str());
  std::exit(1);
}
inline void Check(const absl::Status& s, const char* file, int line) {
  if (!s.ok()) Fail(file, line, s.ToString());
}
inline void Check(cudaError_t e, const char* file, int line) {
  if (e != cudaSuccess) Fail(file, line, cudaGetErrorString(e));
}
#define BENCH_CHECK(expr) ::prefill::bench::Check((expr), __FILE__, __LINE__)

template <typename Fn>
double MedianMs(Fn&& fn, int warmup, int runs, cudaStream_t stream) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> ms;
  cudaEvent_t start, stop;
  BENCH_CHECK(cudaEventCreate(&start));
  BENCH_CHECK(cudaEventCreate(&stop));
  for (int i = 0; i < runs; ++i) {
    BENCH_CHECK(cudaEventRecord(start, stream));
    fn();
    BENCH_CHECK(cudaEventRecord(stop, stream));
    BENCH_CHECK(cudaEventSynchronize(stop));
    float t = 0;
    BENCH_CHECK(cudaEventElapsedTime(&t, start, stop));
    ms.push_back(t);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// Host-clock median for ops that synchronise themselves (EstimateMask returns a host mask).
template <typename Fn>
double MedianHostMs(Fn&& fn, int warmup, int runs) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> ms;
  for (int i = 0; i < runs; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

inline std::string UtcNow() {
  const std::time_t t = std::time(nullptr);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

}  // namespace prefill::bench
