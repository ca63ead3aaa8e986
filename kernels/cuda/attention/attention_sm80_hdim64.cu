// sm80 attention instantiations for head dim 64 (bf16 and f16 storage).
#include "kernels/cuda/attention/attention_sm80.cuh"

namespace prefill::cuda {

template cudaError_t LaunchAttentionSm80<64, __nv_bfloat16>(const AttentionKernelParams&,
                                                            cudaStream_t);
template cudaError_t LaunchAttentionSm80<64, __half>(const AttentionKernelParams&, cudaStream_t);

}  // namespace prefill::cuda
