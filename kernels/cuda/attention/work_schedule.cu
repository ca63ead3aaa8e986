// Longest-first work schedule in one CTA: the mask rows bucketed by their number of KV blocks
// (at most kMaxBuckets buckets of equal width), buckets in descending order. Inside a bucket
// rows keep a fixed order that puts rows reading the same KV next to each other: KV head,
// query block, then the query heads of its group. The sm80 grid (one CTA per row) and the
// persistent sm90 grid (rounds over the list) start the longest rows first and the short ones
// fill the tail (longest-processing-time-first; the bucket is per row: a unit of the heads of
// a group, bucketed by their mean length, put long rows late and measured 8-19% slower on
// estimated masks). A stable scatter: the same schedule in every run.
#include "kernels/cuda/attention/attention_kernel_params.h"

namespace prefill::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxBuckets = kWorkScheduleMaxBuckets;

struct ScheduleShape {
  int num_items, num_q_blocks, group, bucket_width, num_buckets;
};

// Row (head * num_q_blocks + q_block) at position c of the locality order.
__device__ __forceinline__ int RowAt(int c, const ScheduleShape& s) {
  const int g = c % s.group;
  const int unit = c / s.group;
  const int q_block = unit % s.num_q_blocks;
  const int kv_head = unit / s.num_q_blocks;
  return (kv_head * s.group + g) * s.num_q_blocks + q_block;
}

__device__ __forceinline__ int BucketOf(const int32_t* row_offsets, int row,
                                        const ScheduleShape& s) {
  return min((row_offsets[row + 1] - row_offsets[row]) / s.bucket_width, s.num_buckets - 1);
}

__global__ void __launch_bounds__(kThreads)
    BuildWorkScheduleKernel(const int32_t* __restrict__ row_offsets, ScheduleShape s,
                            int32_t* __restrict__ schedule) {
  __shared__ int32_t next_slot[kMaxBuckets];          // first free slot of each bucket
  __shared__ int32_t warp_slot[kWarps][kMaxBuckets];  // per chunk: count, then first slot, per warp
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  for (int b = threadIdx.x; b < kMaxBuckets; b += kThreads) next_slot[b] = 0;
  __syncthreads();
  for (int c = threadIdx.x; c < s.num_items; c += kThreads)
    atomicAdd(&next_slot[BucketOf(row_offsets, c, s)], 1);
  __syncthreads();
  if (threadIdx.x == 0) {  // descending buckets: slot = rows in longer buckets
    int running = 0;
    for (int b = s.num_buckets - 1; b >= 0; --b) {
      const int count = next_slot[b];
      next_slot[b] = running;
      running += count;
    }
  }
  __syncthreads();
  // Chunks of kThreads positions in locality order; each row's slot is its bucket's next slot
  // plus the rows of its bucket before it in the chunk (earlier warps, then earlier lanes).
  for (int start = 0; start < s.num_items; start += kThreads) {
    for (int i = threadIdx.x; i < kWarps * kMaxBuckets; i += kThreads) (&warp_slot[0][0])[i] = 0;
    __syncthreads();
    const int c = start + threadIdx.x;
    const bool valid = c < s.num_items;
    const int row = valid ? RowAt(c, s) : 0;
    const int bucket = valid ? BucketOf(row_offsets, row, s) : -1;
    const unsigned same = __match_any_sync(0xffffffffu, bucket);
    const int rank = __popc(same & ((1u << lane) - 1));
    if (valid && rank == 0) warp_slot[warp][bucket] = __popc(same);
    __syncthreads();
    if (threadIdx.x < s.num_buckets) {
      int running = next_slot[threadIdx.x];
      for (int w = 0; w < kWarps; ++w) {
        const int count = warp_slot[w][threadIdx.x];
        warp_slot[w][threadIdx.x] = running;
        running += count;
      }
      next_slot[threadIdx.x] = running;
    }
    __syncthreads();
    if (valid) schedule[warp_slot[warp][bucket] + rank] = row;
    __syncthreads();
  }
}

}  // namespace

cudaError_t LaunchBuildWorkSchedule(const int32_t* row_offsets, int num_items, int num_q_blocks,
                                    int group, int max_row_length, int32_t* schedule,
                                    cudaStream_t stream) {
  if (num_items == 0) return cudaSuccess;
  ScheduleShape s{num_items, num_q_blocks, group, 1, 1};
  s.bucket_width = (max_row_length + kMaxBuckets) / kMaxBuckets;  // ceil((max + 1) / kMaxBuckets)
  s.num_buckets = max_row_length / s.bucket_width + 1;
  BuildWorkScheduleKernel<<<1, kThreads, 0, stream>>>(row_offsets, s, schedule);
  return cudaGetLastError();
}

}  // namespace prefill::cuda
