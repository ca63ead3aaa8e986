// ModelConfig: the decoder-only transformer a Hugging Face folder describes (config.json),
// for the Llama family: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace prefill {

struct RopeScaling {
  std::string type;  // "" (none), "linear" or "llama3"
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int original_max_position_embeddings = 8192;
};

struct ModelConfig {
  std::string architecture;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  int vocab_size = 0;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // Qwen2: q/k/v projections carry biases
};

// Reads DIR/config.json. InvalidArgument naming the file and the field on anything missing,
// mistyped, inconsistent (heads not a multiple of KV heads, ...) or unsupported.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir);
// The same from the file's text; `path` names it in messages.
absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& text, const std::string& path);

}  // namespace prefill
