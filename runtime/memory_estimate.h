// What a whole-model prefill holds per rank, estimated before anything is allocated, so a
// request that cannot fit is refused up front with the figure it needs instead of being
// killed by the kernel's OOM killer halfway through.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/model_config.h"

namespace prefill {

struct MemoryEstimate {
  int64_t weights = 0;      // replicated on every rank, fp32
  int64_t activations = 0;  // one layer's working set for the rank's tokens
  int64_t kv_cache = 0;     // every layer's K and V for the rank's tokens, fp32 until written
  int64_t exchange = 0;     // remote KV a layer may receive (worst case: all of it)
  int64_t total() const { return weights + activations + kv_cache + exchange; }
};

MemoryEstimate EstimatePrefillMemory(const ModelConfig& config, int64_t seq_len, int ranks);

// MemAvailable of this node divided among the ranks on it (OMPI/Slurm local size).
int64_t DefaultMemoryPerRank();

std::string FormatBytes(int64_t bytes);  // "1.50 GiB"

}  // namespace prefill
