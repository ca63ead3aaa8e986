// The flags that set a prefill request's defaults, one wording for `prefill run` and
// `prefill serve` (a manifest line or an API request overrides mode and tau).
#pragma once

#include "CLI/CLI.hpp"
#include "runtime/model_job.h"

namespace prefill {

// --mode, --layout, --block, --stride, --tau, --dense-above, --balance, --threads,
// --memory-per-rank, --kv-dtype, --kv-timeout.
void AddRequestFlags(CLI::App& cmd, PrefillRequestOptions& d);

}  // namespace prefill
