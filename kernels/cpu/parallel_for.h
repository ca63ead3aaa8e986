// ParallelFor: the one way CPU kernels spread independent work items over threads.
#pragma once

#include <omp.h>

#include <cstdint>

namespace prefill::cpu {

// Calls fn(i) for i in [0, n), dynamically scheduled (work items differ in cost: sparse rows
// hold different numbers of blocks). threads <= 0: OpenMP's default.
template <typename Fn>
void ParallelFor(int64_t n, int threads, Fn&& fn) {
  // Unused where OpenMP is off (the sanitizer builds): the pragma is then ignored.
  [[maybe_unused]] const int t = threads > 0 ? threads : omp_get_max_threads();
#pragma omp parallel for schedule(dynamic, 1) num_threads(t)
  for (int64_t i = 0; i < n; ++i) fn(i);
}

}  // namespace prefill::cpu
