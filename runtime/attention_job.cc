#include "runtime/attention_job.h"

#include <chrono>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/backend.h"
#include "kernels/cpu/reference_attention.h"
#include "kernels/status_macros.h"
#include "parallel/ring_attention.h"
#include "parallel/sequence_gather.h"
#include "parallel/sparse_cp_attention.h"
#include "runtime/execution_context.h"
#include "runtime/safetensors.h"
#include "runtime/tensor.h"

namespace prefill {
namespace {

using Clock = std::chrono::steady_clock;

absl::Status Invalid(const std::string& text) { return absl::InvalidArgumentError(text); }

// This rank's rows of Q, K, V in local order.
struct Shard {
  Tensor q, k, v;
};

// Reads the shapes of --qkv into the config: q [L, H, D], k and v [L, Hkv, D], one dtype.
absl::Status ResolveFromFile(AttentionJobConfig* config) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(config->qkv_path);
  if (!file.ok()) return file.status();
  const SafetensorsEntry* e[3];
  const char* names[3] = {"q", "k", "v"};
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<const SafetensorsEntry*> found = (*file)->Find(names[i]);
    if (!found.ok())
      return Invalid(absl::StrCat("--qkv ", config->qkv_path, ": missing tensor '", names[i],
                                  "' (need q [L, H, D], k and v [L, Hkv, D])"));
    e[i] = *found;
    if (e[i]->shape.size() != 3) {
      return Invalid(absl::StrCat("--qkv ", config->qkv_path, ": tensor '", names[i], "' has ",
                                  e[i]->shape.size(), " dims, expected 3 ([L, heads, head_dim])"));
    }
  }
  const auto& qs = e[0]->shape;
  for (int i = 1; i < 3; ++i) {
    const auto& s = e[i]->shape;
    if (s[0] != qs[0] || s[2] != qs[2] || s != e[1]->shape) {
      return Invalid(absl::StrCat("--qkv ", config->qkv_path, ": tensor '", names[i], "' is [",
                                  s[0], ", ", s[1], ", ", s[2], "] but q is [", qs[0], ", ", qs[1],
                                  ", ", qs[2], "]; k and v must be [L, Hkv, D] with q's L and D"));
    }
    if (e[i]->dtype != e[0]->dtype) {
      return Invalid(absl::StrCat("--qkv ", config->qkv_path, ": tensor '", names[i], "' is ",
                                  std::string(DTypeName(e[i]->dtype)), " but q is ",
                                  std::string(DTypeName(e[0]->dtype))));
    }
  }
  config->seq_len = qs[0];
  config->heads = static_cast<int>(qs[1]);
  config->kv_heads = static_cast<int>(e[1]->shape[1]);
  config->head_dim = static_cast<int>(qs[2]);
  config->dtype = e[0]->dtype;
  return absl::OkStatus();
}

Tensor ConcatRows(const std::vector<Tensor>& parts) {
  Tensor out = parts[0];
  for (size_t i = 1; i < parts.size(); ++i) {
    out.shape[0] += parts[i].shape[0];
    out.bytes.insert(out.bytes.end(), parts[i].bytes.begin(), parts[i].bytes.end());
  }
  return out;
}

absl::StatusOr<Shard> LoadShard(const AttentionJobConfig& c, DType dtype, const CpLayout& layout,
                                int rank) {
  Shard shard;
  if (!c.qkv_path.empty()) {
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(c.qkv_path);
    if (!file.ok()) return file.status();
    for (auto [name, dst] :
         {std::pair{"q", &shard.q}, std::pair{"k", &shard.k}, std::pair{"v", &shard.v}}) {
      std::vector<Tensor> parts;
      for (const Chunk& chunk : layout.Chunks(rank)) {
        absl::StatusOr<Tensor> rows =
            (*file)->ReadRows(name, chunk.start, chunk.start + chunk.length);
        if (!rows.ok()) return rows.status();
        parts.push_back(std::move(*rows));
      }
      *dst = ConcatRows(parts);
    }
    return shard;
  }
  absl::StatusOr<WorkloadKind> kind = ParseWorkloadKind(c.workload);
  if (!kind.ok()) return kind.status();
  const std::vector<int32_t> positions = layout.Positions(rank);
  WorkloadSpec spec;
  spec.kind = *kind;
  spec.seq_len = c.seq_len;
  spec.heads = c.heads;
  spec.kv_heads = c.kv_heads;
  spec.head_dim = c.head_dim;
  spec.seed = c.seed;
  spec.slash_heads = c.slash_heads;
  spec.concentration = c.concentration;
  QkvRows rows = GenerateQkvRows(spec, positions, c.threads);
  const int64_t n = static_cast<int64_t>(positions.size());
  shard.q = FromF32(rows.q, dtype, {n, c.heads, c.head_dim});
  shard.k = FromF32(rows.k, dtype, {n, c.kv_heads, c.head_dim});
  shard.v = FromF32(rows.v, dtype, {n, c.kv_heads, c.head_dim});
  return shard;
}

struct CheckResult {
  double max_abs_err = 0, rel_l2_err = 0;
};

// fp64 dense attention of this rank's queries over the gathered K and V; errors reduced
// over all ranks.
absl::StatusOr<CheckResult> CheckAgainstReference(Communicator& comm, const CpLayout& layout,
                                                  const AttentionJobConfig& c, const Shard& shard,
                                                  const std::vector<float>& o) {
  const size_t kv_row = static_cast<size_t>(c.kv_heads) * c.head_dim * DTypeSize(shard.k.dtype);
  absl::StatusOr<std::vector<std::byte>> k =
      AllGatherSequence(comm, layout, shard.k.bytes.data(), kv_row);
  if (!k.ok()) return k.status();
  absl::StatusOr<std::vector<std::byte>> v =
      AllGatherSequence(comm, layout, shard.v.bytes.data(), kv_row);
  if (!v.ok()) return v.status();
  const std::vector<int32_t> q_pos = layout.Positions(comm.rank());
  std::vector<int32_t> k_pos(layout.seq_len());
  for (size_t i = 0; i < k_pos.size(); ++i) k_pos[i] = static_cast<int32_t>(i);
  const std::vector<int32_t> q_blocks = layout.QueryBlockIds(comm.rank());
  const BlockMask dense =
      DenseBlockMask(c.heads, q_blocks, static_cast<int>(layout.num_blocks()), c.block, c.causal);

  AttentionParams p;
  p.dtype = shard.q.dtype;
  p.q = shard.q.bytes.data();
  p.q_row_stride = static_cast<int64_t>(c.heads) * c.head_dim;
  p.q_head_stride = c.head_dim;
  p.q_pos = q_pos.data();
  p.k = k->data();
  p.v = v->data();
  p.kv_row_stride = static_cast<int64_t>(c.kv_heads) * c.head_dim;
  p.kv_head_stride = c.head_dim;
  p.k_pos = k_pos.data();
  p.lq = static_cast<int>(layout.local_len());
  p.lk = static_cast<int>(layout.seq_len());
  p.hq = c.heads;
  p.hkv = c.kv_heads;
  p.head_dim = c.head_dim;
  p.block_size = c.block;
  p.causal = c.causal;
  p.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  p.mask_row_offsets = dense.row_offsets.data();
  p.mask_kv_blocks = dense.kv_blocks.data();
  std::vector<double> ref_o, ref_lse;
  PREFILL_RETURN_IF_ERROR(cpu::ReferenceAttention(p, &ref_o, &ref_lse, c.threads));

  double sums[2] = {0, 0};  // squared error, squared reference
  double max_err = 0;
  for (size_t i = 0; i < ref_o.size(); ++i) {
    const double err = o[i] - ref_o[i];
    sums[0] += err * err;
    sums[1] += ref_o[i] * ref_o[i];
    max_err = std::max(max_err, std::abs(err));
  }
  PREFILL_RETURN_IF_ERROR(comm.AllReduceSum(sums, 2));
  PREFILL_RETURN_IF_ERROR(comm.AllReduceMax(&max_err, 1));
  return CheckResult{max_err, sums[1] > 0 ? std::sqrt(sums[0] / sums[1]) : 0.0};
}

// Of the (head, question block) rows this rank owns, how many select the needle's block.
std::pair<double, double> NeedleHits(const BlockMask& mask, int64_t seq_len, int block) {
  const NeedlePlacement needle = PlaceNeedle(seq_len, block);
  const int32_t question_block = static_cast<int32_t>(needle.question_begin / block);
  const int32_t needle_block = static_cast<int32_t>(needle.needle_position / block);
  double rows = 0, hits = 0;
  for (int qb = 0; qb < mask.num_q_blocks; ++qb) {
    if (mask.q_block_ids[qb] != question_block) continue;
    for (int h = 0; h < mask.num_heads; ++h) {
      auto row = mask.row(h, qb);
      rows += 1;
      hits += std::binary_search(row.begin(), row.end(), needle_block) ? 1 : 0;
    }
  }
  return {hits, rows};
}

}  // namespace

absl::Status ValidateAttentionConfig(const AttentionJobConfig& c, int world_size) {
  if (c.heads < 1 || c.kv_heads < 1) return Invalid("--heads and --kv-heads must be positive");
  if (!(c.concentration > 0 && c.concentration <= 10))
    return Invalid("--concentration must be in (0, 10]");
  if (c.heads % c.kv_heads != 0) {
    return Invalid(
        absl::StrCat("--heads ", c.heads, " must be a multiple of --kv-heads ", c.kv_heads,
                     " (grouped-query attention: each KV head serves heads/kv-heads query heads)"));
  }
  if (c.head_dim < 16 || c.head_dim % 16 != 0 || c.head_dim > 256) {
    return Invalid(absl::StrCat(
        "--head-dim ", c.head_dim,
        " is not supported (valid: a multiple of 16 up to 256; 64 and 128 are the fast paths)"));
  }
  if (c.block < 16 || c.block % 16 != 0) {
    return Invalid(
        absl::StrCat("--block ", c.block, " must be a positive multiple of 16 (default 128)"));
  }
  if (c.stride < 1 || c.block % c.stride != 0) {
    return Invalid(
        absl::StrCat("--stride ", c.stride, " must divide --block ", c.block, " (e.g. 4, 8, 16)"));
  }
  if (!(c.tau > 0.f && c.tau <= 1.f))
    return Invalid(absl::StrCat("--tau ", c.tau, " must be in (0, 1]"));
  if (!(c.dense_above >= 0.0))
    return Invalid(absl::StrCat("--dense-above ", c.dense_above, " must be >= 0"));
  if (c.qkv_path.empty()) {
    if (absl::StatusOr<WorkloadKind> k = ParseWorkloadKind(c.workload); !k.ok()) return k.status();
  }
  return CpLayout::Create(c.layout, c.seq_len, world_size, c.block).status();
}

absl::StatusOr<AttentionJobReport> RunAttentionJob(const AttentionJobConfig& config,
                                                   MpiCommunicator& comm) {
  AttentionJobReport report;
  report.config = config;
  report.world_size = comm.size();
  AttentionJobConfig& c = report.config;
  absl::Status s = c.qkv_path.empty() ? absl::OkStatus() : ResolveFromFile(&c);
  if (s.ok()) s = ValidateAttentionConfig(c, comm.size());
  if (s = AgreeOnStatus(comm, s); !s.ok()) return s;
  const CpLayout layout = *CpLayout::Create(c.layout, c.seq_len, comm.size(), c.block);

  absl::StatusOr<Shard> shard = LoadShard(c, c.dtype, layout, comm.rank());
  if (s = AgreeOnStatus(comm, shard.status()); !s.ok()) return s;

  absl::StatusOr<ExecutionContext> ctx =
      MakeExecutionContext(c.device, c.threads, c.device_id, comm, c.comm);
  if (s = AgreeOnStatus(comm, ctx.status()); !s.ok()) return s;
  report.device = ctx->device;
  report.device_name = ctx->device_name;
  report.transport = ctx->transport;
  AttentionBackend& backend = *ctx->backend;
  const int64_t rows = layout.local_len();
  std::vector<float> o(rows * c.heads * c.head_dim);
  absl::StatusOr<BackendBuffer> q =
      UploadBytes(backend, shard->q.bytes.data(), shard->q.bytes.size());
  absl::StatusOr<BackendBuffer> k =
      UploadBytes(backend, shard->k.bytes.data(), shard->k.bytes.size());
  absl::StatusOr<BackendBuffer> v =
      UploadBytes(backend, shard->v.bytes.data(), shard->v.bytes.size());
  absl::StatusOr<BackendBuffer> o_dev = backend.Allocate(o.size() * sizeof(float));
  absl::StatusOr<BackendBuffer> lse_dev = backend.Allocate(rows * c.heads * sizeof(float));
  for (const auto* b : {&q, &k, &v, &o_dev, &lse_dev}) {
    if (!b->ok()) s.Update(b->status());
  }
  if (s = AgreeOnStatus(comm, s); !s.ok()) return s;
  const CpAttentionShard cp{c.dtype,    q->get(), k->get(),
                            v->get(),   c.heads,  c.kv_heads,
                            c.head_dim, c.causal, 1.0f / std::sqrt(static_cast<float>(c.head_dim))};
  const CpAttentionOutput out{static_cast<float*>(o_dev->get()),
                              static_cast<float*>(lse_dev->get())};
  if (s = comm.Barrier(); !s.ok()) return s;
  const auto start = Clock::now();
  CpAttentionStats stats;
  BlockMask mask;
  if (c.mode == AttentionMode::kDense) {
    absl::StatusOr<CpAttentionStats> r = RingAttention(*ctx->comm, backend, layout, cp, out);
    if (!r.ok()) return r.status();
    stats = *r;
  } else {
    // The mask's ids come to the host only for the needle's recall.
    const bool needle = c.qkv_path.empty() && c.workload == "needle";
    SparseOptions options{c.stride, c.tau,         c.keep_sink, c.keep_recent,
                          needle,   c.dense_above, c.balance};
    options.estimator = c.estimator;
    absl::StatusOr<SparseCpResult> r =
        SparseCpAttention(*ctx->comm, backend, layout, cp, options, out);
    if (!r.ok()) return r.status();
    stats = r->stats;
    mask = std::move(r->mask);
    report.ran_dense = stats.ran_dense;  // alike on every rank
  }
  if (s = backend.CopyToHost(o.data(), o_dev->get(), o.size() * sizeof(float)); !s.ok()) return s;
  report.device_memory_used_bytes = ctx->device_memory_used();
  RankStats mine{
      stats.estimate_seconds,   stats.exchange_seconds,
      stats.attention_seconds,  std::chrono::duration<double>(Clock::now() - start).count(),
      stats.kv_bytes_sent,      stats.selected_blocks,
      stats.visible_blocks,     stats.computed_blocks,
      stats.balance_bytes_sent, stats.balance_moves};
  const DeviceMemoryPeakBytes peak = ctx->device_memory_peak();
  mine.exchange_exposed_seconds = stats.exchange_exposed_seconds;
  mine.device_memory_peak_bytes = peak.device_used;
  mine.backend_memory_peak_bytes = peak.backend_held;
  report.ranks.resize(comm.size());
  if (s = comm.AllGather(&mine, sizeof mine, report.ranks.data()); !s.ok()) return s;
  int64_t selected = 0, visible = 0;
  for (const RankStats& r : report.ranks) {
    report.kv_bytes_sent_total += r.kv_bytes_sent;
    report.balance_bytes_sent_total += r.balance_bytes_sent;
    selected += r.selected_blocks;
    visible += r.visible_blocks;
  }
  report.density = visible ? static_cast<double>(selected) / visible : 1.0;
  report.kv_bytes_dense_ring = DenseRingKvBytes(layout, c.kv_heads, c.head_dim, c.dtype);

  if (c.qkv_path.empty() && c.workload == "needle") {
    auto [hits, total] = c.mode == AttentionMode::kSparse ? NeedleHits(mask, c.seq_len, c.block)
                                                          : std::pair{1.0, 1.0};
    double counts[2] = {hits, total};
    if (s = comm.AllReduceSum(counts, 2); !s.ok()) return s;
    report.needle_recall = counts[1] > 0 ? counts[0] / counts[1] : -1;
  }
  if (c.check) {
    absl::StatusOr<CheckResult> check = CheckAgainstReference(comm, layout, c, *shard, o);
    if (!check.ok()) return check.status();
    report.checked = true;
    report.max_abs_err = check->max_abs_err;
    report.rel_l2_err = check->rel_l2_err;
  }
  if (!c.out_path.empty()) {
    const size_t row_bytes = static_cast<size_t>(c.heads) * c.head_dim * sizeof(float);
    absl::StatusOr<std::vector<std::byte>> all =
        AllGatherSequence(comm, layout, o.data(), row_bytes);
    if (!all.ok()) return all.status();
    absl::Status written;
    if (comm.rank() == 0) {
      Tensor out{DType::kF32, {c.seq_len, c.heads, c.head_dim}, std::move(*all)};
      written = WriteSafetensors(c.out_path, {{"o", TensorView(out)}});
    }
    if (s = AgreeOnStatus(comm, written); !s.ok()) return s;
  }
  return report;
}

nlohmann::json AttentionJobReport::ToJson() const {
  const AttentionJobConfig& c = config;
  nlohmann::json j = {{"world_size", world_size},
                      {"device", device},
                      {"device_name", device_name},
                      {"transport", transport},
                      {"workload", c.qkv_path.empty() ? c.workload : "file"},
                      {"qkv", c.qkv_path},
                      {"seq_len", c.seq_len},
                      {"heads", c.heads},
                      {"kv_heads", c.kv_heads},
                      {"head_dim", c.head_dim},
                      {"dtype", DTypeName(c.dtype)},
                      {"concentration", c.concentration},
                      {"slash_heads", c.slash_heads},
                      {"block", c.block},
                      {"estimator", MaskEstimatorName(c.estimator)},
                      {"stride", c.stride},
                      {"tau", c.tau},
                      {"mode", AttentionModeName(c.mode)},
                      {"layout", LayoutKindName(c.layout)},
                      {"causal", c.causal},
                      {"threads", c.threads},
                      {"density", density},
                      {"kv_bytes_sent_total", kv_bytes_sent_total},
                      {"kv_bytes_dense_ring", kv_bytes_dense_ring},
                      {"device_memory_used_bytes", device_memory_used_bytes}};
  double est = 0, ex = 0, exposed = 0, att = 0, total = 0;
  int64_t device_peak = -1, backend_peak = -1;
  nlohmann::json per_rank = nlohmann::json::array();
  for (const RankStats& r : ranks) {
    device_peak = std::max(device_peak, r.device_memory_peak_bytes);
    backend_peak = std::max(backend_peak, r.backend_memory_peak_bytes);
    est = std::max(est, r.estimate_seconds);
    ex = std::max(ex, r.exchange_seconds);
    exposed = std::max(exposed, r.exchange_exposed_seconds);
    att = std::max(att, r.attention_seconds);
    total = std::max(total, r.total_seconds);
    per_rank.push_back({{"estimate_seconds", r.estimate_seconds},
                        {"exchange_seconds", r.exchange_seconds},
                        {"exchange_exposed_seconds", r.exchange_exposed_seconds},
                        {"attention_seconds", r.attention_seconds},
                        {"total_seconds", r.total_seconds},
                        {"kv_bytes_sent", r.kv_bytes_sent},
                        {"selected_blocks", r.selected_blocks},
                        {"visible_blocks", r.visible_blocks},
                        {"computed_blocks", r.computed_blocks},
                        {"balance_bytes_sent", r.balance_bytes_sent},
                        {"device_memory_peak_bytes", r.device_memory_peak_bytes},
                        {"backend_memory_peak_bytes", r.backend_memory_peak_bytes}});
  }
  // The largest rank's high-water marks (-1 on the CPU): docs/attention-report.md.
  j["device_memory_peak_bytes"] = device_peak;
  j["backend_memory_peak_bytes"] = backend_peak;
  // Phase times are the slowest rank's: the job waits for it.
  j["estimate_seconds"] = est;
  j["exchange_seconds"] = ex;
  // Dense ring: the time the compute waited for K/V after its own work (not hidden by it).
  j["exchange_exposed_seconds"] = exposed;
  j["attention_seconds"] = att;
  j["total_seconds"] = total;
  j["ranks"] = per_rank;
  // Work balance across ranks: the slowest over the mean (1 = even; the job runs at the
  // speed of the slowest rank).
  auto imbalance = [&](auto value) {
    double sum = 0, max = 0;
    for (const RankStats& r : ranks) {
      sum += static_cast<double>(value(r));
      max = std::max(max, static_cast<double>(value(r)));
    }
    return sum > 0 ? max * static_cast<double>(ranks.size()) / sum : 1.0;
  };
  j["selected_blocks_imbalance"] = imbalance([](const RankStats& r) { return r.selected_blocks; });
  // After balancing (--balance): what each rank computed, and the bytes that cost.
  j["computed_blocks_imbalance"] = imbalance([](const RankStats& r) { return r.computed_blocks; });
  j["balance"] = BalanceModeName(c.balance);
  j["balance_moves"] = ranks.empty() ? 0 : ranks[0].balance_moves;
  j["balance_bytes_sent_total"] = balance_bytes_sent_total;
  j["bytes_sent_total"] = kv_bytes_sent_total + balance_bytes_sent_total;
  j["attention_seconds_imbalance"] =
      imbalance([](const RankStats& r) { return r.attention_seconds; });
  if (checked) {
    j["max_abs_err"] = max_abs_err;
    j["rel_l2_err"] = rel_l2_err;
  }
  if (needle_recall >= 0) j["needle_recall"] = needle_recall;
  if (c.mode == AttentionMode::kSparse) j["ran_dense"] = ran_dense;
  // Phase times bracket synchronized backend work, so on CUDA they are the GPU's times.
  if (device == "cuda") j["gpu_name"] = device_name;
  return j;
}

std::string AttentionJobReport::Summary() const {
  const AttentionJobConfig& c = config;
  const nlohmann::json j = ToJson();
  std::string text =
      absl::StrFormat("prefill attention: %s %s, %d %s ranks (%s), L=%d H=%d Hkv=%d D=%d %s%s\n",
                      AttentionModeName(c.mode), c.qkv_path.empty() ? c.workload : c.qkv_path,
                      world_size, device, LayoutKindName(c.layout), c.seq_len, c.heads, c.kv_heads,
                      c.head_dim, DTypeName(c.dtype), c.causal ? " causal" : "");
  if (c.mode == AttentionMode::kSparse) {
    text += absl::StrFormat("  mask       density %.3f (block %d, stride %d, tau %.2f)%s\n",
                            density, c.block, c.stride, c.tau,
                            ran_dense ? ": ran the dense ring (--dense-above)" : "");
  }
  text += absl::StrFormat(
      "  KV sent    %.1f MiB (dense ring: %.1f MiB, %.1f%%)\n", kv_bytes_sent_total / 1048576.0,
      kv_bytes_dense_ring / 1048576.0,
      kv_bytes_dense_ring ? 100.0 * kv_bytes_sent_total / kv_bytes_dense_ring : 0.0);
  text += absl::StrFormat(
      "  time       %.3f s total: estimate %.3f, exchange %.3f, attention %.3f (slowest rank)\n",
      j["total_seconds"].get<double>(), j["estimate_seconds"].get<double>(),
      j["exchange_seconds"].get<double>(), j["attention_seconds"].get<double>());
  if (world_size > 1) {
    text += absl::StrFormat(
        "  balance    slowest rank / mean: %.2f in selected blocks, %.2f computed (--balance %s), "
        "%.2f in attention time\n",
        j["selected_blocks_imbalance"].get<double>(), j["computed_blocks_imbalance"].get<double>(),
        BalanceModeName(c.balance), j["attention_seconds_imbalance"].get<double>());
    if (balance_bytes_sent_total > 0) {
      text +=
          absl::StrFormat("  moved      %d segments: %.1f MiB of Q rows and partial results\n",
                          j["balance_moves"].get<int64_t>(), balance_bytes_sent_total / 1048576.0);
    }
  }
  if (const int64_t peak = j["device_memory_peak_bytes"].get<int64_t>(); peak >= 0) {
    text += absl::StrFormat(
        "  memory     GPU peak %.2f GiB (backend buffers peak %.2f GiB; largest rank)\n",
        peak / 1073741824.0, j["backend_memory_peak_bytes"].get<int64_t>() / 1073741824.0);
  }
  if (needle_recall >= 0) text += absl::StrFormat("  needle     recall %.3f\n", needle_recall);
  if (checked) {
    text += absl::StrFormat("  check      rel L2 error %.2e, max abs error %.2e (vs fp64 dense)\n",
                            rel_l2_err, max_abs_err);
  }
  return text;
}

}  // namespace prefill
