// fp64 attention over the same AttentionParams contract (mask, positions, GQA, causal):
// exact softmax per row over the keys of its selected blocks, no online rescaling, no
// tiling tricks. The independent reference for tests and for `prefill attention --check`.
#pragma once

#include <vector>

#include "absl/status/status.h"
#include "kernels/attention_params.h"

namespace prefill::cpu {

// Writes o [lq, hq, head_dim] and lse [lq, hq] in fp64 (p.o and p.lse are ignored).
absl::Status ReferenceAttention(const AttentionParams& p, std::vector<double>* o,
                                std::vector<double>* lse, int threads);

}  // namespace prefill::cpu
