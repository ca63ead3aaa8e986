// sm90a attention instantiations for head dim 64 (bf16 and f16 storage).
#include "kernels/cuda/attention/attention_sm90.cuh"

namespace prefill::cuda {

template cudaError_t LaunchAttentionSm90<64, __nv_bfloat16>(const Sm90KernelParams&, int,
                                                            cudaStream_t);
template cudaError_t LaunchAttentionSm90<64, __half>(const Sm90KernelParams&, int, cudaStream_t);

}  // namespace prefill::cuda
