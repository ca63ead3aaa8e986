#include "kernels/cpu/round_robin_mask_estimator.h"
namespace prefill::cpu {
absl::StatusOr<BlockMask> EstimateRoundRobinMask(const MaskEstimateParams&, int) { return absl::UnimplementedError("stub"); }
}  // namespace prefill::cpu
