#include "absl/strings/str_cat.h"
#include "kernels/mask_estimation_params.h"

namespace prefill {

absl::StatusOr<MaskEstimator> ParseMaskEstimator(const std::string& name) {
  for (MaskEstimator e : {MaskEstimator::kRoundRobin, MaskEstimator::kRoundRobinHeavy}) {
    if (name == MaskEstimatorName(e)) return e;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--estimator '", name, "' is not an estimator (valid: rr, rr+heavy)"));
}

const char* MaskEstimatorName(MaskEstimator estimator) {
  return estimator == MaskEstimator::kRoundRobinHeavy ? "rr+heavy" : "rr";
}

}  // namespace prefill
