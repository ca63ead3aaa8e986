// The per-row arithmetic of round-robin mask estimation (private to the estimator and its
// tests): pooled keys packed for vector loads, and the estimated attention mass per KV block
// of one (query head, query block) row. A row's result depends only on its own queries and
// the pooled keys, computed in a fixed order, which is what makes sharded estimation exact.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kernels/cpu/cpu_isa.h"
#include "kernels/mask_estimation_params.h"

namespace prefill::cpu::round_robin {

// Key strides per packed tile: four 16-float vectors, the columns of the register tile.
inline constexpr int kTileStrides = 64;
// Sampled queries scored together against a key tile: the rows of the register tile.
inline constexpr int kGroupRows = 4;

// Local query row standing for query stride i of local query block q_block in query head
// `head`. Heads take turns over the offsets inside a stride (offset = head mod stride), so any
// `stride` consecutive heads sample every position of every query stride between them.
// rotate = false is the unrotated baseline: every head samples offset 0.
constexpr int64_t SampledQueryRow(int head, int q_block, int i, int block_size, int stride,
                                  bool rotate = true) {
  return int64_t{q_block} * block_size + int64_t{i} * stride + (rotate ? head % stride : 0);
}

// Pooled keys of every KV head, transposed in tiles so that one vector load reads 16
// consecutive key strides of one element: element e of stride j of KV head g is at
// data[((g * num_tiles + j / kTileStrides) * head_dim + e) * kTileStrides + j % kTileStrides].
// Strides past the end of the sequence are zero.
struct PackedKeys {
  std::vector<float> data;
  int num_tiles = 0;
  int head_dim = 0;

  float* tiles(int kv_head) {
    return data.data() + int64_t{kv_head} * num_tiles * head_dim * kTileStrides;
  }
  const float* tiles(int kv_head) const { return const_cast<PackedKeys*>(this)->tiles(kv_head); }
};

// Packs `rows` [num_rows, hkv, head_dim] (p.pooled_k, or p.heavy_k with one row per block).
PackedKeys PackKeys(const float* rows, int num_rows, int hkv, int head_dim);

// Up to kGroupRows consecutive sampled queries of one (head, query block) row: what the vector
// kernel sees.
struct RowGroup {
  const float* q = nullptr;      // [rows, head_dim] sampled queries in fp32
  int rows = 0;                  // 1 .. kGroupRows
  int visible[kGroupRows] = {};  // key strides [0, visible[i]) that query i sees; >= 1
  const float* keys = nullptr;   // PackedKeys::tiles() of the head's KV head
  int head_dim = 0;
  float logit_scale = 0.f;  // scale * log2(e) / stride: logits in base 2, for exp2
  int strides_per_block = 0;
  float* scores = nullptr;    // scratch [kGroupRows, scores_stride]
  int64_t scores_stride = 0;  // >= the tiles covering the largest visible, in floats
  float* mass = nullptr;      // [KV blocks] += each query's softmax mass per block, in row order
  // rr+heavy (heavy_keys null: plain round robin): query i also sees the unpooled heavy keys
  // of blocks [0, heavy_visible[i]), packed like `keys` (one column per block), scored with
  // heavy_logit_scale (scale * log2(e)) less heavy_bias (log2(stride)).
  const float* heavy_keys = nullptr;
  int heavy_visible[kGroupRows] = {};
  float heavy_logit_scale = 0.f;
  float heavy_bias = 0.f;
  float* heavy_scores = nullptr;    // scratch [kGroupRows, heavy_scores_stride]
  int64_t heavy_scores_stride = 0;  // >= the tiles covering every block, in floats
};

// The vector kernel, compiled from one source (round_robin_block_mass_kernel.inc) for the
// baseline ISA, AVX2 and AVX-512. Every lane does the same IEEE operations in the same order on
// all of them (no FMA: the library builds with -ffp-contract=off), so they agree bitwise and a
// cluster mixing CPUs still produces one mask. On aarch64 the baseline compilation is NEON.
using BlockMassKernel = void (*)(const RowGroup& group);
void AccumulateBlockMassGeneric(const RowGroup& group);
#if defined(__x86_64__)
void AccumulateBlockMassAvx2(const RowGroup& group);
void AccumulateBlockMassAvx512(const RowGroup& group);
#endif

// The compilation for `isa` (the generic one for portable and NEON); isa must be runnable.
BlockMassKernel BlockMassKernelFor(CpuIsa isa);

// mass[J] (size seq_len / block_size) = the softmax mass of KV block J summed over the sampled
// queries of local query block q_block in query head `head` (p must be valid). `heavy`: the
// packed p.heavy_k, or null.
void RowBlockMass(const MaskEstimateParams& p, const PackedKeys& keys, const PackedKeys* heavy,
                  int head, int q_block, BlockMassKernel kernel, std::span<float> mass);

}  // namespace prefill::cpu::round_robin
