// Small kernels around the sm90 attention: the sm_90a availability probe and the per-KV-block
// key position ranges.
#include <climits>

#include "kernels/cuda/attention/attention_sm90_launch.h"
#include "kernels/cuda/attention/sm90_wgmma.cuh"

namespace prefill::cuda {
namespace {

__global__ void Sm90aProbeKernel(int* flag) {
#ifdef PREFILL_SM90A_ENABLED
  *flag = 1;
#else
  *flag = 0;
#endif
}

// One warp per (KV head, block): min and max of the block's key positions.
__global__ void __launch_bounds__(256)
    KvBlockRangeKernel(const int32_t* __restrict__ k_pos, int64_t head_stride, int hkv,
                       int num_blocks, int block, int32_t* __restrict__ range) {
  const int64_t w = blockIdx.x * 8LL + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (w >= static_cast<int64_t>(hkv) * num_blocks) return;
  const int g = static_cast<int>(w / num_blocks);
  const int b = static_cast<int>(w % num_blocks);
  const int32_t* pos = k_pos + g * head_stride + static_cast<int64_t>(b) * block;
  int lo = INT_MAX, hi = INT_MIN;
  for (int i = lane; i < block; i += 32) {
    lo = min(lo, pos[i]);
    hi = max(hi, pos[i]);
  }
#pragma unroll
  for (int o = 16; o >= 1; o /= 2) {
    lo = min(lo, __shfl_xor_sync(0xffffffffu, lo, o));
    hi = max(hi, __shfl_xor_sync(0xffffffffu, hi, o));
  }
  if (lane == 0) {
    range[2 * w] = lo;
    range[2 * w + 1] = hi;
  }
}

}  // namespace

cudaError_t ProbeSm90aKernels(bool* available) {
  int* flag = nullptr;
  cudaError_t e = cudaMalloc(&flag, sizeof(int));
  if (e != cudaSuccess) return e;
  Sm90aProbeKernel<<<1, 1>>>(flag);
  int host = 0;
  e = cudaGetLastError();
  if (e == cudaSuccess) e = cudaMemcpy(&host, flag, sizeof(int), cudaMemcpyDeviceToHost);
  cudaFree(flag);
  *available = host == 1;
  return e;
}

cudaError_t LaunchKvBlockRange(const int32_t* k_pos, int64_t k_pos_head_stride, int hkv,
                               int num_blocks, int block, int32_t* range, cudaStream_t stream) {
  const int64_t warps = static_cast<int64_t>(hkv) * num_blocks;
  if (warps == 0) return cudaSuccess;
  KvBlockRangeKernel<<<static_cast<unsigned>((warps + 7) / 8), 256, 0, stream>>>(
      k_pos, k_pos_head_stride, hkv, num_blocks, block, range);
  return cudaGetLastError();
}

}  // namespace prefill::cuda
