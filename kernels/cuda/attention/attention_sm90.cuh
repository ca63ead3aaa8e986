// Block-sparse flash attention forward, sm90a family (FlashAttention-3 style, own code):
//
//   * persistent grid (one CTA per SM) walking the longest-first schedule of (head, query
//     block) items in rounds, alternately forwards and backwards (Sm90ItemIndex);
//   * warp specialization: warpgroup 0 is the producer (one thread issues TMA loads of Q and
//     of the K/V tiles of the row's selected KV blocks into a kStages-deep shared-memory ring,
//     completing on mbarriers; K and V stages are released separately) and gives its
//     registers away (setmaxnreg.dec 24); warpgroups 1 and 2 are consumers (setmaxnreg.inc
//     240), 64 query rows each;
//   * S = Q K^T by wgmma with both operands in shared memory (K-major, 128-byte swizzle as
//     TMA wrote them), O += P V by wgmma with P from registers and V as a transposed
//     (MN-major) shared-memory operand;
//   * intra-warpgroup overlap: tile j's S = Q K_j^T and tile j-1's O += P V_{j-1} are issued
//     together; the softmax of S_j runs while P V_{j-1} is still on the tensor cores;
//   * inter-warpgroup ping-pong: a pair of named barriers makes the two consumers take turns
//     issuing their GEMMs, so one's softmax (MUFU, FMA) overlaps the other's GEMMs;
//   * online softmax in registers (exp2 domain), causal masking only on tiles whose largest
//     key position (precomputed per KV block) exceeds the warp's smallest query position.
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
  // Two stages for head dim 128 (Q + 2 x (K + V) = 160 KiB): a third (224 KiB) measured
  // within noise on the H200 (bench/gpu/attention_kernel_notes.md).
  static constexpr int kStages = Sm90KvStages(kHeadDim);
  static constexpr int kChunks = kHeadDim / 64;       // 128-byte TMA boxes per row
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
  static constexpr int kNumBarriers = Sm90NumBarriers(kStages);
  static constexpr size_t kSmemBytes = Sm90SmemBytes(kHeadDim, kStages);
  // Named barrier ids 1 + consumer: the consumer's GEMM turn.
  static constexpr int kTurnBarrier = 1;
  static_assert(kHeadDim == 64 || kHeadDim == 128, "head dims 64 and 128");
  static_assert(kProducerRegs * 128 + kConsumerRegs * 128 * kConsumers <= 65536, "register file");
};

namespace sm90_consumer {

// S[64 x 128] = Q[64 rows of this warpgroup] K^T, both from shared memory, asynchronous.
template <typename Traits>
__device__ __forceinline__ void IssueScores(float (&acc_s)[Traits::kNTilesS * 4], uint32_t q_base,
                                            uint32_t k_stage) {
  sm90::WgmmaFence();
#pragma unroll
  for (int kk = 0; kk < Traits::kKStepsQK; ++kk) {
    // K-major, 128B swizzle: 8-row groups 1024 bytes apart; k16 steps 32 bytes into the row.
    const uint64_t desc_q =
        sm90::MakeSmemDesc(q_base + (kk / 4) * Traits::kChunkBytesQ + (kk % 4) * 32, 16, 1024);
    const uint64_t desc_k =
        sm90::MakeSmemDesc(k_stage + (kk / 4) * Traits::kChunkBytesKv + (kk % 4) * 32, 16, 1024);
    sm90::WgmmaSS128<typename Traits::Element>(acc_s, desc_q, desc_k, kk > 0 ? 1 : 0);
  }
  sm90::WgmmaCommit();
}

// O[64 x D] += P[64 x 128] (registers) V[128 x D] (shared memory, MN-major), asynchronous.
template <typename Traits>
__device__ __forceinline__ void IssuePv(float (&acc_o)[Traits::kNTilesO * 4],
                                        const uint32_t (&p_frag)[Traits::kKStepsPV][4],
                                        uint32_t v_stage) {
  sm90::FenceOperands(acc_o);
  sm90::WgmmaFence();
#pragma unroll
  for (int kk = 0; kk < Traits::kKStepsPV; ++kk) {
    // MN-major (V rows are keys, head dim contiguous), 128B swizzle: 8-key groups 1024 bytes
    // apart (stride), 64-column chunks kChunkBytesKv apart (leading); k16 step = 16 keys =
    // 2048 bytes.
    const uint64_t desc_v =
        sm90::MakeSmemDesc(v_stage + kk * 16 * 128, Traits::kChunkBytesKv, 1024);
    if constexpr (Traits::kHeadDim == 128) {
      sm90::WgmmaRS128<typename Traits::Element>(acc_o, p_frag[kk], desc_v, 1);
    } else {
      sm90::WgmmaRS64<typename Traits::Element>(acc_o, p_frag[kk], desc_v, 1);
    }
  }
  sm90::WgmmaCommit();
}

template <typename Traits>
__device__ __forceinline__ void RescaleOutput(float (&acc_o)[Traits::kNTilesO * 4],
                                              const float (&alpha)[2]) {
#pragma unroll
  for (int i = 0; i < Traits::kNTilesO; ++i) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      acc_o[i * 4 + 2 * r] *= alpha[r];
      acc_o[i * 4 + 2 * r + 1] *= alpha[r];
    }
  }
}

// Online softmax of one tile in place: scores become unnormalised probabilities against the
// running max; alpha = how much the previous output must shrink. The running max moves only
// when a tile's max passes it by more than `threshold` (log2 units; 0: whenever it grows), so
// probabilities stay below 2^threshold (fp32 sums and bf16/f16 P hold that) and, after a row's
// first tiles, alpha is 1 and O keeps its scale (FlashAttention-4's conditional rescaling).
// Returns whether any row of the warp must rescale O (warp-uniform).
template <typename Traits>
__device__ __forceinline__ bool SoftmaxTile(float (&acc_s)[Traits::kNTilesS * 4],
                                            float (&row_max)[2], float (&row_sum)[2],
                                            float (&alpha)[2], float scale_log2, float threshold) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float tile_max = -INFINITY;
#pragma unroll
    for (int j = 0; j < Traits::kNTilesS; ++j) {
      tile_max = fmaxf(tile_max, fmaxf(acc_s[j * 4 + 2 * r], acc_s[j * 4 + 2 * r + 1]));
    }
    tile_max = sm80::WarpQuadMax(tile_max) * scale_log2;
    // -inf + threshold stays -inf: a row's first visible tile always sets its max.
    const bool moves = tile_max > row_max[r] + threshold;
    alpha[r] = moves ? sm90::FastExp2(row_max[r] - tile_max) : 1.f;
    if (moves) row_max[r] = tile_max;
    const float ref = row_max[r] == -INFINITY ? 0.f : row_max[r];  // a row that sees nothing yet
    float sum = 0.f;
#pragma unroll
    for (int j = 0; j < Traits::kNTilesS; ++j) {
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const float prob = sm90::FastExp2(fmaf(acc_s[j * 4 + 2 * r + c], scale_log2, -ref));
        acc_s[j * 4 + 2 * r + c] = prob;
        sum += prob;
      }
    }
    row_sum[r] = row_sum[r] * alpha[r] + sum;
  }
  return __any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f);
}

// The probabilities as the A operand of the P V wgmma (k16 steps of the m64 x k16 layout).
template <typename Traits>
__device__ __forceinline__ void PackProbabilities(const float (&acc_s)[Traits::kNTilesS * 4],
                                                  uint32_t (&p_frag)[Traits::kKStepsPV][4]) {
  using Element = typename Traits::Element;
#pragma unroll
  for (int kk = 0; kk < Traits::kKStepsPV; ++kk) {
    p_frag[kk][0] = sm80::PackPair<Element>(acc_s[(2 * kk) * 4 + 0], acc_s[(2 * kk) * 4 + 1]);
    p_frag[kk][1] = sm80::PackPair<Element>(acc_s[(2 * kk) * 4 + 2], acc_s[(2 * kk) * 4 + 3]);
    p_frag[kk][2] =
        sm80::PackPair<Element>(acc_s[(2 * kk + 1) * 4 + 0], acc_s[(2 * kk + 1) * 4 + 1]);
    p_frag[kk][3] =
        sm80::PackPair<Element>(acc_s[(2 * kk + 1) * 4 + 2], acc_s[(2 * kk + 1) * 4 + 3]);
  }
}

// Normalises and writes O [lq, hq, D] in out_dtype and LSE [lq, hq] (natural log).
template <typename Traits>
__device__ __forceinline__ void StoreOutput(const AttentionParams& p,
                                            const float (&acc_o)[Traits::kNTilesO * 4],
                                            const float (&row_max)[2], const float (&row_sum)[2],
                                            int64_t q_row0, int head, int quad_col) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const sm80::FinishedRow fin = sm80::FinishRow(row_max[r], row_sum[r]);
    const int64_t q_row = q_row0 + 8 * r;
    const int64_t out_row = (q_row * p.hq + head) * Traits::kHeadDim;
#pragma unroll
    for (int i = 0; i < Traits::kNTilesO; ++i) {
      const int col = 8 * i + 2 * quad_col;
      const float x0 = acc_o[i * 4 + 2 * r] * fin.inv_sum;
      const float x1 = acc_o[i * 4 + 2 * r + 1] * fin.inv_sum;
      sm80::StoreOutputPair(p, out_row + col, x0, x1);
    }
    if (quad_col == 0) p.lse[q_row * p.hq + head] = fin.lse;
  }
}

}  // namespace sm90_consumer

// The schedule index this CTA takes in `round`: rounds of gridDim.x entries, walked forwards
// on even rounds and backwards on odd ones. The schedule is longest first, so a plain
// round-robin would give CTA 0 the longest row of every round (on causal masks ~3% more
// work than the last CTA); alternating cancels that drift.
__device__ __forceinline__ int Sm90ItemIndex(int round) {
  const int lane =
      (round & 1) ? static_cast<int>(gridDim.x - 1 - blockIdx.x) : static_cast<int>(blockIdx.x);
  return round * static_cast<int>(gridDim.x) + lane;
}

template <typename Traits>
__global__ void __launch_bounds__(Traits::kThreads, 1)
    AttentionSm90Kernel(const __grid_constant__ Sm90KernelParams params) {
#ifdef PREFILL_SM90A_ENABLED
  namespace consumer_ops = sm90_consumer;
  constexpr int kStages = Traits::kStages;

  extern __shared__ unsigned char smem_raw[];
  // 128-byte swizzled tiles and wgmma descriptors with base offset 0 need 1024-byte alignment.
  unsigned char* smem = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  unsigned char* s_q = smem;                                  // [chunk][128 rows][64]
  unsigned char* s_k = s_q + Traits::kTileBytesQ;             // [stage][chunk][128 keys][64]
  unsigned char* s_v = s_k + kStages * Traits::kTileBytesKv;  // [stage][chunk][128 keys][64]
  uint64_t* bars = reinterpret_cast<uint64_t*>(s_v + kStages * Traits::kTileBytesKv);
  uint64_t* q_full = bars;
  uint64_t* q_empty = bars + 1;
  uint64_t* k_full = bars + 2;
  uint64_t* v_full = k_full + kStages;
  uint64_t* k_empty = v_full + kStages;
  uint64_t* v_empty = k_empty + kStages;
  // Per stage, written by the producer with the K tile: {KV block id, its largest key
  // position (causal)}. The consumers' mask decision then costs a shared-memory read, not two
  // dependent global loads on the critical path after every S GEMM.
  int2* tile_info = reinterpret_cast<int2*>(bars + Traits::kNumBarriers);

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
      sm90::BarrierInit(&k_empty[s], kConsumerThreads);
      sm90::BarrierInit(&v_empty[s], kConsumerThreads);
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
    for (int round = 0;; ++round) {
      const int idx = Sm90ItemIndex(round);
      if (idx >= kp.num_items) break;  // later rounds start further on
      const int item = kp.schedule[idx];
      const int head = item / kp.num_q_blocks;
      const int q_block = item - head * kp.num_q_blocks;
      const int kv_head = head / kp.group;
      const int begin = p.mask_row_offsets[item];
      const int end = p.mask_row_offsets[item + 1];
      const int32_t* range_head =
          p.causal ? kp.kv_block_range + static_cast<int64_t>(kv_head) * kp.num_kv_blocks * 2
                   : nullptr;
      // Q of the previous item released by both consumers (passes at once the first time).
      sm90::BarrierWait(q_empty, q_phase ^ 1);
      sm90::BarrierArriveExpectTx(q_full, Traits::kTileBytesQ);
#pragma unroll
      for (int c = 0; c < Traits::kChunks; ++c) {
        sm90::TmaLoad3d(s_q + c * Traits::kChunkBytesQ, &params.tma_q, q_full, c * 64, head,
                        q_block * Traits::kBlockM);
      }
      q_phase ^= 1;
      for (int e = begin; e < end; ++e) {
        const int block = p.mask_kv_blocks[e];
        const int kmax = p.causal ? range_head[2 * block + 1] : INT_MIN;
        sm90::BarrierWait(&k_empty[stage], phase ^ 1);
        tile_info[stage] = make_int2(block, kmax);  // released to the consumers by the arrive
        sm90::BarrierArriveExpectTx(&k_full[stage], Traits::kTileBytesKv);
#pragma unroll
        for (int c = 0; c < Traits::kChunks; ++c) {
          sm90::TmaLoad3d(s_k + stage * Traits::kTileBytesKv + c * Traits::kChunkBytesKv,
                          &params.tma_k, &k_full[stage], c * 64, block * Traits::kBlockN, kv_head);
        }
        sm90::BarrierWait(&v_empty[stage], phase ^ 1);
        sm90::BarrierArriveExpectTx(&v_full[stage], Traits::kTileBytesKv);
#pragma unroll
        for (int c = 0; c < Traits::kChunks; ++c) {
          sm90::TmaLoad3d(s_v + stage * Traits::kTileBytesKv + c * Traits::kChunkBytesKv,
                          &params.tma_v, &v_full[stage], c * 64, block * Traits::kBlockN, kv_head);
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
  const float rescale_threshold = kp.rescale_threshold_log2;
  const uint32_t q_base = sm90::SmemAddr(s_q) + consumer * 64 * 128;
  const uint32_t k_base = sm90::SmemAddr(s_k);
  const uint32_t v_base = sm90::SmemAddr(s_v);
  // GEMM turns: a consumer waits on its own turn barrier and, once its GEMMs are issued,
  // opens the other's. Consumer 0 goes first. Both consumers pass the same number of turns
  // (same items, same tiles), so the pairs always match.
  const int my_turn = Traits::kTurnBarrier + consumer;
  const int other_turn = Traits::kTurnBarrier + (1 - consumer);
  if (consumer == 1) sm90::NamedBarrierArrive(other_turn, kConsumerThreads);

  // The next item's schedule entry and CSR row are loaded while this one computes: the
  // dependent loads (schedule -> row offsets) would otherwise stall both consumers at every
  // item boundary, with the tensor cores idle.
  struct ItemRow {
    int item = 0, begin = 0, end = 0;
  };
  auto load_row = [&](int idx) {
    ItemRow r;
    if (idx < kp.num_items) {
      r.item = kp.schedule[idx];
      r.begin = p.mask_row_offsets[r.item];
      r.end = p.mask_row_offsets[r.item + 1];
    }
    return r;
  };
  ItemRow next_row = load_row(Sm90ItemIndex(0));

  int stage = 0;
  uint32_t phase = 0, q_phase = 0;
  for (int round = 0; Sm90ItemIndex(round) < kp.num_items; ++round) {
    const ItemRow row = next_row;
    next_row = load_row(Sm90ItemIndex(round + 1));
    const int item = row.item;
    const int head = item / kp.num_q_blocks;
    const int q_block = item - head * kp.num_q_blocks;
    const int kv_head = head / kp.group;
    const int begin = row.begin;
    const int num_blocks = row.end - begin;
    const int64_t q_row0 = static_cast<int64_t>(q_block) * Traits::kBlockM + local_row0;

    // Query positions of this thread's rows; the warp's smallest decides (uniformly per warp)
    // whether a tile needs the mask, once the first S GEMM has been issued.
    int qpos[2] = {INT_MAX, INT_MAX};
    const int32_t* kpos_head = nullptr;
    if (p.causal) {
      qpos[0] = p.q_pos[q_row0];
      qpos[1] = p.q_pos[q_row0 + 8];
      kpos_head = p.k_pos + static_cast<int64_t>(kv_head) * p.k_pos_head_stride;
    }
    int warp_qmin = INT_MAX;

    float acc_o[Traits::kNTilesO * 4];
#pragma unroll
    for (int i = 0; i < Traits::kNTilesO * 4; ++i) acc_o[i] = 0.f;
    float row_max[2] = {-INFINITY, -INFINITY};
    float row_sum[2] = {0.f, 0.f};

    sm90::BarrierWait(q_full, q_phase);
    q_phase ^= 1;
    if (num_blocks == 0) {
      sm90::BarrierArrive(q_empty);
    } else {
      // Every wgmma sits on a straight path (first tile, steady state, last P V): a wgmma
      // under a branch ptxas cannot prove uniform gets serialised (warning C7518). Tiles no
      // row of the warpgroup sees are therefore computed fully masked, not skipped (they are
      // rare: the mask only lists blocks some row of the query block sees).
      float acc_s[Traits::kNTilesS * 4];
      uint32_t p_frag[Traits::kKStepsPV][4];  // the previous tile's P, read by its P V GEMM
      float alpha[2];
      bool rescale = false;           // alpha differs from 1 on some row of the warp
      auto score_tile = [&](int e) {  // mask and softmax of tile e, after its S GEMM
        sm90::FenceOperands(acc_s);
        const int2 info = tile_info[stage];  // read before the release below lets it be rewritten
        sm90::BarrierArrive(&k_empty[stage]);
        if (e == num_blocks - 1) sm90::BarrierArrive(q_empty);  // Q no longer read by this thread
        if (p.causal) {
          if (info.y > warp_qmin) {  // some row sees only part of the tile (or none of it)
            const int32_t* kp_tile = kpos_head + static_cast<int64_t>(info.x) * Traits::kBlockN;
#pragma unroll
            for (int j = 0; j < Traits::kNTilesS; ++j) {
#pragma unroll
              for (int c = 0; c < 2; ++c) {
                const int kcol = kp_tile[8 * j + 2 * quad_col + c];
                if (kcol > qpos[0]) acc_s[j * 4 + c] = -INFINITY;
                if (kcol > qpos[1]) acc_s[j * 4 + 2 + c] = -INFINITY;
              }
            }
          }
        }
        rescale = consumer_ops::SoftmaxTile<Traits>(acc_s, row_max, row_sum, alpha, scale_log2,
                                                    rescale_threshold);
      };
      auto finish_pv = [&](int v_stage) {  // after the P V GEMM of the tile in v_stage
        sm90::WgmmaWait<0>();
        sm90::FenceOperands(acc_o);
        // p_frag stays live (its registers untouched) until the GEMM that reads it is done.
#pragma unroll
        for (int kk = 0; kk < Traits::kKStepsPV; ++kk) sm90::FenceOperands(p_frag[kk]);
        sm90::BarrierArrive(&v_empty[v_stage]);
      };

      // First tile: S only.
      sm90::BarrierWait(&k_full[stage], phase);
      sm90::NamedBarrierSync(my_turn, kConsumerThreads);
      consumer_ops::IssueScores<Traits>(acc_s, q_base, k_base + stage * Traits::kTileBytesKv);
      sm90::NamedBarrierArrive(other_turn, kConsumerThreads);
      if (p.causal) {
        warp_qmin = min(qpos[0], qpos[1]);
#pragma unroll
        for (int offset = 16; offset >= 1; offset /= 2) {
          warp_qmin = min(warp_qmin, __shfl_xor_sync(0xffffffffu, warp_qmin, offset));
        }
      }
      sm90::WgmmaWait<0>();
      score_tile(0);
      consumer_ops::PackProbabilities<Traits>(acc_s, p_frag);
      int prev_stage = stage;
      uint32_t prev_phase = phase;
      if (++stage == kStages) {
        stage = 0;
        phase ^= 1;
      }
      // Steady state: S of tile e with P V of tile e-1; softmax of e under that P V.
      for (int e = 1; e < num_blocks; ++e) {
        sm90::BarrierWait(&k_full[stage], phase);
        sm90::BarrierWait(&v_full[prev_stage], prev_phase);
        sm90::NamedBarrierSync(my_turn, kConsumerThreads);
        consumer_ops::IssueScores<Traits>(acc_s, q_base, k_base + stage * Traits::kTileBytesKv);
        if (rescale) consumer_ops::RescaleOutput<Traits>(acc_o, alpha);
        consumer_ops::IssuePv<Traits>(acc_o, p_frag, v_base + prev_stage * Traits::kTileBytesKv);
        sm90::NamedBarrierArrive(other_turn, kConsumerThreads);
        sm90::WgmmaWait<1>();
        score_tile(e);
        finish_pv(prev_stage);
        consumer_ops::PackProbabilities<Traits>(acc_s, p_frag);
        prev_stage = stage;
        prev_phase = phase;
        if (++stage == kStages) {
          stage = 0;
          phase ^= 1;
        }
      }
      // Last tile's P V, in a turn of its own.
      sm90::BarrierWait(&v_full[prev_stage], prev_phase);
      sm90::NamedBarrierSync(my_turn, kConsumerThreads);
      if (rescale) consumer_ops::RescaleOutput<Traits>(acc_o, alpha);
      consumer_ops::IssuePv<Traits>(acc_o, p_frag, v_base + prev_stage * Traits::kTileBytesKv);
      sm90::NamedBarrierArrive(other_turn, kConsumerThreads);
      finish_pv(prev_stage);
    }
    consumer_ops::StoreOutput<Traits>(p, acc_o, row_max, row_sum, q_row0, head, quad_col);
  }
  // Consumer 1 opened one turn more than consumer 0 takes; take it, so no barrier is left
  // half-arrived at exit.
  if (consumer == 0) sm90::NamedBarrierSync(my_turn, kConsumerThreads);
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
