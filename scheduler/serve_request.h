// ServeRequest: one `POST /v1/prefill` body of `prefill serve`, parsed and checked before it
// is queued, so that a bad request gets its 400 at once and never reaches the ranks:
//   {"id": "doc-17", "tokens": [1, 2, ...] | "tokens_file": "a.npy" | "embeddings_file":
//   "v.safetensors",
//    "mode": "sparse", "tau": 0.9, "priority": 1, "kv_target": "decode-3:7000", "kv_out": "doc-17"}
// Files (tokens_file, embeddings_file, kv_out) are relative paths under the server's
// --files-root: a client names files there and nowhere else.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "parallel/cp_attention.h"

namespace prefill {

struct ServeRequest {
  std::string id;               // [A-Za-z0-9._-], 1-200 characters: names files and the request
  std::vector<int32_t> tokens;  // inline ids; empty when a file gives the prompt
  std::string tokens_path;      // resolved under the files root
  std::string embeddings_path;  // resolved under the files root
  std::optional<AttentionMode> mode;  // "dense" or "sparse"; the server's default otherwise
  std::optional<float> tau;
  int priority = 0;       // higher first
  std::string kv_target;  // host:port of a decode server; empty: none
  std::string kv_out;     // resolved under the files root; empty: not written

  // The request as the ranks receive it (files resolved; tokens inline).
  nlohmann::json ToJson() const;
  static ServeRequest FromJson(const nlohmann::json& j);
};

struct ServeRequestLimits {
  std::filesystem::path files_root;  // absolute
  int64_t max_inline_tokens = int64_t{1} << 22;
};

// InvalidArgument with the reason for: malformed JSON, unknown or mistyped fields, a bad id,
// not exactly one prompt source, too many inline tokens, a path that is absolute or leaves
// the files root, a prompt file that does not exist, a malformed kv_target.
absl::StatusOr<ServeRequest> ParseServeRequest(std::string_view body,
                                               const ServeRequestLimits& limits);

}  // namespace prefill
