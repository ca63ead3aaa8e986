#include "runtime/prepared_model.h"

#include <algorithm>

#include "runtime/execution_context.h"
#include "runtime/rope.h"
#include "runtime/status_macros.h"

namespace prefill {
namespace {

template <typename T>
absl::StatusOr<BackendBuffer> Upload(AttentionBackend& memory, const std::vector<T>& values) {
  if (values.empty()) return BackendBuffer(nullptr, [](void*) {});
  return UploadBytes(memory, values.data(), values.size() * sizeof(T));
}

// The fused projection's bias: q's, k's and v's end to end (Qwen2 has them; a model with none
// gets none). A model with some but not all gets zeros for the missing.
std::vector<float> QkvBias(const ModelConfig& c, const LayerWeights& l) {
  if (l.q_bias.empty() && l.k_bias.empty() && l.v_bias.empty()) return {};
  const size_t q_dim = size_t{static_cast<size_t>(c.num_heads)} * c.head_dim;
  const size_t kv_dim = size_t{static_cast<size_t>(c.num_kv_heads)} * c.head_dim;
  std::vector<float> bias(q_dim + 2 * kv_dim, 0.0f);
  std::copy(l.q_bias.begin(), l.q_bias.end(), bias.begin());
  std::copy(l.k_bias.begin(), l.k_bias.end(), bias.begin() + q_dim);
  std::copy(l.v_bias.begin(), l.v_bias.end(), bias.begin() + q_dim + kv_dim);
  return bias;
}

}  // namespace

absl::StatusOr<PreparedModel> PrepareModel(const ModelConfig& c, const ModelWeights& w, AttentionBackend& memory,
                                           LayerBackend& layers) {
  PreparedModel m;
  m.layers.resize(w.layers.size());
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const LayerWeights& l = w.layers[i];
    PreparedLayer& p = m.layers[i];
    PREFILL_ASSIGN_OR_RETURN(p.input_norm, Upload(memory, l.input_norm));
    PREFILL_ASSIGN_OR_RETURN(p.post_norm, Upload(memory, l.post_norm));
    PREFILL_ASSIGN_OR_RETURN(p.qkv_bias, Upload(memory, QkvBias(c, l)));
    const MatrixSource qkv[] = {l.q_proj, l.k_proj, l.v_proj}, gate_up[] = {l.gate_proj, l.up_proj};
    PREFILL_ASSIGN_OR_RETURN(p.qkv, layers.PrepareMatrix(qkv));
    PREFILL_ASSIGN_OR_RETURN(p.o, layers.PrepareMatrix(l.o_proj));
    PREFILL_ASSIGN_OR_RETURN(p.gate_up, layers.PrepareMatrix(gate_up));
    PREFILL_ASSIGN_OR_RETURN(p.down, layers.PrepareMatrix(l.down_proj));
  }
  PREFILL_ASSIGN_OR_RETURN(m.final_norm, Upload(memory, w.final_norm));
  PREFILL_ASSIGN_OR_RETURN(m.inv_freq, Upload(memory, RopeInverseFrequencies(c)));
  PREFILL_ASSIGN_OR_RETURN(m.lm_head, layers.PrepareMatrix(w.output_embedding()));
  if (w.lm_head.data) PREFILL_ASSIGN_OR_RETURN(m.embed_tokens, layers.PrepareMatrix(w.embed_tokens));
  return m;
}

}  // namespace prefill
