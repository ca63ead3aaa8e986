#include "kernels/cpu/lse_merge.h"
namespace prefill::cpu {
absl::Status MergeByLse(const LseMergeParams&) { return absl::UnimplementedError("stub"); }
}  // namespace prefill::cpu
