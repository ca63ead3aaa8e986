// ModelWeights: a Llama-family model's tensors, read from one or several safetensors files
// (model.safetensors, or model.safetensors.index.json naming the shards) and checked against
// the config's shapes. Matrices and the embedding table stay where they are, in the mapped
// files, in the checkpoint's dtype (the backends prepare them from there: a bf16 checkpoint
// goes to the GPU without a conversion); the small vectors (norms, biases) are converted to
// fp32. Replicated on every rank (context parallelism shards the sequence, not the model).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/dtype.h"
#include "kernels/layer_backend.h"
#include "runtime/model_config.h"

namespace prefill {

// A matrix inside a mapped checkpoint file, valid while its ModelWeights lives.
using WeightView = MatrixSource;

struct LayerWeights {
  std::vector<float> input_norm;  // [hidden]
  WeightView q_proj;              // [heads*head_dim, hidden]
  std::vector<float> q_bias;      // [heads*head_dim] or empty
  WeightView k_proj;              // [kv_heads*head_dim, hidden]
  std::vector<float> k_bias;
  WeightView v_proj;
  std::vector<float> v_bias;
  WeightView o_proj;             // [hidden, heads*head_dim]
  std::vector<float> post_norm;  // [hidden]
  WeightView gate_proj;          // [intermediate, hidden]
  WeightView up_proj;            // [intermediate, hidden]
  WeightView down_proj;          // [hidden, intermediate]
};

struct ModelWeights {
  std::shared_ptr<const void> files;  // the mapped checkpoint the views point into
  WeightView embed_tokens;            // [vocab, hidden]
  std::vector<LayerWeights> layers;
  std::vector<float> final_norm;  // [hidden]
  WeightView lm_head;             // [vocab, hidden]; data null when tied to embed_tokens
  const WeightView& output_embedding() const { return lm_head.data ? lm_head : embed_tokens; }
};

// InvalidArgument naming the file and tensor for a missing tensor, a wrong shape or dtype,
// or a malformed file.
absl::StatusOr<ModelWeights> LoadModelWeights(const std::string& model_dir,
                                              const ModelConfig& config);

}  // namespace prefill
