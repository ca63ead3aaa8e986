// Rotary position embedding frequencies (Hugging Face rotate_half convention: dimension i
// pairs with i + head_dim/2), with Llama 3 and linear frequency scaling. The rotation itself
// is LayerBackend::Rope (kernels/layer_backend.h).
#pragma once

#include <vector>

#include "runtime/model_config.h"

namespace prefill {

// [head_dim / 2] inverse frequencies after scaling.
std::vector<double> RopeInverseFrequencies(const ModelConfig& config);

}  // namespace prefill
