// Entry of GPU round-robin mask estimation: validation, scratch plan, chunking over query
// blocks (the per-(row, KV block) log-sum-exps of a chunk live in scratch), the stage
// launches (one stream, no host synchronisation until the CSR is complete on the device),
// and the copy of the CSR (only the CSR) back to the host.
#include "kernels/cuda/estimation/round_robin_mask_estimator.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/estimation/estimator_kernels.h"
#include "kernels/status_macros.h"

namespace prefill::cuda {
namespace {

constexpr int kScoreRowsPerCta = 256;  // BlockScoreTraits::kBlockM

std::atomic<int> g_precision{static_cast<int>(EstimatorPrecision::kBf16)};
std::atomic<int> g_mma_path{static_cast<int>(EstimatorMmaPath::kAuto)};
EstimatorTuning g_tuning;
EstimatorProfile* g_profile = nullptr;

absl::Status Invalid(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("MaskEstimateParams: ", what));
}

absl::Status Validate(const MaskEstimateParams& p) {
  if (p.hq <= 0 || p.hkv <= 0 || p.hq % p.hkv != 0) {
    return Invalid(
        absl::StrCat("hq (", p.hq, ") must be a positive multiple of hkv (", p.hkv, ")"));
  }
  if (p.head_dim != 64 && p.head_dim != 128) {
    return Invalid(absl::StrCat("head_dim ", p.head_dim, " unsupported on CUDA (64 or 128)"));
  }
  if (p.block_size <= 0 || p.stride <= 0 || p.block_size % p.stride != 0) {
    return Invalid(
        absl::StrCat("stride (", p.stride, ") must divide block_size (", p.block_size, ")"));
  }
  const int r = p.block_size / p.stride;
  if (r != 8 && r != 16 && r != 32) {
    return Invalid(absl::StrCat("block_size / stride = ", r, " unsupported on CUDA (8, 16 or 32)"));
  }
  if (p.seq_len <= 0 || p.seq_len % p.block_size != 0) {
    return Invalid(
        absl::StrCat("seq_len (", p.seq_len, ") must be a positive multiple of block_size"));
  }
  if (p.num_q_blocks < 0) return Invalid("num_q_blocks < 0");
  if (!(p.tau > 0.f) || p.tau > 1.f)
    return Invalid(absl::StrCat("tau (", p.tau, ") must be in (0, 1]"));
  if (!(p.scale > 0.f) || !std::isfinite(p.scale))
    return Invalid("scale must be positive and finite");
  if (p.num_q_blocks > 0 && (!p.q || !p.q_block_ids || !p.pooled_k)) {
    return Invalid("null q, q_block_ids or pooled_k");
  }
  if (p.q_row_stride < p.head_dim || p.q_head_stride < p.head_dim) {
    return Invalid("q_row_stride and q_head_stride must be >= head_dim");
  }
  return absl::OkStatus();
}

template <int kHeadDim, int kTerms>
cudaError_t LaunchScoresR(int r, const uint16_t* q_hi, const uint16_t* q_lo, const uint16_t* k_hi,
                          const uint16_t* k_lo, const int32_t* ids, const EstimatorShape& shape,
                          bool skip_dense, bool wgmma, int begin, int end, float* block_lse,
                          float* row_lse, cudaStream_t stream) {
  switch (r) {
    case 8:
      return LaunchBlockScores<kHeadDim, 8, kTerms>(q_hi, q_lo, k_hi, k_lo, ids, shape, skip_dense,
                                                    wgmma, begin, end, block_lse, row_lse, stream);
    case 16:
      return LaunchBlockScores<kHeadDim, 16, kTerms>(q_hi, q_lo, k_hi, k_lo, ids, shape, skip_dense,
                                                     wgmma, begin, end, block_lse, row_lse, stream);
    default:
      return LaunchBlockScores<kHeadDim, 32, kTerms>(q_hi, q_lo, k_hi, k_lo, ids, shape, skip_dense,
                                                     wgmma, begin, end, block_lse, row_lse, stream);
  }
}

template <int kHeadDim>
cudaError_t LaunchScores(int terms, int r, const uint16_t* q_hi, const uint16_t* q_lo,
                         const uint16_t* k_hi, const uint16_t* k_lo, const int32_t* ids,
                         const EstimatorShape& shape, bool skip_dense, bool wgmma, int begin,
                         int end, float* block_lse, float* row_lse, cudaStream_t stream) {
  switch (terms) {
    case 1:
      return LaunchScoresR<kHeadDim, 1>(r, q_hi, q_lo, k_hi, k_lo, ids, shape, skip_dense, wgmma,
                                        begin, end, block_lse, row_lse, stream);
    case 2:
      return LaunchScoresR<kHeadDim, 2>(r, q_hi, q_lo, k_hi, k_lo, ids, shape, skip_dense, wgmma,
                                        begin, end, block_lse, row_lse, stream);
    default:
      return LaunchScoresR<kHeadDim, 3>(r, q_hi, q_lo, k_hi, k_lo, ids, shape, skip_dense, wgmma,
                                        begin, end, block_lse, row_lse, stream);
  }
}

// Stage timing with events, only when a profile is requested.
class StageTimer {
 public:
  enum Stage { kPrepare, kScores, kSelect, kCsr, kNone };
  StageTimer(bool on, cudaStream_t stream) : on_(on), stream_(stream) {}
  StageTimer(const StageTimer&) = delete;
  StageTimer& operator=(const StageTimer&) = delete;
  ~StageTimer() {
    for (auto& [e, stage] : marks_) (void)cudaEventDestroy(e);
  }
  // Marks the end of `stage` (the interval since the previous mark).
  cudaError_t Mark(Stage stage) {
    if (!on_) return cudaSuccess;
    cudaEvent_t e;
    cudaError_t err = cudaEventCreate(&e);
    if (err != cudaSuccess) return err;
    marks_.emplace_back(e, stage);
    return cudaEventRecord(e, stream_);
  }
  // After the stream is synchronised.
  void Fill(EstimatorProfile& out) const {
    double stage_ms[kNone] = {};
    for (size_t k = 1; k < marks_.size(); ++k) {
      float ms = 0;
      if (cudaEventElapsedTime(&ms, marks_[k - 1].first, marks_[k].first) != cudaSuccess) continue;
      if (marks_[k].second == kNone) continue;  // a host gap (the offsets round trip)
      stage_ms[marks_[k].second] += ms;
      out.device_ms += ms;
    }
    out.prepare_ms = stage_ms[kPrepare];
    out.scores_ms = stage_ms[kScores];
    out.select_ms = stage_ms[kSelect];
    out.csr_ms = stage_ms[kCsr];
  }

 private:
  bool on_;
  cudaStream_t stream_;
  std::vector<std::pair<cudaEvent_t, Stage>> marks_;
};

}  // namespace

void SetEstimatorPrecision(EstimatorPrecision precision) {
  g_precision.store(static_cast<int>(precision));
}
EstimatorPrecision GetEstimatorPrecision() {
  return static_cast<EstimatorPrecision>(g_precision.load());
}
void SetEstimatorMmaPath(EstimatorMmaPath path) { g_mma_path.store(static_cast<int>(path)); }
EstimatorMmaPath GetEstimatorMmaPath() { return static_cast<EstimatorMmaPath>(g_mma_path.load()); }
void SetEstimatorTuning(const EstimatorTuning& tuning) { g_tuning = tuning; }
EstimatorTuning GetEstimatorTuning() { return g_tuning; }
void SetEstimatorProfile(EstimatorProfile* out) { g_profile = out; }

namespace {

// Both entries: `storage` null leaves the ids to the host mask, else builds them into it.
absl::StatusOr<BlockMask> Estimate(const MaskEstimateParams& p, const DeviceContext& ctx,
                                   DeviceScratch* storage, DeviceMaskCsr* csr) {
  const auto wall_start = std::chrono::steady_clock::now();
  PREFILL_RETURN_IF_ERROR(Validate(p));

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
  shape.rotate_offsets = p.rotate_offsets;
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
  const int64_t num_rows64 = static_cast<int64_t>(p.hq) * p.num_q_blocks;
  if (num_rows64 >= std::numeric_limits<int32_t>::max())
    return Invalid("hq * num_q_blocks over int32");
  const int num_rows = static_cast<int>(num_rows64);

  const EstimatorTuning tuning = g_tuning;
  const int terms =
      GetEstimatorPrecision() == EstimatorPrecision::kBf16 ? 1 : (p.dtype == DType::kBF16 ? 2 : 3);
  // wgmma where the device is sm_90 (the kernel falls back by itself where its code is not
  // sm_90a) and the precision needs no q_lo.
  const bool wgmma =
      ctx.cc_major == 9 && terms <= 2 && GetEstimatorMmaPath() == EstimatorMmaPath::kAuto;
  const int nkb = shape.num_kv_blocks;
  const int words_per_row = (nkb + 31) / 32;
  const int64_t rows_per_q_block = static_cast<int64_t>(shape.group) * shape.rows_per_block;
  // Chunk of query blocks: the larger of the budget and `min_waves` waves of score CTAs
  // (both linear in L), in whole CTAs of rows when that is possible.
  const size_t lse_bytes_per_q_block = static_cast<size_t>(p.hkv) * rows_per_q_block *
                                       (static_cast<size_t>(nkb) + 1) * sizeof(float);
  const int64_t want_q_blocks = (static_cast<int64_t>(std::max(tuning.min_waves, 0)) *
                                     std::max(ctx.sm_count, 1) * kScoreRowsPerCta +
                                 p.hkv * rows_per_q_block - 1) /
                                (p.hkv * rows_per_q_block);
  const int64_t budget_q_blocks =
      static_cast<int64_t>(tuning.lse_budget_bytes / lse_bytes_per_q_block);
  int chunk_q_blocks = static_cast<int>(
      std::clamp<int64_t>(std::max(want_q_blocks, budget_q_blocks), 1, p.num_q_blocks));
  const int cta_q_blocks = kScoreRowsPerCta % rows_per_q_block == 0
                               ? static_cast<int>(kScoreRowsPerCta / rows_per_q_block)
                               : 1;
  if (chunk_q_blocks < p.num_q_blocks && chunk_q_blocks > cta_q_blocks)
    chunk_q_blocks -= chunk_q_blocks % cta_q_blocks;
  const int64_t chunk_rows = chunk_q_blocks * rows_per_q_block;
  const int64_t k_elems = static_cast<int64_t>(p.hkv) * shape.num_strides * p.head_dim;
  const int64_t q_elems = static_cast<int64_t>(p.hkv) * chunk_rows * p.head_dim;
  // Every row holds at most all KV blocks: the CSR's bound before the ids are known.
  const int64_t csr_bound = num_rows64 * nkb;
  const int64_t staging =
      storage
          ? 1
          : std::max<int64_t>(std::min<int64_t>(csr_bound, static_cast<int64_t>(std::max<size_t>(
                                                               tuning.csr_staging_ints, nkb))),
                              1);

  auto carve = [&](ScratchCarver& c) {
    struct {
      uint16_t *k_hi, *k_lo, *q_hi, *q_lo, *kh_hi;
      float *block_lse, *row_lse;
      uint32_t* selected;
      int32_t *counts, *offsets, *kv_blocks;
    } b;
    b.k_hi = c.Take<uint16_t>(k_elems);
    b.k_lo = terms >= 2 ? c.Take<uint16_t>(k_elems) : nullptr;
    b.q_hi = c.Take<uint16_t>(q_elems);
    b.q_lo = terms == 3 ? c.Take<uint16_t>(q_elems) : nullptr;
    b.kh_hi =
        p.heavy_k ? c.Take<uint16_t>(static_cast<int64_t>(p.hkv) * nkb * p.head_dim) : nullptr;
    b.block_lse = c.Take<float>(static_cast<size_t>(p.hkv) * chunk_rows * nkb);
    b.row_lse = c.Take<float>(static_cast<size_t>(p.hkv) * chunk_rows);
    b.selected = c.Take<uint32_t>(static_cast<size_t>(num_rows) * words_per_row);
    b.counts = c.Take<int32_t>(num_rows);
    b.offsets = c.Take<int32_t>(num_rows + 1);
    b.kv_blocks = c.Take<int32_t>(staging);
    return b;
  };
  ScratchCarver plan;
  carve(plan);
  absl::StatusOr<void*> scratch = ctx.scratch->Reserve(plan.bytes(), ctx.stream);
  if (!scratch.ok()) return scratch.status();
  ScratchCarver carver(*scratch);
  const auto buf = carve(carver);

  StageTimer timer(g_profile != nullptr, ctx.stream);
  CUDA_CHECK(timer.Mark(StageTimer::kNone));
  CUDA_CHECK(
      LaunchSplitPooledKeys(p.pooled_k, shape, buf.k_hi, buf.k_lo, ctx.sm_count, ctx.stream));
  if (p.heavy_k) {  // one "stride" per block: the same split, bf16 hi only
    EstimatorShape blocks = shape;
    blocks.num_strides = nkb;
    CUDA_CHECK(
        LaunchSplitPooledKeys(p.heavy_k, blocks, buf.kh_hi, nullptr, ctx.sm_count, ctx.stream));
  }
  CUDA_CHECK(timer.Mark(StageTimer::kPrepare));
  SelectionOptions options;
  options.tau = p.tau;
  options.keep_sink = p.keep_sink;
  options.keep_recent = p.keep_recent;
  options.variant = tuning.select_variant == 0 ? 0 : 1;
  int chunks = 0;
  for (int begin = 0; begin < p.num_q_blocks; begin += chunk_q_blocks, ++chunks) {
    const int end = std::min(begin + chunk_q_blocks, p.num_q_blocks);
    CUDA_CHECK(LaunchGatherSampledQueries(p.dtype, p.q, p.q_row_stride, p.q_head_stride, shape,
                                          begin, end, buf.q_hi, buf.q_lo, ctx.sm_count,
                                          ctx.stream));
    CUDA_CHECK(timer.Mark(StageTimer::kPrepare));
    if (p.head_dim == 64) {
      CUDA_CHECK(LaunchScores<64>(terms, shape.rows_per_block, buf.q_hi, buf.q_lo, buf.k_hi,
                                  buf.k_lo, p.q_block_ids, shape, p.keep_recent, wgmma, begin, end,
                                  buf.block_lse, buf.row_lse, ctx.stream));
    } else {
      CUDA_CHECK(LaunchScores<128>(terms, shape.rows_per_block, buf.q_hi, buf.q_lo, buf.k_hi,
                                   buf.k_lo, p.q_block_ids, shape, p.keep_recent, wgmma, begin, end,
                                   buf.block_lse, buf.row_lse, ctx.stream));
    }
    if (p.heavy_k) {
      CUDA_CHECK(LaunchHeavyScores(buf.q_hi, buf.kh_hi, p.q_block_ids, shape, p.keep_recent, begin,
                                   end, p.scale * 1.4426950408889634f,
                                   std::log2(static_cast<float>(p.stride)), buf.block_lse,
                                   buf.row_lse, ctx.stream));
    }
    CUDA_CHECK(timer.Mark(StageTimer::kScores));
    CUDA_CHECK(LaunchSelectBlocks(buf.block_lse, buf.row_lse, p.q_block_ids, shape, options, begin,
                                  end, buf.selected, words_per_row, buf.counts,
                                  ctx.max_smem_per_block_optin, ctx.stream));
    CUDA_CHECK(timer.Mark(StageTimer::kSelect));
  }
  CUDA_CHECK(LaunchScanRowCounts(buf.counts, num_rows, buf.offsets, ctx.stream));
  const bool one_piece = storage == nullptr && csr_bound <= staging;
  if (one_piece) {
    CUDA_CHECK(LaunchFillCsr(buf.selected, words_per_row, buf.offsets, 0, num_rows, 0,
                             buf.kv_blocks, ctx.stream));
  }
  CUDA_CHECK(timer.Mark(StageTimer::kCsr));

  // The one wait before the ids: row offsets and query block ids (validated here; the kernels
  // clamp ids, so a bad one cannot make them read out of bounds).
  mask.row_offsets.resize(num_rows + 1);
  CUDA_CHECK(cudaMemcpyAsync(mask.row_offsets.data(), buf.offsets, (num_rows + 1) * sizeof(int32_t),
                             cudaMemcpyDeviceToHost, ctx.stream));
  CUDA_CHECK(cudaMemcpyAsync(mask.q_block_ids.data(), p.q_block_ids,
                             p.num_q_blocks * sizeof(int32_t), cudaMemcpyDeviceToHost, ctx.stream));
  CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  for (int i = 0; i < p.num_q_blocks; ++i) {
    const int id = mask.q_block_ids[i];
    if (id < 0 || id >= nkb) {
      return Invalid(absl::StrCat("q_block_ids[", i, "] = ", id, " outside [0, ", nkb, ")"));
    }
    mask.visible_blocks += static_cast<int64_t>(p.hq) * VisibleBlocks(id, nkb, p.causal);
  }
  if (mask.visible_blocks > std::numeric_limits<int32_t>::max()) {
    return Invalid(
        absl::StrCat("mask would hold up to ", mask.visible_blocks, " blocks, over int32 offsets"));
  }
  const int32_t total = mask.row_offsets.back();
  if (total < 0 || total > mask.visible_blocks) {
    return absl::InternalError(absl::StrCat("estimator produced ", total, " blocks, more than the ",
                                            mask.visible_blocks, " visible"));
  }
  if (storage) {
    // Offsets and ids into the caller's storage (the scratch is the next op's); ids of all
    // rows in one fill, no host copy.
    ScratchCarver plan_csr;
    plan_csr.Take<int32_t>(num_rows + 1);
    plan_csr.Take<int32_t>(std::max<int32_t>(total, 1));
    absl::StatusOr<void*> base = storage->Reserve(plan_csr.bytes(), ctx.stream);
    if (!base.ok()) return base.status();
    ScratchCarver carve_csr(*base);
    int32_t* offsets = carve_csr.Take<int32_t>(num_rows + 1);
    int32_t* ids = carve_csr.Take<int32_t>(std::max<int32_t>(total, 1));
    CUDA_CHECK(timer.Mark(StageTimer::kNone));
    CUDA_CHECK(cudaMemcpyAsync(offsets, buf.offsets, (num_rows + 1) * sizeof(int32_t),
                               cudaMemcpyDeviceToDevice, ctx.stream));
    CUDA_CHECK(
        LaunchFillCsr(buf.selected, words_per_row, buf.offsets, 0, num_rows, 0, ids, ctx.stream));
    CUDA_CHECK(timer.Mark(StageTimer::kCsr));
    csr->row_offsets = offsets;
    csr->kv_blocks = ids;
    if (g_profile) CUDA_CHECK(cudaStreamSynchronize(ctx.stream));  // the events must be complete
  } else {
    mask.kv_blocks.resize(total);
    if (one_piece) {
      if (total > 0) {
        CUDA_CHECK(cudaMemcpyAsync(mask.kv_blocks.data(), buf.kv_blocks, total * sizeof(int32_t),
                                   cudaMemcpyDeviceToHost, ctx.stream));
      }
    } else {
      CUDA_CHECK(timer.Mark(StageTimer::kNone));
      // Pieces of whole rows that fit the staging buffer (one row always does: nkb <= staging).
      for (int a = 0; a < num_rows;) {
        int b = a + 1;
        while (b < num_rows && mask.row_offsets[b + 1] - mask.row_offsets[a] <= staging) ++b;
        const int32_t base = mask.row_offsets[a];
        const int32_t n = mask.row_offsets[b] - base;
        CUDA_CHECK(LaunchFillCsr(buf.selected, words_per_row, buf.offsets, a, b, base,
                                 buf.kv_blocks, ctx.stream));
        CUDA_CHECK(timer.Mark(StageTimer::kCsr));
        if (n > 0) {
          CUDA_CHECK(cudaMemcpyAsync(mask.kv_blocks.data() + base, buf.kv_blocks,
                                     n * sizeof(int32_t), cudaMemcpyDeviceToHost, ctx.stream));
        }
        CUDA_CHECK(timer.Mark(StageTimer::kNone));
        a = b;
      }
    }
    CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  }
  if (g_profile) {
    EstimatorProfile prof;
    prof.chunks = chunks;
    prof.terms = terms;
    prof.wgmma = wgmma;
    timer.Fill(prof);
    prof.host_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - wall_start)
            .count();
    *g_profile = prof;
  }
  return mask;
}

}  // namespace

absl::StatusOr<BlockMask> EstimateRoundRobinMask(const MaskEstimateParams& p,
                                                 const DeviceContext& ctx) {
  return Estimate(p, ctx, nullptr, nullptr);
}

absl::StatusOr<BlockMask> EstimateRoundRobinMaskOnDevice(const MaskEstimateParams& p,
                                                         const DeviceContext& ctx,
                                                         DeviceScratch& storage,
                                                         DeviceMaskCsr* csr) {
  return Estimate(p, ctx, &storage, csr);
}

}  // namespace prefill::cuda
