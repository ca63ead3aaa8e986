// Longest-first work schedule: a counting sort of the mask rows by their number of KV blocks,
// in one CTA. Rows are sorted so the hardware block scheduler (sm80, one CTA per row) and the
// persistent sm90 grid (round-robin over the sorted list) start the longest rows first and
// the short ones fill the tail (longest-processing-time-first).
#include "kernels/cuda/attention/attention_kernel_params.h"
#include "kernels/cuda/block_scan.cuh"

namespace prefill::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kMaxBins = 8192;  // lengths >= kMaxBins - 1 share the last bin (still before shorter rows)

__global__ void __launch_bounds__(kThreads)
    BuildWorkScheduleKernel(const int32_t* __restrict__ row_offsets, int num_items, int num_bins,
                            int32_t* __restrict__ schedule) {
  extern __shared__ int32_t bins[];  // [num_bins]: count, then first slot of each length
  __shared__ int64_t warp_sums[32];
  for (int b = threadIdx.x; b < num_bins; b += kThreads) bins[b] = 0;
  __syncthreads();
  for (int i = threadIdx.x; i < num_items; i += kThreads) {
    const int len = min(row_offsets[i + 1] - row_offsets[i], num_bins - 1);
    atomicAdd(&bins[len], 1);
  }
  __syncthreads();
  // Descending lengths: slot[len] = number of rows longer than len. Thread t owns a
  // contiguous run of bins counted from the longest down.
  const int per_thread = (num_bins + kThreads - 1) / kThreads;
  const int first = threadIdx.x * per_thread;  // index in descending order
  int64_t local = 0;
  for (int d = first; d < first + per_thread && d < num_bins; ++d) local += bins[num_bins - 1 - d];
  int64_t total;
  int64_t running = BlockExclusiveScan(local, warp_sums, &total);
  for (int d = first; d < first + per_thread && d < num_bins; ++d) {
    const int b = num_bins - 1 - d;
    const int count = bins[b];
    bins[b] = static_cast<int32_t>(running);
    running += count;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < num_items; i += kThreads) {
    const int len = min(row_offsets[i + 1] - row_offsets[i], num_bins - 1);
    schedule[atomicAdd(&bins[len], 1)] = i;
  }
}

}  // namespace

cudaError_t LaunchBuildWorkSchedule(const int32_t* row_offsets, int num_items, int max_row_length,
                                    int32_t* schedule, cudaStream_t stream) {
  if (num_items == 0) return cudaSuccess;
  int num_bins = max_row_length + 2;
  if (num_bins > kMaxBins) num_bins = kMaxBins;
  if (num_bins < 2) num_bins = 2;
  BuildWorkScheduleKernel<<<1, kThreads, num_bins * sizeof(int32_t), stream>>>(row_offsets, num_items,
                                                                                num_bins, schedule);
  return cudaGetLastError();
}

}  // namespace prefill::cuda
