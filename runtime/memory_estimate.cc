#include "runtime/memory_estimate.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>

#include "absl/strings/str_format.h"

namespace prefill {

MemoryEstimate EstimatePrefillMemory(const ModelConfig& c, int64_t seq_len, int ranks) {
  const int64_t f = sizeof(float);
  const int64_t hidden = c.hidden_size, inter = c.intermediate_size;
  const int64_t q_dim = int64_t{c.num_heads} * c.head_dim,
                kv_dim = int64_t{c.num_kv_heads} * c.head_dim;
  const int64_t local = (seq_len + ranks - 1) / ranks;
  MemoryEstimate e;
  const int64_t per_layer =
      2 * hidden + q_dim * hidden + 2 * kv_dim * hidden + hidden * q_dim + 3 * hidden * inter;
  e.weights = f * (c.num_layers * per_layer +
                   (c.tie_word_embeddings ? 1 : 2) * int64_t{c.vocab_size} * hidden + hidden);
  // hidden, normed, projection out, q, attention out, lse, gate, up (transformer_prefill.cc).
  e.activations = f * local * (3 * hidden + 2 * q_dim + c.num_heads + 2 * inter);
  e.kv_cache = f * local * c.num_layers * 2 * kv_dim;
  e.exchange = f * (seq_len - local) * 2 * kv_dim + f * seq_len / 8 * kv_dim;
  return e;
}

int64_t DefaultMemoryPerRank() {
  int64_t available = 0;
  std::ifstream in("/proc/meminfo");
  for (std::string key; in >> key;) {
    int64_t kib = 0;
    in >> kib;
    if (key == "MemAvailable:") available = kib * 1024;
    in.ignore(64, '\n');
  }
  int local = 1;
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE"}) {
    if (const char* v = std::getenv(var); v != nullptr && std::atoi(v) > 0) {
      local = std::atoi(v);
      break;
    }
  }
  return std::max<int64_t>(1, available / local);
}

std::string FormatBytes(int64_t bytes) {
  if (bytes >= (int64_t{1} << 30)) return absl::StrFormat("%.2f GiB", bytes / 1073741824.0);
  return absl::StrFormat("%.1f MiB", bytes / 1048576.0);
}

}  // namespace prefill
