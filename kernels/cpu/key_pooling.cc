#include "kernels/cpu/key_pooling.h"
namespace prefill::cpu {
absl::Status PoolKeys(const PoolKeysParams&) { return absl::UnimplementedError("stub"); }
}  // namespace prefill::cpu
