#include "kernels/cpu/block_sparse_attention.h"
namespace prefill::cpu {
absl::Status BlockSparseAttention(const AttentionParams&, int) { return absl::UnimplementedError("stub"); }
bool BlockSparseAttentionUsesAvx512() { return false; }
}  // namespace prefill::cpu
