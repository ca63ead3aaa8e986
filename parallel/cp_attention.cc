#include "parallel/cp_attention.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace prefill {

absl::StatusOr<AttentionMode> ParseAttentionMode(std::string_view name) {
  if (name == "dense") return AttentionMode::kDense;
  if (name == "sparse") return AttentionMode::kSparse;
  return absl::InvalidArgumentError(
      absl::StrCat("--mode '", std::string(name), "' is not a mode (valid: dense, sparse)"));
}

const char* AttentionModeName(AttentionMode mode) {
  return mode == AttentionMode::kDense ? "dense" : "sparse";
}

}  // namespace prefill
