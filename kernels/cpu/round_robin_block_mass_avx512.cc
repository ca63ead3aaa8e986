// The AVX-512 compilation of the round-robin block mass kernel (same source as the generic one).
#include "kernels/cpu/round_robin_block_mass_kernel.inc"

namespace prefill::cpu::round_robin {

void AccumulateBlockMassAvx512(const RowGroup& group) { AccumulateBlockMass(group); }

}  // namespace prefill::cpu::round_robin
