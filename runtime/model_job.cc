#include "runtime/model_job.h"

#include <sys/resource.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <numeric>
#include <optional>

#include "absl/strings/str_cat.h"
#include "kernels/backend.h"
#include "kernels/status_macros.h"
#include "parallel/cp_layout.h"
#include "parallel/ring_attention.h"
#include "runtime/kv_file_sink.h"
#include "runtime/kv_layer_streamer.h"
#include "runtime/memory_estimate.h"
#include "runtime/prompt_input.h"
#include "runtime/safetensors.h"
#include "runtime/tensor.h"
#include "runtime/transformer_prefill.h"

namespace prefill {
namespace {

using Clock = std::chrono::steady_clock;

absl::StatusOr<std::unique_ptr<SafetensorsFile>> OpenEmbeddings(const std::string& path,
                                                                int hidden) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(path);
  if (!f.ok()) return f.status();
  if ((*f)->entries().size() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": must hold exactly one tensor [L, hidden]"));
  }
  const auto& [name, e] = *(*f)->entries().begin();
  if (e.shape.size() != 2 || e.shape[1] != hidden || e.shape[0] < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": tensor '", name, "' must be [L, ", hidden, "] (hidden_size)"));
  }
  return f;
}

// This rank's input rows: token ids, or the embeddings [local_len, hidden] of an embeddings
// file; positions >= length are padding (id -1, zero rows).
absl::StatusOr<PrefillInput> LocalInput(const LoadedModel& m, const PromptSource& source,
                                        const CpLayout& layout, int rank, int64_t length) {
  PrefillInput input;
  if (!source.tokens_path.empty()) {
    absl::StatusOr<std::vector<int32_t>> ids =
        ReadTokenIds(source.tokens_path, m.config.vocab_size);
    if (!ids.ok()) return ids.status();
    const std::vector<int32_t> positions = layout.Positions(rank);
    input.token_ids.assign(positions.size(), -1);
    for (size_t r = 0; r < positions.size(); ++r) {
      if (positions[r] < length) input.token_ids[r] = (*ids)[positions[r]];
    }
    return input;
  }
  const int hidden = m.config.hidden_size;
  std::vector<float>& out = input.embeddings;
  out.assign(layout.local_len() * hidden, 0.0f);
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f =
      OpenEmbeddings(source.embeddings_path, hidden);
  if (!f.ok()) return f.status();
  const std::string name = (*f)->entries().begin()->first;
  int64_t row = 0;
  for (const Chunk& chunk : layout.Chunks(rank)) {
    const int64_t end = std::min(chunk.start + chunk.length, length);
    if (end > chunk.start) {
      absl::StatusOr<Tensor> rows = (*f)->ReadRows(name, chunk.start, end);
      if (!rows.ok()) return rows.status();
      const std::vector<float> values = ToF32(*rows);
      std::copy(values.begin(), values.end(), &out[row * hidden]);
    }
    row += chunk.length;
  }
  return input;
}

// The request's name on the wire: given, else the KV folder's name, else the prompt file's stem.
std::string RequestId(const PrefillRequestOptions& o, const PromptSource& source) {
  if (!o.request_id.empty()) return o.request_id;
  std::filesystem::path p = !o.kv_out.empty() ? std::filesystem::path(o.kv_out).lexically_normal()
                                              : std::filesystem::path(!source.tokens_path.empty()
                                                                          ? source.tokens_path
                                                                          : source.embeddings_path);
  if (!p.has_filename()) p = p.parent_path();
  std::string id = o.kv_out.empty() ? p.stem().string() : p.filename().string();
  for (char& ch : id) {
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '.' && ch != '_' && ch != '-')
      ch = '_';
  }
  if (id.size() > 128) id.resize(128);
  return id.empty() || id == "." || id == ".." ? "request" : id;
}

// What one sink moved: bytes over all ranks; seconds of the slowest rank from Begin to Commit
// (seconds) and from the first PutLayer to Commit (transfer_seconds: without the setup, e.g.
// UCX initialisation and connection).
struct SinkReport {
  std::string sink, destination;
  double bytes = 0, seconds = 0, transfer_seconds = 0;
};

// The request's KV cache over the ranks: layers.{i}.key / .value [local rows, kv_heads,
// head_dim] per rank; the index lists absolute token ranges -> shard rows, real tokens only.
KvCacheGeometry KvGeometry(const Communicator& comm, DType dtype, const ModelConfig& c,
                           const CpLayout& layout, int64_t length) {
  KvCacheGeometry g;
  g.seq_len = length;
  g.num_layers = c.num_layers;
  g.kv_heads = c.num_kv_heads;
  g.head_dim = c.head_dim;
  g.dtype = dtype;
  g.layout = LayoutKindName(layout.kind());
  g.rank = comm.rank();
  g.world_size = comm.size();
  g.local_rows = layout.local_len();
  for (int r = 0; r < comm.size(); ++r) {
    std::vector<KvTokenRange>& ranges = g.ranges.emplace_back();
    int64_t row = 0;
    for (const Chunk& chunk : layout.Chunks(r)) {
      const int64_t real = std::min(chunk.start + chunk.length, length) - chunk.start;
      if (real > 0) ranges.push_back({chunk.start, real, row});
      row += chunk.length;
    }
  }
  return g;
}

// Hands the KV cache to each sink in turn, after the prefill: the sinks that took its layers
// during the prefill (begun before it; `streamer` handed them over) only commit.
absl::StatusOr<std::vector<SinkReport>> WriteKvCache(
    Communicator& comm, const std::vector<std::unique_ptr<KvSink>>& sinks,
    KvLayerStreamer* streamer, const std::string& request_id, const KvCacheGeometry& g,
    const PrefillOutput& out) {
  const std::vector<int64_t> shape = {g.local_rows, g.kv_heads, g.head_dim};
  std::vector<SinkReport> reports;
  for (size_t k = 0; k < sinks.size(); ++k) {
    KvSink& sink = *sinks[k];
    const bool begun = sink.takes_layers_during_prefill();
    const auto t0 = Clock::now();
    absl::Status s = begun ? absl::OkStatus() : sink.Begin(request_id, g);
    const auto t1 = Clock::now();
    if (begun && streamer) (void)streamer->Finish();  // the sinks' own errors come back from Commit
    for (size_t i = 0; s.ok() && !begun && i < out.keys.size(); ++i) {
      // Views of the downloaded KV cache, which outlives every sink's Commit.
      if (!sink.PutLayer(static_cast<int>(i), TensorView(g.dtype, shape, out.keys[i]),
                         TensorView(g.dtype, shape, out.values[i]), g.ranges[g.rank])
               .ok()) {
        break;
      }
    }
    if (s.ok()) s = sink.Commit();  // reports a PutLayer error, agreed
    if (!s.ok()) return s;
    std::vector<double> figures = {
        2.0 * static_cast<double>(g.TensorBytes()) * static_cast<double>(out.keys.size()),
        std::chrono::duration<double>(Clock::now() - t0).count(),
        std::chrono::duration<double>(Clock::now() - t1).count()};
    if (s = comm.AllReduceSum(&figures[0], 1); !s.ok()) return s;
    if (s = comm.AllReduceMax(&figures[1], 2); !s.ok()) return s;
    reports.push_back(
        {std::string(sink.name()), sink.destination(), figures[0], figures[1], figures[2]});
  }
  return reports;
}

nlohmann::json TopK(const std::vector<float>& logits, int k) {
  std::vector<int> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  k = std::min<int>(k, static_cast<int>(ids.size()));
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(),
                    [&](int a, int b) { return logits[a] > logits[b]; });
  nlohmann::json top = nlohmann::json::array();
  for (int i = 0; i < k; ++i) top.push_back({{"id", ids[i]}, {"logit", logits[ids[i]]}});
  return top;
}

// Refuses, before allocating, a request whose estimated footprint exceeds the budget.
absl::Status CheckMemoryBudget(const ModelConfig& c, int64_t seq_len, int ranks, int64_t budget) {
  if (budget <= 0) budget = DefaultMemoryPerRank();
  const MemoryEstimate e = EstimatePrefillMemory(c, seq_len, ranks);
  if (e.total() <= budget) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      seq_len, " tokens on ", ranks, " ranks need about ", FormatBytes(e.total()),
      " per rank (weights ", FormatBytes(e.weights), ", activations ", FormatBytes(e.activations),
      ", KV cache ", FormatBytes(e.kv_cache), ", KV exchange ", FormatBytes(e.exchange),
      "); the budget is ", FormatBytes(budget), " per rank (--memory-per-rank): use more ranks"));
}

// On a GPU the weights are already resident; what the request adds there (fp32 activations,
// the remote KV of the exchange, the attention's bf16 copies of Q, K and V) must fit in the
// device's free memory, and in --memory-per-rank when that is smaller. (The KV cache goes to
// host memory as it is made.)
absl::Status CheckDeviceMemory(const ModelConfig& c, int64_t seq_len, int ranks, int64_t budget,
                               std::pair<int64_t, int64_t> device) {
  const auto [free_bytes, total_bytes] = device;
  const MemoryEstimate e = EstimatePrefillMemory(c, seq_len, ranks);
  const int64_t local = (seq_len + ranks - 1) / ranks;
  const int64_t attention_inputs =
      2 * local * (int64_t{c.num_heads} + 2 * c.num_kv_heads) * c.head_dim;
  const int64_t need = e.activations + e.exchange + attention_inputs;
  const int64_t limit = budget > 0 ? std::min(budget, free_bytes) : free_bytes;
  if (need <= limit) return absl::OkStatus();
  return absl::ResourceExhaustedError(
      absl::StrCat(seq_len, " tokens on ", ranks, " ranks need about ", FormatBytes(need),
                   " of GPU memory per rank beyond the weights (activations ",
                   FormatBytes(e.activations), ", KV exchange ", FormatBytes(e.exchange),
                   ", attention inputs ", FormatBytes(attention_inputs), "); the GPU has ",
                   FormatBytes(free_bytes), " free of ", FormatBytes(total_bytes),
                   budget > 0 && budget < free_bytes
                       ? absl::StrCat(" and --memory-per-rank allows ", FormatBytes(budget))
                       : std::string(),
                   ": use more ranks"));
}

absl::Status ValidateOptions(const PrefillRequestOptions& o) {
  if (o.block < 16 || o.block % 16 != 0)
    return absl::InvalidArgumentError(
        absl::StrCat("--block ", o.block, " must be a positive multiple of 16"));
  if (o.stride < 1 || o.block % o.stride != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--stride ", o.stride, " must divide --block ", o.block));
  }
  if (!(o.tau > 0.f && o.tau <= 1.f))
    return absl::InvalidArgumentError(absl::StrCat("--tau ", o.tau, " must be in (0, 1]"));
  if (!(o.dense_above >= 0.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--dense-above ", o.dense_above, " must be >= 0"));
  }
  if (!o.kv_target.empty()) {
    PREFILL_RETURN_IF_ERROR(ValidateKvTarget({o.kv_target, o.kv_timeout}));
  }
  if (!o.request_id.empty() && !ValidKvRequestId(o.request_id)) {
    return absl::InvalidArgumentError(
        absl::StrCat("request id '", o.request_id, "' is not [A-Za-z0-9._-]{1,128}"));
  }
  return absl::OkStatus();
}

// Sparse balancing over the layers: the job waits for the most loaded rank of each layer, so
// the imbalance is the sum over layers of the largest rank's entries over the sum of the mean
// rank's, before (selected) and after (computed) balancing; plus this rank's and all ranks' bytes.
absl::StatusOr<nlohmann::json> BalanceFigures(Communicator& comm,
                                              const std::vector<LayerReport>& layers) {
  const size_t n = layers.size();
  std::vector<double> maxes(2 * n), sums(2 * n + 1);
  double bytes_rank = 0, selected_rank = 0, computed_rank = 0;
  for (size_t i = 0; i < n; ++i) {
    const CpAttentionStats& a = layers[i].attention;
    selected_rank += static_cast<double>(a.selected_blocks);
    computed_rank += static_cast<double>(a.computed_blocks);
    maxes[2 * i] = sums[2 * i] = static_cast<double>(a.selected_blocks);
    maxes[2 * i + 1] = sums[2 * i + 1] = static_cast<double>(a.computed_blocks);
    bytes_rank += static_cast<double>(a.balance_bytes_sent);
  }
  sums[2 * n] = bytes_rank;
  PREFILL_RETURN_IF_ERROR(comm.AllReduceMax(maxes.data(), maxes.size()));
  PREFILL_RETURN_IF_ERROR(comm.AllReduceSum(sums.data(), sums.size()));
  double peak[2] = {0, 0}, mean[2] = {0, 0};
  for (size_t i = 0; i < 2 * n; ++i) {
    peak[i % 2] += maxes[i];
    mean[i % 2] += sums[i] / comm.size();
  }
  auto ratio = [](double a, double b) { return b > 0 ? a / b : 1.0; };
  return nlohmann::json{{"selected_blocks_imbalance", ratio(peak[0], mean[0])},
                        {"computed_blocks_imbalance", ratio(peak[1], mean[1])},
                        {"balance_bytes_sent", sums[2 * n]},
                        {"balance_bytes_sent_rank", bytes_rank},
                        {"selected_blocks_rank", selected_rank},
                        {"computed_blocks_rank", computed_rank}};
}

}  // namespace

absl::StatusOr<LoadedModel> LoadModel(const std::string& model_dir) {
  absl::StatusOr<ModelConfig> config = LoadModelConfig(model_dir);
  if (!config.ok()) return config.status();
  absl::StatusOr<ModelWeights> weights = LoadModelWeights(model_dir, *config);
  if (!weights.ok()) return weights.status();
  return LoadedModel{model_dir, std::move(*config), std::move(*weights)};
}

absl::StatusOr<int64_t> PromptLength(const PromptSource& source, const ModelConfig& config) {
  if (source.tokens_path.empty() == source.embeddings_path.empty()) {
    return absl::InvalidArgumentError("give exactly one of --tokens FILE and --embeddings FILE");
  }
  if (!source.tokens_path.empty()) {
    absl::StatusOr<std::vector<int32_t>> ids = ReadTokenIds(source.tokens_path, config.vocab_size);
    if (!ids.ok()) return ids.status();
    return static_cast<int64_t>(ids->size());
  }
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f =
      OpenEmbeddings(source.embeddings_path, config.hidden_size);
  if (!f.ok()) return f.status();
  return (*f)->entries().begin()->second.shape[0];
}

absl::StatusOr<nlohmann::json> PrefillRequest(const LoadedModel& model, const PromptSource& source,
                                              const PrefillRequestOptions& o,
                                              const ModelExecution& on) {
  const ModelConfig& c = model.config;
  Communicator& comm = *on.host;
  absl::Status s = ValidateOptions(o);
  if (s.ok() && !o.kv_target.empty() && !on.remote_kv_sink) {
    s = absl::UnimplementedError("--kv-target: this program has no transport to a decode server");
  }
  absl::StatusOr<int64_t> length = s.ok() ? PromptLength(source, c) : s;
  absl::StatusOr<CpLayout> layout = absl::UnknownError("unset");
  if (length.ok()) {
    const int64_t unit = (o.layout == LayoutKind::kZigzag ? 2 : 1) * int64_t{comm.size()} * o.block;
    layout = CpLayout::Create(o.layout, (*length + unit - 1) / unit * unit, comm.size(), o.block);
  }
  s = !length.ok() ? length.status() : layout.status();
  if (s.ok()) {
    std::pair<int64_t, int64_t> device = on.device_memory();
    // The workspace held from earlier requests is free for this one.
    if (device.first >= 0 && on.workspace)
      device.first += static_cast<int64_t>(on.workspace->bytes());
    s = device.first >= 0
            ? CheckDeviceMemory(c, layout->seq_len(), comm.size(), o.memory_per_rank, device)
            : CheckMemoryBudget(c, layout->seq_len(), comm.size(), o.memory_per_rank);
  }
  absl::StatusOr<PrefillInput> input =
      s.ok() ? LocalInput(model, source, *layout, comm.rank(), *length)
             : absl::StatusOr<PrefillInput>(s);
  if (s = AgreeOnStatus(comm, input.status()); !s.ok()) return s;

  // The model reads no mask ids on the host: one rank leaves them where the attention reads them.
  PrefillOptions options;
  options.sparse = o.mode == AttentionMode::kSparse;
  options.sparse_options = SparseOptions{
      o.stride, o.tau, true, true, /*mask_ids_on_host=*/false, o.dense_above, o.balance};
  options.sparse_options.estimator = o.estimator;
  options.keep_kv = !o.kv_out.empty() || !o.kv_target.empty();
  if (options.keep_kv) options.kv_dtype = o.kv_dtype;
  // The KV cache's host memory is made ready before the clock starts, as a service would at
  // start-up (once per process: later requests that fit find it ready); reported apart.
  const auto t_host = Clock::now();
  size_t kv_host_pinned = 0;
  if (options.keep_kv) {
    kv_host_pinned = on.attention->PrepareHost(
        KvCacheHostBytes(c, layout->local_len(), on.weights->layers.size(), options.kv_dtype));
  }
  const double kv_host_prepare_seconds =
      std::chrono::duration<double>(Clock::now() - t_host).count();
  // So are the activations (kept: later requests as long find them made).
  const auto t_activations = Clock::now();
  if (on.workspace) {
    s = on.workspace->Reserve(*on.attention, on.layers->activation_dtype(), c, layout->local_len());
    if (s.ok()) s = on.attention->Synchronize();
    if (s = AgreeOnStatus(comm, s); !s.ok()) return s;
  }
  const double activations_prepare_seconds =
      std::chrono::duration<double>(Clock::now() - t_activations).count();

  // Files first: the local copy is durable before the decode server is asked to acknowledge.
  // The sinks that can take layers during the prefill begin before it (collective) and get
  // each layer from the streamer's thread as it lands.
  std::vector<std::unique_ptr<KvSink>> sinks;
  if (!o.kv_out.empty()) sinks.push_back(MakeKvFileSink(comm, o.kv_out));
  if (!o.kv_target.empty()) sinks.push_back(on.remote_kv_sink(comm, {o.kv_target, o.kv_timeout}));
  const KvCacheGeometry geometry = KvGeometry(comm, options.kv_dtype, c, *layout, *length);
  const std::string request_id = RequestId(o, source);
  std::vector<KvSink*> early;
  for (const std::unique_ptr<KvSink>& sink : sinks) {
    if (!sink->takes_layers_during_prefill()) continue;
    if (s = sink->Begin(request_id, geometry); !s.ok()) return s;
    early.push_back(sink.get());
  }
  std::optional<KvLayerStreamer> streamer;  // after the sinks: joined before they go
  if (!early.empty()) {
    streamer.emplace(*on.attention, early, geometry);
    options.on_kv_layer = [&streamer](int layer, std::span<const std::byte> k,
                                      std::span<const std::byte> v,
                                      std::shared_ptr<const void> owner, int64_t ticket) {
      streamer->Push(layer, k, v, std::move(owner), ticket);
    };
  }

  const auto t0 = Clock::now();
  absl::StatusOr<PrefillOutput> out =
      RunTransformerPrefill({*on.attention, *on.layers, *on.comm, *on.weights, on.workspace},
                            *layout, c, *input, *length - 1, options);
  if (s = AgreeOnStatus(comm, out.status()); !s.ok()) return s;
  const double prefill_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  nlohmann::json handoff = nlohmann::json::array();
  if (!sinks.empty()) {
    absl::StatusOr<std::vector<SinkReport>> written =
        WriteKvCache(comm, sinks, streamer ? &*streamer : nullptr, request_id, geometry, *out);
    if (!written.ok()) return written.status();
    for (const SinkReport& r : *written) {
      handoff.push_back({{"sink", r.sink},
                         {"destination", r.destination},
                         {"bytes", r.bytes},
                         {"seconds", r.seconds},
                         {"gb_per_second", r.seconds > 0 ? r.bytes / r.seconds / 1e9 : 0.0},
                         {"transfer_seconds", r.transfer_seconds},
                         {"transfer_gb_per_second",
                          r.transfer_seconds > 0 ? r.bytes / r.transfer_seconds / 1e9 : 0.0}});
    }
  }

  // Per layer: density over all ranks; per phase: the slowest rank.
  const size_t layers = out->layers.size();
  // maxes: estimation, exchange, attention, gemm, host alloc, download wait, setup, logits,
  // then each layer's gemm.
  constexpr size_t kPhases = 8;
  std::vector<double> sums(2 * layers + 1), maxes(kPhases + layers);
  maxes[4] = out->kv_host_alloc_seconds;
  maxes[5] = out->kv_download_wait_seconds;
  maxes[6] = out->setup_seconds;
  maxes[7] = out->logits_seconds;
  double kv_bytes_rank = 0;
  int dense_layers =
      0;  // sparse layers whose density sent them to the dense ring (alike on every rank)
  for (size_t i = 0; i < layers; ++i) {
    const LayerReport& l = out->layers[i];
    dense_layers += l.attention.ran_dense ? 1 : 0;
    kv_bytes_rank += static_cast<double>(l.attention.kv_bytes_sent);
    sums[2 * i] = static_cast<double>(l.attention.selected_blocks);
    sums[2 * i + 1] = static_cast<double>(l.attention.visible_blocks);
    maxes[0] += l.estimate_device_seconds;
    maxes[1] += l.attention.exchange_seconds;
    // The attention call's device time (estimation apart), less what the exchange waits took of it.
    maxes[2] += std::max(0.0, l.attention_device_seconds - l.attention.exchange_seconds);
    maxes[3] += l.gemm_seconds;
    maxes[kPhases + i] = l.gemm_seconds;
  }
  sums[2 * layers] = kv_bytes_rank;
  absl::StatusOr<nlohmann::json> balance = BalanceFigures(comm, out->layers);
  if (!balance.ok()) return balance.status();
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  double peak = static_cast<double>(usage.ru_maxrss) * 1024.0;
  if (s = comm.AllReduceSum(sums.data(), sums.size()); !s.ok()) return s;
  for (const auto& [op, seconds] : out->op_seconds)
    maxes.push_back(seconds);  // same ops, same order on every rank
  if (s = comm.AllReduceMax(maxes.data(), maxes.size()); !s.ok()) return s;
  nlohmann::json op_seconds = nlohmann::json::object();
  size_t op_index = kPhases + layers;
  for (const auto& entry : out->op_seconds) op_seconds[entry.first] = maxes[op_index++];
  std::vector<double> peaks(comm.size());
  if (s = comm.AllGather(&peak, sizeof peak, peaks.data()); !s.ok()) return s;
  double selected = 0, visible = 0;
  nlohmann::json density = nlohmann::json::array(), layer_gemm = nlohmann::json::array();
  for (size_t i = 0; i < layers; ++i) {
    layer_gemm.push_back(maxes[kPhases + i]);
    selected += sums[2 * i];
    visible += sums[2 * i + 1];
    density.push_back(sums[2 * i + 1] > 0 ? sums[2 * i] / sums[2 * i + 1] : 1.0);
  }
  return nlohmann::json{{"model", model.dir},
                        {"architecture", c.architecture},
                        {"world_size", comm.size()},
                        {"seq_len", *length},
                        {"padded_seq_len", layout->seq_len()},
                        {"mode", AttentionModeName(o.mode)},
                        {"layout", LayoutKindName(o.layout)},
                        {"block", o.block},
                        {"stride", o.stride},
                        {"tau", o.tau},
                        {"threads", o.threads},
                        {"device", std::string(on.attention->name())},
                        {"prefill_seconds", prefill_seconds},
                        {"tokens_per_second", *length / prefill_seconds},
                        {"kv_host_prepare_seconds", kv_host_prepare_seconds},
                        {"kv_host_pinned_bytes", kv_host_pinned},
                        {"activations_prepare_seconds", activations_prepare_seconds},
                        {"phase_seconds",
                         {{"mask_estimation", maxes[0]},
                          {"kv_exchange", maxes[1]},
                          {"attention", maxes[2]},
                          {"gemm", maxes[3]},
                          {"kv_host_alloc", maxes[4]},
                          {"kv_download_wait", maxes[5]},
                          {"setup", maxes[6]},
                          {"logits", maxes[7]}}},
                        {"density", visible > 0 ? selected / visible : 1.0},
                        {"layer_density", density},
                        {"layers_run_dense", dense_layers},
                        {"balance", BalanceModeName(o.balance)},
                        {"balance_figures", *balance},
                        {"layer_gemm_seconds", layer_gemm},
                        {"op_seconds", op_seconds},
                        {"kv_bytes_sent", sums[2 * layers]},
                        {"kv_bytes_sent_rank", kv_bytes_rank},
                        {"kv_bytes_dense_ring",
                         static_cast<double>(layers) *
                             DenseRingKvBytes(*layout, c.num_kv_heads, c.head_dim, DType::kF32)},
                        {"peak_memory_bytes_per_rank", peaks},
                        {"top_logits", TopK(out->last_logits, o.top_k)},
                        {"last_logits", out->last_logits},
                        {"kv_out", o.kv_out},
                        {"kv_target", o.kv_target},
                        {"request_id", request_id},
                        {"kv_handoff", handoff}};
}

}  // namespace prefill
