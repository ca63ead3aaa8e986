// What a prefill request feeds the model: token ids (.npy int32/int64 1-D, or a JSON array)
// or precomputed input embeddings (safetensors, one tensor [L, hidden]) for vision/video tokens.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace prefill {

// InvalidArgument naming the file on a malformed file; OutOfRange naming the position of a
// token id outside [0, vocab_size).
absl::StatusOr<std::vector<int32_t>> ReadTokenIds(const std::string& path, int vocab_size);

}  // namespace prefill
