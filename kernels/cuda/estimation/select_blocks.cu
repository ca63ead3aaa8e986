// Estimator stages 4 and 5: per (head, query block) row, the block masses, the top-tau
// selection and the forced blocks; then CSR offsets and ascending block ids on the device.
#include <climits>
#include <cmath>

#include "kernels/cuda/block_scan.cuh"
#include "kernels/cuda/estimation/estimator_kernels.h"

namespace prefill::cuda {
namespace {

constexpr int kSelectThreads = 256;

// a comes before b: more mass first, ties by ascending block id.
__device__ __forceinline__ bool Before(float va, int ia, float vb, int ib) {
  return va > vb || (va == vb && ia < ib);
}

// One CTA per (head h, local query block qb) of the chunk.
// block_lse: [hkv][num_kv_blocks][chunk_rows] log2-sum-exp2 per (KV block, sampled row).
__global__ void __launch_bounds__(kSelectThreads)
    SelectBlocksKernel(const float* __restrict__ block_lse, const int32_t* __restrict__ q_block_ids,
                       const EstimatorShape shape, const SelectionOptions options, int q_block_begin,
                       int chunk_q_blocks, int sort_capacity, uint32_t* __restrict__ selected,
                       int words_per_row, int32_t* __restrict__ counts) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  float* mass = reinterpret_cast<float*>(smem_raw);                        // [sort_capacity]
  int32_t* ids = reinterpret_cast<int32_t*>(mass + sort_capacity);         // [sort_capacity]
  float* row_lse = reinterpret_cast<float*>(ids + sort_capacity);          // [R]
  uint8_t* flags = reinterpret_cast<uint8_t*>(row_lse + shape.rows_per_block);  // [words_per_row * 32]
  __shared__ int64_t warp_sums[32];
  __shared__ int selected_count;

  const int h = blockIdx.x / chunk_q_blocks;
  const int qb = q_block_begin + blockIdx.x % chunk_q_blocks;
  const int g = h / shape.group;
  const int head_in_group = h % shape.group;
  const int R = shape.rows_per_block;
  const int nkb = shape.num_kv_blocks;
  const int chunk_rows = chunk_q_blocks * shape.group * R;
  const int first_row = ((qb - q_block_begin) * shape.group + head_in_group) * R;
  const int q_block = q_block_ids[qb];  // absolute
  const int visible = shape.causal ? q_block + 1 : nkb;
  const float* lse_g = block_lse + static_cast<int64_t>(g) * nkb * chunk_rows;
  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;

  // 1. Global row softmax denominators from the block sums: row_lse[i] = log2 sum_J 2^lse[J][i].
  for (int i = warp; i < R; i += kSelectThreads / 32) {
    float m = -INFINITY;
    for (int J = lane; J < visible; J += 32) m = fmaxf(m, lse_g[static_cast<int64_t>(J) * chunk_rows + first_row + i]);
#pragma unroll
    for (int o = 16; o >= 1; o /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    float s = 0.f;
    if (m != -INFINITY) {
      for (int J = lane; J < visible; J += 32) s += exp2f(lse_g[static_cast<int64_t>(J) * chunk_rows + first_row + i] - m);
    }
#pragma unroll
    for (int o = 16; o >= 1; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) row_lse[i] = m == -INFINITY ? -INFINITY : m + log2f(s);
  }
  for (int w = tid; w < words_per_row * 32; w += kSelectThreads) flags[w] = 0;
  if (tid == 0) selected_count = 0;
  __syncthreads();

  // 2. Block masses A[J] = sum over sampled rows of P (rows in ascending order).
  for (int J = tid; J < sort_capacity; J += kSelectThreads) {
    if (J < visible) {
      const float* col = lse_g + static_cast<int64_t>(J) * chunk_rows + first_row;
      float a = 0.f;
      for (int i = 0; i < R; ++i) {
        if (row_lse[i] != -INFINITY) a += exp2f(col[i] - row_lse[i]);
      }
      mass[J] = a;
      ids[J] = J;
    } else {
      mass[J] = -1.f;  // padding sorts last
      ids[J] = INT_MAX;
    }
  }
  __syncthreads();

  // 3. Bitonic sort of the power-of-two padded row: descending mass, ascending id.
  int n = 1;
  while (n < visible) n *= 2;
  for (int k = 2; k <= n; k *= 2) {
    for (int j = k / 2; j > 0; j /= 2) {
      for (int i = tid; i < n; i += kSelectThreads) {
        const int l = i ^ j;
        if (l > i) {
          const bool l_first = Before(mass[l], ids[l], mass[i], ids[i]);
          const bool swap = (i & k) == 0 ? l_first : !l_first;
          if (swap) {
            const float tm = mass[i];
            mass[i] = mass[l];
            mass[l] = tm;
            const int ti = ids[i];
            ids[i] = ids[l];
            ids[l] = ti;
          }
        }
      }
      __syncthreads();
    }
  }

  // 4. Keep sorted item k iff the mass before it is < tau * row total. Masses are summed as
  // 2^-40 fixed-point integers: exact, so the prefix does not depend on the thread split.
  const int per_thread = (n + kSelectThreads - 1) / kSelectThreads;
  const int first = tid * per_thread;
  constexpr double kFixed = 1099511627776.0;  // 2^40; masses are <= R <= 64, sums < 2^47
  int64_t local = 0;
  for (int k = first; k < first + per_thread && k < visible; ++k) local += llrint(mass[k] * kFixed);
  int64_t total;
  int64_t running = BlockExclusiveScan(local, warp_sums, &total);
  const double threshold = static_cast<double>(options.tau) * static_cast<double>(total);
  for (int k = first; k < first + per_thread && k < visible; ++k) {
    if (static_cast<double>(running) < threshold) flags[ids[k]] = 1;
    running += llrint(mass[k] * kFixed);
  }
  __syncthreads();

  // 5. Forced blocks (all causally visible): sink, diagonal, and the dense last query block.
  if (tid == 0) {
    if (options.keep_sink) flags[0] = 1;
    flags[q_block < nkb ? q_block : nkb - 1] = 1;
  }
  if (options.keep_recent && q_block == nkb - 1) {
    for (int J = tid; J < visible; J += kSelectThreads) flags[J] = 1;
  }
  __syncthreads();

  const int64_t row = static_cast<int64_t>(h) * shape.num_q_blocks + qb;
  for (int w = tid; w < words_per_row; w += kSelectThreads) {
    uint32_t word = 0;
    for (int b = 0; b < 32; ++b) {
      const int J = w * 32 + b;
      if (J < nkb && flags[J]) word |= 1u << b;
    }
    selected[row * words_per_row + w] = word;
    atomicAdd(&selected_count, __popc(word));
  }
  __syncthreads();
  if (tid == 0) counts[row] = selected_count;
}

__global__ void __launch_bounds__(1024)
    ScanRowCountsKernel(const int32_t* __restrict__ counts, int num_rows, int32_t* __restrict__ offsets) {
  __shared__ int64_t warp_sums[32];
  int64_t carry = 0;
  for (int base = 0; base < num_rows; base += blockDim.x) {
    const int i = base + threadIdx.x;
    const int64_t v = i < num_rows ? counts[i] : 0;
    int64_t total;
    const int64_t before = BlockExclusiveScan(v, warp_sums, &total);
    if (i < num_rows) offsets[i + 1] = static_cast<int32_t>(carry + before + v);
    carry += total;
  }
  if (threadIdx.x == 0) offsets[0] = 0;
}

// One warp per row: set bits of the row's bitmask, in ascending order, at offsets[row].
__global__ void __launch_bounds__(256)
    FillCsrKernel(const uint32_t* __restrict__ selected, int words_per_row, const int32_t* __restrict__ offsets,
                  int num_rows, int32_t* __restrict__ kv_blocks) {
  const int row = blockIdx.x * 8 + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= num_rows) return;
  int base = offsets[row];
  const uint32_t* words = selected + static_cast<int64_t>(row) * words_per_row;
  for (int w0 = 0; w0 < words_per_row; w0 += 32) {
    const int w = w0 + lane;
    uint32_t word = w < words_per_row ? words[w] : 0u;
    const int count = __popc(word);
    int inclusive = count;
#pragma unroll
    for (int o = 1; o < 32; o *= 2) {
      const int other = __shfl_up_sync(0xffffffffu, inclusive, o);
      if (lane >= o) inclusive += other;
    }
    int pos = base + inclusive - count;
    while (word != 0u) {
      const int b = __ffs(word) - 1;
      kv_blocks[pos++] = w * 32 + b;
      word &= word - 1u;
    }
    base += __shfl_sync(0xffffffffu, inclusive, 31);
  }
}

}  // namespace

cudaError_t LaunchSelectBlocks(const float* block_lse, const int32_t* q_block_ids,
                               const EstimatorShape& shape, const SelectionOptions& options,
                               int q_block_begin, int q_block_end, uint32_t* selected,
                               int words_per_row, int32_t* counts, size_t max_smem,
                               cudaStream_t stream) {
  const int chunk_q_blocks = q_block_end - q_block_begin;
  if (chunk_q_blocks <= 0) return cudaSuccess;
  int sort_capacity = 1;
  while (sort_capacity < shape.num_kv_blocks) sort_capacity *= 2;
  const size_t smem = static_cast<size_t>(sort_capacity) * 8 + shape.rows_per_block * 4 +
                      static_cast<size_t>(words_per_row) * 32;
  if (smem > max_smem) return cudaErrorInvalidConfiguration;
  if (smem > 48 * 1024) {
    const cudaError_t e = cudaFuncSetAttribute(SelectBlocksKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               static_cast<int>(smem));
    if (e != cudaSuccess) return e;
  }
  SelectBlocksKernel<<<chunk_q_blocks * shape.hq, kSelectThreads, smem, stream>>>(
      block_lse, q_block_ids, shape, options, q_block_begin, chunk_q_blocks, sort_capacity, selected,
      words_per_row, counts);
  return cudaGetLastError();
}

cudaError_t LaunchScanRowCounts(const int32_t* counts, int num_rows, int32_t* offsets, cudaStream_t stream) {
  ScanRowCountsKernel<<<1, 1024, 0, stream>>>(counts, num_rows, offsets);
  return cudaGetLastError();
}

cudaError_t LaunchFillCsr(const uint32_t* selected, int words_per_row, const int32_t* offsets,
                          int num_rows, int32_t* kv_blocks, cudaStream_t stream) {
  if (num_rows == 0) return cudaSuccess;
  FillCsrKernel<<<(num_rows + 7) / 8, 256, 0, stream>>>(selected, words_per_row, offsets, num_rows, kv_blocks);
  return cudaGetLastError();
}

}  // namespace prefill::cuda
