// Rotary position embedding (Hugging Face rotate_half convention: dimension i pairs with
// i + head_dim/2) on absolute positions, with Llama 3 and linear frequency scaling.
#pragma once

#include <span>
#include <vector>

#include "runtime/model_config.h"

namespace prefill {

// [head_dim / 2] inverse frequencies after scaling.
std::vector<double> RopeInverseFrequencies(const ModelConfig& config);

// Rotates x [rows, heads, head_dim] in place; row r sits at absolute position positions[r].
void ApplyRope(float* x, int heads, int head_dim, std::span<const int32_t> positions,
               const std::vector<double>& inv_freq);

}  // namespace prefill
