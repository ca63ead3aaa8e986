#include "runtime/model_config.h"

#include <fstream>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "nlohmann/json.hpp"

namespace prefill {
namespace {

using nlohmann::json;

class FieldReader {
 public:
  FieldReader(const json& j, std::string path) : j_(j), path_(std::move(path)) {}

  absl::Status Int(const char* key, int* out, bool required = true) {
    if (!j_.contains(key) || j_[key].is_null()) return required ? Missing(key) : absl::OkStatus();
    if (!j_[key].is_number_integer() || j_[key].get<int64_t>() <= 0 ||
        j_[key].get<int64_t>() > (1 << 24)) {
      return Bad(key, "a positive integer up to 2^24");
    }
    *out = j_[key].get<int>();
    return absl::OkStatus();
  }
  absl::Status Double(const json& obj, const char* key, double* out) {
    if (!obj.contains(key) || obj[key].is_null()) return absl::OkStatus();
    if (!obj[key].is_number()) return Bad(key, "a number");
    *out = obj[key].get<double>();
    return absl::OkStatus();
  }
  absl::Status Bool(const char* key, bool* out) {
    if (!j_.contains(key) || j_[key].is_null()) return absl::OkStatus();
    if (!j_[key].is_boolean()) return Bad(key, "true or false");
    *out = j_[key].get<bool>();
    return absl::OkStatus();
  }
  absl::Status Missing(const char* key) const {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": missing field '", key, "'"));
  }
  absl::Status Bad(const char* key, const char* want) const {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": field '", key, "' must be ", want));
  }

 private:
  const json& j_;
  std::string path_;
};

// The scaling object: `rope_scaling` (transformers 4), else `rope_parameters` (transformers
// 5 writes only that one, with rope_theta inside), else none.
const char* RopeScalingKey(const json& j) {
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    if (j.contains(key) && !j[key].is_null()) return key;
  }
  return nullptr;
}

absl::Status ReadRopeScaling(const json& j, const std::string& path, FieldReader& r,
                             RopeScaling* out) {
  const char* key = RopeScalingKey(j);
  if (key == nullptr) return absl::OkStatus();
  const json& s = j[key];
  if (!s.is_object()) return r.Bad(key, "an object or null");
  const json& type_field = s.contains("rope_type") ? s["rope_type"]
                           : s.contains("type")    ? s["type"]
                                                   : json("default");
  if (!type_field.is_string()) return r.Bad("rope_scaling.rope_type", "a string");
  const std::string type = type_field.get<std::string>();
  if (type != "llama3" && type != "linear" && type != "default") {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": rope_scaling type '", type,
                     "' is not supported (valid: llama3, linear, default)"));
  }
  out->type = type == "default" ? "" : type;
  for (auto [key, dst] :
       {std::pair{"factor", &out->factor}, std::pair{"low_freq_factor", &out->low_freq_factor},
        std::pair{"high_freq_factor", &out->high_freq_factor}}) {
    PREFILL_RETURN_IF_ERROR(r.Double(s, key, dst));
  }
  if (s.contains("original_max_position_embeddings")) {
    const json& v = s["original_max_position_embeddings"];
    if (!v.is_number_integer() || v.get<int64_t>() <= 0 || v.get<int64_t>() > (int64_t{1} << 30)) {
      return r.Bad("original_max_position_embeddings", "a positive integer");
    }
    out->original_max_position_embeddings = v.get<int>();
  }
  if (out->type == "llama3" && !(out->high_freq_factor > out->low_freq_factor && out->factor > 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": rope_scaling needs high_freq_factor > low_freq_factor and factor > 0"));
  }
  if (out->type == "linear" && !(out->factor > 0)) return r.Bad("factor", "positive");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  std::ifstream in(path);
  if (!in)
    return absl::NotFoundError(
        absl::StrCat(path, ": cannot open (is --model a Hugging Face model folder?)"));
  return ParseModelConfig(
      std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()), path);
}

absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& text, const std::string& path) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));

  ModelConfig c;
  if (!j.contains("architectures") || !j["architectures"].is_array() ||
      j["architectures"].empty() || !j["architectures"][0].is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": missing field 'architectures'"));
  }
  c.architecture = j["architectures"][0].get<std::string>();
  if (c.architecture != "LlamaForCausalLM" && c.architecture != "MistralForCausalLM" &&
      c.architecture != "Qwen2ForCausalLM") {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": architecture '", c.architecture,
        "' is not supported (valid: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)"));
  }
  FieldReader r(j, path);
  for (auto [key, dst] :
       {std::pair{"hidden_size", &c.hidden_size},
        std::pair{"intermediate_size", &c.intermediate_size},
        std::pair{"num_hidden_layers", &c.num_layers},
        std::pair{"num_attention_heads", &c.num_heads}, std::pair{"vocab_size", &c.vocab_size}}) {
    PREFILL_RETURN_IF_ERROR(r.Int(key, dst));
  }
  c.num_kv_heads = c.num_heads;
  c.head_dim = c.hidden_size / c.num_heads;
  PREFILL_RETURN_IF_ERROR(r.Int("num_key_value_heads", &c.num_kv_heads, false));
  PREFILL_RETURN_IF_ERROR(r.Int("head_dim", &c.head_dim, false));
  PREFILL_RETURN_IF_ERROR(r.Double(j, "rms_norm_eps", &c.rms_norm_eps));
  PREFILL_RETURN_IF_ERROR(r.Double(j, "rope_theta", &c.rope_theta));
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object() &&
      !j.contains("rope_theta")) {
    PREFILL_RETURN_IF_ERROR(r.Double(j["rope_parameters"], "rope_theta", &c.rope_theta));
  }
  PREFILL_RETURN_IF_ERROR(r.Bool("tie_word_embeddings", &c.tie_word_embeddings));
  c.attention_bias = c.architecture == "Qwen2ForCausalLM";
  PREFILL_RETURN_IF_ERROR(r.Bool("attention_bias", &c.attention_bias));
  PREFILL_RETURN_IF_ERROR(ReadRopeScaling(j, path, r, &c.rope_scaling));
  if (c.num_heads % c.num_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": num_attention_heads ", c.num_heads,
                                                   " is not a multiple of num_key_value_heads ",
                                                   c.num_kv_heads));
  }
  if (!(c.rope_theta > 1.0) || !(c.rms_norm_eps >= 0.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": rope_theta must be > 1 and rms_norm_eps >= 0"));
  }
  if (c.head_dim % 2 != 0)
    return absl::InvalidArgumentError(absl::StrCat(path, ": head_dim must be even (RoPE)"));
  return c;
}

}  // namespace prefill
