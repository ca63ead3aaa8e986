#include "runtime/transformer_prefill.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <optional>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "parallel/ring_attention.h"
#include "runtime/execution_context.h"

namespace prefill {
namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Backend buffers of fp32 values (activations, norm weights, biases; null stays null).
float* Floats(void* p) { return static_cast<float*>(p); }
float* Floats(const BackendBuffer& b) { return Floats(b.get()); }

// The residual stream starts as the input embeddings: gathered where the layers run from
// token ids, or uploaded when they come as values.
absl::Status Embed(const TransformerBackends& on, const PrefillInput& input, int64_t n,
                   const Activations& a) {
  if (input.token_ids.empty()) {
    return on.attention.CopyToBackend(a.hidden, input.embeddings.data(),
                                      input.embeddings.size() * sizeof(float));
  }
  absl::StatusOr<BackendBuffer> ids =
      UploadBytes(on.attention, input.token_ids.data(), n * sizeof(int32_t));
  if (!ids.ok()) return ids.status();
  PREFILL_RETURN_IF_ERROR(on.layers.Embed({static_cast<const int32_t*>(ids->get()), n,
                                           &on.weights.input_embeddings(), Floats(a.hidden)}));
  return on.attention.Synchronize();  // the ids die here
}

// Attention's output, which the output projection reads: in the activation dtype where one
// rank writes it whole, dense or sparse (a GEMM input as it is), else fp32 for the ranks' merges.
DType AttentionOutputDType(const TransformerBackends& on, const Activations& a) {
  return on.comm.size() == 1 ? a.dtype : DType::kF32;
}

// ring: the dense path's plan (null in sparse mode).
absl::StatusOr<CpAttentionStats> Attend(const TransformerBackends& on, const CpLayout& layout,
                                        const ModelConfig& c, const PrefillOptions& options,
                                        const RingAttentionPlan* ring, const Activations& a,
                                        DType attn_dtype, PhaseTimer& timer, int layer) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  const bool causal = true;
  const CpAttentionShard shard{a.dtype,        a.q,        a.keys, a.values, c.num_heads,
                               c.num_kv_heads, c.head_dim, causal, scale};
  const CpAttentionOutput out{Floats(a.attn), Floats(a.lse), attn_dtype};
  if (!options.sparse) return RingAttention(on.comm, on.attention, layout, *ring, shard, out);
  SparseOptions sparse = options.sparse_options;
  sparse.timer = &timer;
  sparse.timer_layer = layer;
  absl::StatusOr<SparseCpResult> r =
      SparseCpAttention(on.comm, on.attention, layout, shard, sparse, out);
  if (!r.ok()) return r.status();
  return r->stats;
}

const BackendBuffer& NoBias() {
  static const BackendBuffer none{nullptr, [](void*) {}};
  return none;
}

// x (activation dtype) -> y (activation dtype) through w.
LinearParams Project(const Activations& a, int64_t n, const void* x, const WeightMatrix& w,
                     const BackendBuffer& bias, void* y) {
  return {x, a.dtype, n, &w, Floats(bias), y, a.dtype};
}

// hidden += x * w^T: the residual add folded into the GEMM's epilogue.
LinearParams ProjectIntoResidual(const Activations& a, int64_t n, const void* x, DType x_dtype,
                                 const WeightMatrix& w) {
  return {x, x_dtype, n, &w, nullptr, a.hidden, DType::kF32, /*accumulate=*/true};
}

RmsNormParams Normalize(const ModelConfig& c, const Activations& a, const float* x, int64_t rows,
                        const BackendBuffer& weight) {
  return {x,        Floats(weight), rows, c.hidden_size, static_cast<float>(c.rms_norm_eps),
          a.normed, a.dtype};
}

// Opens the timer's span of one op of layer `layer`.
#define PREFILL_PHASE(timer, phase, layer) PREFILL_RETURN_IF_ERROR((timer).Enter(phase, layer))

// RMSNorm, Q/K/V projections and RoPE: q, keys, values ready for attention.
absl::Status ProjectQkv(const TransformerBackends& on, const ModelConfig& c, const PreparedLayer& l,
                        int64_t n, const Activations& a, const int32_t* positions,
                        PhaseTimer& timer, int layer) {
  LayerBackend& m = on.layers;
  PREFILL_PHASE(timer, "input_norm", layer);
  PREFILL_RETURN_IF_ERROR(m.RmsNorm(Normalize(c, a, Floats(a.hidden), n, l.input_norm)));
  PREFILL_PHASE(timer, "qkv_proj", layer);
  // The bias goes in with the split.
  PREFILL_RETURN_IF_ERROR(m.Linear(Project(a, n, a.normed, l.qkv, NoBias(), a.gate_up)));
  PREFILL_PHASE(timer, "rope", layer);
  const auto* inv_freq = static_cast<const double*>(on.weights.inv_freq.get());
  return m.SplitQkv({a.gate_up, a.dtype, n, c.num_heads, c.num_kv_heads, c.head_dim, positions,
                     inv_freq, a.q, a.keys, a.values, Floats(l.qkv_bias)});
}

// Output projection into the residual, RMSNorm, SwiGLU MLP into the residual.
absl::Status OutputAndMlp(const TransformerBackends& on, const ModelConfig& c,
                          const PreparedLayer& l, int64_t n, const Activations& a, DType attn_dtype,
                          PhaseTimer& timer, int layer) {
  LayerBackend& m = on.layers;
  PREFILL_PHASE(timer, "o_proj", layer);
  PREFILL_RETURN_IF_ERROR(m.Linear(ProjectIntoResidual(a, n, a.attn, attn_dtype, l.o)));
  PREFILL_PHASE(timer, "post_norm", layer);
  PREFILL_RETURN_IF_ERROR(m.RmsNorm(Normalize(c, a, Floats(a.hidden), n, l.post_norm)));
  PREFILL_PHASE(timer, "gate_up_proj", layer);
  PREFILL_RETURN_IF_ERROR(m.Linear(Project(a, n, a.normed, l.gate_up, NoBias(), a.gate_up)));
  // silu(gate) * up lands in the gate half of each row, which the down projection reads.
  PREFILL_PHASE(timer, "swiglu", layer);
  const int64_t inter = c.intermediate_size;
  void* gate = a.gate_up;
  const void* up = static_cast<const std::byte*>(gate) + inter * DTypeSize(a.dtype);
  PREFILL_RETURN_IF_ERROR(m.SwiGlu({gate, up, a.dtype, inter, n, 2 * inter}));
  PREFILL_PHASE(timer, "down_proj", layer);
  LinearParams down = ProjectIntoResidual(a, n, gate, a.dtype, l.down);
  down.x_row_stride = 2 * inter;
  return m.Linear(down);
}

// K and V leave for the host in the KV dtype, under the attention, the MLP and the next layer.
absl::Status StartKvDownload(const TransformerBackends& on, const ModelConfig& c, int64_t n,
                             const Activations& a, const PrefillOptions& options,
                             PrefillOutput& out) {
  const int64_t layer_values = n * c.num_kv_heads * c.head_dim;
  const size_t layer_bytes = static_cast<size_t>(layer_values) * DTypeSize(options.kv_dtype);
  const auto t_alloc = Clock::now();
  absl::StatusOr<BackendBuffer> host = on.attention.AllocateHost(2 * layer_bytes);
  out.kv_host_alloc_seconds += Since(t_alloc);
  if (!host.ok()) return host.status();
  auto* keys = static_cast<std::byte*>(host->get());
  std::byte* values = keys + layer_bytes;
  out.kv_storage.push_back(std::shared_ptr<void>(host->release(), host->get_deleter()));
  PREFILL_RETURN_IF_ERROR(
      on.attention.StartDownload({a.keys, layer_values, options.kv_dtype, keys, a.dtype}));
  PREFILL_RETURN_IF_ERROR(
      on.attention.StartDownload({a.values, layer_values, options.kv_dtype, values, a.dtype}));
  out.keys.emplace_back(keys, layer_bytes);
  out.values.emplace_back(values, layer_bytes);
  if (options.on_kv_layer) {
    options.on_kv_layer(static_cast<int>(out.keys.size()) - 1, out.keys.back(), out.values.back(),
                        out.kv_storage.back(), on.attention.DownloadsStarted());
  }
  return absl::OkStatus();
}

// Sums the timer's spans: per op over the layers, and each layer's dense math (every op but
// attention and the KV download) into its report.
void ReportSpans(const std::vector<PhaseSpan>& spans, PrefillOutput& out) {
  for (const PhaseSpan& span : spans) {
    out.op_seconds[span.phase] += span.seconds;
    if (span.layer < 0 || span.layer >= static_cast<int>(out.layers.size())) continue;
    LayerReport& report = out.layers[span.layer];
    if (span.phase == "attention") {
      report.attention_device_seconds += span.seconds;
    } else if (span.phase == "mask_estimation") {
      report.estimate_device_seconds += span.seconds;
    } else if (span.phase != "kv_download") {
      report.gemm_seconds += span.seconds;
    }
  }
}

// The rank holding the last token computes its logits; a sum shares them with every rank.
absl::StatusOr<std::vector<float>> LastTokenLogits(const TransformerBackends& on,
                                                   const CpLayout& layout, const ModelConfig& c,
                                                   const Activations& a, int64_t last) {
  const BlockHome home = layout.HomeOf(last / layout.block_size());
  std::vector<double> logits(c.vocab_size, 0.0);
  if (home.rank == on.comm.rank()) {
    const int64_t row =
        int64_t{home.local_block} * layout.block_size() + last % layout.block_size();
    absl::StatusOr<BackendBuffer> out = on.attention.Allocate(sizeof(float) * c.vocab_size);
    if (!out.ok()) return out.status();
    PREFILL_RETURN_IF_ERROR(on.layers.RmsNorm(
        Normalize(c, a, Floats(a.hidden) + row * c.hidden_size, 1, on.weights.final_norm)));
    PREFILL_RETURN_IF_ERROR(
        on.layers.Linear({a.normed, a.dtype, 1, &on.weights.lm_head, nullptr, out->get()}));
    std::vector<float> host(c.vocab_size);
    PREFILL_RETURN_IF_ERROR(
        on.attention.CopyToHost(host.data(), out->get(), host.size() * sizeof(float)));
    for (int i = 0; i < c.vocab_size; ++i) logits[i] = host[i];
  }
  PREFILL_RETURN_IF_ERROR(on.comm.AllReduceSum(logits.data(), logits.size()));
  return std::vector<float>(logits.begin(), logits.end());
}

}  // namespace

absl::StatusOr<PrefillOutput> RunTransformerPrefill(const TransformerBackends& on,
                                                    const CpLayout& layout, const ModelConfig& c,
                                                    const PrefillInput& input,
                                                    int64_t last_position,
                                                    const PrefillOptions& options) {
  const int64_t n = layout.local_len();
  if (input.token_ids.empty() == input.embeddings.empty() ||
      (input.token_ids.empty() ? static_cast<int64_t>(input.embeddings.size()) != n * c.hidden_size
                               : static_cast<int64_t>(input.token_ids.size()) != n)) {
    return absl::InvalidArgumentError(absl::StrCat("RunTransformerPrefill: give ", n,
                                                   " token ids or ", n, " x ", c.hidden_size,
                                                   " embeddings (this rank's rows), not both"));
  }
  const auto t_setup = Clock::now();
  if (options.keep_kv) {
    on.attention.ReserveHost(KvCacheHostBytes(c, n, on.weights.layers.size(), options.kv_dtype));
  }
  PrefillWorkspace own_workspace;
  PrefillWorkspace& workspace = on.workspace ? *on.workspace : own_workspace;
  PREFILL_RETURN_IF_ERROR(workspace.Reserve(on.attention, on.layers.activation_dtype(), c, n));
  const Activations a = workspace.View();
  const std::vector<int32_t> host_positions = layout.Positions(on.comm.rank());
  absl::StatusOr<BackendBuffer> positions =
      UploadBytes(on.attention, host_positions.data(), host_positions.size() * sizeof(int32_t));
  if (!positions.ok()) return positions.status();
  PREFILL_RETURN_IF_ERROR(Embed(on, input, n, a));
  std::optional<RingAttentionPlan> ring;
  absl::StatusOr<std::unique_ptr<PhaseTimer>> timer = on.attention.NewPhaseTimer();
  if (!timer.ok()) return timer.status();
  PREFILL_RETURN_IF_ERROR(on.attention.Synchronize());
  PrefillOutput out;
  out.setup_seconds = Since(t_setup);
  out.kv_dtype = options.kv_dtype;
  out.layers.resize(on.weights.layers.size());
  const DType attn_dtype = AttentionOutputDType(on, a);
  for (size_t i = 0; i < on.weights.layers.size(); ++i) {
    const PreparedLayer& l = on.weights.layers[i];
    const int layer = static_cast<int>(i);
    PREFILL_RETURN_IF_ERROR(
        ProjectQkv(on, c, l, n, a, static_cast<const int32_t*>(positions->get()), **timer, layer));
    // K and V are final here: their download runs under this layer's attention, so the last
    // layer's ends before its MLP does.
    if (options.keep_kv) {
      PREFILL_PHASE(**timer, "kv_download", layer);
      PREFILL_RETURN_IF_ERROR(StartKvDownload(on, c, n, a, options, out));
    }
    PREFILL_PHASE(**timer, "attention", layer);
    if (!options.sparse && !ring) {
      // Built on the host while layer 0's projections and K/V download run (~6 ms of host
      // work at 128K tokens, which before the first layer kept the GPU idle).
      absl::StatusOr<RingAttentionPlan> plan = RingAttentionPlan::Create(
          on.attention, layout, on.comm.rank(), c.num_heads, /*causal=*/true);
      if (!plan.ok()) return plan.status();
      ring.emplace(*std::move(plan));
    }
    absl::StatusOr<CpAttentionStats> attention =
        Attend(on, layout, c, options, ring ? &*ring : nullptr, a, attn_dtype, **timer, layer);
    if (!attention.ok()) return attention.status();
    out.layers[i].attention = *attention;
    PREFILL_RETURN_IF_ERROR(OutputAndMlp(on, c, l, n, a, attn_dtype, **timer, layer));
  }
  PREFILL_PHASE(**timer, "logits", -1);
  absl::StatusOr<std::vector<float>> logits = LastTokenLogits(on, layout, c, a, last_position);
  if (!logits.ok()) return logits.status();
  out.last_logits = std::move(*logits);
  absl::StatusOr<std::vector<PhaseSpan>> spans = (*timer)->Finish();
  if (!spans.ok()) return spans.status();
  ReportSpans(*spans, out);
  // Its span where it ran: the host's clock here would also hold the wait for every queued layer.
  out.logits_seconds = out.op_seconds["logits"];
  const auto t = Clock::now();
  PREFILL_RETURN_IF_ERROR(on.attention.FinishDownloads());
  out.kv_download_wait_seconds = Since(t);
  return out;
}

}  // namespace prefill
