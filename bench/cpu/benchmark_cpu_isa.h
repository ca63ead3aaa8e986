// The ISA variant a CPU benchmark measures (PREFILL_CPU_ISA, else the best this CPU runs), and
// a main() that names it in the JSON context (`cpu_isa`). Header-only: each benchmark is one
// binary.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "kernels/cpu/cpu_isa.h"

namespace prefill::bench {

// Exits with the reason when PREFILL_CPU_ISA names a variant this CPU cannot run.
inline cpu::CpuIsa BenchmarkIsa() {
  const absl::StatusOr<cpu::CpuIsa> isa = cpu::SelectedCpuIsa();
  if (!isa.ok()) {
    std::fprintf(stderr, "%s\n", std::string(isa.status().message()).c_str());
    std::exit(2);
  }
  return *isa;
}

inline std::string BenchmarkIsaName() { return std::string(cpu::CpuIsaName(BenchmarkIsa())); }

inline int RunBenchmarksNamingIsa(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("cpu_isa", BenchmarkIsaName());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace prefill::bench
