#include "kernels/cpu/reference_attention.h"
namespace prefill::cpu {
absl::Status ReferenceAttention(const AttentionParams&, std::vector<double>*, std::vector<double>*, int) { return absl::UnimplementedError("stub"); }
}  // namespace prefill::cpu
