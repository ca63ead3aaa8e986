// Entry of GPU round-robin mask estimation: validation, scratch plan, chunking over query
// blocks (the per-(row, KV block) sums of a chunk stay under kBlockLseBudget bytes), the
// stage launches, and the copy of the CSR (only the CSR) back to the host.
#include "kernels/cuda/estimation/round_robin_mask_estimator.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/estimation/estimator_kernels.h"

namespace prefill::cuda {
namespace {

constexpr size_t kBlockLseBudget = size_t{256} << 20;

absl::Status Invalid(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("MaskEstimateParams: ", what));
}

absl::Status Validate(const MaskEstimateParams& p) {
  if (p.hq <= 0 || p.hkv <= 0 || p.hq % p.hkv != 0) {
    return Invalid(absl::StrCat("hq (", p.hq, ") must be a positive multiple of hkv (", p.hkv, ")"));
  }
  if (p.head_dim != 64 && p.head_dim != 128) {
    return Invalid(absl::StrCat("head_dim ", p.head_dim, " unsupported on CUDA (64 or 128)"));
  }
  if (p.block_size <= 0 || p.stride <= 0 || p.block_size % p.stride != 0) {
    return Invalid(absl::StrCat("stride (", p.stride, ") must divide block_size (", p.block_size, ")"));
  }
  const int r = p.block_size / p.stride;
  if (r != 8 && r != 16 && r != 32) {
    return Invalid(absl::StrCat("block_size / stride = ", r, " unsupported on CUDA (8, 16 or 32)"));
  }
  if (p.seq_len <= 0 || p.seq_len % p.block_size != 0) {
    return Invalid(absl::StrCat("seq_len (", p.seq_len, ") must be a positive multiple of block_size"));
  }
  if (p.num_q_blocks < 0) return Invalid("num_q_blocks < 0");
  if (!(p.tau > 0.f) || p.tau > 1.f) return Invalid(absl::StrCat("tau (", p.tau, ") must be in (0, 1]"));
  if (!(p.scale > 0.f) || !std::isfinite(p.scale)) return Invalid("scale must be positive and finite");
  if (p.num_q_blocks > 0 && (!p.q || !p.q_block_ids || !p.pooled_k)) {
    return Invalid("null q, q_block_ids or pooled_k");
  }
  if (p.q_row_stride < p.head_dim || p.q_head_stride < p.head_dim) {
    return Invalid("q_row_stride and q_head_stride must be >= head_dim");
  }
  return absl::OkStatus();
}

template <int kHeadDim>
cudaError_t LaunchBlockScoresFor(int r, const uint16_t* q_hi, const uint16_t* q_lo, bool split_q,
                                 const uint16_t* k_hi, const uint16_t* k_lo, const int32_t* q_block_ids,
                                 const EstimatorShape& shape, int begin, int end, float* block_lse,
                                 cudaStream_t stream) {
  switch (r) {
    case 8:
      return LaunchBlockScores<kHeadDim, 8>(q_hi, q_lo, split_q, k_hi, k_lo, q_block_ids, shape, begin, end,
                                            block_lse, stream);
    case 16:
      return LaunchBlockScores<kHeadDim, 16>(q_hi, q_lo, split_q, k_hi, k_lo, q_block_ids, shape, begin, end,
                                             block_lse, stream);
    default:
      return LaunchBlockScores<kHeadDim, 32>(q_hi, q_lo, split_q, k_hi, k_lo, q_block_ids, shape, begin, end,
                                             block_lse, stream);
  }
}

}  // namespace

absl::StatusOr<BlockMask> EstimateRoundRobinMask(const MaskEstimateParams& p, const DeviceContext& ctx) {
  if (absl::Status s = Validate(p); !s.ok()) return s;

  EstimatorShape shape;
  shape.hq = p.hq;
  shape.hkv = p.hkv;
  shape.group = p.hq / p.hkv;
  shape.head_dim = p.head_dim;
  shape.block_size = p.block_size;
  shape.stride = p.stride;
  shape.rows_per_block = p.block_size / p.stride;
  shape.num_strides = p.seq_len / p.stride;
  shape.num_kv_blocks = p.seq_len / p.block_size;
  shape.num_q_blocks = p.num_q_blocks;
  shape.causal = p.causal;
  shape.logit_scale_log2 = p.scale / static_cast<float>(p.stride) * 1.4426950408889634f;

  BlockMask mask;
  mask.num_heads = p.hq;
  mask.num_q_blocks = p.num_q_blocks;
  mask.num_kv_blocks = shape.num_kv_blocks;
  mask.block_size = p.block_size;
  mask.q_block_ids.resize(p.num_q_blocks);
  if (p.num_q_blocks == 0) {
    mask.row_offsets.assign(1, 0);
    return mask;
  }
  CUDA_CHECK(cudaMemcpyAsync(mask.q_block_ids.data(), p.q_block_ids, p.num_q_blocks * sizeof(int32_t),
                             cudaMemcpyDeviceToHost, ctx.stream));
  CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  for (int i = 0; i < p.num_q_blocks; ++i) {
    const int id = mask.q_block_ids[i];
    if (id < 0 || id >= shape.num_kv_blocks) {
      return Invalid(absl::StrCat("q_block_ids[", i, "] = ", id, " outside [0, ", shape.num_kv_blocks, ")"));
    }
    mask.visible_blocks += static_cast<int64_t>(p.hq) * VisibleBlocks(id, shape.num_kv_blocks, p.causal);
  }
  // Every selected block is visible (sink and diagonal are), so visible_blocks bounds the CSR.
  if (mask.visible_blocks > std::numeric_limits<int32_t>::max()) {
    return Invalid(absl::StrCat("mask would hold up to ", mask.visible_blocks, " blocks, over int32 offsets"));
  }

  const int num_rows = p.hq * p.num_q_blocks;
  const int words_per_row = (shape.num_kv_blocks + 31) / 32;
  const int64_t rows_per_q_block = static_cast<int64_t>(shape.group) * shape.rows_per_block;
  const size_t lse_bytes_per_q_block =
      static_cast<size_t>(p.hkv) * shape.num_kv_blocks * rows_per_q_block * sizeof(float);
  const int chunk_q_blocks = static_cast<int>(std::clamp<size_t>(
      kBlockLseBudget / std::max<size_t>(lse_bytes_per_q_block, 1), 1, static_cast<size_t>(p.num_q_blocks)));
  const int64_t chunk_rows = chunk_q_blocks * rows_per_q_block;
  const int64_t k_elems = static_cast<int64_t>(p.hkv) * shape.num_strides * p.head_dim;
  const int64_t q_elems = static_cast<int64_t>(p.hkv) * chunk_rows * p.head_dim;

  auto carve = [&](ScratchCarver& c) {
    struct {
      uint16_t *k_hi, *k_lo, *q_hi, *q_lo;
      float* block_lse;
      uint32_t* selected;
      int32_t *counts, *offsets, *kv_blocks;
    } b;
    b.k_hi = c.Take<uint16_t>(k_elems);
    b.k_lo = c.Take<uint16_t>(k_elems);
    b.q_hi = c.Take<uint16_t>(q_elems);
    b.q_lo = c.Take<uint16_t>(q_elems);
    b.block_lse = c.Take<float>(static_cast<size_t>(p.hkv) * shape.num_kv_blocks * chunk_rows);
    b.selected = c.Take<uint32_t>(static_cast<size_t>(num_rows) * words_per_row);
    b.counts = c.Take<int32_t>(num_rows);
    b.offsets = c.Take<int32_t>(num_rows + 1);
    b.kv_blocks = c.Take<int32_t>(std::max<int64_t>(mask.visible_blocks, 1));
    return b;
  };
  ScratchCarver plan;
  carve(plan);
  absl::StatusOr<void*> scratch = ctx.scratch->Reserve(plan.bytes(), ctx.stream);
  if (!scratch.ok()) return scratch.status();
  ScratchCarver carver(*scratch);
  const auto buf = carve(carver);

  CUDA_CHECK(LaunchSplitPooledKeys(p.pooled_k, shape, buf.k_hi, buf.k_lo, ctx.sm_count, ctx.stream));
  const bool split_q = p.dtype != DType::kBF16;  // bf16 queries are exact in the hi part
  SelectionOptions options;
  options.tau = p.tau;
  options.keep_sink = p.keep_sink;
  options.keep_recent = p.keep_recent;
  for (int begin = 0; begin < p.num_q_blocks; begin += chunk_q_blocks) {
    const int end = std::min(begin + chunk_q_blocks, p.num_q_blocks);
    CUDA_CHECK(LaunchGatherSampledQueries(p.dtype, p.q, p.q_row_stride, p.q_head_stride, shape, begin, end,
                                          buf.q_hi, buf.q_lo, ctx.sm_count, ctx.stream));
    if (p.head_dim == 64) {
      CUDA_CHECK(LaunchBlockScoresFor<64>(shape.rows_per_block, buf.q_hi, buf.q_lo, split_q, buf.k_hi, buf.k_lo,
                                          p.q_block_ids, shape, begin, end, buf.block_lse, ctx.stream));
    } else {
      CUDA_CHECK(LaunchBlockScoresFor<128>(shape.rows_per_block, buf.q_hi, buf.q_lo, split_q, buf.k_hi, buf.k_lo,
                                           p.q_block_ids, shape, begin, end, buf.block_lse, ctx.stream));
    }
    CUDA_CHECK(LaunchSelectBlocks(buf.block_lse, p.q_block_ids, shape, options, begin, end, buf.selected,
                                  words_per_row, buf.counts, ctx.max_smem_per_block_optin, ctx.stream));
  }
  CUDA_CHECK(LaunchScanRowCounts(buf.counts, num_rows, buf.offsets, ctx.stream));
  CUDA_CHECK(LaunchFillCsr(buf.selected, words_per_row, buf.offsets, num_rows, buf.kv_blocks, ctx.stream));

  mask.row_offsets.resize(num_rows + 1);
  CUDA_CHECK(cudaMemcpyAsync(mask.row_offsets.data(), buf.offsets, (num_rows + 1) * sizeof(int32_t),
                             cudaMemcpyDeviceToHost, ctx.stream));
  CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  const int32_t total = mask.row_offsets.back();
  if (total < 0 || total > mask.visible_blocks) {
    return absl::InternalError(absl::StrCat("estimator produced ", total, " blocks, more than the ",
                                            mask.visible_blocks, " visible"));
  }
  mask.kv_blocks.resize(total);
  if (total > 0) {
    CUDA_CHECK(cudaMemcpyAsync(mask.kv_blocks.data(), buf.kv_blocks, total * sizeof(int32_t),
                               cudaMemcpyDeviceToHost, ctx.stream));
    CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  }
  return mask;
}

}  // namespace prefill::cuda
