// The baseline-ISA compilation of the round-robin block mass kernel (same source as AVX-512).
#include "kernels/cpu/round_robin_block_mass_kernel.inc"

namespace prefill::cpu::round_robin {

void AccumulateBlockMassGeneric(const RowGroup& group) { AccumulateBlockMass(group); }

}  // namespace prefill::cpu::round_robin
