// Block-sparse flash attention forward, sm80 family (FlashAttention-2 style): one CTA per
// (query head, query block) work item, 8 warps x 16 query rows, Q fragments in registers,
// K/V tiles of 64 keys double-buffered through cp.async into swizzled shared memory,
// S = Q K^T and O += P V with mma.sync m16n8k16, online softmax in registers (exp2 domain).
// Included only by the attention_sm80_hdim*.cu instantiation files.
#pragma once

#include <cuda_runtime.h>

#include <climits>
#include <cmath>

#include "kernels/cuda/attention/attention_kernel_params.h"
#include "kernels/cuda/attention/sm80_primitives.cuh"

namespace prefill::cuda {

template <int kHeadDim_, typename Element_>
struct Sm80AttentionTraits {
  using Element = Element_;  // __nv_bfloat16 or __half
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = 128;  // query rows per CTA = one query block
  static constexpr int kBlockN = 64;   // keys per pipeline tile; a KV block of 128 keys is 2 tiles
  static constexpr int kKvBlock = 128;
  static constexpr int kTilesPerKvBlock = kKvBlock / kBlockN;
  static constexpr int kWarps = 8;  // 16 query rows each
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kStages = 2;
  static constexpr int kChunks = kHeadDim / 8;   // 16-byte chunks per row
  static constexpr int kNTilesS = kBlockN / 8;   // n8 tiles of S per warp
  static constexpr int kNTilesO = kHeadDim / 8;  // n8 tiles of O per warp
  static constexpr int kKStepsQK = kHeadDim / 16;
  static constexpr int kKStepsPV = kBlockN / 16;
  static constexpr int kQElems = kBlockM * kHeadDim;
  static constexpr int kKvElems = kBlockN * kHeadDim;
  static constexpr size_t kSmemBytes = static_cast<size_t>(kQElems + 2 * kStages * kKvElems) * 2 +
                                       kStages * kBlockN * sizeof(int32_t);
  static_assert(kHeadDim == 64 || kHeadDim == 128, "head dims 64 and 128");
  static_assert(kBlockM == kWarps * 16, "one m16 row tile per warp");
};

template <typename Traits>
__global__ void __launch_bounds__(Traits::kThreads, 1)
    AttentionSm80Kernel(const __grid_constant__ AttentionKernelParams kp) {
  using Element = typename Traits::Element;
  using Swizzle = sm80::SwizzledTile<Traits::kHeadDim>;
  constexpr int kHeadDim = Traits::kHeadDim;
  constexpr int kBlockN = Traits::kBlockN;
  constexpr int kChunks = Traits::kChunks;

  extern __shared__ __align__(128) unsigned char smem_raw[];
  Element* s_q = reinterpret_cast<Element*>(smem_raw);      // [kBlockM][D] swizzled
  Element* s_k = s_q + Traits::kQElems;                     // [stage][kBlockN][D]
  Element* s_v = s_k + Traits::kStages * Traits::kKvElems;  // [stage][kBlockN][D]
  int32_t* s_kpos =
      reinterpret_cast<int32_t*>(s_v + Traits::kStages * Traits::kKvElems);  // [stage][kBlockN]

  const AttentionParams& p = kp.p;
  const int item = kp.schedule[blockIdx.x];
  const int head = item / kp.num_q_blocks;
  const int q_block = item - head * kp.num_q_blocks;
  const int kv_head = head / kp.group;
  const int row_begin = p.mask_row_offsets[item];
  const int num_tiles = (p.mask_row_offsets[item + 1] - row_begin) * Traits::kTilesPerKvBlock;

  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int quad_row = lane / 4;  // g: fragment row inside the warp's 16 rows
  const int quad_col = lane % 4;  // c: fragment column pair

  const Element* q_tile = static_cast<const Element*>(p.q) +
                          static_cast<int64_t>(q_block) * Traits::kBlockM * p.q_row_stride +
                          static_cast<int64_t>(head) * p.q_head_stride;
  const Element* k_head =
      static_cast<const Element*>(p.k) + static_cast<int64_t>(kv_head) * p.kv_head_stride;
  const Element* v_head =
      static_cast<const Element*>(p.v) + static_cast<int64_t>(kv_head) * p.kv_head_stride;
  const int32_t* kpos_head =
      p.causal ? p.k_pos + static_cast<int64_t>(kv_head) * p.k_pos_head_stride : nullptr;

  // Tile t of the row: KV block mask_kv_blocks[row_begin + t / 2], keys [sub * 64, sub * 64 + 64).
  auto load_kv_tile = [&](int t, int stage) {
    const int block = p.mask_kv_blocks[row_begin + t / Traits::kTilesPerKvBlock];
    const int64_t key0 =
        static_cast<int64_t>(block) * Traits::kKvBlock + (t % Traits::kTilesPerKvBlock) * kBlockN;
    Element* s_k_stage = s_k + stage * Traits::kKvElems;
    Element* s_v_stage = s_v + stage * Traits::kKvElems;
#pragma unroll
    for (int idx = tid; idx < kBlockN * kChunks; idx += Traits::kThreads) {
      const int r = idx / kChunks;
      const int c = idx % kChunks;
      const int64_t g_off = (key0 + r) * p.kv_row_stride + c * 8;
      sm80::CpAsync16(sm80::SmemAddress(s_k_stage + Swizzle::Offset(r, c)), k_head + g_off);
      sm80::CpAsync16(sm80::SmemAddress(s_v_stage + Swizzle::Offset(r, c)), v_head + g_off);
    }
    if (kpos_head != nullptr && tid < kBlockN) {
      sm80::CpAsync4(sm80::SmemAddress(s_kpos + stage * kBlockN + tid), kpos_head + key0 + tid);
    }
  };

  if (num_tiles > 0) {
#pragma unroll
    for (int idx = tid; idx < Traits::kBlockM * kChunks; idx += Traits::kThreads) {
      const int r = idx / kChunks;
      const int c = idx % kChunks;
      sm80::CpAsync16(sm80::SmemAddress(s_q + Swizzle::Offset(r, c)),
                      q_tile + r * p.q_row_stride + c * 8);
    }
    load_kv_tile(0, 0);
  }
  sm80::CpAsyncCommit();

  // This thread's two query rows: warp * 16 + quad_row (+ 8).
  const int local_row0 = warp * 16 + quad_row;
  const int64_t q_row0 = static_cast<int64_t>(q_block) * Traits::kBlockM + local_row0;
  int qpos[2] = {INT_MAX, INT_MAX};
  int warp_qpos_min = INT_MAX, warp_qpos_max = INT_MAX;
  if (p.causal) {
    qpos[0] = p.q_pos[q_row0];
    qpos[1] = p.q_pos[q_row0 + 8];
    int lo = min(qpos[0], qpos[1]), hi = max(qpos[0], qpos[1]);
#pragma unroll
    for (int offset = 16; offset >= 1; offset /= 2) {
      lo = min(lo, __shfl_xor_sync(0xffffffffu, lo, offset));
      hi = max(hi, __shfl_xor_sync(0xffffffffu, hi, offset));
    }
    warp_qpos_min = lo;
    warp_qpos_max = hi;
  }

  float acc_o[Traits::kNTilesO][4];
#pragma unroll
  for (int i = 0; i < Traits::kNTilesO; ++i)
    acc_o[i][0] = acc_o[i][1] = acc_o[i][2] = acc_o[i][3] = 0.f;
  float row_max[2] = {-INFINITY, -INFINITY};  // running max of logit * scale_log2
  float row_sum[2] = {0.f, 0.f};  // this thread's partial sums (quad-reduced at the end)
  uint32_t q_frag[Traits::kKStepsQK][4];
  const float scale_log2 = kp.scale_log2;

  for (int t = 0; t < num_tiles; ++t) {
    const int stage = t % Traits::kStages;
    if (t + 1 < num_tiles) load_kv_tile(t + 1, (t + 1) % Traits::kStages);
    sm80::CpAsyncCommit();
    sm80::CpAsyncWait<1>();  // everything but the tile just issued has landed
    __syncthreads();

    if (t == 0) {
#pragma unroll
      for (int kk = 0; kk < Traits::kKStepsQK; ++kk) {
        const int mi = lane / 8;
        const int r = warp * 16 + (mi % 2) * 8 + lane % 8;
        const int c = 2 * kk + mi / 2;
        sm80::LdMatrixX4(sm80::SmemAddress(s_q + Swizzle::Offset(r, c)), q_frag[kk][0],
                         q_frag[kk][1], q_frag[kk][2], q_frag[kk][3]);
      }
    }

    // Causal visibility of this tile for this warp's 16 rows: skip, plain, or masked.
    bool skip = false, masked = false;
    int kcol[Traits::kNTilesS][2];
    if (p.causal) {
      int kmin = INT_MAX, kmax = INT_MIN;
#pragma unroll
      for (int j = 0; j < Traits::kNTilesS; ++j) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          kcol[j][e] = s_kpos[stage * kBlockN + j * 8 + 2 * quad_col + e];
          kmin = min(kmin, kcol[j][e]);
          kmax = max(kmax, kcol[j][e]);
        }
      }
      skip = __all_sync(0xffffffffu, kmin > warp_qpos_max);
      masked = !__all_sync(0xffffffffu, kmax <= warp_qpos_min);
    }

    if (!skip) {
      const Element* s_k_stage = s_k + stage * Traits::kKvElems;
      const Element* s_v_stage = s_v + stage * Traits::kKvElems;
      float acc_s[Traits::kNTilesS][4];
#pragma unroll
      for (int j = 0; j < Traits::kNTilesS; ++j)
        acc_s[j][0] = acc_s[j][1] = acc_s[j][2] = acc_s[j][3] = 0.f;

        // S = Q K^T: B fragments straight from K rows (keys = n, head dim = k).
#pragma unroll
      for (int kk = 0; kk < Traits::kKStepsQK; ++kk) {
#pragma unroll
        for (int j = 0; j < Traits::kNTilesS; j += 2) {
          const int mi = lane / 8;
          const int r = 8 * (j + mi / 2) + lane % 8;
          const int c = 2 * kk + mi % 2;
          uint32_t b0, b1, b2, b3;
          sm80::LdMatrixX4(sm80::SmemAddress(s_k_stage + Swizzle::Offset(r, c)), b0, b1, b2, b3);
          sm80::Mma16816<Element>(acc_s[j], q_frag[kk], b0, b1);
          sm80::Mma16816<Element>(acc_s[j + 1], q_frag[kk], b2, b3);
        }
      }

      if (masked) {
#pragma unroll
        for (int j = 0; j < Traits::kNTilesS; ++j) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            if (kcol[j][e] > qpos[0]) acc_s[j][e] = -INFINITY;
            if (kcol[j][e] > qpos[1]) acc_s[j][2 + e] = -INFINITY;
          }
        }
      }

      // Online softmax, exp2 domain. A row that has seen no visible key keeps max -inf and
      // uses 0 as its reference, so every exp2 argument stays -inf (never NaN).
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float tile_max = -INFINITY;
#pragma unroll
        for (int j = 0; j < Traits::kNTilesS; ++j) {
          tile_max = fmaxf(tile_max, fmaxf(acc_s[j][2 * r], acc_s[j][2 * r + 1]));
        }
        tile_max = sm80::WarpQuadMax(tile_max);
        const float new_max = fmaxf(row_max[r], tile_max * scale_log2);
        const float ref = new_max == -INFINITY ? 0.f : new_max;
        const float alpha = exp2f(row_max[r] - ref);
        row_max[r] = new_max;
        row_sum[r] *= alpha;
#pragma unroll
        for (int i = 0; i < Traits::kNTilesO; ++i) {
          acc_o[i][2 * r] *= alpha;
          acc_o[i][2 * r + 1] *= alpha;
        }
#pragma unroll
        for (int j = 0; j < Traits::kNTilesS; ++j) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float prob = exp2f(fmaf(acc_s[j][2 * r + e], scale_log2, -ref));
            acc_s[j][2 * r + e] = prob;
            row_sum[r] += prob;
          }
        }
      }

      // O += P V: P's C fragments are A fragments once packed; V through ldmatrix.trans.
#pragma unroll
      for (int kk = 0; kk < Traits::kKStepsPV; ++kk) {
        uint32_t a[4];
        a[0] = sm80::PackPair<Element>(acc_s[2 * kk][0], acc_s[2 * kk][1]);
        a[1] = sm80::PackPair<Element>(acc_s[2 * kk][2], acc_s[2 * kk][3]);
        a[2] = sm80::PackPair<Element>(acc_s[2 * kk + 1][0], acc_s[2 * kk + 1][1]);
        a[3] = sm80::PackPair<Element>(acc_s[2 * kk + 1][2], acc_s[2 * kk + 1][3]);
#pragma unroll
        for (int dn = 0; dn < Traits::kNTilesO; dn += 2) {
          const int mi = lane / 8;
          const int r = 16 * kk + (mi % 2) * 8 + lane % 8;
          const int c = dn + mi / 2;
          uint32_t b0, b1, b2, b3;
          sm80::LdMatrixX4Trans(sm80::SmemAddress(s_v_stage + Swizzle::Offset(r, c)), b0, b1, b2,
                                b3);
          sm80::Mma16816<Element>(acc_o[dn], a, b0, b1);
          sm80::Mma16816<Element>(acc_o[dn + 1], a, b2, b3);
        }
      }
    }
    __syncthreads();  // the next iteration's loads overwrite this stage
  }
  sm80::CpAsyncWait<0>();

  // Epilogue: normalise, write O [lq, hq, D] in out_dtype and LSE [lq, hq] (natural log).
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const sm80::FinishedRow fin = sm80::FinishRow(row_max[r], row_sum[r]);
    const int64_t q_row = q_row0 + 8 * r;
    const int64_t out_row = (q_row * p.hq + head) * kHeadDim;
#pragma unroll
    for (int i = 0; i < Traits::kNTilesO; ++i) {
      const int col = 8 * i + 2 * quad_col;
      const float x0 = acc_o[i][2 * r] * fin.inv_sum;
      const float x1 = acc_o[i][2 * r + 1] * fin.inv_sum;
      sm80::StoreOutputPair(p, out_row + col, x0, x1);
    }
    if (quad_col == 0) p.lse[q_row * p.hq + head] = fin.lse;
  }
}

template <int kHeadDim, typename Element>
cudaError_t LaunchAttentionSm80(const AttentionKernelParams& kp, cudaStream_t stream) {
  using Traits = Sm80AttentionTraits<kHeadDim, Element>;
  auto kernel = AttentionSm80Kernel<Traits>;
  if (Traits::kSmemBytes > 48 * 1024) {
    const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               static_cast<int>(Traits::kSmemBytes));
    if (e != cudaSuccess) return e;
  }
  if (kp.num_items == 0) return cudaSuccess;
  kernel<<<kp.num_items, Traits::kThreads, Traits::kSmemBytes, stream>>>(kp);
  return cudaGetLastError();
}

}  // namespace prefill::cuda
