// Estimator block-score instantiations for head dim 64, R = block_size / stride in {8, 16, 32}.
#include "kernels/cuda/estimation/block_scores.cuh"

namespace prefill::cuda {

#define PREFILL_INSTANTIATE(R)                                                                     \
  template cudaError_t LaunchBlockScores<64, R>(const uint16_t*, const uint16_t*, bool, const uint16_t*, \
                                                const uint16_t*, const int32_t*, const EstimatorShape&, \
                                                int, int, float*, cudaStream_t);
PREFILL_INSTANTIATE(8)
PREFILL_INSTANTIATE(16)
PREFILL_INSTANTIATE(32)
#undef PREFILL_INSTANTIATE

}  // namespace prefill::cuda
