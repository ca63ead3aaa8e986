// Packing, per-row driver and kernel dispatch of round-robin block mass.
#include "kernels/cpu/round_robin_block_mass.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numbers>

#include "kernels/block_mask.h"
#include "kernels/dtype.h"

namespace prefill::cpu::round_robin {

PackedKeys PackKeys(const float* rows, int num_rows, int hkv, int head_dim) {
  PackedKeys packed;
  packed.num_tiles = (num_rows + kTileStrides - 1) / kTileStrides;
  packed.head_dim = head_dim;
  packed.data.assign(int64_t{hkv} * packed.num_tiles * head_dim * kTileStrides, 0.f);
  for (int g = 0; g < hkv; ++g) {
    float* tiles = packed.tiles(g);
    for (int j = 0; j < num_rows; ++j) {
      const float* key = rows + (int64_t{j} * hkv + g) * head_dim;
      float* tile = tiles + int64_t{j / kTileStrides} * head_dim * kTileStrides;
      for (int e = 0; e < head_dim; ++e) tile[e * kTileStrides + j % kTileStrides] = key[e];
    }
  }
  return packed;
}

BlockMassKernel BlockMassKernelFor(CpuIsa isa) {
  switch (isa) {
#if defined(__x86_64__)
    case CpuIsa::kAvx512:
      return &AccumulateBlockMassAvx512;
    case CpuIsa::kAvx2:
      return &AccumulateBlockMassAvx2;
#endif
    default:
      return &AccumulateBlockMassGeneric;
  }
}

void RowBlockMass(const MaskEstimateParams& p, const PackedKeys& keys, const PackedKeys* heavy,
                  int head, int q_block, BlockMassKernel kernel, std::span<float> mass) {
  const int strides_per_block = p.block_size / p.stride;
  const int num_strides = p.seq_len / p.stride;
  // Absolute key stride of the block's first query stride.
  const int first_stride = p.q_block_ids[q_block] * strides_per_block;
  const auto* q = static_cast<const std::byte*>(p.q);
  const int elem = DTypeSize(p.dtype);

  std::vector<float> queries(int64_t{kGroupRows} * p.head_dim);
  std::vector<float> scores(int64_t{kGroupRows} * keys.num_tiles * kTileStrides);
  RowGroup group;
  group.q = queries.data();
  group.keys = keys.tiles(head / (p.hq / p.hkv));
  group.head_dim = p.head_dim;
  group.logit_scale = p.scale * std::numbers::log2e_v<float> / p.stride;
  group.strides_per_block = strides_per_block;
  group.scores = scores.data();
  group.scores_stride = int64_t{keys.num_tiles} * kTileStrides;
  group.mass = mass.data();
  std::vector<float> heavy_scores;
  if (heavy != nullptr) {
    heavy_scores.resize(int64_t{kGroupRows} * heavy->num_tiles * kTileStrides);
    group.heavy_keys = heavy->tiles(head / (p.hq / p.hkv));
    group.heavy_logit_scale = p.scale * std::numbers::log2e_v<float>;
    group.heavy_bias = std::log2(static_cast<float>(p.stride));
    group.heavy_scores = heavy_scores.data();
    group.heavy_scores_stride = int64_t{heavy->num_tiles} * kTileStrides;
  }

  std::fill(mass.begin(), mass.end(), 0.f);
  for (int i0 = 0; i0 < strides_per_block; i0 += kGroupRows) {
    group.rows = std::min(kGroupRows, strides_per_block - i0);
    for (int r = 0; r < group.rows; ++r) {
      const int64_t row =
          SampledQueryRow(head, q_block, i0 + r, p.block_size, p.stride, p.rotate_offsets);
      ConvertToF32(p.dtype, q + (row * p.q_row_stride + head * p.q_head_stride) * elem,
                   queries.data() + r * p.head_dim, p.head_dim);
      // Causal: key stride j is visible iff j * S <= the query's position, i.e. iff j is at
      // most the query's own stride (the offset inside the stride never matters).
      group.visible[r] = p.causal ? first_stride + i0 + r + 1 : num_strides;
      // The heavy keys of whole blocks before the query's own (its block is always kept).
      group.heavy_visible[r] = p.causal ? p.q_block_ids[q_block] : p.seq_len / p.block_size;
    }
    kernel(group);
  }
}

}  // namespace prefill::cpu::round_robin
