// Key pooling per stride: the 1/S-sized summary of K that ranks all-gather for estimation.
#pragma once

#include "absl/status/status.h"
#include "kernels/mask_estimation_params.h"

namespace prefill::cpu {

absl::Status PoolKeys(const PoolKeysParams& p);

}  // namespace prefill::cpu
