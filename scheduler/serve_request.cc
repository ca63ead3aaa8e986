#include "scheduler/serve_request.h"

#include <algorithm>
#include <iterator>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "runtime/socket_address.h"
#include "scheduler/manifest.h"

namespace prefill {
namespace {

absl::Status Bad(const std::string& why) { return absl::InvalidArgumentError(why); }

// `relative` under `root`, or why not: no absolute paths, no way out through "..".
absl::StatusOr<std::string> UnderRoot(const std::filesystem::path& root, const std::string& field,
                                      const std::string& relative) {
  const std::filesystem::path p(relative);
  if (relative.empty() || p.is_absolute()) {
    return Bad(absl::StrCat("'", field, "' must be a relative path under the server's files root"));
  }
  std::filesystem::path joined = (root / p).lexically_normal();
  if (joined.filename().empty()) joined = joined.parent_path();  // "dir/" names dir
  const auto [end, unused] = std::mismatch(root.begin(), root.end(), joined.begin(), joined.end());
  if (end != root.end() || joined == root) {
    return Bad(absl::StrCat("'", field, "' leaves the server's files root"));
  }
  return joined.string();
}

// The KV sink's own parser (it also resolves the host), so a request fails here, not later.
absl::Status CheckHostPort(const std::string& target) {
  if (absl::StatusOr<SocketAddress> a = ResolveHostPort(target, /*passive=*/false); !a.ok()) {
    return Bad(
        absl::StrCat("'kv_target' must be host:port of a decode server: ", a.status().message()));
  }
  return absl::OkStatus();
}

absl::Status ParseInlineTokens(const nlohmann::json& tokens, int64_t limit, ServeRequest& r) {
  if (!tokens.is_array() || tokens.empty())
    return Bad("'tokens' must be a non-empty array of token ids");
  if (static_cast<int64_t>(tokens.size()) > limit) {
    return Bad(absl::StrCat("'tokens' holds ", tokens.size(), " ids; inline prompts take at most ",
                            limit, " (pass a tokens_file for longer ones)"));
  }
  r.tokens.reserve(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    const nlohmann::json& t = tokens[i];
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > INT32_MAX) {
      return Bad(absl::StrCat("'tokens'[", i, "] is not a token id (a non-negative integer)"));
    }
    r.tokens.push_back(static_cast<int32_t>(t.get<int64_t>()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ServeRequest> ParseServeRequest(std::string_view body,
                                               const ServeRequestLimits& limits) {
  const nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Bad("the body is not valid JSON");
  if (!j.is_object()) return Bad("the body is not a JSON object");
  static const char* kKnown[] = {"id",  "tokens",   "tokens_file", "embeddings_file", "mode",
                                 "tau", "priority", "kv_target",   "kv_out"};
  for (const auto& [key, value] : j.items()) {
    if (std::find(std::begin(kKnown), std::end(kKnown), key) == std::end(kKnown)) {
      return Bad(absl::StrCat("unknown field '", key,
                              "' (valid: id, tokens, tokens_file, embeddings_file, mode, tau, "
                              "priority, kv_target, kv_out)"));
    }
  }
  // The id, mode, tau and priority rules are the manifest's.
  nlohmann::json common = nlohmann::json::object();
  for (const char* key : {"id", "mode", "tau", "priority"}) {
    if (j.contains(key)) common[key] = j[key];
  }
  common["tokens"] = "inline";
  absl::StatusOr<BatchRequest> checked = ParseManifestLine(common.dump(), 0);
  if (!checked.ok()) return checked.status();
  ServeRequest r;
  r.id = checked->id;
  r.mode = checked->mode;
  r.tau = checked->tau;
  r.priority = checked->priority;

  const int sources =
      j.contains("tokens") + j.contains("tokens_file") + j.contains("embeddings_file");
  if (sources != 1)
    return Bad("needs exactly one of 'tokens', 'tokens_file' and 'embeddings_file'");
  if (j.contains("tokens")) {
    PREFILL_RETURN_IF_ERROR(ParseInlineTokens(j["tokens"], limits.max_inline_tokens, r));
  }
  for (const auto& [field, out] :
       {std::pair<const char*, std::string*>{"tokens_file", &r.tokens_path},
        {"embeddings_file", &r.embeddings_path},
        {"kv_out", &r.kv_out}}) {
    if (!j.contains(field)) continue;
    if (!j[field].is_string()) return Bad(absl::StrCat("'", field, "' must be a string"));
    absl::StatusOr<std::string> path =
        UnderRoot(limits.files_root, field, j[field].get<std::string>());
    if (!path.ok()) return path.status();
    *out = *path;
  }
  for (const std::string* input : {&r.tokens_path, &r.embeddings_path}) {
    std::error_code ec;
    if (!input->empty() && !std::filesystem::is_regular_file(*input, ec)) {
      return Bad(absl::StrCat("the prompt file '", *input, "' does not exist"));
    }
  }
  if (j.contains("kv_target")) {
    if (!j["kv_target"].is_string()) return Bad("'kv_target' must be a string host:port");
    r.kv_target = j["kv_target"].get<std::string>();
    PREFILL_RETURN_IF_ERROR(CheckHostPort(r.kv_target));
  }
  return r;
}

nlohmann::json ServeRequest::ToJson() const {
  nlohmann::json j = {{"id", id},
                      {"tokens", tokens},
                      {"tokens_path", tokens_path},
                      {"embeddings_path", embeddings_path},
                      {"priority", priority},
                      {"kv_target", kv_target},
                      {"kv_out", kv_out}};
  if (mode) j["mode"] = AttentionModeName(*mode);
  if (tau) j["tau"] = *tau;
  return j;
}

ServeRequest ServeRequest::FromJson(const nlohmann::json& j) {
  ServeRequest r;
  r.id = j.at("id");
  r.tokens = j.at("tokens").get<std::vector<int32_t>>();
  r.tokens_path = j.at("tokens_path");
  r.embeddings_path = j.at("embeddings_path");
  r.priority = j.at("priority");
  r.kv_target = j.at("kv_target");
  r.kv_out = j.at("kv_out");
  if (j.contains("mode")) r.mode = *ParseAttentionMode(j["mode"].get<std::string>());
  if (j.contains("tau")) r.tau = j["tau"].get<float>();
  return r;
}

}  // namespace prefill
