// Entry of the CPU flash attention forward: validates the params once, then runs the
// instantiation of the ISA SelectedCpuIsa() names: the fastest this CPU runs, or the one
// PREFILL_CPU_ISA forces (read at every call, so one test process can compare them all).
#include "kernels/cpu/block_sparse_attention.h"

#include "absl/strings/str_cat.h"
#include "kernels/cpu/attention_validation.h"
#include "kernels/cpu/block_sparse_attention_isa.h"
#include "kernels/cpu/cpu_isa.h"
#include "kernels/status_macros.h"

namespace prefill::cpu {
namespace {

constexpr char kEntry[] = "BlockSparseAttention";
constexpr int kMaxHeadDim = 256;  // bounds the per-thread scratch (a few 100 KB at B = 128)

absl::Status ValidateKernelParams(const AttentionParams& p) {
  PREFILL_RETURN_IF_ERROR(ValidateAttentionInputs(p, kEntry));
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

}  // namespace

absl::Status BlockSparseAttention(const AttentionParams& p, int threads) {
  PREFILL_RETURN_IF_ERROR(ValidateKernelParams(p));
  const absl::StatusOr<CpuIsa> isa = SelectedCpuIsa();
  if (!isa.ok()) return isa.status();
  switch (*isa) {
#if defined(__x86_64__)
    case CpuIsa::kAvx512:
      RunBlockSparseAttentionAvx512(p, threads);
      return absl::OkStatus();
    case CpuIsa::kAvx2:
      RunBlockSparseAttentionAvx2(p, threads);
      return absl::OkStatus();
#endif
#if defined(__aarch64__)
    case CpuIsa::kNeon:
      RunBlockSparseAttentionNeon(p, threads);
      return absl::OkStatus();
#endif
    default:
      RunBlockSparseAttentionPortable(p, threads);
      return absl::OkStatus();
  }
}

}  // namespace prefill::cpu
