// mbarrier, TMA (cp.async.bulk.tensor) and register-reconfiguration primitives of the sm90
// attention kernel. All plain sm_90 PTX except setmaxnreg (sm_90a); every body is compiled
// only in the sm_90a pass (PREFILL_SM90A_ENABLED), so the sm_80 pass sees empty stubs.
#pragma once

#include <cstdint>

#include "kernels/cuda/attention/sm90_wgmma.cuh"

namespace prefill::cuda::sm90 {

__device__ __forceinline__ uint32_t SmemAddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void BarrierInit(uint64_t* bar, uint32_t count) {
#ifdef PREFILL_SM90A_ENABLED
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(SmemAddr(bar)), "r"(count)
               : "memory");
#endif
}
// Makes barrier initialisation visible to the async proxy (TMA) and the other threads.
__device__ __forceinline__ void BarrierInitFence() {
#ifdef PREFILL_SM90A_ENABLED
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void BarrierArrive(uint64_t* bar) {
#ifdef PREFILL_SM90A_ENABLED
  asm volatile(
      "{\n.reg .b64 state;\nmbarrier.arrive.shared::cta.b64 state, [%0];\n}\n" ::"r"(SmemAddr(bar))
      : "memory");
#endif
}
// One arrival that also announces `bytes` of TMA traffic completing on this phase.
__device__ __forceinline__ void BarrierArriveExpectTx(uint64_t* bar, uint32_t bytes) {
#ifdef PREFILL_SM90A_ENABLED
  asm volatile(
      "{\n.reg .b64 state;\nmbarrier.arrive.expect_tx.shared::cta.b64 state, [%0], %1;\n}\n" ::"r"(
          SmemAddr(bar)),
      "r"(bytes)
      : "memory");
#endif
}
// Blocks until the phase of parity `parity` has completed.
__device__ __forceinline__ void BarrierWait(uint64_t* bar, uint32_t parity) {
#ifdef PREFILL_SM90A_ENABLED
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n"
      "}\n" ::"r"(SmemAddr(bar)),
      "r"(parity)
      : "memory");
#endif
}

// 3-D tiled TMA load of one box into shared memory, completing on `bar`.
__device__ __forceinline__ void TmaLoad3d(void* smem_dst, const void* tensor_map, uint64_t* bar,
                                          int c0, int c1, int c2) {
#ifdef PREFILL_SM90A_ENABLED
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, "
      "{%3, %4, %5}], "
      "[%2];\n" ::"r"(SmemAddr(smem_dst)),
      "l"(reinterpret_cast<uint64_t>(tensor_map)), "r"(SmemAddr(bar)), "r"(c0), "r"(c1), "r"(c2)
      : "memory");
#endif
}
__device__ __forceinline__ void TmaPrefetchDescriptor(const void* tensor_map) {
#ifdef PREFILL_SM90A_ENABLED
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(tensor_map))
               : "memory");
#endif
}

// Per-warpgroup register budgets (setmaxnreg must see a register cap at kernel entry:
// __launch_bounds__(threads, 1)).
template <int kRegs>
__device__ __forceinline__ void RegisterDealloc() {
#ifdef PREFILL_SM90A_ENABLED
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
#endif
}
template <int kRegs>
__device__ __forceinline__ void RegisterAlloc() {
#ifdef PREFILL_SM90A_ENABLED
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
#endif
}

// Named barriers (ids 1.. ; 0 is __syncthreads'): Sync waits for `threads` arrivals
// including its own; Arrive counts this thread without waiting.
__device__ __forceinline__ void NamedBarrierSync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void NamedBarrierArrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// 2^x on the special-function unit (flush to zero; 2^-inf = 0): what exp2f becomes only
// under --use_fast_math, which the project does not build with.
__device__ __forceinline__ float FastExp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

}  // namespace prefill::cuda::sm90
