// Estimator block-score instantiations for head dim 64: R = block_size / stride in {8, 16, 32},
// kTerms in {1, 2, 3} (bf16; + k_lo; + q_lo).
#include "kernels/cuda/estimation/block_scores.cuh"

namespace prefill::cuda {

#define PREFILL_INSTANTIATE(R, T)                                                         \
  template cudaError_t LaunchBlockScores<64, R, T>(                                       \
      const uint16_t*, const uint16_t*, const uint16_t*, const uint16_t*, const int32_t*, \
      const EstimatorShape&, bool, bool, int, int, float*, float*, cudaStream_t);
#define PREFILL_INSTANTIATE_R(R) \
  PREFILL_INSTANTIATE(R, 1) PREFILL_INSTANTIATE(R, 2) PREFILL_INSTANTIATE(R, 3)
PREFILL_INSTANTIATE_R(8)
PREFILL_INSTANTIATE_R(16)
PREFILL_INSTANTIATE_R(32)
#undef PREFILL_INSTANTIATE_R
#undef PREFILL_INSTANTIATE

}  // namespace prefill::cuda
