// Estimator stage 3b (rr+heavy): the heavy keys (one per KV block) join each sampled row's
// softmax. A warp takes 16 sampled rows of one KV head and walks the heavy keys 8 blocks at a
// time with mma.sync m16n8k16 (bf16 operands, q_hi and the keys' hi; fp32 accumulators), the
// fragments loaded straight from global memory (pairs of consecutive head-dim elements are
// the 32-bit words of both operands' layouts). Each visible (row, block J) logit
// h = acc * heavy_scale - heavy_bias is log2-added to block_lse[row][J], and to a running
// log2-sum per row that row_lse takes in at the end: SelectBlocks then sees the heavy mass in
// both the block and the row total, as the CPU estimator computes it.
#include <cmath>
#include <cstdint>

#include "kernels/cuda/attention/sm80_primitives.cuh"
#include "kernels/cuda/estimation/estimator_kernels.h"

namespace prefill::cuda {
namespace {

constexpr int kWarps = 4;

__device__ __forceinline__ float Log2Add(float a, float b) {
  const float m = fmaxf(a, b);
  if (m == -INFINITY) return a;
  return m + log2f(exp2f(a - m) + exp2f(b - m));
}

// Online (max, sum of 2^(x - max)) of one row.
struct RowSum {
  float m = -INFINITY, l = 0.f;
  __device__ void Add(float x) {
    if (x > m) {
      l = l * exp2f(m - x) + 1.f;
      m = x;
    } else {
      l += exp2f(x - m);
    }
  }
  __device__ void Merge(float om, float ol) {
    const float nm = fmaxf(m, om);
    if (nm == -INFINITY) return;
    l = l * exp2f(m - nm) + ol * exp2f(om - nm);
    m = nm;
  }
};

template <int kHeadDim>
__global__ void __launch_bounds__(kWarps * 32)
    HeavyScoresKernel(const uint16_t* __restrict__ q_hi, const uint16_t* __restrict__ kh_hi,
                      const int32_t* __restrict__ q_block_ids, const EstimatorShape shape,
                      bool skip_dense_rows, int q_block_begin, int chunk_rows, float heavy_scale,
                      float heavy_bias, float* __restrict__ block_lse,
                      float* __restrict__ row_lse) {
  constexpr int kSteps = kHeadDim / 16;
  const int g = blockIdx.y;
  const int lane = threadIdx.x % 32, quad_row = lane / 4, quad_col = lane % 4;
  const int t0 = (blockIdx.x * kWarps + threadIdx.x / 32) * 16;
  if (t0 >= chunk_rows) return;
  const int R = shape.rows_per_block, nkb = shape.num_kv_blocks;
  int t[2], visible[2];
  for (int h = 0; h < 2; ++h) {
    t[h] = t0 + quad_row + 8 * h;
    visible[h] = 0;
    if (t[h] < chunk_rows) {
      const int id = min(max(q_block_ids[q_block_begin + t[h] / (R * shape.group)], 0), nkb - 1);
      if (!(skip_dense_rows && id == nkb - 1)) visible[h] = shape.causal ? id : nkb;
    }
  }
  int warp_visible = max(visible[0], visible[1]);
#pragma unroll
  for (int offset = 16; offset >= 1; offset /= 2) {
    warp_visible = max(warp_visible, __shfl_xor_sync(0xffffffffu, warp_visible, offset));
  }
  if (warp_visible == 0) return;

  const uint32_t* q =
      reinterpret_cast<const uint32_t*>(q_hi + static_cast<int64_t>(g) * chunk_rows * kHeadDim);
  uint32_t a[kSteps][4];
#pragma unroll
  for (int kk = 0; kk < kSteps; ++kk) {
    for (int h = 0; h < 2; ++h) {
      const bool in = t[h] < chunk_rows;
      const int64_t base =
          (static_cast<int64_t>(in ? t[h] : 0) * kHeadDim + kk * 16 + 2 * quad_col) / 2;
      a[kk][h] = in ? q[base] : 0u;
      a[kk][2 + h] = in ? q[base + 4] : 0u;
    }
  }
  const uint32_t* keys =
      reinterpret_cast<const uint32_t*>(kh_hi + static_cast<int64_t>(g) * nkb * kHeadDim);
  RowSum sums[2];
  for (int j0 = 0; j0 < warp_visible; j0 += 8) {
    const int n = j0 + quad_row;  // this lane's key column of the B fragment
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int kk = 0; kk < kSteps; ++kk) {
      const int64_t base =
          (static_cast<int64_t>(n < nkb ? n : 0) * kHeadDim + kk * 16 + 2 * quad_col) / 2;
      const uint32_t b0 = n < nkb ? keys[base] : 0u, b1 = n < nkb ? keys[base + 4] : 0u;
      sm80::Mma16816<__nv_bfloat16>(acc, a[kk], b0, b1);
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int h = i / 2, j = j0 + 2 * quad_col + i % 2;
      if (j >= visible[h]) continue;
      const float x = acc[i] * heavy_scale - heavy_bias;
      const int64_t idx =
          ((static_cast<int64_t>(g) * (chunk_rows / R) + t[h] / R) * nkb + j) * R + t[h] % R;
      block_lse[idx] = Log2Add(block_lse[idx], x);
      sums[h].Add(x);
    }
  }
  for (int h = 0; h < 2; ++h) {
#pragma unroll
    for (int offset = 1; offset <= 2; offset *= 2) {
      const float om = __shfl_xor_sync(0xffffffffu, sums[h].m, offset);
      const float ol = __shfl_xor_sync(0xffffffffu, sums[h].l, offset);
      sums[h].Merge(om, ol);
    }
    if (quad_col == 0 && sums[h].l > 0.f) {
      float& lse = row_lse[static_cast<int64_t>(g) * chunk_rows + t[h]];
      lse = Log2Add(lse, sums[h].m + log2f(sums[h].l));
    }
  }
}

}  // namespace

cudaError_t LaunchHeavyScores(const uint16_t* q_hi, const uint16_t* kh_hi,
                              const int32_t* q_block_ids, const EstimatorShape& shape,
                              bool skip_dense_rows, int q_block_begin, int q_block_end,
                              float heavy_scale, float heavy_bias, float* block_lse, float* row_lse,
                              cudaStream_t stream) {
  const int chunk_rows = (q_block_end - q_block_begin) * shape.group * shape.rows_per_block;
  const dim3 grid((chunk_rows + 16 * kWarps - 1) / (16 * kWarps), shape.hkv);
  if (chunk_rows <= 0) return cudaSuccess;
  auto kernel = shape.head_dim == 64 ? HeavyScoresKernel<64> : HeavyScoresKernel<128>;
  kernel<<<grid, kWarps * 32, 0, stream>>>(q_hi, kh_hi, q_block_ids, shape, skip_dense_rows,
                                           q_block_begin, chunk_rows, heavy_scale, heavy_bias,
                                           block_lse, row_lse);
  return cudaGetLastError();
}

}  // namespace prefill::cuda
