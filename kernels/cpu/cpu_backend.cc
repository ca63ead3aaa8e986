// The CPU AttentionBackend: the always-present backend and the reference for the others.
#include <memory>

#include "kernels/backend.h"
#include "kernels/cpu/block_sparse_attention.h"
#include "kernels/cpu/key_pooling.h"
#include "kernels/cpu/lse_merge.h"
#include "kernels/cpu/round_robin_mask_estimator.h"

namespace prefill {
namespace {

class CpuBackend final : public AttentionBackend {
 public:
  explicit CpuBackend(int threads) : threads_(threads) {}
  std::string_view name() const override { return "cpu"; }
  absl::Status Attention(const AttentionParams& p) override {
    return cpu::BlockSparseAttention(p, threads_);
  }
  absl::Status MergeByLse(const LseMergeParams& p) override { return cpu::MergeByLse(p); }
  absl::Status PoolKeys(const PoolKeysParams& p) override { return cpu::PoolKeys(p); }
  absl::StatusOr<BlockMask> EstimateMask(const MaskEstimateParams& p) override {
    return cpu::EstimateRoundRobinMask(p, threads_);
  }

 private:
  int threads_;
};

}  // namespace

std::unique_ptr<AttentionBackend> MakeCpuBackend(int threads) {
  return std::make_unique<CpuBackend>(threads);
}

}  // namespace prefill
