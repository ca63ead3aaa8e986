// Merge of partial attention results over disjoint KV sets by their log-sum-exp.
#pragma once

#include "absl/status/status.h"
#include "kernels/attention_params.h"

namespace prefill::cpu {

absl::Status MergeByLse(const LseMergeParams& p);

}  // namespace prefill::cpu
