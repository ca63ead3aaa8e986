#include "parallel/sparse_cp_attention.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <span>
#include <vector>

#include "kernels/status_macros.h"
#include "parallel/backend_upload.h"
#include "parallel/guest_attention.h"
#include "parallel/masked_attention_call.h"
#include "parallel/ring_attention.h"
#include "parallel/sparse_kv_exchange.h"

namespace prefill {
namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

template <typename T>
T* As(const BackendBuffer& b) {
  return static_cast<T*>(b.get());
}

// a. This rank's keys pooled per stride, in local order: [local_len / stride, hkv, d] fp32;
// for rr+heavy also each block's heavy key: [local_len / block, hkv, d] fp32.
struct PooledKeys {
  BackendBuffer strides;
  std::optional<BackendBuffer> heavy;
};

absl::StatusOr<PooledKeys> PoolLocalKeys(AttentionBackend& backend, const CpLayout& layout,
                                         const CpAttentionShard& shard,
                                         const SparseOptions& options) {
  const int64_t row_bytes = static_cast<int64_t>(shard.hkv) * shard.head_dim * sizeof(float);
  absl::StatusOr<BackendBuffer> strides =
      backend.Allocate(layout.local_len() / options.stride * row_bytes);
  if (!strides.ok()) return strides.status();
  PooledKeys out{std::move(*strides), std::nullopt};
  PoolKeysParams pool{shard.dtype,
                      shard.k,
                      static_cast<int64_t>(shard.hkv) * shard.head_dim,
                      static_cast<int>(layout.local_len()),
                      shard.hkv,
                      shard.head_dim,
                      options.stride,
                      As<float>(out.strides)};
  if (options.estimator == MaskEstimator::kRoundRobinHeavy) {
    absl::StatusOr<BackendBuffer> heavy =
        backend.Allocate(layout.local_len() / layout.block_size() * row_bytes);
    if (!heavy.ok()) return heavy.status();
    pool.block_size = layout.block_size();
    pool.heavy = As<float>(*heavy);
    out.heavy = std::move(*heavy);
  }
  PREFILL_RETURN_IF_ERROR(backend.PoolKeys(pool));
  return out;
}

// Rows of `tokens_per_row` tokens each, every rank's chunks in its local order, all-gathered
// into absolute order.
absl::StatusOr<BackendBuffer> GatherRowsInOrder(Communicator& comm, AttentionBackend& backend,
                                                const CpLayout& layout, const BackendBuffer& local,
                                                int64_t tokens_per_row, int64_t row_bytes) {
  const int64_t local_bytes = layout.local_len() / tokens_per_row * row_bytes;
  absl::StatusOr<BackendBuffer> by_rank = backend.Allocate(comm.size() * local_bytes);
  absl::StatusOr<BackendBuffer> absolute = backend.Allocate(comm.size() * local_bytes);
  for (const auto* b : {&by_rank, &absolute}) {
    if (!b->ok()) return b->status();
  }
  PREFILL_RETURN_IF_ERROR(comm.AllGather(local.get(), local_bytes, by_rank->get()));
  // Each rank's slot holds its chunks in local order; put every chunk at its absolute place.
  std::vector<int64_t> src_offsets;
  int64_t chunk_bytes = 0;
  std::vector<std::pair<int64_t, int64_t>> chunk_order;  // (absolute start, source offset)
  for (int r = 0; r < comm.size(); ++r) {
    int64_t offset = r * local_bytes;
    for (const Chunk& c : layout.Chunks(r)) {
      chunk_bytes = c.length / tokens_per_row * row_bytes;
      chunk_order.emplace_back(c.start, offset);
      offset += chunk_bytes;
    }
  }
  std::sort(chunk_order.begin(), chunk_order.end());
  for (const auto& [start, offset] : chunk_order) src_offsets.push_back(offset);
  GatherRowsParams gather{by_rank->get(), absolute->get(), src_offsets.data(),
                          static_cast<int64_t>(src_offsets.size()), chunk_bytes};
  PREFILL_RETURN_IF_ERROR(backend.GatherRows(gather));
  return std::move(*absolute);
}

// a. Pools local keys and all-gathers them (and the heavy keys) into absolute order.
absl::StatusOr<PooledKeys> GatherPooledKeys(Communicator& comm, AttentionBackend& backend,
                                            const CpLayout& layout, const CpAttentionShard& shard,
                                            const SparseOptions& options) {
  const int64_t row_bytes = static_cast<int64_t>(shard.hkv) * shard.head_dim * sizeof(float);
  absl::StatusOr<PooledKeys> local = PoolLocalKeys(backend, layout, shard, options);
  if (!local.ok()) return local.status();
  PREFILL_RETURN_IF_ERROR(backend.Synchronize());
  absl::StatusOr<BackendBuffer> strides =
      GatherRowsInOrder(comm, backend, layout, local->strides, options.stride, row_bytes);
  if (!strides.ok()) return strides.status();
  PooledKeys out{std::move(*strides), std::nullopt};
  if (local->heavy) {
    absl::StatusOr<BackendBuffer> heavy =
        GatherRowsInOrder(comm, backend, layout, *local->heavy, layout.block_size(), row_bytes);
    if (!heavy.ok()) return heavy.status();
    out.heavy = std::move(*heavy);
  }
  return out;
}

// Token-major [rows, hkv, d] -> head-major [hkv, rows, d], so a (KV head, block) is contiguous.
absl::StatusOr<BackendBuffer> ToHeadMajor(AttentionBackend& backend, const void* src, int64_t rows,
                                          int hkv, int head_dim, DType dtype) {
  const int64_t row_bytes = static_cast<int64_t>(head_dim) * DTypeSize(dtype);
  absl::StatusOr<BackendBuffer> dst = backend.Allocate(rows * hkv * row_bytes);
  if (!dst.ok()) return dst.status();
  std::vector<int64_t> offsets(rows * hkv);
  for (int g = 0; g < hkv; ++g) {
    for (int64_t r = 0; r < rows; ++r) offsets[g * rows + r] = (r * hkv + g) * row_bytes;
  }
  GatherRowsParams gather{src, dst->get(), offsets.data(), rows * hkv, row_bytes};
  PREFILL_RETURN_IF_ERROR(backend.GatherRows(gather));
  return dst;
}

// Splits the mask into the blocks this rank holds (ids: local blocks) and the remote ones
// (ids: slots of the exchange's compact per-KV-head rows).
void SplitMask(const BlockMask& mask, const CpLayout& layout, int rank, int hkv,
               const SparseKvExchange& exchange, HostCsr* local, HostCsr* remote) {
  const int group = mask.num_heads / hkv;
  for (int h = 0; h < mask.num_heads; ++h) {
    for (int qb = 0; qb < mask.num_q_blocks; ++qb) {
      for (int32_t block : mask.row(h, qb)) {
        const BlockHome home = layout.HomeOf(block);
        if (home.rank == rank) {
          local->ids.push_back(home.local_block);
        } else {
          remote->ids.push_back(exchange.SlotOf(h / group, block));
        }
      }
      local->offsets.push_back(static_cast<int32_t>(local->ids.size()));
      remote->offsets.push_back(static_cast<int32_t>(remote->ids.size()));
    }
  }
  // The kernel wants ascending ids per row; local blocks of two zigzag chunks already are,
  // remote slots follow peer order, so sort each row.
  for (HostCsr* csr : {local, remote}) {
    for (size_t r = 0; r + 1 < csr->offsets.size(); ++r) {
      std::sort(csr->ids.begin() + csr->offsets[r], csr->ids.begin() + csr->offsets[r + 1]);
    }
  }
}

// True when local block i is absolute block i (one rank, positions in order): no exchange,
// and the estimated mask's ids index the local K/V rows as they are.
bool AllBlocksLocalInOrder(const Communicator& comm, std::span<const int32_t> positions) {
  if (comm.size() != 1) return false;
  for (size_t i = 0; i < positions.size(); ++i) {
    if (positions[i] != static_cast<int32_t>(i)) return false;
  }
  return true;
}

// Opens the options' timer span `phase` (no timer: nothing).
absl::Status EnterPhase(const SparseOptions& options, const char* phase) {
  return options.timer ? options.timer->Enter(phase, options.timer_layer) : absl::OkStatus();
}

// b.-e. on one rank: the mask in backend memory, the attention on the token-major K/V.
absl::Status AttendOnOneRank(AttentionBackend& backend, const CpLayout& layout,
                             const CpAttentionShard& shard, const SparseOptions& options,
                             const MaskEstimateParams& est, std::span<const int32_t> positions,
                             const CpAttentionOutput& out, SparseCpResult& result,
                             Clock::time_point t0) {
  CpAttentionStats& stats = result.stats;
  absl::StatusOr<BackendBlockMask> mask = backend.EstimateMaskInBackend(est);
  if (!mask.ok()) return mask.status();
  stats.selected_blocks = mask->selected_blocks();
  stats.computed_blocks = stats.selected_blocks;
  stats.visible_blocks = mask->host.visible_blocks;
  stats.estimate_seconds = Seconds(t0);
  PREFILL_RETURN_IF_ERROR(EnterPhase(options, "attention"));

  t0 = Clock::now();
  const int lq = static_cast<int>(layout.local_len());
  absl::StatusOr<BackendBuffer> q_pos = UploadToBackend(backend, positions);
  if (!q_pos.ok()) return q_pos.status();
  const int64_t kv_row = static_cast<int64_t>(shard.hkv) * shard.head_dim;
  const KvRows rows{shard.k, shard.v, kv_row, shard.head_dim, As<int32_t>(*q_pos), 0, lq};
  absl::Status s = RunMaskedAttentionInBackend(backend, shard, As<int32_t>(*q_pos), lq,
                                               layout.block_size(), rows, mask->row_offsets,
                                               mask->kv_blocks, out.o, out.lse, out.o_dtype);
  if (s.ok()) s = backend.Synchronize();
  if (!s.ok()) return s;
  stats.attention_seconds = Seconds(t0);
  result.mask = std::move(mask->host);
  if (options.mask_ids_on_host) {
    result.mask.kv_blocks.resize(stats.selected_blocks);
    s = backend.CopyToHost(result.mask.kv_blocks.data(), mask->kv_blocks,
                           stats.selected_blocks * sizeof(int32_t));
  }
  return s;
}

// True when the mask of every rank together selects at least `dense_above` of the visible
// blocks: every rank takes the same decision from the same sums.
absl::StatusOr<bool> DenseEnough(Communicator& comm, const CpAttentionStats& stats,
                                 double dense_above) {
  double blocks[2] = {static_cast<double>(stats.selected_blocks),
                      static_cast<double>(stats.visible_blocks)};
  PREFILL_RETURN_IF_ERROR(comm.AllReduceSum(blocks, 2));
  return blocks[1] > 0 && blocks[0] >= dense_above * blocks[1];
}

// The remote blocks' partial result, merged into out by log-sum-exp.
absl::Status AttendRemoteBlocks(AttentionBackend& backend, const CpAttentionShard& shard, int lq,
                                int block, const int32_t* q_pos, const KvRows& remote_rows,
                                const HostCsr& remote_mask, const CpAttentionOutput& out) {
  const size_t entries = static_cast<size_t>(lq) * shard.hq;
  absl::StatusOr<BackendBuffer> part_o = backend.Allocate(entries * shard.head_dim * sizeof(float));
  absl::StatusOr<BackendBuffer> part_lse = backend.Allocate(entries * sizeof(float));
  if (!part_o.ok()) return part_o.status();
  if (!part_lse.ok()) return part_lse.status();
  absl::Status s =
      RunMaskedAttention(backend, shard, q_pos, lq, block, remote_rows, remote_mask,
                         As<float>(*part_o), As<float>(*part_lse), /*empty_rows_lse_only=*/true);
  if (!s.ok()) return s;
  LseMergeParams merge{out.o,
                       out.lse,
                       As<float>(*part_o),
                       As<float>(*part_lse),
                       static_cast<int64_t>(entries),
                       shard.head_dim};
  if (s = backend.MergeByLse(merge); !s.ok()) return s;
  return backend.Synchronize();
}

}  // namespace

absl::StatusOr<SparseCpResult> SparseCpAttention(Communicator& comm, AttentionBackend& backend,
                                                 const CpLayout& layout,
                                                 const CpAttentionShard& shard,
                                                 const SparseOptions& options,
                                                 const CpAttentionOutput& out) {
  const int rank = comm.rank();
  const int lq = static_cast<int>(layout.local_len());
  const int block = layout.block_size();
  SparseCpResult result;
  CpAttentionStats& stats = result.stats;

  // a-b. Estimate.
  PREFILL_RETURN_IF_ERROR(EnterPhase(options, "mask_estimation"));
  auto t0 = Clock::now();
  const std::vector<int32_t> positions = layout.Positions(rank);
  const bool one_rank = AllBlocksLocalInOrder(comm, positions);
  if (out.o_dtype != DType::kF32 && !one_rank) {
    return absl::InvalidArgumentError(
        "SparseCpAttention: partial outputs merge in fp32: o must be f32");
  }
  // One rank: its pooled keys are already in absolute order, with nothing to gather (and no
  // wait for the pooling).
  absl::StatusOr<PooledKeys> pooled = one_rank
                                          ? PoolLocalKeys(backend, layout, shard, options)
                                          : GatherPooledKeys(comm, backend, layout, shard, options);
  if (!pooled.ok()) return pooled.status();
  const std::vector<int32_t> q_block_ids = layout.QueryBlockIds(rank);
  absl::StatusOr<BackendBuffer> q_blocks =
      UploadToBackend(backend, std::span<const int32_t>(q_block_ids));
  if (!q_blocks.ok()) return q_blocks.status();
  MaskEstimateParams est;
  est.dtype = shard.dtype;
  est.q = shard.q;
  est.q_row_stride = static_cast<int64_t>(shard.hq) * shard.head_dim;
  est.q_head_stride = shard.head_dim;
  est.q_block_ids = As<int32_t>(*q_blocks);
  est.num_q_blocks = static_cast<int>(q_block_ids.size());
  est.pooled_k = As<float>(pooled->strides);
  est.heavy_k = pooled->heavy ? As<float>(*pooled->heavy) : nullptr;
  est.seq_len = static_cast<int>(layout.seq_len());
  est.hq = shard.hq;
  est.hkv = shard.hkv;
  est.head_dim = shard.head_dim;
  est.block_size = block;
  est.stride = options.stride;
  est.tau = options.tau;
  est.causal = shard.causal;
  est.keep_sink = options.keep_sink;
  est.keep_recent = options.keep_recent;
  est.scale = shard.scale;
  if (one_rank) {
    if (absl::Status s =
            AttendOnOneRank(backend, layout, shard, options, est, positions, out, result, t0);
        !s.ok()) {
      return s;
    }
    return result;
  }
  absl::StatusOr<BlockMask> mask = backend.EstimateMask(est);
  if (!mask.ok()) return mask.status();
  result.mask = std::move(*mask);
  stats.selected_blocks = result.mask.selected_blocks();
  stats.visible_blocks = result.mask.visible_blocks;
  stats.estimate_seconds = Seconds(t0);
  PREFILL_RETURN_IF_ERROR(EnterPhase(options, "attention"));
  absl::StatusOr<bool> dense = DenseEnough(comm, stats, options.dense_above);
  if (!dense.ok()) return dense.status();
  if (*dense) {
    absl::StatusOr<CpAttentionStats> ring = RingAttention(comm, backend, layout, shard, out);
    if (!ring.ok()) return ring.status();
    ring->estimate_seconds = stats.estimate_seconds;
    ring->ran_dense = true;
    result.stats = *ring;
    return result;
  }

  // Balance: every rank plans the same moves from the same gathered counts.
  t0 = Clock::now();
  stats.computed_blocks = stats.selected_blocks;
  BlockMask kept;  // result.mask less the entries moved away (result.mask stays the estimate)
  const BlockMask* own = &result.mask;
  std::unique_ptr<GuestAttention> guests;
  if (options.balance == BalanceMode::kAuto) {
    absl::StatusOr<SparseBalancePlan> plan =
        AgreeOnBalancePlan(comm, layout, result.mask, shard.hq, shard.hkv);
    if (!plan.ok()) return plan.status();
    stats.computed_blocks = plan->computed[rank];
    stats.balance_moves = static_cast<int64_t>(plan->moves.size());
    stats.balance_plan_hash = plan->Hash();
    if (!plan->moves.empty()) {
      kept = WithoutMovedEntries(result.mask, layout, rank, shard.hkv, *plan);
      own = &kept;
      absl::StatusOr<std::unique_ptr<GuestAttention>> exchanged =
          GuestAttention::Exchange(comm, backend, layout, shard, result.mask, *plan);
      if (!exchanged.ok()) return exchanged.status();
      guests = std::move(*exchanged);
    }
  }

  // c-d. Plan and post the exchange of what this rank computes itself.
  std::vector<std::vector<KvBlockRef>> need_from =
      PlanRemoteKvBlocks(*own, layout, rank, shard.hkv);
  absl::StatusOr<std::vector<std::vector<KvBlockRef>>> send_to =
      ExchangeKvRequests(comm, need_from);
  if (!send_to.ok()) return send_to.status();
  absl::StatusOr<BackendBuffer> local_k =
      ToHeadMajor(backend, shard.k, lq, shard.hkv, shard.head_dim, shard.dtype);
  absl::StatusOr<BackendBuffer> local_v =
      ToHeadMajor(backend, shard.v, lq, shard.hkv, shard.head_dim, shard.dtype);
  if (!local_k.ok()) return local_k.status();
  if (!local_v.ok()) return local_v.status();
  absl::StatusOr<std::unique_ptr<SparseKvExchange>> exchange = SparseKvExchange::Start(
      comm, backend, layout, shard, local_k->get(), local_v->get(), std::move(need_from), *send_to);
  if (!exchange.ok()) return exchange.status();
  stats.kv_bytes_sent = (*exchange)->bytes_sent();
  if (guests) {
    PREFILL_RETURN_IF_ERROR(guests->PostPartialReceives());
  }
  stats.exchange_seconds = Seconds(t0);

  // e. Guests first (their ranks wait for the partials), then local blocks while remote ones
  // travel.
  t0 = Clock::now();
  absl::StatusOr<BackendBuffer> q_pos =
      UploadToBackend(backend, std::span<const int32_t>(positions));
  if (!q_pos.ok()) return q_pos.status();
  if (guests) {
    absl::Status s = guests->ComputeAndReturn(local_k->get(), local_v->get(), As<int32_t>(*q_pos));
    if (!s.ok()) return s;
  }
  HostCsr local_mask, remote_mask;
  SplitMask(*own, layout, rank, shard.hkv, **exchange, &local_mask, &remote_mask);
  const KvRows local_rows{local_k->get(),
                          local_v->get(),
                          shard.head_dim,
                          static_cast<int64_t>(lq) * shard.head_dim,
                          As<int32_t>(*q_pos),
                          0,
                          lq};
  absl::Status s = RunMaskedAttention(backend, shard, As<int32_t>(*q_pos), lq, block, local_rows,
                                      local_mask, out.o, out.lse);
  if (!s.ok()) return s;
  stats.attention_seconds = Seconds(t0);

  t0 = Clock::now();
  if (s = (*exchange)->Wait(); !s.ok()) return s;
  stats.exchange_seconds += Seconds(t0);

  t0 = Clock::now();
  if (remote_mask.nnz() > 0) {
    s = AttendRemoteBlocks(backend, shard, lq, block, As<int32_t>(*q_pos),
                           (*exchange)->remote_rows(), remote_mask, out);
    if (!s.ok()) return s;
  }
  if (guests) {
    if (s = guests->MergeInto(out); !s.ok()) return s;
    stats.balance_bytes_sent = guests->bytes_sent();
  }
  stats.attention_seconds += Seconds(t0);
  return result;
}

}  // namespace prefill
