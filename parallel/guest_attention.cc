#include "parallel/guest_attention.h"

#include <algorithm>
#include <span>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "parallel/masked_attention_call.h"

namespace prefill {
namespace {

// Tags of the partial results: above the KV exchange's (2 per KV head) and within the 32767
// every MPI guarantees.
constexpr int kPartialOTag = 30000, kPartialLseTag = 30001;

BackendBuffer NoBuffer() {
  return BackendBuffer(nullptr, [](void*) {});
}

absl::StatusOr<BackendBuffer> AllocateAtLeastOne(AttentionBackend& backend, int64_t bytes) {
  return backend.Allocate(static_cast<size_t>(std::max<int64_t>(bytes, 1)));
}

std::byte* At(const BackendBuffer& b, int64_t offset) {
  return static_cast<std::byte*>(b.get()) + offset;
}

// Byte counts and displacements of an AllToAllV, per peer.
struct Layout {
  std::vector<size_t> counts, displs;
  size_t total = 0;
};

template <typename BytesOf>
Layout PeerLayout(const std::vector<std::vector<BalanceMove>>& by_peer, BytesOf bytes_of) {
  Layout l;
  for (const std::vector<BalanceMove>& moves : by_peer) {
    size_t bytes = 0;
    for (const BalanceMove& m : moves) bytes += bytes_of(m);
    l.displs.push_back(l.total);
    l.counts.push_back(bytes);
    l.total += bytes;
  }
  return l;
}

}  // namespace

absl::StatusOr<SparseBalancePlan> AgreeOnBalancePlan(Communicator& comm, const CpLayout& layout,
                                                     const BlockMask& mask, int hq, int hkv) {
  const SegmentCosts mine = CountSegments(mask, layout, hkv);
  std::vector<SegmentCosts> all(comm.size(), SegmentCosts{hkv, mine.q_blocks, comm.size(), {}});
  std::vector<int32_t> gathered(mine.counts.size() * comm.size());
  if (absl::Status s =
          comm.AllGather(mine.counts.data(), mine.counts.size() * sizeof(int32_t), gathered.data());
      !s.ok()) {
    return s;
  }
  for (int r = 0; r < comm.size(); ++r) {
    auto first = gathered.begin() + static_cast<int64_t>(r * mine.counts.size());
    all[r].counts.assign(first, first + static_cast<int64_t>(mine.counts.size()));
  }
  return PlanSparseBalance(all, BalancePlanOptions{.min_cost = hq / hkv});
}

BlockMask WithoutMovedEntries(const BlockMask& mask, const CpLayout& layout, int rank, int hkv,
                              const SparseBalancePlan& plan) {
  // moved[g * q_blocks + qb][o]: the segment (g, qb, o) moved to rank o.
  std::vector<std::vector<bool>> moved(hkv * mask.num_q_blocks,
                                       std::vector<bool>(layout.world_size(), false));
  for (const BalanceMove& m : plan.moves) {
    if (m.from == rank) moved[m.kv_head * mask.num_q_blocks + m.q_block][m.to] = true;
  }
  BlockMask kept = mask;
  kept.kv_blocks.clear();
  kept.row_offsets.assign(1, 0);
  const int group = mask.num_heads / hkv;
  for (int h = 0; h < mask.num_heads; ++h) {
    for (int qb = 0; qb < mask.num_q_blocks; ++qb) {
      const std::vector<bool>& to = moved[(h / group) * mask.num_q_blocks + qb];
      for (int32_t block : mask.row(h, qb)) {
        if (!to[layout.HomeOf(block).rank]) kept.kv_blocks.push_back(block);
      }
      kept.row_offsets.push_back(static_cast<int32_t>(kept.kv_blocks.size()));
    }
  }
  return kept;
}

int64_t GuestAttention::q_segment_bytes() const {
  return static_cast<int64_t>(group()) * layout_.block_size() * shard_.head_dim *
         DTypeSize(shard_.dtype);
}

absl::StatusOr<std::unique_ptr<GuestAttention>> GuestAttention::Exchange(
    Communicator& comm, AttentionBackend& backend, const CpLayout& layout,
    const CpAttentionShard& shard, const BlockMask& mask, const SparseBalancePlan& plan) {
  std::unique_ptr<GuestAttention> x(new GuestAttention(comm, backend, layout, shard));
  for (int p = 0; p < comm.size(); ++p) {
    x->outgoing_.push_back(plan.MovesBetween(comm.rank(), p));
    x->incoming_.push_back(plan.MovesBetween(p, comm.rank()));
  }
  PREFILL_RETURN_IF_ERROR(x->ExchangeMaskRows(mask));
  PREFILL_RETURN_IF_ERROR(x->ExchangeQueryRows());
  return x;
}

// Per segment, per head of its group: the number of blocks, then the blocks (absolute ids).
absl::Status GuestAttention::ExchangeMaskRows(const BlockMask& mask) {
  const int g_size = group();
  auto bytes_of = [g_size](const BalanceMove& m) {
    return (g_size + static_cast<size_t>(m.cost)) * sizeof(int32_t);
  };
  const Layout send = PeerLayout(outgoing_, bytes_of), recv = PeerLayout(incoming_, bytes_of);
  std::vector<int32_t> rows;
  rows.reserve(send.total / sizeof(int32_t));
  for (int p = 0; p < comm_.size(); ++p) {
    for (const BalanceMove& m : outgoing_[p]) {
      for (int j = 0; j < g_size; ++j) {
        const size_t count_at = rows.size();
        rows.push_back(0);
        for (int32_t block : mask.row(m.kv_head * g_size + j, m.q_block)) {
          if (layout_.HomeOf(block).rank == p) rows.push_back(block);
        }
        rows[count_at] = static_cast<int32_t>(rows.size() - count_at - 1);
      }
    }
  }
  if (rows.size() * sizeof(int32_t) != send.total) {
    return absl::InternalError(
        absl::StrCat("rank ", comm_.rank(), ": the balance plan's costs do not match its mask"));
  }
  guest_rows_.resize(recv.total / sizeof(int32_t));
  for (size_t displ : recv.displs) guest_rows_start_.push_back(displ / sizeof(int32_t));
  bytes_sent_ += static_cast<int64_t>(send.total - send.counts[comm_.rank()]);
  return comm_.AllToAllV(rows.data(), send.counts, send.displs, guest_rows_.data(), recv.counts,
                         recv.displs);
}

// Q rows of a segment: `block` rows of the group's heads, [block][group][head_dim].
absl::Status GuestAttention::ExchangeQueryRows() {
  const int64_t seg = q_segment_bytes();
  auto bytes_of = [seg](const BalanceMove&) { return static_cast<size_t>(seg); };
  const Layout send = PeerLayout(outgoing_, bytes_of), recv = PeerLayout(incoming_, bytes_of);
  const int block = layout_.block_size();
  const int64_t elem = DTypeSize(shard_.dtype);
  std::vector<int64_t> offsets;
  for (const std::vector<BalanceMove>& moves : outgoing_) {
    for (const BalanceMove& m : moves) {
      for (int t = 0; t < block; ++t) {
        const int64_t row = static_cast<int64_t>(m.q_block) * block + t;
        offsets.push_back(((row * shard_.hq) + m.kv_head * group()) * shard_.head_dim * elem);
      }
    }
  }
  absl::StatusOr<BackendBuffer> packed =
      AllocateAtLeastOne(backend_, static_cast<int64_t>(send.total));
  absl::StatusOr<BackendBuffer> received =
      AllocateAtLeastOne(backend_, static_cast<int64_t>(recv.total));
  if (!packed.ok()) return packed.status();
  if (!received.ok()) return received.status();
  GatherRowsParams gather{shard_.q, packed->get(), offsets.data(),
                          static_cast<int64_t>(offsets.size()),
                          static_cast<int64_t>(group()) * shard_.head_dim * elem};
  PREFILL_RETURN_IF_ERROR(backend_.GatherRows(gather));
  PREFILL_RETURN_IF_ERROR(backend_.Synchronize());
  if (absl::Status s = comm_.AllToAllV(packed->get(), send.counts, send.displs, received->get(),
                                       recv.counts, recv.displs);
      !s.ok()) {
    return s;
  }
  bytes_sent_ += static_cast<int64_t>(send.total - send.counts[comm_.rank()]);
  guest_q_ = std::move(*received);
  for (size_t displ : recv.displs) guest_q_start_.push_back(static_cast<int64_t>(displ));
  return absl::OkStatus();
}

absl::Status GuestAttention::Keep(absl::StatusOr<std::unique_ptr<PendingTransfer>> transfer,
                                  std::vector<std::unique_ptr<PendingTransfer>>& into) {
  if (!transfer.ok()) return transfer.status();
  into.push_back(std::move(*transfer));
  return absl::OkStatus();
}

absl::Status GuestAttention::PostPartialReceives() {
  const int64_t chunk_o = static_cast<int64_t>(group()) * shard_.head_dim * sizeof(float);
  const int64_t chunk_lse = static_cast<int64_t>(group()) * sizeof(float);
  for (int p = 0; p < comm_.size(); ++p) {
    recv_o_.push_back(NoBuffer());
    recv_lse_.push_back(NoBuffer());
    if (outgoing_[p].empty()) continue;
    const int64_t rows = static_cast<int64_t>(outgoing_[p].size()) * layout_.block_size();
    absl::StatusOr<BackendBuffer> o = backend_.Allocate(rows * chunk_o);
    absl::StatusOr<BackendBuffer> lse = backend_.Allocate(rows * chunk_lse);
    if (!o.ok()) return o.status();
    if (!lse.ok()) return lse.status();
    PREFILL_RETURN_IF_ERROR(Keep(comm_.Recv(o->get(), rows * chunk_o, p, kPartialOTag), receives_));
    if (absl::Status s =
            Keep(comm_.Recv(lse->get(), rows * chunk_lse, p, kPartialLseTag), receives_);
        !s.ok()) {
      return s;
    }
    recv_o_[p] = std::move(*o);
    recv_lse_[p] = std::move(*lse);
  }
  return absl::OkStatus();
}

absl::Status GuestAttention::AttendGuestRun(int peer, size_t first, size_t last,
                                            const void* local_k, const void* local_v,
                                            const int32_t* local_pos, const int32_t* q_pos) {
  const int g_size = group(), block = layout_.block_size(),
            segments = static_cast<int>(last - first);
  const int kv_head = incoming_[peer][first].kv_head;
  // The received rows of each (segment, head): spans into guest_rows_, checked against the plan.
  std::vector<std::vector<std::span<const int32_t>>> rows(g_size);
  size_t at = guest_rows_start_[peer];
  for (size_t i = 0; i < first; ++i) at += g_size + incoming_[peer][i].cost;
  for (size_t i = first; i < last; ++i) {
    int64_t entries = 0;
    for (int j = 0; j < g_size; ++j) {
      const int32_t count = guest_rows_[at];
      rows[j].emplace_back(guest_rows_.data() + at + 1, static_cast<size_t>(std::max(count, 0)));
      entries += count;
      at += 1 + std::max(count, 0);
    }
    if (entries != incoming_[peer][i].cost) {
      return absl::InternalError(
          absl::StrCat("rank ", peer, " sent rank ", comm_.rank(), " ", entries,
                       " mask entries for a segment the plan costs ", incoming_[peer][i].cost));
    }
  }
  HostCsr mask;  // row = head of the group * segments + segment
  for (int j = 0; j < g_size; ++j) {
    for (std::span<const int32_t> row : rows[j]) {
      for (int32_t b : row) {
        const BlockHome home = layout_.HomeOf(b);
        if (home.rank != comm_.rank()) {
          return absl::InternalError(absl::StrCat("rank ", peer, " asked rank ", comm_.rank(),
                                                  " to attend block ", b,
                                                  ", which it does not hold"));
        }
        mask.ids.push_back(home.local_block);
      }
      std::sort(mask.ids.begin() + mask.offsets.back(), mask.ids.end());
      mask.offsets.push_back(static_cast<int32_t>(mask.ids.size()));
    }
  }
  // One KV head's K/V and its group of query heads: a GQA call of hkv 1.
  const int lq = static_cast<int>(layout_.local_len());
  const int64_t head_bytes = static_cast<int64_t>(lq) * shard_.head_dim * DTypeSize(shard_.dtype);
  const KvRows kv{static_cast<const std::byte*>(local_k) + kv_head * head_bytes,
                  static_cast<const std::byte*>(local_v) + kv_head * head_bytes,
                  shard_.head_dim,
                  static_cast<int64_t>(lq) * shard_.head_dim,
                  local_pos,
                  0,
                  lq};
  CpAttentionShard guests = shard_;
  guests.q = At(guest_q_, guest_q_start_[peer] + static_cast<int64_t>(first) * q_segment_bytes());
  guests.hq = g_size;
  guests.hkv = 1;
  const int64_t row0 = static_cast<int64_t>(first) * block;
  return RunMaskedAttention(
      backend_, guests, q_pos + row0, segments * block, block, kv, mask,
      reinterpret_cast<float*>(At(send_o_[peer], row0 * g_size * shard_.head_dim * 4)),
      reinterpret_cast<float*>(At(send_lse_[peer], row0 * g_size * 4)));
}

absl::Status GuestAttention::ComputeAndReturn(const void* local_k, const void* local_v,
                                              const int32_t* local_pos) {
  const int block = layout_.block_size();
  for (int p = 0; p < comm_.size(); ++p) {
    send_o_.push_back(NoBuffer());
    send_lse_.push_back(NoBuffer());
    const std::vector<BalanceMove>& moves = incoming_[p];
    if (moves.empty()) continue;
    const int64_t rows = static_cast<int64_t>(moves.size()) * block;
    const int64_t o_bytes = rows * group() * shard_.head_dim * sizeof(float),
                  lse_bytes = rows * group() * sizeof(float);
    absl::StatusOr<BackendBuffer> o = backend_.Allocate(o_bytes);
    absl::StatusOr<BackendBuffer> lse = backend_.Allocate(lse_bytes);
    if (!o.ok()) return o.status();
    if (!lse.ok()) return lse.status();
    send_o_[p] = std::move(*o);
    send_lse_[p] = std::move(*lse);
    // The guests' query positions, from the peer's layout.
    const std::vector<int32_t> peer_pos = layout_.Positions(p);
    std::vector<int32_t> q_pos;
    for (const BalanceMove& m : moves) {
      q_pos.insert(q_pos.end(), peer_pos.begin() + m.q_block * block,
                   peer_pos.begin() + (m.q_block + 1) * block);
    }
    absl::StatusOr<BackendBuffer> q_pos_dev = backend_.Allocate(q_pos.size() * sizeof(int32_t));
    if (!q_pos_dev.ok()) return q_pos_dev.status();
    if (absl::Status s =
            backend_.CopyToBackend(q_pos_dev->get(), q_pos.data(), q_pos.size() * sizeof(int32_t));
        !s.ok()) {
      return s;
    }
    // Segments are sorted by KV head: one attention call per run of one KV head.
    for (size_t first = 0, last = 0; first < moves.size(); first = last) {
      while (last < moves.size() && moves[last].kv_head == moves[first].kv_head) ++last;
      if (absl::Status s = AttendGuestRun(p, first, last, local_k, local_v, local_pos,
                                          static_cast<const int32_t*>(q_pos_dev->get()));
          !s.ok()) {
        return s;
      }
    }
    PREFILL_RETURN_IF_ERROR(Keep(comm_.Send(send_o_[p].get(), o_bytes, p, kPartialOTag), sends_));
    if (absl::Status s = Keep(comm_.Send(send_lse_[p].get(), lse_bytes, p, kPartialLseTag), sends_);
        !s.ok()) {
      return s;
    }
    bytes_sent_ += o_bytes + lse_bytes;
  }
  return absl::OkStatus();
}

// Merges the peer's partial into out, segment by segment: a segment's partial is
// [block rows][group heads] contiguous, which in out are runs of `group` heads, hq apart.
// Nothing else of out is read or written (a full-size staging buffer per peer would cost
// more than the attention of a sparse segment).
absl::Status GuestAttention::MergeFrom(int peer, const CpAttentionOutput& out) {
  const int block = layout_.block_size(), g_size = group();
  const int64_t seg_entries = static_cast<int64_t>(block) * g_size;
  const auto* o = static_cast<const float*>(recv_o_[peer].get());
  const auto* lse = static_cast<const float*>(recv_lse_[peer].get());
  for (size_t i = 0; i < outgoing_[peer].size(); ++i) {
    const BalanceMove& m = outgoing_[peer][i];
    const int64_t first = static_cast<int64_t>(m.q_block) * block * shard_.hq +
                          static_cast<int64_t>(m.kv_head) * g_size;
    const int64_t part = static_cast<int64_t>(i) * seg_entries;
    LseMergeParams merge{.o_acc = out.o + first * shard_.head_dim,
                         .lse_acc = out.lse + first,
                         .o_part = o + part * shard_.head_dim,
                         .lse_part = lse + part,
                         .rows = seg_entries,
                         .head_dim = shard_.head_dim,
                         .run = g_size,
                         .acc_run_stride = shard_.hq};
    PREFILL_RETURN_IF_ERROR(backend_.MergeByLse(merge));
  }
  return absl::OkStatus();
}

absl::Status GuestAttention::MergeInto(const CpAttentionOutput& out) {
  for (auto& t : receives_) {
    PREFILL_RETURN_IF_ERROR(t->Wait());
  }
  receives_.clear();
  for (int p = 0; p < comm_.size(); ++p) {
    if (!outgoing_[p].empty()) PREFILL_RETURN_IF_ERROR(MergeFrom(p, out));
  }
  PREFILL_RETURN_IF_ERROR(backend_.Synchronize());
  for (auto& t : sends_) {
    PREFILL_RETURN_IF_ERROR(t->Wait());
  }
  sends_.clear();
  return absl::OkStatus();
}

}  // namespace prefill
