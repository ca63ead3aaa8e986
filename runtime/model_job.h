// `prefill model`: prefill a Hugging Face Llama-family model over the ranks of this job and
// write its KV cache (one safetensors shard per rank + an index) and last-token logits.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "parallel/communicator.h"

namespace prefill {

struct ModelJobConfig {
  std::string model_dir;
  std::string tokens_path;      // .npy int32/int64 or JSON array
  std::string embeddings_path;  // or: safetensors with one tensor [L, hidden]
  std::string mode = "sparse";
  std::string layout = "zigzag";
  int block = 128;
  int stride = 8;
  float tau = 0.95f;
  int threads = 0;
  std::string kv_out;  // folder for the KV cache; empty: not written
  std::string kv_dtype = "bf16";
  int top_k = 10;
};

// The job's figures, ready for --json (rank 0 writes it).
absl::StatusOr<nlohmann::json> RunModelJob(const ModelJobConfig& config, Communicator& comm);

}  // namespace prefill
