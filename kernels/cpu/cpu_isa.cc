// Run-time detection of the CPU's vector instruction sets (CPUID on x86-64 through
// __builtin_cpu_supports; NEON is part of every aarch64 CPU).
#include "kernels/cpu/cpu_isa.h"

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace prefill::cpu {
namespace {

constexpr CpuIsa kFastestFirst[] = {CpuIsa::kAvx512, CpuIsa::kAvx2, CpuIsa::kNeon,
                                    CpuIsa::kPortable};

bool Supported(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kPortable:
      return true;
#if defined(__x86_64__)
    case CpuIsa::kAvx2:
      // F16C has no __builtin_cpu_supports name in clang; every AVX2 CPU has it.
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case CpuIsa::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("fma");
    case CpuIsa::kNeon:
      return false;
#elif defined(__aarch64__)
    case CpuIsa::kNeon:
      return true;
    case CpuIsa::kAvx2:
    case CpuIsa::kAvx512:
      return false;
#else
    default:
      return false;
#endif
  }
  return false;
}

}  // namespace

std::string_view CpuIsaName(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kPortable:
      return "portable";
    case CpuIsa::kAvx2:
      return "avx2";
    case CpuIsa::kAvx512:
      return "avx512";
    case CpuIsa::kNeon:
      return "neon";
  }
  return "?";
}

absl::StatusOr<CpuIsa> ParseCpuIsa(std::string_view name) {
  for (CpuIsa isa : kFastestFirst) {
    if (name == CpuIsaName(isa)) return isa;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown CPU ISA '", std::string(name), "' (portable, avx2, avx512 or neon)"));
}

bool CpuRuns(CpuIsa isa) {
  static const bool runs[] = {Supported(CpuIsa::kPortable), Supported(CpuIsa::kAvx2),
                              Supported(CpuIsa::kAvx512), Supported(CpuIsa::kNeon)};
  return runs[static_cast<int>(isa)];
}

std::vector<CpuIsa> RunnableCpuIsas() {
  std::vector<CpuIsa> isas;
  for (CpuIsa isa : kFastestFirst) {
    if (CpuRuns(isa)) isas.push_back(isa);
  }
  return isas;
}

CpuIsa BestCpuIsa() { return RunnableCpuIsas().front(); }

absl::StatusOr<CpuIsa> SelectedCpuIsa() {
  const char* forced = std::getenv("PREFILL_CPU_ISA");
  if (forced == nullptr || *forced == '\0') return BestCpuIsa();
  absl::StatusOr<CpuIsa> isa = ParseCpuIsa(forced);
  if (!isa.ok())
    return absl::InvalidArgumentError(absl::StrCat("PREFILL_CPU_ISA: ", isa.status().message()));
  if (!CpuRuns(*isa)) {
    std::vector<std::string> names;
    for (CpuIsa runnable : RunnableCpuIsas()) names.emplace_back(CpuIsaName(runnable));
    return absl::InvalidArgumentError(absl::StrCat("PREFILL_CPU_ISA=", forced,
                                                   ": this build or CPU cannot run it (it runs ",
                                                   absl::StrJoin(names, ", "), ")"));
  }
  return isa;
}

}  // namespace prefill::cpu
