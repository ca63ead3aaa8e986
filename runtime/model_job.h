// Whole-model prefill requests: a Hugging Face Llama-family model loaded once per process,
// then any number of prompts prefilled over a group of ranks (`prefill model` runs one;
// `prefill run` runs a manifest of them). Each writes its KV cache (one safetensors shard
// per rank + index.json, published atomically) and/or streams it to a decode server over UCX
// (runtime/kv_sink.h), and reports its last-token logits.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/layer_backend.h"
#include "kernels/mask_estimation_params.h"
#include "nlohmann/json.hpp"
#include "parallel/communicator.h"
#include "parallel/cp_attention.h"
#include "parallel/cp_layout.h"
#include "parallel/sparse_balance_plan.h"
#include "runtime/kv_sink.h"
#include "runtime/model_config.h"
#include "runtime/model_weights.h"
#include "runtime/prefill_workspace.h"
#include "runtime/prepared_model.h"

namespace prefill {

struct LoadedModel {
  std::string dir;
  ModelConfig config;
  ModelWeights weights;
};

absl::StatusOr<LoadedModel> LoadModel(const std::string& model_dir);

// Exactly one of the two: token ids (.npy int32/int64 or JSON array), or input embeddings
// (safetensors with one tensor [L, hidden]) for vision/video tokens.
struct PromptSource {
  std::string tokens_path;
  std::string embeddings_path;
};

// The prompt's length in tokens, reading only what it must (ids are range-checked).
absl::StatusOr<int64_t> PromptLength(const PromptSource& source, const ModelConfig& config);

struct PrefillRequestOptions {
  AttentionMode mode = AttentionMode::kSparse;
  LayoutKind layout = LayoutKind::kZigzag;
  int block = kDefaultBlockSize;
  MaskEstimator estimator = MaskEstimator::kRoundRobin;
  int stride = kDefaultStride;
  float tau = kDefaultTau;
  // Sparse on several ranks: a layer whose estimated density reaches this runs the dense ring
  // (SparseOptions::dense_above); above 1: never.
  double dense_above = 0.9;
  // Sparse on several ranks: auto evens the work of the ranks layer by layer by moving mask
  // entries to the rank holding their KV blocks (SparseOptions::balance); off.
  BalanceMode balance = BalanceMode::kAuto;
  int threads = 1;     // for the report: the backends were made with it
  std::string kv_out;  // folder for the KV cache; empty: not written
  DType kv_dtype = DType::kBF16;
  // host:port of a decode server (kv-receiver): every rank streams its KV shards there over
  // UCX and the request succeeds only once it is acknowledged; empty: not sent.
  std::string kv_target;
  double kv_timeout =
      60;  // seconds without progress (connect, send, acknowledgement) before the handoff fails
  // Names the request on the wire; empty: kv_out's last component, else the prompt file's stem.
  std::string request_id;
  int top_k = 10;
  int64_t memory_per_rank = 0;  // bytes a rank may hold; 0: DefaultMemoryPerRank()
};

// Where requests compute: the backends and the model prepared on them, and the group of
// ranks twice: `comm` moves backend memory (MPI on CPU ranks, NCCL on GPU ranks); `host`
// agrees on statuses and reports and carries the KV handoff (always MPI). Same ranks, same order.
struct ModelExecution {
  AttentionBackend* attention = nullptr;
  LayerBackend* layers = nullptr;
  const PreparedModel* weights = nullptr;
  Communicator* comm = nullptr;
  Communicator* host = nullptr;
  // {free, total} bytes of the device's memory ({-1, -1} on the CPU): a request must fit in it.
  std::function<std::pair<int64_t, int64_t>()> device_memory = [] {
    return std::pair<int64_t, int64_t>{-1, -1};
  };
  // The activations' memory, kept from one request to the next (made before each request's
  // clock); null: each request allocates its own inside its clock.
  PrefillWorkspace* workspace = nullptr;
  // The sink of `kv_target` (launch/ wires the UCX one in); empty: kv_target is refused.
  RemoteKvSinkFactory remote_kv_sink;
};

// Prefills one prompt over the ranks of `on` (every rank calls it). The sequence is padded
// at its end to whole blocks per rank; causal attention keeps the padding from touching real
// tokens, and neither its KV nor its logits are reported. Errors are agreed by all ranks.
absl::StatusOr<nlohmann::json> PrefillRequest(const LoadedModel& model, const PromptSource& source,
                                              const PrefillRequestOptions& options,
                                              const ModelExecution& on);

}  // namespace prefill
