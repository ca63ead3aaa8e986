#include "scheduler/serve_api.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/memory_estimate.h"
#include "runtime/model_job.h"

namespace prefill {
namespace {

using monitoring::HttpRequest;
using monitoring::HttpResponse;
using nlohmann::json;

constexpr char kRequestsPath[] = "/v1/requests/";

HttpResponse Json(int status, const json& body) {
  return {status, "application/json", body.dump() + "\n", {}};
}
HttpResponse Error(int status, const std::string& message) {
  return Json(status, {{"error", message}});
}

int HttpStatusFor(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kNotFound:
      return 400;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kFailedPrecondition:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kUnavailable:
      return 503;
    default:
      return 500;
  }
}

// Equal in time whatever the first difference, so the key cannot be guessed byte by byte.
bool SameSecret(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i)
    diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  return diff == 0;
}

// The prompt's length, its ids checked against the vocabulary.
absl::StatusOr<int64_t> PromptTokens(const ServeRequest& r, const ModelConfig& config) {
  if (r.tokens.empty()) return PromptLength({r.tokens_path, r.embeddings_path}, config);
  for (size_t i = 0; i < r.tokens.size(); ++i) {
    if (r.tokens[i] >= config.vocab_size) {
      return absl::OutOfRangeError(absl::StrCat("'tokens'[", i, "] = ", r.tokens[i],
                                                " is outside the model's vocabulary [0, ",
                                                config.vocab_size, ")"));
    }
  }
  return static_cast<int64_t>(r.tokens.size());
}

}  // namespace

bool ServeApi::Authorized(const std::string& header) const {
  return options_.api_key.empty() || SameSecret(header, absl::StrCat("Bearer ", options_.api_key));
}

HttpResponse ServeApi::Handle(const HttpRequest& request) const {
  const std::string& path = request.path;
  if (path == "/healthz" || path == "/readyz") {
    if (request.method != "GET" && request.method != "HEAD") return Error(405, "use GET");
    if (path == "/healthz") return Json(200, {{"status", "ok"}});
    const bool ready = options_.ready() && table_.admitting();
    return Json(ready ? 200 : 503, {{"status", ready ? "ready" : "not ready"}});
  }
  const bool api = path == "/v1/prefill" || absl::StartsWith(path, kRequestsPath);
  if (!api)
    return Error(404,
                 "no such path (the API: POST /v1/prefill, GET|DELETE /v1/requests/{id}, /healthz, "
                 "/readyz)");
  if (!Authorized(request.authorization)) {
    HttpResponse r = Error(401, "this server needs 'Authorization: Bearer <key>'");
    r.headers.push_back({"WWW-Authenticate", "Bearer"});
    return r;
  }
  if (path == "/v1/prefill") {
    if (request.method != "POST") return Error(405, "use POST for /v1/prefill");
    return Submit(request.body);
  }
  return OnRequest(request.method, path.substr(sizeof kRequestsPath - 1));
}

HttpResponse ServeApi::Submit(const std::string& body) const {
  absl::StatusOr<ServeRequest> request = ParseServeRequest(body, options_.limits);
  if (!request.ok()) return Error(400, std::string(request.status().message()));
  absl::StatusOr<int64_t> tokens = PromptTokens(*request, options_.config);
  if (!tokens.ok()) return Error(400, std::string(tokens.status().message()));
  const int ranks = GroupSize(*tokens, options_.placement);
  if (ranks == 0) {
    return Error(400,
                 absl::StrCat(*tokens, " tokens need more than the ", options_.placement.world_size,
                              " ranks of this server at --max-tokens-per-rank ",
                              options_.placement.max_tokens_per_rank));
  }
  if (options_.memory_per_rank > 0) {
    const int64_t need = EstimatePrefillMemory(options_.config, *tokens, ranks).total();
    if (need > options_.memory_per_rank) {
      return Error(
          400, absl::StrCat(*tokens, " tokens on ", ranks, " ranks need about ", FormatBytes(need),
                            " per rank; a rank may hold ", FormatBytes(options_.memory_per_rank)));
    }
  }
  const std::string id = request->id;
  if (absl::Status s = table_.Submit(*std::move(request), *tokens, ranks); !s.ok()) {
    HttpResponse r = Error(HttpStatusFor(s), std::string(s.message()));
    if (r.status == 429)
      r.headers.push_back({"Retry-After", absl::StrCat(options_.retry_after_seconds)});
    return r;
  }
  return Json(202, {{"id", id}, {"state", "queued"}, {"tokens", *tokens}, {"ranks", ranks}});
}

HttpResponse ServeApi::OnRequest(const std::string& method, const std::string& id) const {
  if (method == "GET") {
    std::optional<json> described = table_.Describe(id);
    if (!described) return Error(404, absl::StrCat("no request with id '", id, "'"));
    return Json(200, *described);
  }
  if (method == "DELETE") {
    if (absl::Status s = table_.Cancel(id); !s.ok()) {
      return Error(s.code() == absl::StatusCode::kNotFound ? 404 : 409, std::string(s.message()));
    }
    return Json(200, {{"id", id}, {"state", "cancelled"}});
  }
  return Error(405, "use GET or DELETE for /v1/requests/{id}");
}

}  // namespace prefill
