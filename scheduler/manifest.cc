#include "scheduler/manifest.h"

#include <filesystem>
#include <fstream>
#include <map>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace prefill {
namespace {

bool IsValidId(const std::string& id) {
  if (id.empty() || id.size() > 200 || id == "." || id == "..") return false;
  for (char c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-')
      return false;
  }
  return true;
}

absl::Status Bad(const std::string& what) { return absl::InvalidArgumentError(what); }

std::string Resolve(const std::filesystem::path& base, const std::string& p) {
  return std::filesystem::path(p).is_absolute() ? p : (base / p).string();
}

}  // namespace

absl::StatusOr<BatchRequest> ParseManifestLine(const std::string& text, int line) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Bad("not valid JSON");
  if (!j.is_object()) return Bad("not a JSON object");
  BatchRequest r;
  r.line = line;
  static const char* kKnown[] = {"id", "tokens", "embeddings", "mode", "tau", "priority"};
  for (const auto& [key, value] : j.items()) {
    if (std::find(std::begin(kKnown), std::end(kKnown), key) == std::end(kKnown)) {
      return Bad(absl::StrCat("unknown field '", key,
                              "' (valid: id, tokens, embeddings, mode, tau, priority)"));
    }
  }
  if (!j.contains("id") || !j["id"].is_string()) return Bad("missing string field 'id'");
  r.id = j["id"].get<std::string>();
  if (!IsValidId(r.id))
    return Bad(absl::StrCat("id '", r.id, "' must be 1-200 characters of [A-Za-z0-9._-]"));
  const bool has_tokens = j.contains("tokens"), has_embeddings = j.contains("embeddings");
  if (has_tokens == has_embeddings) return Bad("needs exactly one of 'tokens' and 'embeddings'");
  const nlohmann::json& input = has_tokens ? j["tokens"] : j["embeddings"];
  if (!input.is_string() || input.get<std::string>().empty())
    return Bad("'tokens'/'embeddings' must be a file path");
  (has_tokens ? r.tokens_path : r.embeddings_path) = input.get<std::string>();
  if (j.contains("mode")) {
    absl::StatusOr<AttentionMode> mode = j["mode"].is_string()
                                             ? ParseAttentionMode(j["mode"].get<std::string>())
                                             : absl::InvalidArgumentError("");
    if (!mode.ok()) return Bad("'mode' must be \"dense\" or \"sparse\"");
    r.mode = *mode;
  }
  if (j.contains("tau")) {
    if (!j["tau"].is_number() || !(j["tau"].get<double>() > 0 && j["tau"].get<double>() <= 1))
      return Bad("'tau' must be a number in (0, 1]");
    r.tau = j["tau"].get<float>();
  }
  if (j.contains("priority")) {
    if (!j["priority"].is_number_integer()) return Bad("'priority' must be an integer");
    r.priority = j["priority"].get<int>();
  }
  return r;
}

absl::StatusOr<Manifest> LoadManifest(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open the manifest"));
  const std::filesystem::path base = std::filesystem::path(path).parent_path();
  Manifest m;
  std::map<std::string, int> first_line;
  std::string text;
  for (int line = 1; std::getline(in, text); ++line) {
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    absl::StatusOr<BatchRequest> r = ParseManifestLine(text, line);
    if (!r.ok()) {
      m.problems.push_back({line, std::string(r.status().message())});
      continue;
    }
    if (auto [it, fresh] = first_line.emplace(r->id, line); !fresh) {
      m.problems.push_back(
          {line, absl::StrCat("duplicate id '", r->id, "' (first on line ", it->second, ")")});
      continue;
    }
    std::string& input = r->tokens_path.empty() ? r->embeddings_path : r->tokens_path;
    input = Resolve(base, input);
    if (!std::filesystem::exists(input)) {
      m.problems.push_back({line, absl::StrCat("input file '", input, "' does not exist")});
      continue;
    }
    m.requests.push_back(std::move(*r));
  }
  if (m.requests.empty() && m.problems.empty())
    m.problems.push_back({0, "the manifest holds no requests"});
  return m;
}

std::string DescribeProblems(const std::vector<ManifestProblem>& problems) {
  std::string text;
  for (const ManifestProblem& p : problems)
    absl::StrAppend(&text, "\n  line ", p.line, ": ", p.message);
  return text;
}

}  // namespace prefill
