#include "runtime/prepared_model.h"

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
    PREFILL_ASSIGN_OR_RETURN(p.q_bias, Upload(memory, l.q_bias));
    PREFILL_ASSIGN_OR_RETURN(p.k_bias, Upload(memory, l.k_bias));
    PREFILL_ASSIGN_OR_RETURN(p.v_bias, Upload(memory, l.v_bias));
    PREFILL_ASSIGN_OR_RETURN(p.q, layers.PrepareMatrix(l.q_proj));
    PREFILL_ASSIGN_OR_RETURN(p.k, layers.PrepareMatrix(l.k_proj));
    PREFILL_ASSIGN_OR_RETURN(p.v, layers.PrepareMatrix(l.v_proj));
    PREFILL_ASSIGN_OR_RETURN(p.o, layers.PrepareMatrix(l.o_proj));
    PREFILL_ASSIGN_OR_RETURN(p.gate, layers.PrepareMatrix(l.gate_proj));
    PREFILL_ASSIGN_OR_RETURN(p.up, layers.PrepareMatrix(l.up_proj));
    PREFILL_ASSIGN_OR_RETURN(p.down, layers.PrepareMatrix(l.down_proj));
  }
  PREFILL_ASSIGN_OR_RETURN(m.final_norm, Upload(memory, w.final_norm));
  PREFILL_ASSIGN_OR_RETURN(m.inv_freq, Upload(memory, RopeInverseFrequencies(c)));
  PREFILL_ASSIGN_OR_RETURN(m.lm_head, layers.PrepareMatrix(w.output_embedding()));
  return m;
}

}  // namespace prefill
