#include "runtime/model_job.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "kernels/backend.h"
#include "parallel/cp_layout.h"
#include "runtime/layer_ops.h"
#include "runtime/model_config.h"
#include "runtime/model_weights.h"
#include "runtime/prompt_input.h"
#include "runtime/safetensors.h"
#include "runtime/tensor.h"
#include "runtime/transformer_prefill.h"

namespace prefill {
namespace {

using Clock = std::chrono::steady_clock;

// This rank's input embeddings [local_len, hidden] and the sequence length.
struct LocalInput {
  int64_t seq_len = 0;
  std::vector<float> hidden;
};

absl::StatusOr<int64_t> SequenceLength(const ModelJobConfig& j, const ModelConfig& c, std::vector<int32_t>* tokens) {
  if (j.tokens_path.empty() == j.embeddings_path.empty()) {
    return absl::InvalidArgumentError("give exactly one of --tokens FILE and --embeddings FILE");
  }
  if (!j.tokens_path.empty()) {
    absl::StatusOr<std::vector<int32_t>> ids = ReadTokenIds(j.tokens_path, c.vocab_size);
    if (!ids.ok()) return ids.status();
    *tokens = std::move(*ids);
    return static_cast<int64_t>(tokens->size());
  }
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(j.embeddings_path);
  if (!f.ok()) return f.status();
  if ((*f)->entries().size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(j.embeddings_path, ": must hold exactly one tensor [L, hidden]"));
  }
  const SafetensorsEntry& e = (*f)->entries().begin()->second;
  if (e.shape.size() != 2 || e.shape[1] != c.hidden_size) {
    return absl::InvalidArgumentError(absl::StrCat(j.embeddings_path, ": tensor '", (*f)->entries().begin()->first,
                                                   "' must be [L, ", c.hidden_size, "] (hidden_size)"));
  }
  return e.shape[0];
}

absl::StatusOr<std::vector<float>> LocalEmbeddings(const ModelJobConfig& j, const ModelConfig& c, const ModelWeights& w,
                                                   const CpLayout& layout, int rank, const std::vector<int32_t>& tokens) {
  std::vector<float> hidden;
  hidden.reserve(layout.local_len() * c.hidden_size);
  if (!tokens.empty()) {
    for (int32_t p : layout.Positions(rank)) {
      const float* row = &w.embed_tokens[static_cast<size_t>(tokens[p]) * c.hidden_size];
      hidden.insert(hidden.end(), row, row + c.hidden_size);
    }
    return hidden;
  }
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::Open(j.embeddings_path);
  if (!f.ok()) return f.status();
  const std::string name = (*f)->entries().begin()->first;
  for (const Chunk& chunk : layout.Chunks(rank)) {
    absl::StatusOr<Tensor> rows = (*f)->ReadRows(name, chunk.start, chunk.start + chunk.length);
    if (!rows.ok()) return rows.status();
    const std::vector<float> values = ToF32(*rows);
    hidden.insert(hidden.end(), values.begin(), values.end());
  }
  return hidden;
}

// Shard `rank{r}.safetensors`: layers.{i}.key / .value [local rows, kv_heads, head_dim];
// rank 0 adds index.json mapping absolute token ranges to shard rows.
absl::Status WriteKvCache(Communicator& comm, const ModelJobConfig& j, const ModelConfig& c, const CpLayout& layout,
                          const PrefillOutput& out) {
  absl::StatusOr<DType> dtype = ParseDType(j.kv_dtype);
  if (!dtype.ok()) return dtype.status();
  std::error_code ec;
  std::filesystem::create_directories(j.kv_out, ec);
  const int64_t n = layout.local_len();
  std::vector<Tensor> tensors;
  std::vector<std::pair<std::string, const Tensor*>> named;
  tensors.reserve(2 * out.keys.size());
  for (size_t i = 0; i < out.keys.size(); ++i) {
    tensors.push_back(FromF32(out.keys[i], *dtype, {n, c.num_kv_heads, c.head_dim}));
    tensors.push_back(FromF32(out.values[i], *dtype, {n, c.num_kv_heads, c.head_dim}));
  }
  for (size_t i = 0; i < out.keys.size(); ++i) {
    named.emplace_back(absl::StrCat("layers.", i, ".key"), &tensors[2 * i]);
    named.emplace_back(absl::StrCat("layers.", i, ".value"), &tensors[2 * i + 1]);
  }
  const std::string shard = absl::StrCat("rank", comm.rank(), ".safetensors");
  absl::Status s = AgreeOnStatus(comm, WriteSafetensors(j.kv_out + "/" + shard, named));
  if (!s.ok() || comm.rank() != 0) return s;
  nlohmann::json index = {{"seq_len", layout.seq_len()}, {"num_layers", c.num_layers}, {"kv_heads", c.num_kv_heads},
                          {"head_dim", c.head_dim}, {"dtype", std::string(DTypeName(*dtype))},
                          {"layout", LayoutKindName(layout.kind())}, {"ranges", nlohmann::json::array()}};
  for (int r = 0; r < comm.size(); ++r) {
    int64_t row = 0;
    for (const Chunk& chunk : layout.Chunks(r)) {
      index["ranges"].push_back({{"start", chunk.start}, {"length", chunk.length},
                                 {"file", absl::StrCat("rank", r, ".safetensors")}, {"row", row}});
      row += chunk.length;
    }
  }
  const std::string body = index.dump(2) + "\n";
  const std::string tmp = j.kv_out + "/index.json.tmp";
  FILE* f = std::fopen(tmp.c_str(), "w");
  if (f == nullptr || std::fwrite(body.data(), 1, body.size(), f) != body.size() || std::fclose(f) != 0 ||
      std::rename(tmp.c_str(), (j.kv_out + "/index.json").c_str()) != 0) {
    return absl::InternalError(absl::StrCat(j.kv_out, "/index.json: cannot write"));
  }
  return absl::OkStatus();
}

nlohmann::json TopK(const std::vector<float>& logits, int k) {
  std::vector<int> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  k = std::min<int>(k, static_cast<int>(ids.size()));
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  nlohmann::json top = nlohmann::json::array();
  for (int i = 0; i < k; ++i) top.push_back({{"id", ids[i]}, {"logit", logits[ids[i]]}});
  return top;
}

}  // namespace

absl::StatusOr<nlohmann::json> RunModelJob(const ModelJobConfig& j, Communicator& comm) {
  const auto start = Clock::now();
  absl::StatusOr<ModelConfig> config = LoadModelConfig(j.model_dir);
  std::vector<int32_t> tokens;
  absl::StatusOr<int64_t> seq_len = config.ok() ? SequenceLength(j, *config, &tokens) : config.status();
  absl::StatusOr<LayoutKind> kind = ParseLayoutKind(j.layout);
  absl::StatusOr<CpLayout> layout = !seq_len.ok() ? seq_len.status()
                                    : !kind.ok()  ? kind.status()
                                                  : CpLayout::Create(*kind, *seq_len, comm.size(), j.block);
  absl::Status s = layout.status();
  if (s.ok() && j.mode != "dense" && j.mode != "sparse") {
    s = absl::InvalidArgumentError(absl::StrCat("--mode '", j.mode, "' is not a mode (valid: dense, sparse)"));
  }
  if (s.ok() && (j.stride < 1 || j.block % j.stride != 0)) {
    s = absl::InvalidArgumentError(absl::StrCat("--stride ", j.stride, " must divide --block ", j.block));
  }
  if (s.ok() && !j.kv_out.empty()) s = ParseDType(j.kv_dtype).status();
  if (s = AgreeOnStatus(comm, s); !s.ok()) return s;

  absl::StatusOr<ModelWeights> weights = LoadModelWeights(j.model_dir, *config);
  if (s = AgreeOnStatus(comm, weights.status()); !s.ok()) return s;
  absl::StatusOr<std::vector<float>> hidden = LocalEmbeddings(j, *config, *weights, *layout, comm.rank(), tokens);
  if (s = AgreeOnStatus(comm, hidden.status()); !s.ok()) return s;
  const double load_seconds = std::chrono::duration<double>(Clock::now() - start).count();

  SetGemmThreads(j.threads);
  std::unique_ptr<AttentionBackend> backend = MakeCpuBackend(j.threads);
  PrefillOptions options{j.mode == "sparse", SparseOptions{j.stride, j.tau, true, true}};
  const auto t0 = Clock::now();
  absl::StatusOr<PrefillOutput> out =
      RunTransformerPrefill(comm, *backend, *layout, *config, *weights, std::move(*hidden), options);
  if (s = AgreeOnStatus(comm, out.status()); !s.ok()) return s;
  const double prefill_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  if (!j.kv_out.empty()) {
    if (s = WriteKvCache(comm, j, *config, *layout, *out); !s.ok()) return s;
  }

  // Per layer: density over all ranks; per phase: the slowest rank.
  const size_t layers = out->layers.size();
  std::vector<double> sums(2 * layers), maxes(4);
  for (size_t i = 0; i < layers; ++i) {
    const LayerReport& l = out->layers[i];
    sums[2 * i] = static_cast<double>(l.attention.selected_blocks);
    sums[2 * i + 1] = static_cast<double>(l.attention.visible_blocks);
    maxes[0] += l.attention.estimate_seconds;
    maxes[1] += l.attention.exchange_seconds;
    maxes[2] += l.attention.attention_seconds;
    maxes[3] += l.gemm_seconds;
  }
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  double peak = static_cast<double>(usage.ru_maxrss) * 1024.0;
  if (s = comm.AllReduceSum(sums.data(), sums.size()); !s.ok()) return s;
  if (s = comm.AllReduceMax(maxes.data(), maxes.size()); !s.ok()) return s;
  std::vector<double> peaks(comm.size());
  if (s = comm.AllGather(&peak, sizeof peak, peaks.data()); !s.ok()) return s;

  nlohmann::json report = {
      {"model", j.model_dir}, {"architecture", config->architecture}, {"world_size", comm.size()},
      {"seq_len", layout->seq_len()}, {"mode", j.mode}, {"layout", j.layout}, {"block", j.block},
      {"stride", j.stride}, {"tau", j.tau}, {"threads", j.threads},
      {"load_seconds", load_seconds}, {"prefill_seconds", prefill_seconds},
      {"tokens_per_second", layout->seq_len() / prefill_seconds},
      {"phase_seconds", {{"mask_estimation", maxes[0]}, {"kv_exchange", maxes[1]}, {"attention", maxes[2]}, {"gemm", maxes[3]}}},
      {"peak_memory_bytes_per_rank", peaks}, {"top_logits", TopK(out->last_logits, j.top_k)},
      {"last_logits", out->last_logits}, {"kv_out", j.kv_out}};
  nlohmann::json density = nlohmann::json::array();
  for (size_t i = 0; i < layers; ++i) density.push_back(sums[2 * i + 1] > 0 ? sums[2 * i] / sums[2 * i + 1] : 1.0);
  report["layer_density"] = density;
  return report;
}

}  // namespace prefill
