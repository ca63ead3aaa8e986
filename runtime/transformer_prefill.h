// Prefill of a Llama-family decoder over the context-parallel attention: each rank runs the
// dense math on its own rows (activations O(L/N)), attention is the spine's dense ring or
// sparse CP attention, and the rank holding the last token computes its logits.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "parallel/communicator.h"
#include "parallel/cp_layout.h"
#include "parallel/sparse_cp_attention.h"
#include "runtime/model_config.h"
#include "runtime/model_weights.h"

namespace prefill {

struct PrefillOptions {
  bool sparse = false;
  SparseOptions sparse_options;
};

struct LayerReport {
  int64_t selected_blocks = 0, visible_blocks = 0;  // this rank's
  CpAttentionStats attention;
  double gemm_seconds = 0;  // projections, norms, MLP
};

struct PrefillOutput {
  std::vector<std::vector<float>> keys, values;  // per layer: local rows [n, kv_heads, head_dim], after RoPE
  std::vector<float> last_logits;                // [vocab] on every rank
  std::vector<LayerReport> layers;
};

// hidden: this rank's input embeddings [local_len, hidden] in local order; consumed.
// last_position: the token whose logits are wanted (the sequence may be padded past it;
// causal attention keeps padding from touching earlier tokens).
absl::StatusOr<PrefillOutput> RunTransformerPrefill(Communicator& comm, AttentionBackend& backend,
                                                    const CpLayout& layout, const ModelConfig& config,
                                                    const ModelWeights& weights, std::vector<float> hidden,
                                                    int64_t last_position, const PrefillOptions& options);

}  // namespace prefill
