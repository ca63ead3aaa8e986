// The baseline-ISA compilation of the round-robin block mass kernel (same source as AVX-512):
// 4-lane vectors, SSE2 on x86-64 (16 xmm: 4 rows x 2 accumulators) and NEON on aarch64
// (32 q registers: 4 rows x 4).
#define PREFILL_RR_LANES 4
#if defined(__aarch64__)
#define PREFILL_RR_PASS_VECS 4
#else
#define PREFILL_RR_PASS_VECS 2
#endif
#include "kernels/cpu/round_robin_block_mass_kernel.inc"

namespace prefill::cpu::round_robin {

void AccumulateBlockMassGeneric(const RowGroup& group) { AccumulateBlockMass(group); }

}  // namespace prefill::cpu::round_robin
