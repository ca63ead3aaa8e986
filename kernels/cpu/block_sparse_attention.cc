// Entry of the CPU flash attention forward: validates the params once, then runs the AVX-512
// instantiation when the CPU has it, else the portable one. PREFILL_CPU_ISA=portable forces
// the portable path (read at every call, so one test process can compare both).
#include "kernels/cpu/block_sparse_attention.h"

#include <cstdlib>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/attention_validation.h"
#include "kernels/cpu/block_sparse_attention_isa.h"

namespace prefill::cpu {
namespace {

constexpr char kEntry[] = "BlockSparseAttention";
constexpr int kMaxHeadDim = 256;  // bounds the per-thread scratch (a few 100 KB at B = 128)

absl::Status ValidateKernelParams(const AttentionParams& p) {
  if (absl::Status s = ValidateAttentionInputs(p, kEntry); !s.ok()) return s;
  auto invalid = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(kEntry, ": ", parts...));
  };
  // Rows are converted 16 elements at a time.
  if (p.head_dim % 16 != 0 || p.head_dim > kMaxHeadDim) {
    return invalid("head_dim (", p.head_dim, ") must be a multiple of 16 and at most ",
                   kMaxHeadDim);
  }
  if (p.out_dtype != DType::kF32) {
    return invalid("out_dtype must be f32 on the CPU backend, got ",
                   std::string(DTypeName(p.out_dtype)));
  }
  if (p.o == nullptr) return invalid("o is null");
  if (p.lse == nullptr) return invalid("lse is null");
  return absl::OkStatus();
}

bool CpuRunsAvx512() {
  static const bool supported =
      __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("fma");  // every AVX-512 CPU has F16C (clang cannot ask for it)
  return supported;
}

}  // namespace

bool BlockSparseAttentionUsesAvx512() {
  const char* isa = std::getenv("PREFILL_CPU_ISA");
  if (isa != nullptr && std::string_view(isa) == "portable") return false;
  return CpuRunsAvx512();
}

absl::Status BlockSparseAttention(const AttentionParams& p, int threads) {
  if (absl::Status s = ValidateKernelParams(p); !s.ok()) return s;
  if (BlockSparseAttentionUsesAvx512()) {
    RunBlockSparseAttentionAvx512(p, threads);
  } else {
    RunBlockSparseAttentionPortable(p, threads);
  }
  return absl::OkStatus();
}

}  // namespace prefill::cpu
