#include "parallel/ring_attention.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <memory>
#include <span>
#include <vector>

#include "kernels/status_macros.h"
#include "parallel/backend_upload.h"
#include "parallel/masked_attention_call.h"

namespace prefill {
namespace {

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

// Every KV block of `kv_positions` whose first key a query block can see: one head's rows
// (every head has the same).
HostCsr RingStepHeadMask(const std::vector<int32_t>& q_positions,
                         const std::vector<int32_t>& kv_positions, int block, bool causal) {
  const int q_blocks = static_cast<int>(q_positions.size()) / block;
  const int kv_blocks = static_cast<int>(kv_positions.size()) / block;
  HostCsr mask;
  mask.offsets.reserve(q_blocks + 1);
  mask.ids.reserve(static_cast<size_t>(q_blocks) * (causal ? kv_blocks / 2 + 1 : kv_blocks));
  for (int qb = 0; qb < q_blocks; ++qb) {
    const int32_t last_query = q_positions[(qb + 1) * block - 1];
    for (int j = 0; j < kv_blocks; ++j) {
      if (!causal || kv_positions[j * block] <= last_query) mask.ids.push_back(j);
    }
    mask.offsets.push_back(static_cast<int32_t>(mask.ids.size()));
  }
  return mask;
}

// `head`'s rows for each of hq heads, in backend memory: one head's ids go up and the backend
// copies them per head. (The whole mask through the host was 16.8M ids at 128K tokens, ~50 ms
// of building and uploading a request.)
absl::Status UploadForEveryHead(AttentionBackend& backend, const HostCsr& head, int hq,
                                RingAttentionPlan::Step& step) {
  const size_t q_blocks = head.offsets.size() - 1, per_head = head.ids.size();
  std::vector<int32_t> offsets(hq * q_blocks + 1, 0);
  for (size_t h = 0; h < static_cast<size_t>(hq); ++h) {
    for (size_t qb = 0; qb < q_blocks; ++qb) {
      offsets[1 + h * q_blocks + qb] = static_cast<int32_t>(h * per_head) + head.offsets[qb + 1];
    }
  }
  absl::StatusOr<BackendBuffer> row_offsets =
      UploadToBackend(backend, std::span<const int32_t>(offsets));
  absl::StatusOr<BackendBuffer> one = UploadToBackend(backend, std::span<const int32_t>(head.ids));
  absl::StatusOr<BackendBuffer> all = backend.Allocate(hq * per_head * sizeof(int32_t));
  for (const auto* b : {&row_offsets, &one, &all}) {
    if (!b->ok()) return b->status();
  }
  const std::vector<int64_t> from_start(hq, 0);
  const GatherRowsParams copy{one->get(), all->get(), from_start.data(), hq,
                              static_cast<int64_t>(per_head * sizeof(int32_t))};
  PREFILL_RETURN_IF_ERROR(backend.GatherRows(copy));
  step.row_offsets = std::move(*row_offsets);
  step.kv_blocks = std::move(*all);
  step.selected_blocks = static_cast<int64_t>(hq * per_head);
  return backend.Synchronize();  // `one` dies here
}

struct KvBuffers {
  BackendBuffer k{nullptr, nullptr};
  BackendBuffer v{nullptr, nullptr};
};

}  // namespace

int64_t DenseRingKvBytes(const CpLayout& layout, int hkv, int head_dim, DType dtype) {
  const int n = layout.world_size();
  return static_cast<int64_t>(n) * (n - 1) * KvBytes(layout.local_len() * hkv, head_dim, dtype);
}

absl::StatusOr<RingAttentionPlan> RingAttentionPlan::Create(AttentionBackend& backend,
                                                            const CpLayout& layout, int rank,
                                                            int hq, bool causal) {
  const int n = layout.world_size();
  RingAttentionPlan plan;
  plan.hq_ = hq;
  plan.causal_ = causal;
  // Every host list first, then the uploads: a pageable upload waits for the work queued on the
  // stream, and the model builds its plan while its first projections run.
  const std::vector<int32_t> q_positions = layout.Positions(rank);
  std::vector<std::vector<int32_t>> kv_positions(n);
  std::vector<HostCsr> heads(n);
  for (int s = 0; s < n; ++s) {
    kv_positions[s] = layout.Positions((rank + n - s) % n);
    heads[s] = RingStepHeadMask(q_positions, kv_positions[s], layout.block_size(), causal);
  }
  absl::StatusOr<BackendBuffer> q_pos =
      UploadToBackend(backend, std::span<const int32_t>(q_positions));
  if (!q_pos.ok()) return q_pos.status();
  plan.q_pos_ = std::move(*q_pos);
  for (int s = 0; s < n; ++s) {
    Step step;
    if (!heads[s].ids.empty()) {
      absl::StatusOr<BackendBuffer> k_pos =
          UploadToBackend(backend, std::span<const int32_t>(kv_positions[s]));
      if (!k_pos.ok()) return k_pos.status();
      step.k_pos = std::move(*k_pos);
      PREFILL_RETURN_IF_ERROR(UploadForEveryHead(backend, heads[s], hq, step));
    }
    plan.steps_.push_back(std::move(step));
  }
  return plan;
}

absl::StatusOr<CpAttentionStats> RingAttention(Communicator& comm, AttentionBackend& backend,
                                               const CpLayout& layout,
                                               const CpAttentionShard& shard,
                                               const CpAttentionOutput& out) {
  absl::StatusOr<RingAttentionPlan> plan =
      RingAttentionPlan::Create(backend, layout, comm.rank(), shard.hq, shard.causal);
  if (!plan.ok()) return plan.status();
  absl::StatusOr<CpAttentionStats> stats = RingAttention(comm, backend, layout, *plan, shard, out);
  // The plan's buffers die with this scope: the kernels must be done with them.
  if (absl::Status s = backend.Synchronize(); stats.ok() && !s.ok()) return s;
  return stats;
}

absl::StatusOr<CpAttentionStats> RingAttention(Communicator& comm, AttentionBackend& backend,
                                               const CpLayout& layout,
                                               const RingAttentionPlan& plan,
                                               const CpAttentionShard& shard,
                                               const CpAttentionOutput& out) {
  const int n = comm.size(), rank = comm.rank();
  const int lq = static_cast<int>(layout.local_len());
  const int block = layout.block_size();
  if (plan.hq() != shard.hq || plan.causal() != shard.causal) {
    return absl::InvalidArgumentError(
        "RingAttention: the plan was made for other heads or causality");
  }
  if (n > 1 && out.o_dtype != DType::kF32) {
    return absl::InvalidArgumentError(
        "RingAttention: ranks merge their partial outputs in fp32: o must be f32");
  }
  const size_t kv_bytes =
      static_cast<size_t>(lq) * shard.hkv * shard.head_dim * DTypeSize(shard.dtype);
  const size_t out_elems = static_cast<size_t>(lq) * shard.hq;

  // The ring's receive buffers and the partial output exist only with peers: one rank attends
  // to its own K/V straight into `out` (the buffers would be 3/4 of a GB per layer at 32K).
  std::array<KvBuffers, 2> ring;
  absl::StatusOr<BackendBuffer> part_o = BackendBuffer(nullptr, [](void*) {});
  absl::StatusOr<BackendBuffer> part_lse = BackendBuffer(nullptr, [](void*) {});
  if (n > 1) {
    for (KvBuffers& b : ring) {
      absl::StatusOr<BackendBuffer> k = backend.Allocate(kv_bytes), v = backend.Allocate(kv_bytes);
      if (!k.ok()) return k.status();
      if (!v.ok()) return v.status();
      b.k = std::move(*k);
      b.v = std::move(*v);
    }
    part_o = backend.Allocate(out_elems * shard.head_dim * sizeof(float));
    part_lse = backend.Allocate(out_elems * sizeof(float));
    if (!part_o.ok()) return part_o.status();
    if (!part_lse.ok()) return part_lse.status();
  }

  // Spans "exposed": from the end of a step's queued compute to the arrival of the next
  // step's K/V on the compute side.
  std::unique_ptr<PhaseTimer> timer;
  if (n > 1) {
    absl::StatusOr<std::unique_ptr<PhaseTimer>> made = backend.NewPhaseTimer();
    if (!made.ok()) return made.status();
    timer = *std::move(made);
  }

  CpAttentionStats stats;
  const void* cur_k = shard.k;
  const void* cur_v = shard.v;
  bool have_output = false;
  for (int step = 0; step < n; ++step) {
    std::vector<std::unique_ptr<PendingTransfer>> transfers;
    if (step + 1 < n) {
      const int next = (rank + 1) % n, prev = (rank + n - 1) % n;
      KvBuffers& into = ring[step % 2];
      for (int tag = 2 * step; tag < 2 * step + 2; ++tag) {
        const bool is_k = tag % 2 == 0;
        absl::StatusOr<std::unique_ptr<PendingTransfer>> send =
            comm.Send(is_k ? cur_k : cur_v, kv_bytes, next, tag);
        if (!send.ok()) return send.status();
        transfers.push_back(std::move(*send));
        absl::StatusOr<std::unique_ptr<PendingTransfer>> recv =
            comm.Recv(is_k ? into.k.get() : into.v.get(), kv_bytes, prev, tag);
        if (!recv.ok()) return recv.status();
        transfers.push_back(std::move(*recv));
      }
      stats.kv_bytes_sent += 2 * static_cast<int64_t>(kv_bytes);
      // Moving from here on, under this step's attention.
      PREFILL_RETURN_IF_ERROR(comm.StartPosted());
    }

    const auto compute_start = std::chrono::steady_clock::now();
    const RingAttentionPlan::Step& s = plan.step(step);
    if (s.selected_blocks > 0) {
      KvRows kv{cur_k,
                cur_v,
                static_cast<int64_t>(shard.hkv) * shard.head_dim,
                shard.head_dim,
                static_cast<const int32_t*>(s.k_pos.get()),
                0,
                lq};
      float* o = have_output ? static_cast<float*>(part_o->get()) : out.o;
      float* lse = have_output ? static_cast<float*>(part_lse->get()) : out.lse;
      absl::Status st = RunMaskedAttentionInBackend(
          backend, shard, plan.q_pos(), lq, block, kv,
          static_cast<const int32_t*>(s.row_offsets.get()),
          static_cast<const int32_t*>(s.kv_blocks.get()), o, lse, out.o_dtype);
      if (!st.ok()) return st;
      if (have_output) {
        LseMergeParams merge{out.o,         out.lse, o, lse, static_cast<int64_t>(out_elems),
                             shard.head_dim};
        if (st = backend.MergeByLse(merge); !st.ok()) return st;
      }
      have_output = true;
      stats.selected_blocks += s.selected_blocks;
    }
    stats.attention_seconds += Seconds(compute_start);

    const auto wait_start = std::chrono::steady_clock::now();
    if (timer) {
      PREFILL_RETURN_IF_ERROR(timer->Enter("exposed"));
    }
    for (auto& t : transfers) {
      PREFILL_RETURN_IF_ERROR(t->Wait());
    }
    if (timer) {
      PREFILL_RETURN_IF_ERROR(timer->Enter("compute"));
    }
    stats.exchange_seconds += Seconds(wait_start);
    if (step + 1 < n) {
      cur_k = ring[step % 2].k.get();
      cur_v = ring[step % 2].v.get();
    }
  }
  if (timer) {
    absl::StatusOr<std::vector<PhaseSpan>> spans = timer->Finish();
    if (!spans.ok()) return spans.status();
    for (const PhaseSpan& span : *spans) {
      if (span.phase == "exposed") stats.exchange_exposed_seconds += span.seconds;
    }
  }
  stats.visible_blocks = stats.selected_blocks;
  stats.computed_blocks = stats.selected_blocks;
  if (!have_output) {
    return absl::InternalError("ring attention: no query block of this rank sees any key");
  }
  return stats;
}

}  // namespace prefill
