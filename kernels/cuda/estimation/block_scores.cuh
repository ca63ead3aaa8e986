// Estimator stage 3: block log-sum-exps of the sampled logits. A CTA takes 128 sampled rows
// of one KV head (8 warps x 16 rows; rows of a (head, query block) item are consecutive),
// streams the split pooled keys in tiles of 64 strides through cp.async double buffering,
// computes the logits with mma.sync (hi*hi + hi*lo [+ lo*hi + lo*lo]), masks strides the row
// cannot see (stride j visible iff j*S <= the sampled query's position), and writes, for
// every KV block, log2(sum over its visible strides of exp2(logit * scale * log2 e)).
// The global row softmax and the block masses follow in SelectBlocks from these values
// alone, so the scores never reach device memory.
#pragma once

#include <cuda_runtime.h>

#include <climits>
#include <cmath>

#include "kernels/cuda/attention/sm80_primitives.cuh"
#include "kernels/cuda/estimation/estimator_kernels.h"

namespace prefill::cuda {

template <int kHeadDim_, int kRowsPerBlock_>
struct BlockScoreTraits {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kRowsPerBlock = kRowsPerBlock_;  // R: strides per KV block
  static constexpr int kBlockM = 128;  // sampled rows per CTA
  static constexpr int kBlockN = 64;   // key strides per tile
  static constexpr int kWarps = 8;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kStages = 2;
  static constexpr int kChunks = kHeadDim / 8;
  static constexpr int kNTiles = kBlockN / 8;
  static constexpr int kNTilesPerKvBlock = kRowsPerBlock / 8;
  static constexpr int kKvBlocksPerTile = kBlockN / kRowsPerBlock;
  static constexpr int kKSteps = kHeadDim / 16;
  static constexpr int kQElems = kBlockM * kHeadDim;
  static constexpr int kKElems = kBlockN * kHeadDim;
  static constexpr size_t kSmemBytes = static_cast<size_t>(2 * kQElems + 2 * kStages * kKElems) * 2;
  static_assert(kRowsPerBlock % 8 == 0 && kBlockN % kRowsPerBlock == 0, "R in {8, 16, 32, 64}");
  static_assert(kBlockM % kRowsPerBlock == 0, "items never straddle a CTA");
};

template <typename Traits>
__global__ void __launch_bounds__(Traits::kThreads, 1)
    BlockScoresKernel(const uint16_t* __restrict__ q_hi, const uint16_t* __restrict__ q_lo, bool split_q,
                      const uint16_t* __restrict__ k_hi, const uint16_t* __restrict__ k_lo,
                      const int32_t* __restrict__ q_block_ids, const EstimatorShape shape,
                      int q_block_begin, int chunk_rows, float* __restrict__ block_lse) {
  using Element = __nv_bfloat16;
  using Swizzle = sm80::SwizzledTile<Traits::kHeadDim>;
  constexpr int kHeadDim = Traits::kHeadDim;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kChunks = Traits::kChunks;
  constexpr int R = Traits::kRowsPerBlock;

  extern __shared__ __align__(128) unsigned char smem_raw[];
  uint16_t* s_qhi = reinterpret_cast<uint16_t*>(smem_raw);
  uint16_t* s_qlo = s_qhi + Traits::kQElems;
  uint16_t* s_khi = s_qlo + Traits::kQElems;                    // [stage][kBlockN][D]
  uint16_t* s_klo = s_khi + Traits::kStages * Traits::kKElems;  // [stage][kBlockN][D]
  __shared__ int cta_last_stride;

  const int g = blockIdx.y;
  const int t0 = blockIdx.x * Traits::kBlockM;
  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int quad_row = lane / 4;
  const int quad_col = lane % 4;
  if (tid == 0) cta_last_stride = -1;

  // Last visible key stride of this thread's two rows (-1: padding row past the chunk).
  int row_t[2], last_stride[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int t = t0 + warp * 16 + quad_row + 8 * r;
    row_t[r] = t;
    last_stride[r] = -1;
    if (t < chunk_rows) {
      const int i = t % R;
      const int qb = q_block_begin + t / (R * shape.group);
      last_stride[r] = shape.causal ? q_block_ids[qb] * R + i : shape.num_strides - 1;
    }
  }
  int warp_last = max(last_stride[0], last_stride[1]);
  int warp_first_limit = min(last_stride[0], last_stride[1]);
#pragma unroll
  for (int offset = 16; offset >= 1; offset /= 2) {
    warp_last = max(warp_last, __shfl_xor_sync(0xffffffffu, warp_last, offset));
    warp_first_limit = min(warp_first_limit, __shfl_xor_sync(0xffffffffu, warp_first_limit, offset));
  }
  __syncthreads();
  if (lane == 0) atomicMax(&cta_last_stride, warp_last);

  // Q tile: rows t0 .. t0 + 127 of [g][chunk_rows][D]; rows past the chunk are zero-filled.
  const int64_t q_base = static_cast<int64_t>(g) * chunk_rows * kHeadDim;
  for (int idx = tid; idx < Traits::kBlockM * kChunks; idx += Traits::kThreads) {
    const int r = idx / kChunks;
    const int c = idx % kChunks;
    const bool in = t0 + r < chunk_rows;
    const int64_t off = q_base + static_cast<int64_t>(in ? t0 + r : 0) * kHeadDim + c * 8;
    const int bytes = in ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(
                     sm80::SmemAddress(s_qhi + Swizzle::Offset(r, c))),
                 "l"(q_hi + off), "r"(bytes)
                 : "memory");
    if (split_q) {
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(
                       sm80::SmemAddress(s_qlo + Swizzle::Offset(r, c))),
                   "l"(q_lo + off), "r"(bytes)
                   : "memory");
    }
  }
  const int64_t k_base = static_cast<int64_t>(g) * shape.num_strides * kHeadDim;
  auto load_k_tile = [&](int kt, int stage) {
    for (int idx = tid; idx < kBlockN * kChunks; idx += Traits::kThreads) {
      const int r = idx / kChunks;
      const int c = idx % kChunks;
      const int j = kt * kBlockN + r;
      const bool in = j < shape.num_strides;
      const int64_t off = k_base + static_cast<int64_t>(in ? j : 0) * kHeadDim + c * 8;
      const int bytes = in ? 16 : 0;
      const int so = stage * Traits::kKElems + Swizzle::Offset(r, c);
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sm80::SmemAddress(s_khi + so)),
                   "l"(k_hi + off), "r"(bytes)
                   : "memory");
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sm80::SmemAddress(s_klo + so)),
                   "l"(k_lo + off), "r"(bytes)
                   : "memory");
    }
  };
  __syncthreads();  // cta_last_stride complete
  const int num_k_tiles = cta_last_stride >= 0 ? cta_last_stride / kBlockN + 1 : 0;
  if (num_k_tiles > 0) load_k_tile(0, 0);
  sm80::CpAsyncCommit();

  uint32_t qhi_frag[Traits::kKSteps][4];
  const float scale = shape.logit_scale_log2;
  for (int kt = 0; kt < num_k_tiles; ++kt) {
    const int stage = kt % Traits::kStages;
    if (kt + 1 < num_k_tiles) load_k_tile(kt + 1, (kt + 1) % Traits::kStages);
    sm80::CpAsyncCommit();
    sm80::CpAsyncWait<1>();
    __syncthreads();
    if (kt == 0) {
#pragma unroll
      for (int kk = 0; kk < Traits::kKSteps; ++kk) {
        const int mi = lane / 8;
        const int r = warp * 16 + (mi % 2) * 8 + lane % 8;
        sm80::LdMatrixX4(sm80::SmemAddress(s_qhi + Swizzle::Offset(r, 2 * kk + mi / 2)), qhi_frag[kk][0],
                         qhi_frag[kk][1], qhi_frag[kk][2], qhi_frag[kk][3]);
      }
    }
    const int first_stride = kt * kBlockN;
    if (first_stride <= warp_last) {
      const uint16_t* s_khi_stage = s_khi + stage * Traits::kKElems;
      const uint16_t* s_klo_stage = s_klo + stage * Traits::kKElems;
      float acc[Traits::kNTiles][4];
#pragma unroll
      for (int j = 0; j < Traits::kNTiles; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < Traits::kKSteps; ++kk) {
        uint32_t qlo_frag[4];
        const int mi = lane / 8;
        if (split_q) {
          const int r = warp * 16 + (mi % 2) * 8 + lane % 8;
          sm80::LdMatrixX4(sm80::SmemAddress(s_qlo + Swizzle::Offset(r, 2 * kk + mi / 2)), qlo_frag[0],
                           qlo_frag[1], qlo_frag[2], qlo_frag[3]);
        }
#pragma unroll
        for (int j = 0; j < Traits::kNTiles; j += 2) {
          const int r = 8 * (j + mi / 2) + lane % 8;
          const int c = 2 * kk + mi % 2;
          uint32_t h0, h1, h2, h3, l0, l1, l2, l3;
          sm80::LdMatrixX4(sm80::SmemAddress(s_khi_stage + Swizzle::Offset(r, c)), h0, h1, h2, h3);
          sm80::LdMatrixX4(sm80::SmemAddress(s_klo_stage + Swizzle::Offset(r, c)), l0, l1, l2, l3);
          sm80::Mma16816<Element>(acc[j], qhi_frag[kk], h0, h1);
          sm80::Mma16816<Element>(acc[j + 1], qhi_frag[kk], h2, h3);
          sm80::Mma16816<Element>(acc[j], qhi_frag[kk], l0, l1);
          sm80::Mma16816<Element>(acc[j + 1], qhi_frag[kk], l2, l3);
          if (split_q) {
            sm80::Mma16816<Element>(acc[j], qlo_frag, h0, h1);
            sm80::Mma16816<Element>(acc[j + 1], qlo_frag, h2, h3);
            sm80::Mma16816<Element>(acc[j], qlo_frag, l0, l1);
            sm80::Mma16816<Element>(acc[j + 1], qlo_frag, l2, l3);
          }
        }
      }
      // Scale into the exp2 domain; strides past a row's last visible stride drop out.
      const bool masked = !__all_sync(0xffffffffu, first_stride + kBlockN - 1 <= warp_first_limit);
#pragma unroll
      for (int j = 0; j < Traits::kNTiles; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int stride_j = first_stride + 8 * j + 2 * quad_col + (e & 1);
          const float x = acc[j][e] * scale;
          acc[j][e] = (masked && stride_j > last_stride[e / 2]) ? -INFINITY : x;
        }
      }
      // Per KV block inside the tile: log2-sum-exp2 over its R strides (quad = 4 lanes).
#pragma unroll
      for (int b = 0; b < Traits::kKvBlocksPerTile; ++b) {
        const int kv_block = kt * Traits::kKvBlocksPerTile + b;
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          float m = -INFINITY;
#pragma unroll
          for (int j = b * Traits::kNTilesPerKvBlock; j < (b + 1) * Traits::kNTilesPerKvBlock; ++j) {
            m = fmaxf(m, fmaxf(acc[j][2 * r], acc[j][2 * r + 1]));
          }
          m = sm80::WarpQuadMax(m);
          const float ref = m == -INFINITY ? 0.f : m;
          float s = 0.f;
#pragma unroll
          for (int j = b * Traits::kNTilesPerKvBlock; j < (b + 1) * Traits::kNTilesPerKvBlock; ++j) {
            s += exp2f(acc[j][2 * r] - ref) + exp2f(acc[j][2 * r + 1] - ref);
          }
          s = sm80::WarpQuadSum(s);
          if (quad_col == 0 && row_t[r] < chunk_rows && kv_block < shape.num_kv_blocks) {
            block_lse[(static_cast<int64_t>(g) * shape.num_kv_blocks + kv_block) * chunk_rows + row_t[r]] =
                m == -INFINITY ? -INFINITY : m + log2f(s);
          }
        }
      }
    }
    __syncthreads();
  }
  sm80::CpAsyncWait<0>();
}

template <int kHeadDim, int kRowsPerBlock>
cudaError_t LaunchBlockScores(const uint16_t* q_hi, const uint16_t* q_lo, bool split_q,
                              const uint16_t* k_hi, const uint16_t* k_lo,
                              const int32_t* q_block_ids, const EstimatorShape& shape,
                              int q_block_begin, int q_block_end, float* block_lse,
                              cudaStream_t stream) {
  using Traits = BlockScoreTraits<kHeadDim, kRowsPerBlock>;
  auto kernel = BlockScoresKernel<Traits>;
  if (Traits::kSmemBytes > 48 * 1024) {
    const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               static_cast<int>(Traits::kSmemBytes));
    if (e != cudaSuccess) return e;
  }
  const int chunk_rows = (q_block_end - q_block_begin) * shape.group * kRowsPerBlock;
  if (chunk_rows == 0) return cudaSuccess;
  const dim3 grid((chunk_rows + Traits::kBlockM - 1) / Traits::kBlockM, shape.hkv);
  kernel<<<grid, Traits::kThreads, Traits::kSmemBytes, stream>>>(q_hi, q_lo, split_q, k_hi, k_lo, q_block_ids,
                                                                  shape, q_block_begin, chunk_rows, block_lse);
  return cudaGetLastError();
}

}  // namespace prefill::cuda
