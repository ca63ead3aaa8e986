#include "runtime/transformer_prefill.h"

#include <chrono>
#include <cmath>

#include "parallel/ring_attention.h"
#include "runtime/layer_ops.h"
#include "runtime/rope.h"

namespace prefill {
namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct Scratch {
  std::vector<float> normed, q, k, v, attn, lse, proj, gate, up;
};

absl::StatusOr<CpAttentionStats> Attend(Communicator& comm, AttentionBackend& backend, const CpLayout& layout,
                                        const ModelConfig& c, const PrefillOptions& options, Scratch& s,
                                        std::vector<float>& keys, std::vector<float>& values) {
  const CpAttentionShard shard{DType::kF32, s.q.data(), keys.data(), values.data(), c.num_heads, c.num_kv_heads,
                               c.head_dim, /*causal=*/true, 1.0f / std::sqrt(static_cast<float>(c.head_dim))};
  const CpAttentionOutput out{s.attn.data(), s.lse.data()};
  if (!options.sparse) return RingAttention(comm, backend, layout, shard, out);
  absl::StatusOr<SparseCpResult> r = SparseCpAttention(comm, backend, layout, shard, options.sparse_options, out);
  if (!r.ok()) return r.status();
  return r->stats;
}

// The rank holding the last token computes its logits; a sum shares them with every rank.
absl::StatusOr<std::vector<float>> LastTokenLogits(Communicator& comm, const CpLayout& layout, const ModelConfig& c,
                                                   const ModelWeights& w, const std::vector<float>& hidden,
                                                   int64_t last) {
  const BlockHome home = layout.HomeOf(last / layout.block_size());
  std::vector<double> logits(c.vocab_size, 0.0);
  if (home.rank == comm.rank()) {
    const int64_t row = int64_t{home.local_block} * layout.block_size() + last % layout.block_size();
    std::vector<float> normed(c.hidden_size), out(c.vocab_size);
    RmsNorm(&hidden[row * c.hidden_size], 1, c.hidden_size, w.final_norm, c.rms_norm_eps, normed.data());
    Linear(normed.data(), 1, c.hidden_size, w.output_embedding(), {}, c.vocab_size, out.data());
    for (int i = 0; i < c.vocab_size; ++i) logits[i] = out[i];
  }
  if (absl::Status s = comm.AllReduceSum(logits.data(), logits.size()); !s.ok()) return s;
  return std::vector<float>(logits.begin(), logits.end());
}

}  // namespace

absl::StatusOr<PrefillOutput> RunTransformerPrefill(Communicator& comm, AttentionBackend& backend,
                                                    const CpLayout& layout, const ModelConfig& c,
                                                    const ModelWeights& w, std::vector<float> hidden,
                                                    int64_t last_position, const PrefillOptions& options) {
  const int64_t n = layout.local_len(), d = c.hidden_size;
  const int64_t q_dim = int64_t{c.num_heads} * c.head_dim, kv_dim = int64_t{c.num_kv_heads} * c.head_dim;
  const std::vector<int32_t> positions = layout.Positions(comm.rank());
  const std::vector<double> inv_freq = RopeInverseFrequencies(c);
  Scratch s;
  s.normed.resize(n * d);
  s.q.resize(n * q_dim);
  s.attn.resize(n * q_dim);
  s.lse.resize(n * c.num_heads);
  s.proj.resize(n * d);
  s.gate.resize(n * c.intermediate_size);
  s.up.resize(n * c.intermediate_size);

  PrefillOutput out;
  for (int i = 0; i < c.num_layers; ++i) {
    const LayerWeights& l = w.layers[i];
    LayerReport report;
    auto t = Clock::now();
    std::vector<float> keys(n * kv_dim), values(n * kv_dim);
    RmsNorm(hidden.data(), n, d, l.input_norm, c.rms_norm_eps, s.normed.data());
    Linear(s.normed.data(), n, d, l.q_proj, l.q_bias, q_dim, s.q.data());
    Linear(s.normed.data(), n, d, l.k_proj, l.k_bias, kv_dim, keys.data());
    Linear(s.normed.data(), n, d, l.v_proj, l.v_bias, kv_dim, values.data());
    ApplyRope(s.q.data(), c.num_heads, c.head_dim, positions, inv_freq);
    ApplyRope(keys.data(), c.num_kv_heads, c.head_dim, positions, inv_freq);
    report.gemm_seconds += Since(t);

    absl::StatusOr<CpAttentionStats> attention = Attend(comm, backend, layout, c, options, s, keys, values);
    if (!attention.ok()) return attention.status();
    report.attention = *attention;

    t = Clock::now();
    Linear(s.attn.data(), n, q_dim, l.o_proj, {}, d, s.proj.data());
    AddInPlace(hidden.data(), s.proj.data(), n * d);
    RmsNorm(hidden.data(), n, d, l.post_norm, c.rms_norm_eps, s.normed.data());
    Linear(s.normed.data(), n, d, l.gate_proj, {}, c.intermediate_size, s.gate.data());
    Linear(s.normed.data(), n, d, l.up_proj, {}, c.intermediate_size, s.up.data());
    SwiGlu(s.gate.data(), s.up.data(), n * c.intermediate_size);
    Linear(s.gate.data(), n, c.intermediate_size, l.down_proj, {}, d, s.proj.data());
    AddInPlace(hidden.data(), s.proj.data(), n * d);
    report.gemm_seconds += Since(t);

    out.keys.push_back(std::move(keys));
    out.values.push_back(std::move(values));
    out.layers.push_back(report);
  }
  absl::StatusOr<std::vector<float>> logits = LastTokenLogits(comm, layout, c, w, hidden, last_position);
  if (!logits.ok()) return logits.status();
  out.last_logits = std::move(*logits);
  return out;
}

}  // namespace prefill
