// Round-robin mask estimation: validation, top-tau selection per row and CSR assembly. The
// arithmetic of a row's block mass lives in round_robin_block_mass.{h,cc}.
#include "kernels/cpu/round_robin_mask_estimator.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <optional>
#include <span>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/parallel_for.h"
#include "kernels/cpu/round_robin_block_mass.h"
#include "kernels/status_macros.h"

namespace prefill::cpu {
namespace {

absl::Status Invalid(const auto&... parts) {
  return absl::InvalidArgumentError(absl::StrCat("EstimateRoundRobinMask: ", parts...));
}

absl::Status ValidateShape(const MaskEstimateParams& p) {
  if (p.hq < 1) return Invalid("hq (", p.hq, ") must be >= 1");
  if (p.hkv < 1 || p.hq % p.hkv != 0) {
    return Invalid("hkv (", p.hkv, ") must be >= 1 and divide hq (", p.hq, ")");
  }
  if (p.head_dim < 1) return Invalid("head_dim (", p.head_dim, ") must be >= 1");
  if (p.block_size < 1) return Invalid("block_size (", p.block_size, ") must be >= 1");
  if (p.stride < 1 || p.block_size % p.stride != 0) {
    return Invalid("stride (", p.stride, ") must be >= 1 and divide block_size (", p.block_size,
                   ")");
  }
  if (p.seq_len < 1 || p.seq_len % p.block_size != 0) {
    return Invalid("seq_len (", p.seq_len, ") must be a positive multiple of block_size (",
                   p.block_size, ")");
  }
  return absl::OkStatus();
}

absl::Status ValidateQueries(const MaskEstimateParams& p) {
  if (p.num_q_blocks < 0) return Invalid("num_q_blocks (", p.num_q_blocks, ") must be >= 0");
  if (p.num_q_blocks == 0) return absl::OkStatus();
  if (p.q == nullptr) return Invalid("q must not be null");
  if (p.q_block_ids == nullptr) return Invalid("q_block_ids must not be null");
  if (p.q_row_stride < 1) return Invalid("q_row_stride (", p.q_row_stride, ") must be >= 1");
  if (p.q_head_stride < 0) return Invalid("q_head_stride (", p.q_head_stride, ") must be >= 0");
  const int num_blocks = p.seq_len / p.block_size;
  for (int i = 0; i < p.num_q_blocks; ++i) {
    if (p.q_block_ids[i] < 0 || p.q_block_ids[i] >= num_blocks) {
      return Invalid("q_block_ids[", i, "] (", p.q_block_ids[i], ") must be in [0, ", num_blocks,
                     ") (seq_len / block_size)");
    }
  }
  return absl::OkStatus();
}

absl::Status Validate(const MaskEstimateParams& p) {
  PREFILL_RETURN_IF_ERROR(ValidateShape(p));
  if (p.pooled_k == nullptr) return Invalid("pooled_k must not be null");
  if (!(p.tau > 0.f && p.tau <= 1.f)) return Invalid("tau (", p.tau, ") must be in (0, 1]");
  if (!(p.scale > 0.f && std::isfinite(p.scale))) {
    return Invalid("scale (", p.scale, ") must be positive and finite (usually 1/sqrt(head_dim))");
  }
  return ValidateQueries(p);
}

// The blocks of one row: the shortest prefix of the visible blocks, by mass descending (ties:
// lower id first), whose mass reaches tau of the row's; then the sink and the diagonal.
// Ranking only visible blocks is the AND with causal visibility: the others hold no mass.
std::vector<int32_t> SelectBlocks(const MaskEstimateParams& p, std::span<const float> mass,
                                  int q_block) {
  const int num_kv_blocks = p.seq_len / p.block_size;
  std::vector<int32_t> order(VisibleBlocks(q_block, num_kv_blocks, p.causal));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return mass[a] > mass[b] || (mass[a] == mass[b] && a < b);
  });
  // The row sum is taken in the order of the prefix sums, so at tau = 1 exactly the blocks
  // holding mass are kept, whatever the rounding.
  float total = 0.f;
  for (int32_t b : order) total += mass[b];
  const float threshold = p.tau * total;

  std::vector<bool> keep(num_kv_blocks, false);
  float before = 0.f;
  for (int32_t b : order) {
    if (!(before < threshold)) break;
    keep[b] = true;
    before += mass[b];
  }
  if (p.keep_sink) keep[0] = true;
  keep[q_block] = true;

  std::vector<int32_t> blocks;
  for (int32_t b = 0; b < num_kv_blocks; ++b) {
    if (keep[b]) blocks.push_back(b);
  }
  return blocks;
}

std::vector<int32_t> AllVisible(const MaskEstimateParams& p, int q_block) {
  std::vector<int32_t> blocks(VisibleBlocks(q_block, p.seq_len / p.block_size, p.causal));
  std::iota(blocks.begin(), blocks.end(), 0);
  return blocks;
}

BlockMask Assemble(const MaskEstimateParams& p, const std::vector<std::vector<int32_t>>& rows) {
  BlockMask mask;
  mask.num_heads = p.hq;
  mask.num_q_blocks = p.num_q_blocks;
  mask.num_kv_blocks = p.seq_len / p.block_size;
  mask.block_size = p.block_size;
  mask.q_block_ids.assign(p.q_block_ids, p.q_block_ids + p.num_q_blocks);
  mask.row_offsets.reserve(rows.size() + 1);
  mask.row_offsets.push_back(0);
  for (size_t r = 0; r < rows.size(); ++r) {
    mask.kv_blocks.insert(mask.kv_blocks.end(), rows[r].begin(), rows[r].end());
    mask.row_offsets.push_back(static_cast<int32_t>(mask.kv_blocks.size()));
    mask.visible_blocks +=
        VisibleBlocks(mask.q_block_ids[r % p.num_q_blocks], mask.num_kv_blocks, p.causal);
  }
  return mask;
}

}  // namespace

absl::StatusOr<BlockMask> EstimateRoundRobinMask(const MaskEstimateParams& p, int threads) {
  PREFILL_RETURN_IF_ERROR(Validate(p));
  const int num_kv_blocks = p.seq_len / p.block_size;
  const round_robin::PackedKeys keys =
      round_robin::PackKeys(p.pooled_k, p.seq_len / p.stride, p.hkv, p.head_dim);
  std::optional<round_robin::PackedKeys> heavy;
  if (p.heavy_k != nullptr)
    heavy = round_robin::PackKeys(p.heavy_k, num_kv_blocks, p.hkv, p.head_dim);
  const absl::StatusOr<CpuIsa> isa = SelectedCpuIsa();
  if (!isa.ok()) return isa.status();
  const round_robin::BlockMassKernel kernel = round_robin::BlockMassKernelFor(*isa);

  std::vector<std::vector<int32_t>> rows(int64_t{p.hq} * p.num_q_blocks);
  ParallelFor(static_cast<int64_t>(rows.size()), threads, [&](int64_t row) {
    const int head = static_cast<int>(row / p.num_q_blocks);
    const int q_block = static_cast<int>(row % p.num_q_blocks);
    const int absolute = p.q_block_ids[q_block];
    // keep_recent: the last query block attends densely, so its (costliest) estimate is skipped.
    if (p.keep_recent && absolute == num_kv_blocks - 1) {
      rows[row] = AllVisible(p, absolute);
      return;
    }
    std::vector<float> mass(num_kv_blocks);
    round_robin::RowBlockMass(p, keys, heavy ? &*heavy : nullptr, head, q_block, kernel, mass);
    rows[row] = SelectBlocks(p, mass, absolute);
  });
  return Assemble(p, rows);
}

}  // namespace prefill::cpu
