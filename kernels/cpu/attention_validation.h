// Validation of the AttentionParams inputs that every CPU attention entry shares (the flash
// kernel and the fp64 reference): pointers, sizes, and the CSR mask. Private to kernels/cpu.
#pragma once

#include <string_view>

#include "absl/status/status.h"
#include "kernels/attention_params.h"

namespace prefill::cpu {

// InvalidArgument "<entry>: <field> ..." for the first violated input constraint. Does not
// look at the outputs (o, lse, out_dtype), which the entries treat differently. Positions
// are required only when p.causal.
absl::Status ValidateAttentionInputs(const AttentionParams& p, std::string_view entry);

}  // namespace prefill::cpu
