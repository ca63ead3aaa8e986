// Estimator stage 2: sampled logits on the tensor cores with an online (one-pass) row softmax,
// fused with the stride -> block aggregation. A CTA takes 256 sampled rows of one KV head (128
// with q_lo), 8 warps in two groups of 4 (warpgroups), and streams the pooled keys in tiles of
// 64 strides through a cp.async ring. Per tile:
//   logits: bf16 operands, fp32 accumulators; kTerms = 1: q*k, 2: + q*k_lo, 3: + q_lo*k, where
//   x_lo = bf16(x - bf16(x)) carries the next 8 mantissa bits. On sm_90a wgmma m64n64k16 (A =
//   the query fragments in registers, B = the key tile in shared memory), elsewhere (and with
//   q_lo) mma.sync m16n8k16 with two m16 tiles per warp, so each key fragment feeds two MMAs;
//   masking of strides the row cannot see (j*S > position); the online softmax: exps against
//   the row's running max m (the tile's own max only on the first tile, or when a tile would
//   overflow: 2^64 over m), the running sum l; and per KV block b of the tile
//     block_lse[b] = m + log2(sum over its visible strides of 2^(logit*scale*log2e - m)),
//   reduced across the quad with a reduce-scatter (each lane ends with its own blocks).
// The two groups ping-pong (FlashAttention-3's schedule): one group's exps and block sums run
// while the other group's MMAs do. At the end each row writes row_lse = m + log2(l). Nothing of
// size strides x strides reaches memory: the per-(row, KV block) values are 1/R of that, and
// SelectBlocks turns them into block masses, 2^(block_lse - row_lse) summed over the R rows.
#pragma once

#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstdint>

#include "kernels/cuda/attention/sm80_primitives.cuh"
#include "kernels/cuda/attention/sm90_wgmma.cuh"
#include "kernels/cuda/estimation/estimator_kernels.h"

namespace prefill::cuda {

__device__ __forceinline__ float FastExp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float FastLog2(float x) {
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// wgmma m64n64k16, A (64 x 16) from registers (each warp's 16 rows in the mma.m16n8k16 A
// layout), B (16 x 64) from shared memory, K-major (no transpose: pooled keys are rows of D
// contiguous values), fp32 accumulators in the m16n8 C layout per warp. sm_90a only.
__device__ __forceinline__ void WgmmaRS64KMajor(float (&d)[32], const uint32_t (&a)[4],
                                                uint64_t desc_b, int scale_d) {
#ifdef PREFILL_SM90A_ENABLED
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, "
      "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, "
      "1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d));
#endif
}

// Shared-memory layout of every tile (Q and K alike): 64-column panels of 128-byte rows, the
// 16-byte chunk c of row r at chunk (c ^ r) mod 8 of its panel row. This is wgmma's 128-byte
// swizzle for K-major operands (8-row groups 1024 bytes apart, panels kRows * 128 bytes apart),
// and conflict-free for ldmatrix too. Element offset of (row, chunk) in a tile of kRows rows.
template <int kRows>
__device__ __forceinline__ int PanelOffset(int row, int chunk) {
  return ((chunk >> 3) * kRows + row) * 64 + (((chunk & 7) ^ (row & 7)) << 3);
}

template <int kHeadDim_, int kRowsPerBlock_, int kTerms_>
struct BlockScoreTraits {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kRowsPerBlock = kRowsPerBlock_;  // R: strides per KV block
  static constexpr int kTerms = kTerms_;
  static constexpr int kWarps = 8;
  static constexpr int kThreads = kWarps * 32;
  // Two m16 tiles per warp (mma.sync) or two m64 tiles per warpgroup (wgmma); one m16 tile per
  // warp with q_lo (kTerms 3, mma.sync only), whose fragments would not fit the registers.
  static constexpr int kMTiles = kTerms == 3 ? 1 : 2;
  static constexpr bool kWgmmaCapable = kTerms <= 2;
  static constexpr int kWarpRows = 16 * kMTiles;
  static constexpr int kRowsPerThread = 2 * kMTiles;
  static constexpr int kBlockM = kWarps * kWarpRows;  // 256 (128) sampled rows per CTA
  static constexpr int kGroupRows = kBlockM / 2;
  static constexpr int kBlockN = 64;            // key strides per tile
  static constexpr int kChunks = kHeadDim / 8;  // 16-byte chunks per row
  static constexpr int kNTiles = kBlockN / 8;
  static constexpr int kKSteps = kHeadDim / 16;
  static constexpr int kBlocksPerTile = kBlockN / kRowsPerBlock;
  static constexpr int kNTilesPerBlock = kRowsPerBlock / 8;
  static constexpr int kKPlanes = kTerms >= 2 ? 2 : 1;  // k_hi [+ k_lo]
  static constexpr int kKElems = kBlockN * kHeadDim;    // one plane of one stage
  static constexpr int kStageElems = kKPlanes * kKElems;
  static constexpr int kQElems = kBlockM * kHeadDim;
  static constexpr int kStages = kTerms == 1 ? 4 : (kTerms == 2 ? 3 : 2);
  // 1 KiB alignment slack (swizzled tiles need 1024-byte alignment), Q [+ q_lo], the ring.
  static constexpr size_t kSmemBytes =
      1024 + static_cast<size_t>((kTerms == 3 ? 2 : 1) * kQElems + kStages * kStageElems) * 2;
  static_assert(kRowsPerBlock % 8 == 0 && kBlockN % kRowsPerBlock == 0, "R in {8, 16, 32, 64}");
  static_assert(kBlocksPerTile >= 2 && kBlocksPerTile <= 8, "R in {8, 16, 32}");
  static_assert(kBlockM % kRowsPerBlock == 0, "items never straddle a CTA");
  static_assert(kHeadDim % 64 == 0, "whole 64-column panels");
};

// Reduce-scatter over the 4 lanes of a quad: v[NB] (per-lane partial sums of NB blocks) ->
// the full sums of this lane's blocks. Lane bit 0 picks the half kept in the first step, bit 1
// in the second; with NB = 2 the second step is a plain sum (lanes 0/2 and 1/3 agree).
// Every block's sum is ((x0 + x1) + (x2 + x3)) over the quad: the same order for every block.
template <int NB>
struct QuadReduceScatter {
  static constexpr int kN1 = NB / 2;
  static constexpr int kOut = kN1 >= 2 ? kN1 / 2 : 1;
  // Index (within the NB blocks) of out[k] on lane `lane`; `writer` false on duplicate lanes.
  __device__ __forceinline__ static int BlockOf(int lane, int k, bool& writer) {
    const int up1 = lane & 1, up2 = (lane >> 1) & 1;
    if constexpr (kN1 >= 2) {
      writer = true;
      return up1 * kN1 + up2 * kOut + k;
    } else {
      writer = up2 == 0;
      return up1;
    }
  }
  __device__ __forceinline__ static void Run(const float (&v)[NB], float (&out)[kOut], int lane) {
    const bool up1 = lane & 1, up2 = lane & 2;
    float v1[kN1];
#pragma unroll
    for (int k = 0; k < kN1; ++k) {
      const float send = up1 ? v[k] : v[k + kN1];
      const float keep = up1 ? v[k + kN1] : v[k];
      const float recv = __shfl_xor_sync(0xffffffffu, send, 1);
      // Commutative: the pair sum is the same float on both lanes' blocks.
      v1[k] = up1 ? recv + keep : keep + recv;
    }
    if constexpr (kN1 >= 2) {
#pragma unroll
      for (int k = 0; k < kOut; ++k) {
        const float send = up2 ? v1[k] : v1[k + kOut];
        const float keep = up2 ? v1[k + kOut] : v1[k];
        const float recv = __shfl_xor_sync(0xffffffffu, send, 2);
        out[k] = up2 ? recv + keep : keep + recv;
      }
    } else {
      const float recv = __shfl_xor_sync(0xffffffffu, v1[0], 2);
      out[0] = up2 ? recv + v1[0] : v1[0] + recv;
    }
  }
};

// q_hi/q_lo: [hkv][chunk_rows][D] bf16; k_hi/k_lo: [hkv][num_strides][D] bf16.
// block_lse: [hkv][chunk_rows / R][num_kv_blocks][R] (only visible blocks written);
// row_lse: [hkv][chunk_rows]. Grid: 1-D, (row tile, kv head) with the longest rows first.
// use_wgmma: the sm_90a MMA path (ignored where the binary's code is not sm_90a, or with q_lo).
template <typename Traits>
__global__ void __launch_bounds__(Traits::kThreads, 1)
    BlockScoresKernel(const uint16_t* __restrict__ q_hi, const uint16_t* __restrict__ q_lo,
                      const uint16_t* __restrict__ k_hi, const uint16_t* __restrict__ k_lo,
                      const int32_t* __restrict__ q_block_ids, const EstimatorShape shape,
                      bool skip_dense_rows, bool use_wgmma_arg, int q_block_begin, int chunk_rows,
                      float* __restrict__ block_lse, float* __restrict__ row_lse) {
  using Element = __nv_bfloat16;
  constexpr int kHeadDim = Traits::kHeadDim;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kBlockM = Traits::kBlockM;
  constexpr int kChunks = Traits::kChunks;
  constexpr int R = Traits::kRowsPerBlock;
  constexpr int NB = Traits::kBlocksPerTile;
  constexpr int kTerms = Traits::kTerms;
  constexpr int kMTiles = Traits::kMTiles;
  constexpr int kRows = Traits::kRowsPerThread;
  using Scatter = QuadReduceScatter<NB>;
#ifdef PREFILL_SM90A_ENABLED
  const bool use_wgmma = Traits::kWgmmaCapable && use_wgmma_arg;
#else
  constexpr bool use_wgmma = false;
  (void)use_wgmma_arg;
#endif

  extern __shared__ unsigned char smem_raw[];
  uint16_t* s_q = reinterpret_cast<uint16_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) &
                                              ~uintptr_t{1023});
  uint16_t* s_qlo = s_q + Traits::kQElems;  // kTerms 3 only
  uint16_t* s_ring =
      s_qlo + (kTerms == 3 ? Traits::kQElems : 0);  // [stage][plane][panel][64 rows][64]
  __shared__ int s_warp_last[Traits::kWarps];

  const int num_row_tiles = (chunk_rows + kBlockM - 1) / kBlockM;
  const int linear = static_cast<int>(blockIdx.x);
  const int g = linear % shape.hkv;
  const int row_tile = num_row_tiles - 1 - linear / shape.hkv;  // later query blocks see more keys
  const int t0 = row_tile * kBlockM;
  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int quad_row = lane / 4;
  const int quad_col = lane % 4;
  const int group = warp / 4;

  // First row (within the CTA) of this warp's m16 slice of m tile mt: wgmma tiles are 64 rows
  // of a warpgroup (warp w % 4 holds rows 16 (w % 4) ..), mma.sync tiles 16 rows of a warp.
  auto slice_row = [&](int mt) {
    return use_wgmma ? group * Traits::kGroupRows + mt * 64 + (warp % 4) * 16
                     : warp * Traits::kWarpRows + mt * 16;
  };
  // This thread's rows: r = 2 * mt + half -> slice_row(mt) + half * 8 + quad_row.
  // last[r]: last visible key stride (-1: padding row, or a dense keep_recent row nobody reads).
  int row_t[kRows], last[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int t = t0 + slice_row(r / 2) + (r % 2) * 8 + quad_row;
    row_t[r] = t;
    last[r] = -1;
    if (t < chunk_rows) {
      const int qb = q_block_begin + t / (R * shape.group);
      const int id =
          min(max(q_block_ids[qb], 0), shape.num_kv_blocks - 1);  // the host rejects bad ids
      if (!(skip_dense_rows && id == shape.num_kv_blocks - 1)) {
        last[r] = shape.causal ? id * R + t % R : shape.num_strides - 1;
      }
    }
  }
  int warp_last = -1, warp_min = INT_MAX;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    warp_last = max(warp_last, last[r]);
    warp_min = min(warp_min, last[r]);
  }
#pragma unroll
  for (int offset = 16; offset >= 1; offset /= 2) {
    warp_last = max(warp_last, __shfl_xor_sync(0xffffffffu, warp_last, offset));
    warp_min = min(warp_min, __shfl_xor_sync(0xffffffffu, warp_min, offset));
  }
  if (lane == 0) s_warp_last[warp] = warp_last;

  // Q tile: rows t0 .. t0 + kBlockM - 1 of [g][chunk_rows][D]; rows past the chunk are zero-filled.
  const int64_t q_base = static_cast<int64_t>(g) * chunk_rows * kHeadDim;
  for (int idx = tid; idx < kBlockM * kChunks; idx += Traits::kThreads) {
    const int r = idx / kChunks;
    const int c = idx % kChunks;
    const bool in = t0 + r < chunk_rows;
    const int64_t off = q_base + static_cast<int64_t>(in ? t0 + r : 0) * kHeadDim + c * 8;
    const int bytes = in ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(
                     sm80::SmemAddress(s_q + PanelOffset<kBlockM>(r, c))),
                 "l"(q_hi + off), "r"(bytes)
                 : "memory");
    if constexpr (kTerms == 3) {
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(
                       sm80::SmemAddress(s_qlo + PanelOffset<kBlockM>(r, c))),
                   "l"(q_lo + off), "r"(bytes)
                   : "memory");
    }
  }
  sm80::CpAsyncCommit();
  sm80::CpAsyncWait<0>();
  __syncthreads();  // Q staged, s_warp_last complete

  int cta_last = -1;
#pragma unroll
  for (int w = 0; w < Traits::kWarps; ++w) cta_last = max(cta_last, s_warp_last[w]);
  const int group_last = max(max(s_warp_last[4 * group], s_warp_last[4 * group + 1]),
                             max(s_warp_last[4 * group + 2], s_warp_last[4 * group + 3]));
  const int num_k_tiles = cta_last >= 0 ? cta_last / kBlockN + 1 : 0;

  // Query fragments (the mma.sync A layout; wgmma takes the same per-warp slices).
  uint32_t qf[kMTiles][Traits::kKSteps][4];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
    for (int kk = 0; kk < Traits::kKSteps; ++kk) {
      const int mi = lane / 8;
      const int r = slice_row(mt) + (mi % 2) * 8 + lane % 8;
      sm80::LdMatrixX4(sm80::SmemAddress(s_q + PanelOffset<kBlockM>(r, 2 * kk + mi / 2)),
                       qf[mt][kk][0], qf[mt][kk][1], qf[mt][kk][2], qf[mt][kk][3]);
    }
  }

  // Ping-pong: warps 0-3 (group A) and 4-7 (group B) take turns on the tensor cores:
  //   A: wait kBarA | MMA(kt) | arrive kBarB | epilogue(kt)
  //   B: wait kBarB | MMA(kt) | load tile kt+S-1, wait for tile kt+1 | arrive kBarA | epilogue(kt)
  // Group B drives the cp.async ring: it is the last reader of every stage, and its
  // wait_group (+ the async-proxy fence for wgmma) before arriving on kBarA makes tile kt+1
  // visible to group A (bar.sync/arrive order shared memory among the 256 threads).
  constexpr int kBarA = 1, kBarB = 2, kBarThreads = Traits::kThreads;
  constexpr int kGroupThreads = Traits::kThreads / 2;
  const bool group_b = group == 1;
  const int load_tid = tid - kGroupThreads;
  const int64_t k_base = static_cast<int64_t>(g) * shape.num_strides * kHeadDim;
  auto load_k_tile = [&](int kt, int stage) {
    for (int idx = load_tid; idx < kBlockN * kChunks; idx += kGroupThreads) {
      const int r = idx / kChunks;
      const int c = idx % kChunks;
      const int j = kt * kBlockN + r;
      const bool in = j < shape.num_strides;
      const int64_t off = k_base + static_cast<int64_t>(in ? j : 0) * kHeadDim + c * 8;
      const int bytes = in ? 16 : 0;
      const int so = stage * Traits::kStageElems + PanelOffset<kBlockN>(r, c);
      asm volatile(
          "cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sm80::SmemAddress(s_ring + so)),
          "l"(k_hi + off), "r"(bytes)
          : "memory");
      if constexpr (Traits::kKPlanes == 2) {
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(
                         sm80::SmemAddress(s_ring + so + Traits::kKElems)),
                     "l"(k_lo + off), "r"(bytes)
                     : "memory");
      }
    }
  };
  auto proxy_fence = [] {
#ifdef PREFILL_SM90A_ENABLED
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
  };
  if (group_b && num_k_tiles > 0) {
#pragma unroll
    for (int s = 0; s < Traits::kStages - 1; ++s) {
      if (s < num_k_tiles) load_k_tile(s, s);
      sm80::CpAsyncCommit();
    }
    sm80::CpAsyncWait<Traits::kStages - 2>();  // tile 0
    if (use_wgmma) proxy_fence();
    asm volatile("bar.arrive %0, %1;" ::"n"(kBarA), "n"(kBarThreads) : "memory");
  }

  const float scale = shape.logit_scale_log2;
  float m_run[kRows], l_run[kRows];
  float* row_out[kRows];  // this row's block_lse column: + J * R
  const int64_t items = chunk_rows / R;
  float* lse_g = block_lse + static_cast<int64_t>(g) * items * shape.num_kv_blocks * R;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    m_run[r] = -INFINITY;
    l_run[r] = 0.f;
    const int t = row_t[r] < chunk_rows ? row_t[r] : 0;
    row_out[r] = lse_g + static_cast<int64_t>(t / R) * shape.num_kv_blocks * R + t % R;
  }

  for (int kt = 0; kt < num_k_tiles; ++kt) {
    const int first_stride = kt * kBlockN;
    const bool active =
        first_stride <= warp_last;  // warp-uniform: some row of this warp sees the tile
    if (group_b) {
      asm volatile("bar.sync %0, %1;" ::"n"(kBarB), "n"(kBarThreads) : "memory");
    } else {
      asm volatile("bar.sync %0, %1;" ::"n"(kBarA), "n"(kBarThreads) : "memory");
    }
    const uint16_t* s_k = s_ring + (kt % Traits::kStages) * Traits::kStageElems;
    float acc[kMTiles][Traits::kNTiles][4];
    if (use_wgmma) {
      if constexpr (Traits::kWgmmaCapable) {
        if (first_stride <= group_last) {  // warpgroup-uniform
          sm90::WgmmaFence();
#pragma unroll
          for (int plane = 0; plane < Traits::kKPlanes; ++plane) {
            const uint32_t k_addr = sm80::SmemAddress(s_k + plane * Traits::kKElems);
#pragma unroll
            for (int kk = 0; kk < Traits::kKSteps; ++kk) {
              // K-major, 128B swizzle: 8-row groups 1024 bytes apart; k16 steps 32 bytes into
              // the 128-byte row, 64-column panels kBlockN * 128 bytes apart.
              const uint64_t desc =
                  sm90::MakeSmemDesc(k_addr + (kk / 4) * (kBlockN * 128) + (kk % 4) * 32, 16, 1024);
#pragma unroll
              for (int mt = 0; mt < kMTiles; ++mt) {
                WgmmaRS64KMajor(reinterpret_cast<float(&)[32]>(acc[mt]), qf[mt][kk], desc,
                                plane + kk > 0 ? 1 : 0);
              }
            }
          }
          sm90::WgmmaCommit();
          sm90::WgmmaWait<0>();
#pragma unroll
          for (int mt = 0; mt < kMTiles; ++mt)
            sm90::FenceOperands(reinterpret_cast<float(&)[32]>(acc[mt]));
        }
      }
    } else if (active) {
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
        for (int j = 0; j < Traits::kNTiles; ++j)
          acc[mt][j][0] = acc[mt][j][1] = acc[mt][j][2] = acc[mt][j][3] = 0.f;
      }
#pragma unroll
      for (int kk = 0; kk < Traits::kKSteps; ++kk) {
        const int mi = lane / 8;
        uint32_t qlo[4];
        if constexpr (kTerms == 3) {
          const int r = slice_row(0) + (mi % 2) * 8 + lane % 8;
          sm80::LdMatrixX4(sm80::SmemAddress(s_qlo + PanelOffset<kBlockM>(r, 2 * kk + mi / 2)),
                           qlo[0], qlo[1], qlo[2], qlo[3]);
        }
#pragma unroll
        for (int j = 0; j < Traits::kNTiles; j += 2) {
          const int r = 8 * (j + mi / 2) + lane % 8;
          const int c = 2 * kk + mi % 2;
          uint32_t h0, h1, h2, h3;
          sm80::LdMatrixX4(sm80::SmemAddress(s_k + PanelOffset<kBlockN>(r, c)), h0, h1, h2, h3);
#pragma unroll
          for (int mt = 0; mt < kMTiles; ++mt) {
            sm80::Mma16816<Element>(acc[mt][j], qf[mt][kk], h0, h1);
            sm80::Mma16816<Element>(acc[mt][j + 1], qf[mt][kk], h2, h3);
          }
          if constexpr (Traits::kKPlanes == 2) {
            uint32_t l0, l1, l2, l3;
            sm80::LdMatrixX4(sm80::SmemAddress(s_k + Traits::kKElems + PanelOffset<kBlockN>(r, c)),
                             l0, l1, l2, l3);
#pragma unroll
            for (int mt = 0; mt < kMTiles; ++mt) {
              sm80::Mma16816<Element>(acc[mt][j], qf[mt][kk], l0, l1);
              sm80::Mma16816<Element>(acc[mt][j + 1], qf[mt][kk], l2, l3);
            }
          }
          if constexpr (kTerms == 3) {
            sm80::Mma16816<Element>(acc[0][j], qlo, h0, h1);
            sm80::Mma16816<Element>(acc[0][j + 1], qlo, h2, h3);
          }
        }
      }
    }
    if (group_b) {
      const int next =
          kt + Traits::kStages - 1;  // into the stage of tile kt - 1, read by both groups
      if (next < num_k_tiles) load_k_tile(next, next % Traits::kStages);
      sm80::CpAsyncCommit();
      sm80::CpAsyncWait<Traits::kStages - 2>();  // tile kt + 1 landed (this thread's part)
      if (use_wgmma) proxy_fence();
      if (kt + 1 < num_k_tiles)
        asm volatile("bar.arrive %0, %1;" ::"n"(kBarA), "n"(kBarThreads) : "memory");
    } else {
      asm volatile("bar.arrive %0, %1;" ::"n"(kBarB), "n"(kBarThreads) : "memory");
    }
    if (!active) continue;

    // Epilogue. 1. Strides past a row's last visible stride (and past the sequence) drop out.
    if (first_stride + kBlockN - 1 > warp_min) {
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const int mt = r / 2, h2 = 2 * (r % 2);
#pragma unroll
        for (int j = 0; j < Traits::kNTiles; ++j) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            if (first_stride + 8 * j + 2 * quad_col + e > last[r]) acc[mt][j][h2 + e] = -INFINITY;
          }
        }
      }
    }
    // 2. Exps against a quad-uniform reference per row, per-lane block partial sums.
    float part[kRows][NB], row_part[kRows], ref[kRows];
    auto exp_sums = [&] {
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const int mt = r / 2, h2 = 2 * (r % 2);
        float total = 0.f;
#pragma unroll
        for (int b = 0; b < NB; ++b) {
          float s = 0.f;
#pragma unroll
          for (int j = b * Traits::kNTilesPerBlock; j < (b + 1) * Traits::kNTilesPerBlock; ++j) {
            s += FastExp2(fmaf(acc[mt][j][h2], scale, -ref[r])) +
                 FastExp2(fmaf(acc[mt][j][h2 + 1], scale, -ref[r]));
          }
          part[r][b] = s;
          total += s;
        }
        row_part[r] = total;
      }
    };
    // Fast path: the running max as the reference (no per-tile max); valid unless a sum could
    // overflow (a logit 2^64 over it). The first tile and such tiles take the tile's max.
    bool slow = kt == 0;
    if (!slow) {
#pragma unroll
      for (int r = 0; r < kRows; ++r) ref[r] = m_run[r] == -INFINITY ? 0.f : m_run[r];
      exp_sums();
      bool bad = false;
#pragma unroll
      for (int r = 0; r < kRows; ++r) bad |= !(row_part[r] <= 1.8446744e19f);
      slow = __any_sync(0xffffffffu, bad);
    }
    if (slow) {
      float mx[kRows];
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const int mt = r / 2, h2 = 2 * (r % 2);
        float m4[4];
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          m4[q] = fmaxf(fmaxf(acc[mt][2 * q][h2], acc[mt][2 * q][h2 + 1]),
                        fmaxf(acc[mt][2 * q + 1][h2], acc[mt][2 * q + 1][h2 + 1]));
        }
        mx[r] = fmaxf(fmaxf(m4[0], m4[1]), fmaxf(m4[2], m4[3]));
      }
#pragma unroll
      for (int r = 0; r < kRows; ++r) mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
#pragma unroll
      for (int r = 0; r < kRows; ++r) mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const float m_new =
            fmaxf(m_run[r], mx[r] * scale);  // scale > 0: the max of the scaled logits
        ref[r] = m_new == -INFINITY ? 0.f : m_new;
        l_run[r] *= FastExp2(m_run[r] - ref[r]);
        m_run[r] = m_new;
      }
      exp_sums();
    }
    // 3. Quad reduce-scatter: each lane ends with the full sums of its own blocks; store.
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      l_run[r] += row_part[r];
      float mine[Scatter::kOut];
      Scatter::Run(part[r], mine, lane);
      if (last[r] >= 0) {
#pragma unroll
        for (int k = 0; k < Scatter::kOut; ++k) {
          bool writer;
          const int J = kt * NB + Scatter::BlockOf(lane, k, writer);
          // lg2(0) = -inf: an all-masked block stays -inf.
          if (writer && J * R <= last[r])
            row_out[r][static_cast<int64_t>(J) * R] = ref[r] + FastLog2(mine[k]);
        }
      }
    }
  }
  sm80::CpAsyncWait<0>();

#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const float l = sm80::WarpQuadSum(l_run[r]);
    if (quad_col == 0 && row_t[r] < chunk_rows) {
      row_lse[static_cast<int64_t>(g) * chunk_rows + row_t[r]] =
          (last[r] < 0 || !(l > 0.f)) ? -INFINITY : m_run[r] + FastLog2(l);
    }
  }
}

template <int kHeadDim, int kRowsPerBlock, int kTerms>
cudaError_t LaunchBlockScores(const uint16_t* q_hi, const uint16_t* q_lo, const uint16_t* k_hi,
                              const uint16_t* k_lo, const int32_t* q_block_ids,
                              const EstimatorShape& shape, bool skip_dense_rows, bool use_wgmma,
                              int q_block_begin, int q_block_end, float* block_lse, float* row_lse,
                              cudaStream_t stream) {
  using Traits = BlockScoreTraits<kHeadDim, kRowsPerBlock, kTerms>;
  auto kernel = BlockScoresKernel<Traits>;
  // Always: 48 KiB of dynamic memory plus the static bytes is already over the default limit.
  const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(Traits::kSmemBytes));
  if (e != cudaSuccess) return e;
  const int chunk_rows = (q_block_end - q_block_begin) * shape.group * kRowsPerBlock;
  if (chunk_rows == 0) return cudaSuccess;
  const int row_tiles = (chunk_rows + Traits::kBlockM - 1) / Traits::kBlockM;
  kernel<<<row_tiles * shape.hkv, Traits::kThreads, Traits::kSmemBytes, stream>>>(
      q_hi, q_lo, k_hi, k_lo, q_block_ids, shape, skip_dense_rows, use_wgmma, q_block_begin,
      chunk_rows, block_lse, row_lse);
  return cudaGetLastError();
}

}  // namespace prefill::cuda
