// Estimator stages 4 and 5: per (head, query block) row, the block masses, the top-tau
// selection and the forced blocks; then CSR offsets and ascending block ids on the device.
//
// Top-tau without a sort. The CPU's rule: sort the visible blocks by mass descending, ties by
// ascending id, and keep item k iff the mass before it is < tau * total. Masses are summed
// as exact 2^-40 fixed-point integers (so no sum depends on the thread split). With S(v) =
// the summed mass of the blocks heavier than v, and v* = the lightest mass with S(v*) <
// tau * total, the kept set is: every block heavier than v*, and of the n blocks tied at v*
// the lowest-id ones whose prefix S(v*) + rank * v* is still < tau * total. v* is found by
// an MSB-first radix select over the float bit patterns (non-negative floats order as
// integers): passes of a few bits, each a shared-memory histogram of counts and fixed-point
// mass sums (warp-aggregated atomics) over the blocks that match the prefix so far, then a
// block scan over the buckets; it stops as soon as the chosen bucket holds a single block.
// Two plans (EstimatorTuning::select_variant): 0 = 256 threads, 11/10/10-bit digits; 1 = 128
// threads, 8/8/8/8-bit digits (less shared memory and scan work per pass, more CTAs per SM).
// Both apply the identical rule in integers, so they give bitwise-identical masks. Blocks are
// read once from global memory; the passes read shared memory.
#include <climits>
#include <cmath>

#include "kernels/cuda/block_scan.cuh"
#include "kernels/cuda/estimation/estimator_kernels.h"

namespace prefill::cuda {
namespace {

template <int kVariant>
struct RadixPlan;
template <>
struct RadixPlan<0> {
  static constexpr int kThreads = 256, kPasses = 3, kMaxBuckets = 2048;
  __device__ static int Shift(int pass) {
    return pass == 0 ? 20 : (pass == 1 ? 10 : 0);
  }  // [30:20] [19:10] [9:0]
  __device__ static int Buckets(int pass) { return pass == 0 ? 2048 : 1024; }
};
template <>
struct RadixPlan<1> {
  static constexpr int kThreads = 128, kPasses = 4, kMaxBuckets = 256;
  __device__ static int Shift(int pass) { return 24 - 8 * pass; }
  __device__ static int Buckets(int) { return 256; }
};

constexpr double kFixed = 1099511627776.0;  // 2^40; masses are <= R <= 32, sums < 2^46

__device__ __forceinline__ long long Fixed(float m) {
  return llrint(static_cast<double>(m) * kFixed);
}

__device__ __forceinline__ float Exp2Approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Histogram update (every lane calls it). The first pass's digit holds the exponent, which
// the masses of a row mostly share: same-address shared atomics from a whole CTA would
// serialise, so the warp aggregates them and each distinct bucket of the warp costs one
// atomic pair. Later passes look at mantissa bits within one bucket, where a warp's digits
// are mostly distinct and the aggregation loop would run once per lane: plain atomics there.
// Integer sums: the order does not change a bit of the result.
__device__ __forceinline__ void WarpHistAdd(long long* hsum, int* hcnt, bool valid, int d,
                                            long long v, bool aggregate) {
  if (!aggregate) {
    if (valid) {
      atomicAdd(reinterpret_cast<unsigned long long*>(&hsum[d]),
                static_cast<unsigned long long>(v));
      atomicAdd(&hcnt[d], 1);
    }
    return;
  }
  unsigned pending = __ballot_sync(0xffffffffu, valid);
  const int lane = threadIdx.x % 32;
  while (pending != 0u) {
    const int leader = __ffs(pending) - 1;
    const int leader_d = __shfl_sync(0xffffffffu, d, leader);
    const bool mine = valid && d == leader_d;
    const unsigned members = __ballot_sync(0xffffffffu, mine);
    long long sum = mine ? v : 0;
#pragma unroll
    for (int o = 16; o >= 1; o /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (lane == leader) {
      atomicAdd(reinterpret_cast<unsigned long long*>(&hsum[leader_d]),
                static_cast<unsigned long long>(sum));
      atomicAdd(&hcnt[leader_d], __popc(members));
    }
    pending &= ~members;
  }
}

size_t SelectSmemBytes(int max_buckets, int words_per_row) {
  return static_cast<size_t>(max_buckets) * (sizeof(long long) + sizeof(int)) +
         static_cast<size_t>(words_per_row) * 32 * (sizeof(float) + 1);
}

// One CTA per (head h, local query block qb) of the chunk. kFromMasses: masses_in holds the
// masses ([row][num_kv_blocks], test entry) instead of block_lse / row_lse.
// block_lse: [hkv][chunk items][num_kv_blocks][R]; row_lse: [hkv][chunk rows].
template <bool kFromMasses, int kVariant>
__global__ void __launch_bounds__(RadixPlan<kVariant>::kThreads, 1)
    SelectBlocksKernel(const float* __restrict__ block_lse, const float* __restrict__ row_lse,
                       const float* __restrict__ masses_in, const int32_t* __restrict__ q_block_ids,
                       const EstimatorShape shape, const SelectionOptions options,
                       int q_block_begin, int chunk_q_blocks, uint32_t* __restrict__ selected,
                       int words_per_row, int32_t* __restrict__ counts) {
  using Plan = RadixPlan<kVariant>;
  constexpr int kSelectThreads = Plan::kThreads;
  constexpr int kMaxBuckets = Plan::kMaxBuckets;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  long long* hsum = reinterpret_cast<long long*>(smem_raw);                // [kMaxBuckets]
  int* hcnt = reinterpret_cast<int*>(hsum + kMaxBuckets);                  // [kMaxBuckets]
  float* mass = reinterpret_cast<float*>(hcnt + kMaxBuckets);              // [words_per_row * 32]
  uint8_t* flags = reinterpret_cast<uint8_t*>(mass + words_per_row * 32);  // [words_per_row * 32]
  __shared__ int64_t warp_sums[32];
  __shared__ float s_row_lse[32];
  __shared__ int s_best_d, s_best_cnt, s_count;
  __shared__ unsigned s_vstar;
  __shared__ long long s_best_above, s_keep_ties;

  const int h = blockIdx.x / chunk_q_blocks;
  const int qb = q_block_begin + blockIdx.x % chunk_q_blocks;
  const int g = h / shape.group;
  const int head_in_group = h % shape.group;
  const int R = shape.rows_per_block;
  const int nkb = shape.num_kv_blocks;
  const int q_block = min(max(q_block_ids[qb], 0), nkb - 1);  // absolute; the host rejects bad ids
  const int visible = shape.causal ? q_block + 1 : nkb;
  const int64_t row = static_cast<int64_t>(h) * shape.num_q_blocks + qb;
  const bool dense = options.keep_recent && q_block == nkb - 1;
  const int tid = threadIdx.x;

  for (int J = tid; J < words_per_row * 32; J += kSelectThreads) flags[J] = 0;
  if (tid == 0) s_count = 0;
  if (!kFromMasses && !dense && tid < R) {
    const int64_t chunk_rows = static_cast<int64_t>(chunk_q_blocks) * shape.group * R;
    const int64_t first_row =
        (static_cast<int64_t>(blockIdx.x % chunk_q_blocks) * shape.group + head_in_group) * R;
    s_row_lse[tid] = row_lse[g * chunk_rows + first_row + tid];
  }
  __syncthreads();

  if (dense) {
    for (int J = tid; J < visible; J += kSelectThreads) flags[J] = 1;
  } else {
    // 1. Block masses A[J] = sum over the sampled rows (ascending) of 2^(block_lse - row_lse).
    long long local = 0;
    if constexpr (kFromMasses) {
      for (int J = tid; J < visible; J += kSelectThreads) {
        const float a = masses_in[row * nkb + J];
        mass[J] = a;
        local += Fixed(a);
      }
    } else {
      const int64_t chunk_items = static_cast<int64_t>(chunk_q_blocks) * shape.group;
      const int64_t item =
          static_cast<int64_t>(blockIdx.x % chunk_q_blocks) * shape.group + head_in_group;
      const float* base = block_lse + (static_cast<int64_t>(g) * chunk_items + item) * nkb * R;
      for (int J = tid; J < visible; J += kSelectThreads) {
        const float4* col = reinterpret_cast<const float4*>(base + static_cast<int64_t>(J) * R);
        float4 v[8];  // R <= 32: all of the column's loads in flight at once
#pragma unroll
        for (int i4 = 0; i4 < 8; ++i4) {
          if (i4 < R / 4) v[i4] = __ldcs(col + i4);  // read once: streaming
        }
        float a = 0.f;
#pragma unroll
        for (int i4 = 0; i4 < 8; ++i4) {
          if (i4 < R / 4) {
            a += Exp2Approx(v[i4].x - s_row_lse[4 * i4]);
            a += Exp2Approx(v[i4].y - s_row_lse[4 * i4 + 1]);
            a += Exp2Approx(v[i4].z - s_row_lse[4 * i4 + 2]);
            a += Exp2Approx(v[i4].w - s_row_lse[4 * i4 + 3]);
          }
        }
        mass[J] = a;
        local += Fixed(a);
      }
    }
    int64_t total;
    BlockExclusiveScan(local, warp_sums, &total);  // syncs: mass[] complete

    // 2. Radix select of v* (see the file comment). A row with zero mass keeps nothing.
    if (total > 0) {
      const double threshold = static_cast<double>(options.tau) * static_cast<double>(total);
      unsigned prefix = 0u, prefix_mask = 0u;
      long long above = 0;
      long long ties = 0;
      bool found = true;
      for (int pass = 0; pass < Plan::kPasses; ++pass) {
        const int shift = Plan::Shift(pass);
        const int buckets = Plan::Buckets(pass);
        for (int d = tid; d < buckets; d += kSelectThreads) {
          hsum[d] = 0;
          hcnt[d] = 0;
        }
        if (tid == 0) s_best_d = INT_MAX;
        __syncthreads();
        for (int base = 0; base < visible; base += kSelectThreads) {  // uniform trip count
          const int J = base + tid;
          const float m = J < visible ? mass[J] : 0.f;
          const unsigned u = __float_as_uint(m);
          const bool valid = J < visible && (u & prefix_mask) == prefix;
          const int d = static_cast<int>((u >> shift) & static_cast<unsigned>(buckets - 1));
          WarpHistAdd(hsum, hcnt, valid, d, valid ? Fixed(m) : 0, /*aggregate=*/pass == 0);
        }
        __syncthreads();
        // Thread t owns buckets [t * per, (t + 1) * per); suffix sums from the top bucket down.
        const int per = buckets / kSelectThreads;
        const int lo = tid * per;
        long long mine = 0;
        for (int k = 0; k < per; ++k) mine += hsum[lo + k];
        int64_t all;
        const int64_t before = BlockExclusiveScan(mine, warp_sums, &all);
        long long sfx = all - before - mine;  // mass of the buckets above this thread's
        int cand = INT_MAX;
        long long cand_s = 0;
        for (int k = per - 1; k >= 0; --k) {
          const int d = lo + k;
          if (hcnt[d] > 0 && static_cast<double>(above + sfx) < threshold) {
            cand = d;  // the lowest qualifying non-empty bucket wins
            cand_s = sfx;
          }
          sfx += hsum[d];
        }
        if (cand != INT_MAX) atomicMin(&s_best_d, cand);
        __syncthreads();
        if (cand != INT_MAX && cand == s_best_d) {
          s_best_above = cand_s;
          s_best_cnt = hcnt[cand];
        }
        __syncthreads();
        if (s_best_d == INT_MAX) {  // cannot happen for total > 0 and tau > 0; keep nothing
          found = false;
          break;
        }
        above += s_best_above;
        ties = s_best_cnt;
        prefix |= static_cast<unsigned>(s_best_d) << shift;
        prefix_mask |= static_cast<unsigned>(buckets - 1) << shift;
        __syncthreads();  // s_best_* read by all before they are rewritten
        if (ties == 1 && pass + 1 < Plan::kPasses) {
          // One block left in the bucket: it is v* (every heavier block is in `above`).
          for (int J = tid; J < visible; J += kSelectThreads) {
            const unsigned u = __float_as_uint(mass[J]);
            if ((u & prefix_mask) == prefix) s_vstar = u;  // exactly one thread
          }
          __syncthreads();
          prefix = s_vstar;
          break;
        }
      }
      if (found) {
        const unsigned vstar = prefix;
        if (tid == 0) {
          // Ties at v* kept: the ranks n in [0, ties) with above + n * v* < threshold (n = 0
          // holds).
          const long long v = Fixed(__uint_as_float(vstar));
          long long n = ties;
          if (v > 0) {
            const double room = threshold - static_cast<double>(above);
            n = static_cast<long long>(ceil(room / static_cast<double>(v)));
            n = n < 1 ? 1 : (n > ties ? ties : n);
            while (n > 1 && !(static_cast<double>(above + (n - 1) * v) < threshold)) --n;
            while (n < ties && static_cast<double>(above + n * v) < threshold) ++n;
          }
          s_keep_ties = n;
        }
        __syncthreads();
        const long long keep_ties = s_keep_ties;
        if (keep_ties >= ties) {
          for (int J = tid; J < visible; J += kSelectThreads)
            flags[J] = __float_as_uint(mass[J]) >= vstar;
        } else {
          // Ties by ascending id: a block scan of the tie flags in id order.
          long long carry = 0;
          for (int base = 0; base < visible; base += kSelectThreads) {
            const int J = base + tid;
            const unsigned u = J < visible ? __float_as_uint(mass[J]) : 0u;
            const bool tie = J < visible && u == vstar;
            int64_t tied_total;
            const int64_t rank = carry + BlockExclusiveScan(tie ? 1 : 0, warp_sums, &tied_total);
            if (J < visible) flags[J] = u > vstar || (tie && rank < keep_ties);
            carry += tied_total;
          }
        }
      }
    }
  }
  __syncthreads();

  // 3. Forced blocks (all causally visible): sink and diagonal.
  if (tid == 0) {
    if (options.keep_sink) flags[0] = 1;
    flags[q_block] = 1;
  }
  __syncthreads();

  // One word a warp at a time: bit b of word w is lane b's flag.
  int my_count = 0;
  for (int w = tid / 32; w < words_per_row; w += kSelectThreads / 32) {
    const uint32_t word = __ballot_sync(0xffffffffu, flags[w * 32 + tid % 32] != 0);
    if (tid % 32 == 0) {
      selected[row * words_per_row + w] = word;
      my_count += __popc(word);
    }
  }
  if (tid % 32 == 0 && my_count > 0) atomicAdd(&s_count, my_count);
  __syncthreads();
  if (tid == 0) counts[row] = s_count;
}

__global__ void __launch_bounds__(1024)
    ScanRowCountsKernel(const int32_t* __restrict__ counts, int num_rows,
                        int32_t* __restrict__ offsets) {
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

// One warp per row: set bits of the row's bitmask, in ascending order, at offsets[row] - base.
// Each lane expands its word into the warp's shared staging row, and the warp stores the
// staged ids contiguously: lanes writing their own bits straight out would touch 32 lines
// per store.
__global__ void __launch_bounds__(256)
    FillCsrKernel(const uint32_t* __restrict__ selected, int words_per_row,
                  const int32_t* __restrict__ offsets, int row_begin, int row_end,
                  int32_t base_offset, int32_t* __restrict__ kv_blocks) {
  __shared__ int32_t staged[8][32 * 32];
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int row = row_begin + static_cast<int>(blockIdx.x) * 8 + warp;
  const int lane = threadIdx.x % 32;
  if (row >= row_end) return;  // whole warps leave; no CTA-wide barrier below
  int32_t* ids = staged[warp];
  int base = offsets[row] - base_offset;
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
    int pos = inclusive - count;
    while (word != 0u) {
      const int b = __ffs(word) - 1;
      ids[pos++] = w * 32 + b;
      word &= word - 1u;
    }
    const int n = __shfl_sync(0xffffffffu, inclusive, 31);
    __syncwarp();
    for (int i = lane; i < n; i += 32) kv_blocks[base + i] = ids[i];
    __syncwarp();  // read before the next round overwrites
    base += n;
  }
}

template <bool kFromMasses, int kVariant>
cudaError_t LaunchSelectPlan(const float* block_lse, const float* row_lse, const float* masses,
                             const int32_t* q_block_ids, const EstimatorShape& shape,
                             const SelectionOptions& options, int q_block_begin, int chunk_q_blocks,
                             uint32_t* selected, int words_per_row, int32_t* counts,
                             size_t max_smem, cudaStream_t stream) {
  using Plan = RadixPlan<kVariant>;
  const size_t smem = SelectSmemBytes(Plan::kMaxBuckets, words_per_row);
  if (smem + 1024 > max_smem) return cudaErrorInvalidConfiguration;  // + the static shared bytes
  // Always: dynamic bytes just under 48 KiB plus the static ones are over the default limit.
  const cudaError_t e =
      cudaFuncSetAttribute(SelectBlocksKernel<kFromMasses, kVariant>,
                           cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  if (e != cudaSuccess) return e;
  SelectBlocksKernel<kFromMasses, kVariant>
      <<<chunk_q_blocks * shape.hq, Plan::kThreads, smem, stream>>>(
          block_lse, row_lse, masses, q_block_ids, shape, options, q_block_begin, chunk_q_blocks,
          selected, words_per_row, counts);
  return cudaGetLastError();
}

template <bool kFromMasses>
cudaError_t LaunchSelect(const float* block_lse, const float* row_lse, const float* masses,
                         const int32_t* q_block_ids, const EstimatorShape& shape,
                         const SelectionOptions& options, int q_block_begin, int q_block_end,
                         uint32_t* selected, int words_per_row, int32_t* counts, size_t max_smem,
                         cudaStream_t stream) {
  const int chunk_q_blocks = q_block_end - q_block_begin;
  if (chunk_q_blocks <= 0) return cudaSuccess;
  if (options.variant == 0) {
    return LaunchSelectPlan<kFromMasses, 0>(block_lse, row_lse, masses, q_block_ids, shape, options,
                                            q_block_begin, chunk_q_blocks, selected, words_per_row,
                                            counts, max_smem, stream);
  }
  return LaunchSelectPlan<kFromMasses, 1>(block_lse, row_lse, masses, q_block_ids, shape, options,
                                          q_block_begin, chunk_q_blocks, selected, words_per_row,
                                          counts, max_smem, stream);
}

}  // namespace

cudaError_t LaunchSelectBlocks(const float* block_lse, const float* row_lse,
                               const int32_t* q_block_ids, const EstimatorShape& shape,
                               const SelectionOptions& options, int q_block_begin, int q_block_end,
                               uint32_t* selected, int words_per_row, int32_t* counts,
                               size_t max_smem, cudaStream_t stream) {
  return LaunchSelect<false>(block_lse, row_lse, nullptr, q_block_ids, shape, options,
                             q_block_begin, q_block_end, selected, words_per_row, counts, max_smem,
                             stream);
}

cudaError_t LaunchSelectFromMasses(const float* masses, const int32_t* q_block_ids,
                                   const EstimatorShape& shape, const SelectionOptions& options,
                                   uint32_t* selected, int words_per_row, int32_t* counts,
                                   size_t max_smem, cudaStream_t stream) {
  return LaunchSelect<true>(nullptr, nullptr, masses, q_block_ids, shape, options, 0,
                            shape.num_q_blocks, selected, words_per_row, counts, max_smem, stream);
}

cudaError_t LaunchScanRowCounts(const int32_t* counts, int num_rows, int32_t* offsets,
                                cudaStream_t stream) {
  ScanRowCountsKernel<<<1, 1024, 0, stream>>>(counts, num_rows, offsets);
  return cudaGetLastError();
}

cudaError_t LaunchFillCsr(const uint32_t* selected, int words_per_row, const int32_t* offsets,
                          int row_begin, int row_end, int32_t base, int32_t* kv_blocks,
                          cudaStream_t stream) {
  if (row_end <= row_begin) return cudaSuccess;
  FillCsrKernel<<<(row_end - row_begin + 7) / 8, 256, 0, stream>>>(
      selected, words_per_row, offsets, row_begin, row_end, base, kv_blocks);
  return cudaGetLastError();
}

}  // namespace prefill::cuda
