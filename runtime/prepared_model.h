// PreparedModel: a model's weights in the form one backend computes with, made once per
// process from the mapped checkpoint (runtime/model_weights.h) and then shared by every
// request: matrices through LayerBackend::PrepareMatrix (the CPU reads fp32 checkpoints in
// place and converts others, CUDA holds a bf16 copy), vectors (norms, biases, RoPE
// frequencies) uploaded as fp32.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/layer_backend.h"
#include "runtime/model_config.h"
#include "runtime/model_weights.h"

namespace prefill {

// The Q, K and V projections are one matrix (qkv: q rows, then k, then v) and so are gate and
// up (gate_up: gate rows, then up): one GEMM each.
struct PreparedLayer {
  BackendBuffer input_norm{nullptr, [](void*) {}},
      post_norm{nullptr, [](void*) {}};  // fp32 [hidden]
  BackendBuffer qkv_bias{nullptr,
                         [](void*) {}};  // fp32 [q_dim + 2 kv_dim], null when the model has none
  WeightMatrix qkv, o, gate_up, down;
};

struct PreparedModel {
  std::vector<PreparedLayer> layers;
  BackendBuffer final_norm{nullptr, [](void*) {}};  // fp32 [hidden]
  BackendBuffer inv_freq{nullptr, [](void*) {}};    // fp64 [head_dim / 2], after RoPE scaling
  WeightMatrix lm_head;                             // [vocab, hidden] (the embeddings when tied)
  WeightMatrix embed_tokens;  // [vocab, hidden]; data null when tied to lm_head
  const WeightMatrix& input_embeddings() const {
    return embed_tokens.data ? embed_tokens : lm_head;
  }
};

// `weights` must outlive the result (the CPU backend reads its matrices in place).
absl::StatusOr<PreparedModel> PrepareModel(const ModelConfig& config, const ModelWeights& weights,
                                           AttentionBackend& memory, LayerBackend& layers);

}  // namespace prefill
