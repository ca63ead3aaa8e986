// The AVX2 compilation of the round-robin block mass kernel (same source as the generic one):
// 8-lane vectors, a register tile of 4 rows x 2 ymm accumulators beside 2 ymm of keys.
#define PREFILL_RR_LANES 8
#define PREFILL_RR_PASS_VECS 2
#include "kernels/cpu/round_robin_block_mass_kernel.inc"

namespace prefill::cpu::round_robin {

void AccumulateBlockMassAvx2(const RowGroup& group) { AccumulateBlockMass(group); }

}  // namespace prefill::cpu::round_robin
