#include "parallel/sparse_kv_exchange.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "parallel/backend_upload.h"

namespace prefill {
namespace {

// Message tags: K and V of each KV head travel as their own messages, straight into place.
int KTag(int kv_head) { return 2 * kv_head; }
int VTag(int kv_head) { return 2 * kv_head + 1; }

// Blocks of `refs` that belong to `kv_head` (refs is sorted by kv_head).
std::span<const KvBlockRef> OfHead(const std::vector<KvBlockRef>& refs, int kv_head) {
  auto lo = std::lower_bound(refs.begin(), refs.end(), kv_head,
                             [](const KvBlockRef& r, int g) { return r.kv_head < g; });
  auto hi = std::upper_bound(refs.begin(), refs.end(), kv_head,
                             [](int g, const KvBlockRef& r) { return g < r.kv_head; });
  return {lo, hi};
}

}  // namespace

std::vector<std::vector<KvBlockRef>> PlanRemoteKvBlocks(const BlockMask& mask,
                                                        const CpLayout& layout, int rank, int hkv) {
  std::vector<std::vector<KvBlockRef>> need(layout.world_size());
  const int group = mask.num_heads / hkv;
  for (int h = 0; h < mask.num_heads; ++h) {
    for (int qb = 0; qb < mask.num_q_blocks; ++qb) {
      for (int32_t block : mask.row(h, qb)) {
        const BlockHome home = layout.HomeOf(block);
        if (home.rank != rank) need[home.rank].push_back({h / group, block});
      }
    }
  }
  for (auto& refs : need) {
    std::sort(refs.begin(), refs.end(), [](const KvBlockRef& a, const KvBlockRef& b) {
      return a.kv_head != b.kv_head ? a.kv_head < b.kv_head : a.block < b.block;
    });
    refs.erase(std::unique(refs.begin(), refs.end()), refs.end());
  }
  return need;
}

absl::StatusOr<std::vector<std::vector<KvBlockRef>>> ExchangeKvRequests(
    Communicator& comm, const std::vector<std::vector<KvBlockRef>>& need_from) {
  const int n = comm.size();
  std::vector<size_t> send_counts(n), send_displs(n), recv_counts(n), recv_displs(n);
  std::vector<size_t> one(n, sizeof(size_t)), offsets(n);
  for (int p = 0; p < n; ++p) {
    send_counts[p] = need_from[p].size() * sizeof(KvBlockRef);
    offsets[p] = p * sizeof(size_t);
  }
  absl::Status s =
      comm.AllToAllV(send_counts.data(), one, offsets, recv_counts.data(), one, offsets);
  if (!s.ok()) return s;

  std::vector<KvBlockRef> send_flat, recv_flat;
  size_t send_total = 0, recv_total = 0;
  for (int p = 0; p < n; ++p) {
    send_displs[p] = send_total;
    send_total += send_counts[p];
    recv_displs[p] = recv_total;
    recv_total += recv_counts[p];
    send_flat.insert(send_flat.end(), need_from[p].begin(), need_from[p].end());
  }
  recv_flat.resize(recv_total / sizeof(KvBlockRef));
  s = comm.AllToAllV(send_flat.data(), send_counts, send_displs, recv_flat.data(), recv_counts,
                     recv_displs);
  if (!s.ok()) return s;

  std::vector<std::vector<KvBlockRef>> send_to(n);
  for (int p = 0; p < n; ++p) {
    const auto* first = recv_flat.data() + recv_displs[p] / sizeof(KvBlockRef);
    send_to[p].assign(first, first + recv_counts[p] / sizeof(KvBlockRef));
  }
  return send_to;
}

absl::StatusOr<std::unique_ptr<SparseKvExchange>> SparseKvExchange::Start(
    Communicator& comm, AttentionBackend& backend, const CpLayout& layout,
    const CpAttentionShard& shard, const void* local_k, const void* local_v,
    std::vector<std::vector<KvBlockRef>> need_from,
    const std::vector<std::vector<KvBlockRef>>& send_to) {
  std::unique_ptr<SparseKvExchange> x(new SparseKvExchange());
  const int n = comm.size(), hkv = shard.hkv, block = layout.block_size();
  const int64_t block_bytes = static_cast<int64_t>(block) * shard.head_dim * DTypeSize(shard.dtype);
  x->block_size_ = block;
  x->row_stride_ = shard.head_dim;

  // Slots: per KV head, the blocks of peer 0, then peer 1, ... in request order.
  x->slot_of_.resize(hkv);
  std::vector<std::vector<int>> first_slot(n, std::vector<int>(hkv, 0));
  for (int g = 0; g < hkv; ++g) {
    int slots = 0;
    for (int p = 0; p < n; ++p) {
      first_slot[p][g] = slots;
      for (const KvBlockRef& ref : OfHead(need_from[p], g)) x->slot_of_[g][ref.block] = slots++;
    }
    x->max_slots_ = std::max(x->max_slots_, slots);
  }
  const int64_t head_bytes = x->max_slots_ * block_bytes;
  for (BackendBuffer* buffer : {&x->remote_k_, &x->remote_v_}) {
    absl::StatusOr<BackendBuffer> b = backend.Allocate(std::max<int64_t>(hkv * head_bytes, 1));
    if (!b.ok()) return b.status();
    *buffer = std::move(*b);
  }
  std::vector<int32_t> positions(static_cast<size_t>(hkv) * x->max_slots_ * block, 0);
  for (int g = 0; g < hkv; ++g) {
    for (const auto& [blk, slot] : x->slot_of_[g]) {
      for (int t = 0; t < block; ++t) {
        positions[(static_cast<size_t>(g) * x->max_slots_ + slot) * block + t] = blk * block + t;
      }
    }
  }
  absl::StatusOr<BackendBuffer> pos = UploadToBackend(backend, std::span<const int32_t>(positions));
  if (!pos.ok()) return pos.status();
  x->remote_pos_ = std::move(*pos);

  auto keep = [&x](absl::StatusOr<std::unique_ptr<PendingTransfer>> t) -> absl::Status {
    if (!t.ok()) return t.status();
    x->transfers_.push_back(std::move(*t));
    return absl::OkStatus();
  };
  for (int p = 0; p < n; ++p) {
    for (int g = 0; g < hkv; ++g) {
      const int64_t count = static_cast<int64_t>(OfHead(need_from[p], g).size());
      if (count == 0) continue;
      const int64_t offset = g * head_bytes + first_slot[p][g] * block_bytes;
      auto* k = static_cast<std::byte*>(x->remote_k_.get()) + offset;
      auto* v = static_cast<std::byte*>(x->remote_v_.get()) + offset;
      PREFILL_RETURN_IF_ERROR(keep(comm.Recv(k, count * block_bytes, p, KTag(g))));
      PREFILL_RETURN_IF_ERROR(keep(comm.Recv(v, count * block_bytes, p, VTag(g))));
    }
  }

  const int64_t local_head_bytes = layout.local_len() * shard.head_dim * DTypeSize(shard.dtype);
  for (int p = 0; p < n; ++p) {
    if (send_to[p].empty()) continue;
    const int64_t count = static_cast<int64_t>(send_to[p].size());
    std::vector<int64_t> offsets;
    offsets.reserve(count);
    for (const KvBlockRef& ref : send_to[p]) {
      const BlockHome home = layout.HomeOf(ref.block);
      if (home.rank != comm.rank() || ref.kv_head < 0 || ref.kv_head >= hkv) {
        return absl::InternalError(absl::StrCat("rank ", comm.rank(), " was asked by rank ", p,
                                                " for block ", ref.block, " of KV head ",
                                                ref.kv_head, ", which it does not hold"));
      }
      offsets.push_back(ref.kv_head * local_head_bytes + home.local_block * block_bytes);
    }
    absl::StatusOr<BackendBuffer> packed = backend.Allocate(2 * count * block_bytes);
    if (!packed.ok()) return packed.status();
    auto* k_packed = static_cast<std::byte*>(packed->get());
    auto* v_packed = k_packed + count * block_bytes;
    for (auto [src, dst] : {std::pair{local_k, k_packed}, std::pair{local_v, v_packed}}) {
      GatherRowsParams gather{src, dst, offsets.data(), count, block_bytes};
      PREFILL_RETURN_IF_ERROR(backend.GatherRows(gather));
    }
    PREFILL_RETURN_IF_ERROR(backend.Synchronize());
    int64_t done = 0;
    for (int g = 0; g < hkv; ++g) {
      const int64_t blocks = static_cast<int64_t>(OfHead(send_to[p], g).size());
      if (blocks == 0) continue;
      const int64_t bytes = blocks * block_bytes;
      PREFILL_RETURN_IF_ERROR(keep(comm.Send(k_packed + done * block_bytes, bytes, p, KTag(g))));
      PREFILL_RETURN_IF_ERROR(keep(comm.Send(v_packed + done * block_bytes, bytes, p, VTag(g))));
      done += blocks;
    }
    x->bytes_sent_ += 2 * count * block_bytes;
    x->send_buffers_.push_back(std::move(*packed));
  }
  // Moving from here on, under the local blocks' attention.
  PREFILL_RETURN_IF_ERROR(comm.StartPosted());
  return x;
}

absl::Status SparseKvExchange::Wait() {
  for (auto& t : transfers_) {
    PREFILL_RETURN_IF_ERROR(t->Wait());
  }
  transfers_.clear();
  return absl::OkStatus();
}

int SparseKvExchange::SlotOf(int kv_head, int32_t block) const {
  auto it = slot_of_[kv_head].find(block);
  return it == slot_of_[kv_head].end() ? -1 : it->second;
}

KvRows SparseKvExchange::remote_rows() const {
  const int64_t rows = static_cast<int64_t>(max_slots_) * block_size_;
  return KvRows{remote_k_.get(),
                remote_v_.get(),
                row_stride_,
                rows * row_stride_,
                static_cast<const int32_t*>(remote_pos_.get()),
                rows,
                static_cast<int>(rows)};
}

}  // namespace prefill
