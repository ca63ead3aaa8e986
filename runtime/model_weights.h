// ModelWeights: a Llama-family model's tensors, read from one or several safetensors files
// (model.safetensors, or model.safetensors.index.json naming the shards), checked against
// the config's shapes, converted once to fp32 and replicated on every rank (context
// parallelism shards the sequence, not the model).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/model_config.h"

namespace prefill {

struct LayerWeights {
  std::vector<float> input_norm;      // [hidden]
  std::vector<float> q_proj, q_bias;  // [heads*head_dim, hidden], [heads*head_dim] or empty
  std::vector<float> k_proj, k_bias;  // [kv_heads*head_dim, hidden]
  std::vector<float> v_proj, v_bias;
  std::vector<float> o_proj;          // [hidden, heads*head_dim]
  std::vector<float> post_norm;       // [hidden]
  std::vector<float> gate_proj;       // [intermediate, hidden]
  std::vector<float> up_proj;         // [intermediate, hidden]
  std::vector<float> down_proj;       // [hidden, intermediate]
};

struct ModelWeights {
  std::vector<float> embed_tokens;  // [vocab, hidden]
  std::vector<LayerWeights> layers;
  std::vector<float> final_norm;    // [hidden]
  std::vector<float> lm_head;       // [vocab, hidden]; empty when tied to embed_tokens
  const std::vector<float>& output_embedding() const { return lm_head.empty() ? embed_tokens : lm_head; }
};

// InvalidArgument naming the file and tensor for a missing tensor, a wrong shape or dtype,
// or a malformed file.
absl::StatusOr<ModelWeights> LoadModelWeights(const std::string& model_dir, const ModelConfig& config);

}  // namespace prefill
