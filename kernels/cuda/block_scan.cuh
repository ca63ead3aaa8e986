// Block-wide exclusive prefix sum of one int per thread (blockDim.x a multiple of 32, at most
// 1024). Used for CSR offsets.
#pragma once

#include <cstdint>

namespace prefill::cuda {

// Returns the exclusive prefix of `value` over threads 0..threadIdx.x-1; *total gets the sum
// of all threads. `warp_sums` is shared scratch of 32 ints. Every thread must call it.
__device__ __forceinline__ int64_t BlockExclusiveScan(int64_t value, int64_t* warp_sums,
                                                      int64_t* total) {
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int warps = blockDim.x / 32;
  int64_t inclusive = value;
#pragma unroll
  for (int offset = 1; offset < 32; offset *= 2) {
    const int64_t other = __shfl_up_sync(0xffffffffu, inclusive, offset);
    if (lane >= offset) inclusive += other;
  }
  if (lane == 31) warp_sums[warp] = inclusive;
  __syncthreads();
  if (warp == 0) {
    int64_t w = lane < warps ? warp_sums[lane] : 0;
#pragma unroll
    for (int offset = 1; offset < 32; offset *= 2) {
      const int64_t other = __shfl_up_sync(0xffffffffu, w, offset);
      if (lane >= offset) w += other;
    }
    if (lane < warps) warp_sums[lane] = w;  // inclusive prefix of warp totals
  }
  __syncthreads();
  const int64_t warp_prefix = warp == 0 ? 0 : warp_sums[warp - 1];
  *total = warp_sums[warps - 1];
  __syncthreads();  // warp_sums may be reused by the caller right away
  return warp_prefix + inclusive - value;
}

}  // namespace prefill::cuda
