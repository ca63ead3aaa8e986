// Block-sparse flash attention forward, sm90a family (FlashAttention-3 style, own code):
//
//   * persistent grid (one CTA per SM) walking the longest-first schedule of (head, query
//     block) items round-robin;
//   * warp specialization: warpgroup 0 is the producer (one thread issues TMA loads of Q and
//     of the K/V tiles of the row's selected KV blocks into a kStages-deep shared-memory ring,
//     completing on mbarriers) and gives its registers away (setmaxnreg.dec 24); warpgroups 1
//     and 2 are consumers (setmaxnreg.inc 240), 64 query rows each;
//   * S = Q K^T by wgmma with both operands in shared memory (K-major, 128-byte swizzle as
//     TMA wrote them), O += P V by wgmma with P from registers and V as a transposed
//     (MN-major) shared-memory operand;
//   * online softmax in registers (exp2 domain), causal masking only on tiles whose key
//     position range overlaps the warpgroup's query range (precomputed per KV block), whole
//     tiles skipped when no row of the warpgroup sees them.
// Included only by the attention_sm90_hdim*.cu instantiation files. The body exists only in
// the sm_90a compile pass; the sm_80 pass compiles an empty kernel that is never launched
// (the host checks Sm90aKernelsCompiledIn() first).
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <climits>
#include <cmath>

#include "kernels/cuda/attention/attention_kernel_params.h"
#include "kernels/cuda/attention/attention_sm90_launch.h"
#include "kernels/cuda/attention/sm80_primitives.cuh"
#include "kernels/cuda/attention/sm90_pipeline.cuh"
#include "kernels/cuda/attention/sm90_wgmma.cuh"

namespace prefill::cuda {

template <int kHeadDim_, typename Element_>
struct Sm90AttentionTraits {
  using Element = Element_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = 128;  // query rows per item: 2 consumer warpgroups x 64
  static constexpr int kBlockN = 128;  // keys per tile = one KV block
  static constexpr int kConsumers = 2;
  static constexpr int kThreads = 128 * (1 + kConsumers);
  static constexpr int kStages = kHeadDim == 128 ? 2 : 4;
  static constexpr int kChunks = kHeadDim / 64;      // 128-byte TMA boxes per row
  static constexpr int kChunkBytesQ = kBlockM * 128;  // one 64-column box of Q
  static constexpr int kChunkBytesKv = kBlockN * 128;
  static constexpr int kTileBytesQ = kBlockM * kHeadDim * 2;
  static constexpr int kTileBytesKv = kBlockN * kHeadDim * 2;
  static constexpr int kNTilesS = kBlockN / 8;   // n8 column groups of S per thread
  static constexpr int kNTilesO = kHeadDim / 8;  // n8 column groups of O per thread
  static constexpr int kKStepsQK = kHeadDim / 16;
  static constexpr int kKStepsPV = kBlockN / 16;
  static constexpr int kProducerRegs = 24;
  static constexpr int kConsumerRegs = 240;
  static constexpr int kNumBarriers = 2 + 3 * kStages;
  static constexpr size_t kSmemBytes =
      1024 /* alignment slack */ + kTileBytesQ + 2 * kStages * kTileBytesKv + kNumBarriers * 8 + 64 /* scratch */;
  static_assert(kHeadDim == 64 || kHeadDim == 128, "head dims 64 and 128");
  static_assert(kProducerRegs * 128 + kConsumerRegs * 128 * kConsumers <= 65536, "register file");
};

template <typename Traits>
__global__ void __launch_bounds__(Traits::kThreads, 1)
    AttentionSm90Kernel(const __grid_constant__ Sm90KernelParams params) {
#ifdef PREFILL_SM90A_ENABLED
  using Element = typename Traits::Element;
  constexpr int kHeadDim = Traits::kHeadDim;
  constexpr int kStages = Traits::kStages;

  extern __shared__ unsigned char smem_raw[];
  // 128-byte swizzled tiles and wgmma descriptors with base offset 0 need 1024-byte alignment.
  unsigned char* smem = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  unsigned char* s_q = smem;                                     // [chunk][128 rows][64]
  unsigned char* s_k = s_q + Traits::kTileBytesQ;                // [stage][chunk][128 keys][64]
  unsigned char* s_v = s_k + kStages * Traits::kTileBytesKv;     // [stage][chunk][128 keys][64]
  uint64_t* bars = reinterpret_cast<uint64_t*>(s_v + kStages * Traits::kTileBytesKv);
  uint64_t* q_full = bars;
  uint64_t* q_empty = bars + 1;
  uint64_t* k_full = bars + 2;
  uint64_t* v_full = bars + 2 + kStages;
  uint64_t* kv_empty = bars + 2 + 2 * kStages;
  int* wg_scratch = reinterpret_cast<int*>(bars + Traits::kNumBarriers);  // [consumer][warp][min, max]

  const AttentionKernelParams& kp = params.kp;
  const AttentionParams& p = kp.p;
  constexpr int kConsumerThreads = 128 * Traits::kConsumers;
  const int warpgroup = threadIdx.x / 128;

  if (threadIdx.x == 0) {
    sm90::BarrierInit(q_full, 1);
    sm90::BarrierInit(q_empty, kConsumerThreads);
    for (int s = 0; s < kStages; ++s) {
      sm90::BarrierInit(&k_full[s], 1);
      sm90::BarrierInit(&v_full[s], 1);
      sm90::BarrierInit(&kv_empty[s], kConsumerThreads);
    }
    sm90::BarrierInitFence();
  }
  __syncthreads();

  if (warpgroup == 0) {
    // ---------------- producer: one thread issues every TMA load ----------------
    sm90::RegisterDealloc<Traits::kProducerRegs>();
    if (threadIdx.x != 0) return;
    sm90::TmaPrefetchDescriptor(&params.tma_q);
    sm90::TmaPrefetchDescriptor(&params.tma_k);
    sm90::TmaPrefetchDescriptor(&params.tma_v);
    int stage = 0;
    uint32_t phase = 0, q_phase = 0;
    for (int idx = blockIdx.x; idx < kp.num_items; idx += gridDim.x) {
      const int item = kp.schedule[idx];
      const int head = item / kp.num_q_blocks;
      const int q_block = item - head * kp.num_q_blocks;
      const int kv_head = head / kp.group;
      const int begin = p.mask_row_offsets[item];
      const int end = p.mask_row_offsets[item + 1];
      // Q of the previous item released by both consumers (passes at once the first time).
      sm90::BarrierWait(q_empty, q_phase ^ 1);
      sm90::BarrierArriveExpectTx(q_full, Traits::kTileBytesQ);
#pragma unroll
      for (int c = 0; c < Traits::kChunks; ++c) {
        sm90::TmaLoad3d(s_q + c * Traits::kChunkBytesQ, &params.tma_q, q_full, c * 64, head, q_block * Traits::kBlockM);
      }
      q_phase ^= 1;
      for (int e = begin; e < end; ++e) {
        const int block = p.mask_kv_blocks[e];
        sm90::BarrierWait(&kv_empty[stage], phase ^ 1);
        unsigned char* k_dst = s_k + stage * Traits::kTileBytesKv;
        unsigned char* v_dst = s_v + stage * Traits::kTileBytesKv;
        sm90::BarrierArriveExpectTx(&k_full[stage], Traits::kTileBytesKv);
#pragma unroll
        for (int c = 0; c < Traits::kChunks; ++c) {
          sm90::TmaLoad3d(k_dst + c * Traits::kChunkBytesKv, &params.tma_k, &k_full[stage], c * 64,
                          block * Traits::kBlockN, kv_head);
        }
        sm90::BarrierArriveExpectTx(&v_full[stage], Traits::kTileBytesKv);
#pragma unroll
        for (int c = 0; c < Traits::kChunks; ++c) {
          sm90::TmaLoad3d(v_dst + c * Traits::kChunkBytesKv, &params.tma_v, &v_full[stage], c * 64,
                          block * Traits::kBlockN, kv_head);
        }
        if (++stage == kStages) {
          stage = 0;
          phase ^= 1;
        }
      }
    }
    return;
  }

  // ---------------- consumers: 64 query rows per warpgroup ----------------
  sm90::RegisterAlloc<Traits::kConsumerRegs>();
  const int consumer = warpgroup - 1;
  const int tid = threadIdx.x - 128 * warpgroup;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int quad_row = lane / 4;
  const int quad_col = lane % 4;
  const int local_row0 = consumer * 64 + warp * 16 + quad_row;  // and local_row0 + 8
  const float scale_log2 = kp.scale_log2;
  const uint32_t q_base = sm90::SmemAddr(s_q) + consumer * 64 * 128;
  const uint32_t k_base = sm90::SmemAddr(s_k);
  const uint32_t v_base = sm90::SmemAddr(s_v);

  int stage = 0;
  uint32_t phase = 0, q_phase = 0;
  for (int idx = blockIdx.x; idx < kp.num_items; idx += gridDim.x) {
    const int item = kp.schedule[idx];
    const int head = item / kp.num_q_blocks;
    const int q_block = item - head * kp.num_q_blocks;
    const int kv_head = head / kp.group;
    const int begin = p.mask_row_offsets[item];
    const int num_blocks = p.mask_row_offsets[item + 1] - begin;
    const int64_t q_row0 = static_cast<int64_t>(q_block) * Traits::kBlockM + local_row0;

    // Query positions of this thread's rows, and the warpgroup's range (uniform decisions).
    int qpos[2] = {INT_MAX, INT_MAX};
    int wg_qmin = INT_MAX, wg_qmax = INT_MAX;
    const int32_t* kpos_head = nullptr;
    const int32_t* range_head = nullptr;
    if (p.causal) {
      qpos[0] = p.q_pos[q_row0];
      qpos[1] = p.q_pos[q_row0 + 8];
      int lo = min(qpos[0], qpos[1]), hi = max(qpos[0], qpos[1]);
#pragma unroll
      for (int offset = 16; offset >= 1; offset /= 2) {
        lo = min(lo, __shfl_xor_sync(0xffffffffu, lo, offset));
        hi = max(hi, __shfl_xor_sync(0xffffffffu, hi, offset));
      }
      if (lane == 0) {
        wg_scratch[(consumer * 4 + warp) * 2] = lo;
        wg_scratch[(consumer * 4 + warp) * 2 + 1] = hi;
      }
      sm90::NamedBarrierSync(1 + consumer, 128);
      wg_qmin = INT_MAX;
      wg_qmax = INT_MIN;
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        wg_qmin = min(wg_qmin, wg_scratch[(consumer * 4 + w) * 2]);
        wg_qmax = max(wg_qmax, wg_scratch[(consumer * 4 + w) * 2 + 1]);
      }
      sm90::NamedBarrierSync(1 + consumer, 128);  // scratch free for the next item
      kpos_head = p.k_pos + static_cast<int64_t>(kv_head) * p.k_pos_head_stride;
      range_head = kp.kv_block_range + static_cast<int64_t>(kv_head) * kp.num_kv_blocks * 2;
    }

    float acc_o[Traits::kNTilesO * 4];
#pragma unroll
    for (int i = 0; i < Traits::kNTilesO * 4; ++i) acc_o[i] = 0.f;
    float row_max[2] = {-INFINITY, -INFINITY};
    float row_sum[2] = {0.f, 0.f};

    sm90::BarrierWait(q_full, q_phase);
    q_phase ^= 1;
    if (num_blocks == 0) sm90::BarrierArrive(q_empty);

    for (int e = 0; e < num_blocks; ++e) {
      const int block = p.mask_kv_blocks[begin + e];
      bool skip = false, masked = false;
      int kcol[Traits::kNTilesS][2];
      if (p.causal) {
        const int kmin = range_head[2 * block];
        const int kmax = range_head[2 * block + 1];
        skip = kmin > wg_qmax;                   // no row of the warpgroup sees a key
        masked = !skip && kmax > wg_qmin;        // some row sees only part of the tile
        if (masked) {
          const int32_t* kp_tile = kpos_head + static_cast<int64_t>(block) * Traits::kBlockN;
#pragma unroll
          for (int j = 0; j < Traits::kNTilesS; ++j) {
            kcol[j][0] = kp_tile[8 * j + 2 * quad_col];
            kcol[j][1] = kp_tile[8 * j + 2 * quad_col + 1];
          }
        }
      }

      float acc_s[Traits::kNTilesS * 4];
      sm90::BarrierWait(&k_full[stage], phase);
      if (!skip) {
        const uint32_t k_stage = k_base + stage * Traits::kTileBytesKv;
        sm90::WgmmaFence();
#pragma unroll
        for (int kk = 0; kk < Traits::kKStepsQK; ++kk) {
          // K-major, 128B swizzle: 8-row groups 1024 bytes apart; k16 steps 32 bytes into the row.
          const uint64_t desc_q = sm90::MakeSmemDesc(q_base + (kk / 4) * Traits::kChunkBytesQ + (kk % 4) * 32, 16, 1024);
          const uint64_t desc_k = sm90::MakeSmemDesc(k_stage + (kk / 4) * Traits::kChunkBytesKv + (kk % 4) * 32, 16, 1024);
          sm90::WgmmaSS128<Element>(acc_s, desc_q, desc_k, kk > 0 ? 1 : 0);
        }
        sm90::WgmmaCommit();
        sm90::WgmmaWait<0>();
        sm90::FenceOperands(acc_s);
      }
      if (e == num_blocks - 1) sm90::BarrierArrive(q_empty);  // Q no longer read by this thread

      uint32_t p_frag[Traits::kKStepsPV][4];
      if (!skip) {
        if (masked) {
#pragma unroll
          for (int j = 0; j < Traits::kNTilesS; ++j) {
#pragma unroll
            for (int c = 0; c < 2; ++c) {
              if (kcol[j][c] > qpos[0]) acc_s[j * 4 + c] = -INFINITY;
              if (kcol[j][c] > qpos[1]) acc_s[j * 4 + 2 + c] = -INFINITY;
            }
          }
        }
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          float tile_max = -INFINITY;
#pragma unroll
          for (int j = 0; j < Traits::kNTilesS; ++j) {
            tile_max = fmaxf(tile_max, fmaxf(acc_s[j * 4 + 2 * r], acc_s[j * 4 + 2 * r + 1]));
          }
          tile_max = sm80::WarpQuadMax(tile_max);
          const float new_max = fmaxf(row_max[r], tile_max * scale_log2);
          const float ref = new_max == -INFINITY ? 0.f : new_max;
          const float alpha = exp2f(row_max[r] - ref);
          row_max[r] = new_max;
          row_sum[r] *= alpha;
#pragma unroll
          for (int i = 0; i < Traits::kNTilesO; ++i) {
            acc_o[i * 4 + 2 * r] *= alpha;
            acc_o[i * 4 + 2 * r + 1] *= alpha;
          }
#pragma unroll
          for (int j = 0; j < Traits::kNTilesS; ++j) {
#pragma unroll
            for (int c = 0; c < 2; ++c) {
              const float prob = exp2f(fmaf(acc_s[j * 4 + 2 * r + c], scale_log2, -ref));
              acc_s[j * 4 + 2 * r + c] = prob;
              row_sum[r] += prob;
            }
          }
        }
#pragma unroll
        for (int kk = 0; kk < Traits::kKStepsPV; ++kk) {
          p_frag[kk][0] = sm80::PackPair<Element>(acc_s[(2 * kk) * 4 + 0], acc_s[(2 * kk) * 4 + 1]);
          p_frag[kk][1] = sm80::PackPair<Element>(acc_s[(2 * kk) * 4 + 2], acc_s[(2 * kk) * 4 + 3]);
          p_frag[kk][2] = sm80::PackPair<Element>(acc_s[(2 * kk + 1) * 4 + 0], acc_s[(2 * kk + 1) * 4 + 1]);
          p_frag[kk][3] = sm80::PackPair<Element>(acc_s[(2 * kk + 1) * 4 + 2], acc_s[(2 * kk + 1) * 4 + 3]);
        }
      }

      sm90::BarrierWait(&v_full[stage], phase);
      if (!skip) {
        const uint32_t v_stage = v_base + stage * Traits::kTileBytesKv;
        sm90::FenceOperands(acc_o);
        sm90::WgmmaFence();
#pragma unroll
        for (int kk = 0; kk < Traits::kKStepsPV; ++kk) {
          // MN-major (V rows are keys, head dim contiguous), 128B swizzle: 8-key groups 1024
          // bytes apart (stride), 64-column chunks kChunkBytesKv apart (leading); k16 step =
          // 16 keys = 2048 bytes.
          const uint64_t desc_v = sm90::MakeSmemDesc(v_stage + kk * 16 * 128, Traits::kChunkBytesKv, 1024);
          if constexpr (kHeadDim == 128) {
            sm90::WgmmaRS128<Element>(acc_o, p_frag[kk], desc_v, 1);
          } else {
            sm90::WgmmaRS64<Element>(acc_o, p_frag[kk], desc_v, 1);
          }
        }
        sm90::WgmmaCommit();
        sm90::WgmmaWait<0>();
        sm90::FenceOperands(acc_o);
      }
      sm90::BarrierArrive(&kv_empty[stage]);
      if (++stage == kStages) {
        stage = 0;
        phase ^= 1;
      }
    }

    // Epilogue: normalise, O [lq, hq, D] in out_dtype, LSE [lq, hq] natural log.
    constexpr float kLn2 = 0.6931471805599453f;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float total = sm80::WarpQuadSum(row_sum[r]);
      const float inv = total > 0.f ? 1.f / total : 0.f;
      const float lse = total > 0.f ? (row_max[r] + log2f(total)) * kLn2 : -INFINITY;
      const int64_t q_row = q_row0 + 8 * r;
      const int64_t out_row = (q_row * p.hq + head) * kHeadDim;
#pragma unroll
      for (int i = 0; i < Traits::kNTilesO; ++i) {
        const int col = 8 * i + 2 * quad_col;
        const float x0 = acc_o[i * 4 + 2 * r] * inv;
        const float x1 = acc_o[i * 4 + 2 * r + 1] * inv;
        if (p.out_dtype == DType::kF32) {
          *reinterpret_cast<float2*>(static_cast<float*>(p.o) + out_row + col) = make_float2(x0, x1);
        } else if (p.out_dtype == DType::kBF16) {
          *reinterpret_cast<__nv_bfloat162*>(static_cast<__nv_bfloat16*>(p.o) + out_row + col) =
              __floats2bfloat162_rn(x0, x1);
        } else {
          *reinterpret_cast<__half2*>(static_cast<__half*>(p.o) + out_row + col) = __floats2half2_rn(x0, x1);
        }
      }
      if (quad_col == 0) p.lse[q_row * p.hq + head] = lse;
    }
  }
#endif  // PREFILL_SM90A_ENABLED
}

template <int kHeadDim, typename Element>
cudaError_t LaunchAttentionSm90(const Sm90KernelParams& params, int grid, cudaStream_t stream) {
  using Traits = Sm90AttentionTraits<kHeadDim, Element>;
  auto kernel = AttentionSm90Kernel<Traits>;
  const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(Traits::kSmemBytes));
  if (e != cudaSuccess) return e;
  if (grid == 0) return cudaSuccess;
  kernel<<<grid, Traits::kThreads, Traits::kSmemBytes, stream>>>(params);
  return cudaGetLastError();
}

}  // namespace prefill::cuda
