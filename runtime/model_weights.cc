#include "runtime/model_weights.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "runtime/safetensors.h"

namespace prefill {
namespace {

// Every tensor name -> the open file holding it.
class WeightFiles {
 public:
  static absl::StatusOr<WeightFiles> Open(const std::string& dir) {
    WeightFiles files;
    const std::string index = dir + "/model.safetensors.index.json";
    std::vector<std::string> names;
    if (std::filesystem::exists(index)) {
      std::ifstream in(index);
      const nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
      if (j.is_discarded() || !j.contains("weight_map") || !j["weight_map"].is_object()) {
        return absl::InvalidArgumentError(
            absl::StrCat(index, ": not a safetensors index (needs a weight_map object)"));
      }
      for (const auto& [tensor, file] : j["weight_map"].items()) {
        if (!file.is_string())
          return absl::InvalidArgumentError(
              absl::StrCat(index, ": weight_map['", tensor, "'] is not a file name"));
        names.push_back(file.get<std::string>());
      }
    } else {
      names.push_back("model.safetensors");
    }
    for (const std::string& name : names) {
      if (files.by_file_.count(name)) continue;
      absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(dir + "/" + name);
      if (!f.ok()) return f.status();
      for (const auto& [tensor, entry] : (*f)->entries()) files.by_tensor_[tensor] = f->get();
      files.by_file_[name] = std::move(*f);
    }
    return files;
  }

  // The entry `name`, which must have `shape`.
  absl::StatusOr<const SafetensorsEntry*> Find(const std::string& name,
                                               const std::vector<int64_t>& shape) const {
    auto it = by_tensor_.find(name);
    if (it == by_tensor_.end())
      return absl::InvalidArgumentError(absl::StrCat("model weights: missing tensor '", name, "'"));
    const SafetensorsEntry& e = it->second->entries().at(name);
    if (e.shape != shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          it->second->path(), ": tensor '", name, "' has shape [", absl::StrJoin(e.shape, ", "),
          "], the config needs [", absl::StrJoin(shape, ", "), "]"));
    }
    if (e.dtype != DType::kF32 && e.dtype != DType::kBF16 && e.dtype != DType::kF16) {
      return absl::InvalidArgumentError(
          absl::StrCat(it->second->path(), ": tensor '", name, "' must be F32, BF16 or F16"));
    }
    return &e;
  }
  bool Has(const std::string& name) const { return by_tensor_.count(name) > 0; }

 private:
  std::map<std::string, std::unique_ptr<SafetensorsFile>> by_file_;
  std::map<std::string, const SafetensorsFile*> by_tensor_;
};

}  // namespace

absl::StatusOr<ModelWeights> LoadModelWeights(const std::string& dir, const ModelConfig& c) {
  absl::StatusOr<WeightFiles> opened = WeightFiles::Open(dir);
  if (!opened.ok()) return opened.status();
  auto files = std::make_shared<const WeightFiles>(std::move(*opened));
  const int64_t hidden = c.hidden_size, q_dim = int64_t{c.num_heads} * c.head_dim,
                kv_dim = int64_t{c.num_kv_heads} * c.head_dim, inter = c.intermediate_size;
  ModelWeights w;
  w.files = files;
  absl::Status status;
  auto matrix = [&](WeightView* dst, const std::string& name, int64_t rows, int64_t cols) {
    if (!status.ok()) return;
    absl::StatusOr<const SafetensorsEntry*> e = files->Find(name, {rows, cols});
    if (!e.ok()) {
      status = e.status();
      return;
    }
    *dst = WeightView{(*e)->dtype, (*e)->data, rows, cols};
  };
  auto vector = [&](std::vector<float>* dst, const std::string& name, int64_t size) {
    if (!status.ok()) return;
    absl::StatusOr<const SafetensorsEntry*> e = files->Find(name, {size});
    if (!e.ok()) {
      status = e.status();
      return;
    }
    dst->resize(size);
    ConvertToF32((*e)->dtype, (*e)->data, dst->data(), size);
  };
  matrix(&w.embed_tokens, "model.embed_tokens.weight", c.vocab_size, hidden);
  vector(&w.final_norm, "model.norm.weight", hidden);
  if (!c.tie_word_embeddings || files->Has("lm_head.weight"))
    matrix(&w.lm_head, "lm_head.weight", c.vocab_size, hidden);
  w.layers.resize(c.num_layers);
  for (int i = 0; i < c.num_layers; ++i) {
    LayerWeights& l = w.layers[i];
    const std::string p = absl::StrCat("model.layers.", i, ".");
    vector(&l.input_norm, p + "input_layernorm.weight", hidden);
    matrix(&l.q_proj, p + "self_attn.q_proj.weight", q_dim, hidden);
    matrix(&l.k_proj, p + "self_attn.k_proj.weight", kv_dim, hidden);
    matrix(&l.v_proj, p + "self_attn.v_proj.weight", kv_dim, hidden);
    if (c.attention_bias) {
      vector(&l.q_bias, p + "self_attn.q_proj.bias", q_dim);
      vector(&l.k_bias, p + "self_attn.k_proj.bias", kv_dim);
      vector(&l.v_bias, p + "self_attn.v_proj.bias", kv_dim);
    }
    matrix(&l.o_proj, p + "self_attn.o_proj.weight", hidden, q_dim);
    vector(&l.post_norm, p + "post_attention_layernorm.weight", hidden);
    matrix(&l.gate_proj, p + "mlp.gate_proj.weight", inter, hidden);
    matrix(&l.up_proj, p + "mlp.up_proj.weight", inter, hidden);
    matrix(&l.down_proj, p + "mlp.down_proj.weight", hidden, inter);
  }
  if (!status.ok()) return status;
  return w;
}

}  // namespace prefill
