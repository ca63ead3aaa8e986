#include "runtime/transformer_prefill.h"

#include <chrono>
#include <cmath>

#include "parallel/ring_attention.h"
#include "runtime/execution_context.h"
#include "runtime/status_macros.h"

namespace prefill {
namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// This rank's activations, in backend memory: the residual stream (hidden), attention's
// output and lse in fp32; the GEMMs' inputs and outputs (normed, q, keys, values, gate, up)
// in the layer backend's activation dtype.
struct Activations {
  DType dtype = DType::kF32;
  BackendBuffer hidden, normed, q, keys, values, attn, lse, gate, up, positions;
};

// A backend buffer of fp32 values (activations, norm weights, biases; null stays null).
float* Floats(const BackendBuffer& b) { return static_cast<float*>(b.get()); }

absl::StatusOr<Activations> AllocateActivations(AttentionBackend& memory, DType dtype, const ModelConfig& c,
                                                int64_t n, const std::vector<float>& hidden,
                                                const std::vector<int32_t>& positions) {
  const size_t f = sizeof(float), e = DTypeSize(dtype), d = c.hidden_size, inter = c.intermediate_size;
  const size_t q_dim = size_t{static_cast<size_t>(c.num_heads)} * c.head_dim;
  const size_t kv_dim = size_t{static_cast<size_t>(c.num_kv_heads)} * c.head_dim;
  absl::StatusOr<BackendBuffer> b[] = {
      UploadBytes(memory, hidden.data(), hidden.size() * f), memory.Allocate(n * d * e), memory.Allocate(n * q_dim * e),
      memory.Allocate(n * kv_dim * e), memory.Allocate(n * kv_dim * e), memory.Allocate(n * q_dim * f),
      memory.Allocate(n * c.num_heads * f), memory.Allocate(n * inter * e), memory.Allocate(n * inter * e),
      UploadBytes(memory, positions.data(), positions.size() * sizeof(int32_t))};
  for (const auto& buffer : b) {
    if (!buffer.ok()) return buffer.status();
  }
  return Activations{dtype,           std::move(*b[0]), std::move(*b[1]), std::move(*b[2]), std::move(*b[3]),
                     std::move(*b[4]), std::move(*b[5]), std::move(*b[6]), std::move(*b[7]), std::move(*b[8]),
                     std::move(*b[9])};
}

absl::StatusOr<CpAttentionStats> Attend(const TransformerBackends& on, const CpLayout& layout, const ModelConfig& c,
                                        const PrefillOptions& options, const Activations& a) {
  const CpAttentionShard shard{a.dtype, a.q.get(), a.keys.get(), a.values.get(), c.num_heads, c.num_kv_heads,
                               c.head_dim, /*causal=*/true, 1.0f / std::sqrt(static_cast<float>(c.head_dim))};
  const CpAttentionOutput out{Floats(a.attn), Floats(a.lse)};
  if (!options.sparse) return RingAttention(on.comm, on.attention, layout, shard, out);
  absl::StatusOr<SparseCpResult> r = SparseCpAttention(on.comm, on.attention, layout, shard, options.sparse_options, out);
  if (!r.ok()) return r.status();
  return r->stats;
}

// x (activation dtype) -> y (activation dtype) through w.
LinearParams Project(const Activations& a, int64_t n, const BackendBuffer& x, const WeightMatrix& w,
                     const BackendBuffer& bias, const BackendBuffer& y) {
  return {x.get(), a.dtype, n, &w, Floats(bias), y.get(), a.dtype};
}

// hidden += x * w^T: the residual add folded into the GEMM's epilogue.
LinearParams ProjectIntoResidual(const Activations& a, int64_t n, const void* x, DType x_dtype,
                                 const WeightMatrix& w) {
  return {x, x_dtype, n, &w, nullptr, a.hidden.get(), DType::kF32, /*accumulate=*/true};
}

RmsNormParams Normalize(const ModelConfig& c, const Activations& a, const float* x, int64_t rows,
                        const BackendBuffer& weight) {
  return {x, Floats(weight), rows, c.hidden_size, static_cast<float>(c.rms_norm_eps), a.normed.get(), a.dtype};
}

// RMSNorm, Q/K/V projections and RoPE: q, keys, values ready for attention.
absl::Status ProjectQkv(const TransformerBackends& on, const ModelConfig& c, const PreparedLayer& l, int64_t n,
                        const Activations& a) {
  LayerBackend& m = on.layers;
  PREFILL_RETURN_IF_ERROR(m.RmsNorm(Normalize(c, a, Floats(a.hidden), n, l.input_norm)));
  PREFILL_RETURN_IF_ERROR(m.Linear(Project(a, n, a.normed, l.q, l.q_bias, a.q)));
  PREFILL_RETURN_IF_ERROR(m.Linear(Project(a, n, a.normed, l.k, l.k_bias, a.keys)));
  PREFILL_RETURN_IF_ERROR(m.Linear(Project(a, n, a.normed, l.v, l.v_bias, a.values)));
  const auto* positions = static_cast<const int32_t*>(a.positions.get());
  const auto* inv_freq = static_cast<const double*>(on.weights.inv_freq.get());
  PREFILL_RETURN_IF_ERROR(m.Rope({a.q.get(), a.dtype, n, c.num_heads, c.head_dim, positions, inv_freq}));
  return m.Rope({a.keys.get(), a.dtype, n, c.num_kv_heads, c.head_dim, positions, inv_freq});
}

// Output projection into the residual, RMSNorm, SwiGLU MLP into the residual.
absl::Status OutputAndMlp(const TransformerBackends& on, const ModelConfig& c, const PreparedLayer& l, int64_t n,
                          const Activations& a) {
  LayerBackend& m = on.layers;
  const BackendBuffer none{nullptr, [](void*) {}};
  PREFILL_RETURN_IF_ERROR(m.Linear(ProjectIntoResidual(a, n, a.attn.get(), DType::kF32, l.o)));
  PREFILL_RETURN_IF_ERROR(m.RmsNorm(Normalize(c, a, Floats(a.hidden), n, l.post_norm)));
  PREFILL_RETURN_IF_ERROR(m.Linear(Project(a, n, a.normed, l.gate, none, a.gate)));
  PREFILL_RETURN_IF_ERROR(m.Linear(Project(a, n, a.normed, l.up, none, a.up)));
  PREFILL_RETURN_IF_ERROR(m.SwiGlu({a.gate.get(), a.up.get(), a.dtype, n * c.intermediate_size}));
  return m.Linear(ProjectIntoResidual(a, n, a.gate.get(), a.dtype, l.down));
}

// The rank holding the last token computes its logits; a sum shares them with every rank.
absl::StatusOr<std::vector<float>> LastTokenLogits(const TransformerBackends& on, const CpLayout& layout,
                                                   const ModelConfig& c, const Activations& a, int64_t last) {
  const BlockHome home = layout.HomeOf(last / layout.block_size());
  std::vector<double> logits(c.vocab_size, 0.0);
  if (home.rank == on.comm.rank()) {
    const int64_t row = int64_t{home.local_block} * layout.block_size() + last % layout.block_size();
    absl::StatusOr<BackendBuffer> out = on.attention.Allocate(sizeof(float) * c.vocab_size);
    if (!out.ok()) return out.status();
    PREFILL_RETURN_IF_ERROR(
        on.layers.RmsNorm(Normalize(c, a, Floats(a.hidden) + row * c.hidden_size, 1, on.weights.final_norm)));
    PREFILL_RETURN_IF_ERROR(on.layers.Linear({a.normed.get(), a.dtype, 1, &on.weights.lm_head, nullptr, out->get()}));
    std::vector<float> host(c.vocab_size);
    PREFILL_RETURN_IF_ERROR(on.attention.CopyToHost(host.data(), out->get(), host.size() * sizeof(float)));
    for (int i = 0; i < c.vocab_size; ++i) logits[i] = host[i];
  }
  PREFILL_RETURN_IF_ERROR(on.comm.AllReduceSum(logits.data(), logits.size()));
  return std::vector<float>(logits.begin(), logits.end());
}

}  // namespace

absl::StatusOr<PrefillOutput> RunTransformerPrefill(const TransformerBackends& on, const CpLayout& layout,
                                                    const ModelConfig& c, const std::vector<float>& hidden,
                                                    int64_t last_position, const PrefillOptions& options) {
  const int64_t n = layout.local_len(), kv_dim = int64_t{c.num_kv_heads} * c.head_dim;
  const auto t_setup = Clock::now();
  absl::StatusOr<Activations> a =
      AllocateActivations(on.attention, on.layers.activation_dtype(), c, n, hidden, layout.Positions(on.comm.rank()));
  if (!a.ok()) return a.status();

  PREFILL_RETURN_IF_ERROR(on.attention.Synchronize());
  PrefillOutput out;
  out.setup_seconds = Since(t_setup);
  out.kv_dtype = options.kv_dtype;
  const int64_t layer_values = n * kv_dim;
  const size_t layer_bytes = static_cast<size_t>(layer_values) * DTypeSize(options.kv_dtype);
  for (const PreparedLayer& l : on.weights.layers) {
    LayerReport report;
    auto t = Clock::now();
    PREFILL_RETURN_IF_ERROR(ProjectQkv(on, c, l, n, *a));
    PREFILL_RETURN_IF_ERROR(on.attention.Synchronize());  // GPU work is queued: time it done
    report.gemm_seconds += Since(t);

    absl::StatusOr<CpAttentionStats> attention = Attend(on, layout, c, options, *a);
    if (!attention.ok()) return attention.status();
    report.attention = *attention;

    t = Clock::now();
    if (options.keep_kv) {  // K and V travel under the MLP and the next layer
      const auto t_alloc = Clock::now();
      absl::StatusOr<BackendBuffer> host = on.attention.AllocateHost(2 * layer_bytes);
      out.kv_host_alloc_seconds += Since(t_alloc);
      if (!host.ok()) return host.status();
      auto* keys = static_cast<std::byte*>(host->get());
      std::byte* values = keys + layer_bytes;
      out.kv_storage.push_back(*std::move(host));
      PREFILL_RETURN_IF_ERROR(on.attention.StartDownload({a->keys.get(), layer_values, options.kv_dtype, keys, a->dtype}));
      PREFILL_RETURN_IF_ERROR(on.attention.StartDownload({a->values.get(), layer_values, options.kv_dtype, values, a->dtype}));
      out.keys.emplace_back(keys, layer_bytes);
      out.values.emplace_back(values, layer_bytes);
    }
    PREFILL_RETURN_IF_ERROR(OutputAndMlp(on, c, l, n, *a));
    PREFILL_RETURN_IF_ERROR(on.attention.Synchronize());
    report.gemm_seconds += Since(t);
    out.layers.push_back(report);
  }
  auto t = Clock::now();
  absl::StatusOr<std::vector<float>> logits = LastTokenLogits(on, layout, c, *a, last_position);
  if (!logits.ok()) return logits.status();
  out.last_logits = std::move(*logits);
  out.logits_seconds = Since(t);
  t = Clock::now();
  PREFILL_RETURN_IF_ERROR(on.attention.FinishDownloads());
  out.kv_download_wait_seconds = Since(t);
  return out;
}

}  // namespace prefill
