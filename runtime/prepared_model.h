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

struct PreparedLayer {
  BackendBuffer input_norm{nullptr, [](void*) {}}, post_norm{nullptr, [](void*) {}};  // fp32 [hidden]
  BackendBuffer q_bias{nullptr, [](void*) {}}, k_bias{nullptr, [](void*) {}},        // fp32, null when the
      v_bias{nullptr, [](void*) {}};                                                 // model has none
  WeightMatrix q, k, v, o, gate, up, down;
};

struct PreparedModel {
  std::vector<PreparedLayer> layers;
  BackendBuffer final_norm{nullptr, [](void*) {}};  // fp32 [hidden]
  BackendBuffer inv_freq{nullptr, [](void*) {}};    // fp64 [head_dim / 2], after RoPE scaling
  WeightMatrix lm_head;                             // [vocab, hidden] (the embeddings when tied)
};

// `weights` must outlive the result (the CPU backend reads its matrices in place).
absl::StatusOr<PreparedModel> PrepareModel(const ModelConfig& config, const ModelWeights& weights,
                                           AttentionBackend& memory, LayerBackend& layers);

}  // namespace prefill
