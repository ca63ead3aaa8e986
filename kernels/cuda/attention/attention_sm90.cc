// Host side of the sm90a attention: eligibility, TMA descriptors (cuTensorMapEncodeTiled
// through cudaGetDriverEntryPointByVersion, so libcuda is never linked) and the launch.
#include "kernels/cuda/attention/attention_sm90.h"

#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/attention/attention_sm90_launch.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/status_macros.h"

namespace prefill::cuda {
namespace {

absl::StatusOr<bool> Sm90aCompiledIn() {
  static std::once_flag once;
  static cudaError_t error = cudaSuccess;
  static bool available = false;
  std::call_once(once, [] { error = ProbeSm90aKernels(&available); });
  CUDA_CHECK(error);
  return available;
}

absl::StatusOr<PFN_cuTensorMapEncodeTiled_v12000> EncodeTiledFunction() {
  static std::once_flag once;
  static void* fn = nullptr;
  static cudaError_t error = cudaSuccess;
  static cudaDriverEntryPointQueryResult query = cudaDriverEntryPointSuccess;
  std::call_once(once, [] {
    error = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000,
                                             cudaEnableDefault, &query);
  });
  CUDA_CHECK(error);
  if (fn == nullptr || query != cudaDriverEntryPointSuccess) {
    return absl::UnavailableError("cuTensorMapEncodeTiled not found in the driver");
  }
  return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
}

// A 3-D bf16/f16 tensor map with 128-byte swizzle: dims and byte strides innermost first.
absl::Status Encode(PFN_cuTensorMapEncodeTiled_v12000 encode, CUtensorMap* map, DType dtype,
                    const void* base, const cuuint64_t (&dims)[3],
                    const cuuint64_t (&strides_bytes)[2], const cuuint32_t (&box)[3],
                    const char* what) {
  const cuuint32_t element_strides[3] = {1, 1, 1};
  const CUresult r = encode(
      map,
      dtype == DType::kF16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3,
      const_cast<void*>(base), dims, strides_bytes, box, element_strides,
      CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    return absl::InternalError(absl::StrCat("cuTensorMapEncodeTiled(", what,
                                            ") failed with CUresult ", static_cast<int>(r)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Sm90Eligible(const AttentionKernelParams& kp, const DeviceContext& ctx) {
  if (ctx.cc_major != 9) {
    return absl::FailedPreconditionError(
        absl::StrCat("sm90 attention needs compute capability 9.0, device has ", ctx.cc_major, ".",
                     ctx.cc_minor));
  }
  absl::StatusOr<bool> compiled = Sm90aCompiledIn();
  if (!compiled.ok()) return compiled.status();
  if (!*compiled) {
    return absl::FailedPreconditionError(
        "this binary has no sm_90a code (build with CMAKE_CUDA_ARCHITECTURES 90a-real)");
  }
  const AttentionParams& p = kp.p;
  auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  if (!aligned(p.q) || !aligned(p.k) || !aligned(p.v)) {
    return absl::FailedPreconditionError("TMA needs 16-byte aligned q, k, v");
  }
  // Strides in multiples of 8 elements (16 bytes) are already required by the entry.
  if (Sm90SmemBytes(p.head_dim, Sm90KvStages(p.head_dim)) > ctx.max_smem_per_block_optin) {
    return absl::FailedPreconditionError(
        absl::StrCat("sm90 attention needs ", Sm90SmemBytes(p.head_dim, Sm90KvStages(p.head_dim)),
                     " bytes of shared memory, the device allows ", ctx.max_smem_per_block_optin));
  }
  return absl::OkStatus();
}

absl::Status RunAttentionSm90(const AttentionKernelParams& kp, const DeviceContext& ctx) {
  absl::StatusOr<PFN_cuTensorMapEncodeTiled_v12000> encode = EncodeTiledFunction();
  if (!encode.ok()) return encode.status();
  const AttentionParams& p = kp.p;
  Sm90KernelParams params{};
  params.kp = kp;
  const cuuint64_t d = static_cast<cuuint64_t>(p.head_dim);
  {
    const cuuint64_t dims[3] = {d, static_cast<cuuint64_t>(p.hq), static_cast<cuuint64_t>(p.lq)};
    const cuuint64_t strides[2] = {static_cast<cuuint64_t>(p.q_head_stride) * 2,
                                   static_cast<cuuint64_t>(p.q_row_stride) * 2};
    const cuuint32_t box[3] = {64, 1, 128};
    PREFILL_RETURN_IF_ERROR(Encode(*encode, &params.tma_q, p.dtype, p.q, dims, strides, box, "q"));
  }
  {
    const cuuint64_t dims[3] = {d, static_cast<cuuint64_t>(p.lk), static_cast<cuuint64_t>(p.hkv)};
    // With one KV head the head stride is never stepped; TMA still wants a valid one.
    const int64_t head_stride =
        p.hkv > 1 ? p.kv_head_stride : static_cast<int64_t>(p.lk) * p.kv_row_stride;
    const cuuint64_t strides[2] = {static_cast<cuuint64_t>(p.kv_row_stride) * 2,
                                   static_cast<cuuint64_t>(head_stride) * 2};
    const cuuint32_t box[3] = {64, 128, 1};
    PREFILL_RETURN_IF_ERROR(Encode(*encode, &params.tma_k, p.dtype, p.k, dims, strides, box, "k"));
    PREFILL_RETURN_IF_ERROR(Encode(*encode, &params.tma_v, p.dtype, p.v, dims, strides, box, "v"));
  }
  const int grid = std::min(kp.num_items, std::max(ctx.sm_count, 1));
  const bool f16 = p.dtype == DType::kF16;
  if (p.head_dim == 64) {
    CUDA_CHECK((f16 ? LaunchAttentionSm90<64, __half>(params, grid, ctx.stream)
                    : LaunchAttentionSm90<64, __nv_bfloat16>(params, grid, ctx.stream)));
  } else {
    CUDA_CHECK((f16 ? LaunchAttentionSm90<128, __half>(params, grid, ctx.stream)
                    : LaunchAttentionSm90<128, __nv_bfloat16>(params, grid, ctx.stream)));
  }
  return absl::OkStatus();
}

}  // namespace prefill::cuda
