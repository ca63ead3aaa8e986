// The instruction sets the CPU kernels are compiled for, which of them this CPU runs, and the
// PREFILL_CPU_ISA override (portable|avx2|avx512|neon) that tests and benchmarks use to force
// one. Each kernel with ISA variants (flash attention, round-robin block mass) asks
// SelectedCpuIsa() at every call, so one process can compare the variants.
#pragma once

#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace prefill::cpu {

enum class CpuIsa {
  kPortable,  // plain C++ (GCC vector extensions, baseline flags): any CPU, the reference
  kAvx2,      // x86-64 with AVX2, FMA and F16C (Haswell, Zen 1 and later)
  kAvx512,    // x86-64 with AVX-512 F, BW, DQ, VL (Skylake-SP, Zen 4 and later)
  kNeon,      // aarch64 Advanced SIMD with fp16 conversions (every ARMv8-A server)
};

std::string_view CpuIsaName(CpuIsa isa);  // "portable", "avx2", "avx512", "neon"
absl::StatusOr<CpuIsa> ParseCpuIsa(std::string_view name);

// Compiled into this build and supported by the running CPU.
bool CpuRuns(CpuIsa isa);
// Every ISA CpuRuns(), the fastest first; ends with kPortable.
std::vector<CpuIsa> RunnableCpuIsas();
CpuIsa BestCpuIsa();

// PREFILL_CPU_ISA when it is set and not empty, else BestCpuIsa(). A name that is not an ISA,
// or one this build or CPU cannot run, is InvalidArgument naming the variable.
absl::StatusOr<CpuIsa> SelectedCpuIsa();

}  // namespace prefill::cpu
