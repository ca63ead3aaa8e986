// Entry of block-sparse attention on the GPU: validation (once, here), fp32 -> bf16 input
// conversion, the longest-first schedule, and dispatch by architecture, head dim and dtype.
#include "kernels/cuda/attention/block_sparse_attention.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/attention/attention_kernel_params.h"
#include "kernels/cuda/attention/attention_sm90.h"
#include "kernels/cuda/attention/convert_inputs.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/status_macros.h"

namespace prefill::cuda {
namespace {

constexpr int kBlockSize = 128;

absl::Status Invalid(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("AttentionParams: ", what));
}

// PREFILL_ATTENTION_RESCALE_THRESHOLD (log2 units, >= 0) overrides the sm90 kernel's
// conditional-rescaling threshold: a diagnostic for A/B runs (0 = rescale whenever the max
// grows), read once.
float RescaleThresholdLog2() {
  static const float threshold = [] {
    const char* v = std::getenv("PREFILL_ATTENTION_RESCALE_THRESHOLD");
    const float parsed = v ? std::strtof(v, nullptr) : -1.f;
    return parsed >= 0.f && parsed <= 16.f ? parsed
                                           : AttentionKernelParams{}.rescale_threshold_log2;
  }();
  return threshold;
}

bool Aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

absl::Status Validate(const AttentionParams& p) {
  if (p.lq < 0 || p.lk < 0) return Invalid("lq and lk must be >= 0");
  if (p.hq <= 0 || p.hkv <= 0)
    return Invalid(absl::StrCat("hq (", p.hq, ") and hkv (", p.hkv, ") must be positive"));
  if (p.hq % p.hkv != 0)
    return Invalid(absl::StrCat("hq (", p.hq, ") must be a multiple of hkv (", p.hkv, ")"));
  if (p.head_dim != 64 && p.head_dim != 128) {
    return Invalid(absl::StrCat("head_dim ", p.head_dim, " unsupported on CUDA (64 or 128)"));
  }
  if (p.block_size != kBlockSize) {
    return Invalid(absl::StrCat("block_size ", p.block_size, " unsupported on CUDA (128)"));
  }
  if (p.lq % kBlockSize != 0)
    return Invalid(absl::StrCat("lq (", p.lq, ") must be a multiple of block_size"));
  if (p.lk % kBlockSize != 0)
    return Invalid(absl::StrCat("lk (", p.lk, ") must be a multiple of block_size"));
  if (!(p.scale > 0.f) || !std::isfinite(p.scale))
    return Invalid("scale must be positive and finite");
  if (!p.q || !p.k || !p.v) return Invalid("null q, k or v");
  if (!p.o || !p.lse) return Invalid("null o or lse");
  if (!p.mask_row_offsets || !p.mask_kv_blocks)
    return Invalid("null mask_row_offsets or mask_kv_blocks");
  if (p.causal && (!p.q_pos || !p.k_pos)) return Invalid("causal needs q_pos and k_pos");
  if (p.k_pos_head_stride < 0) return Invalid("k_pos_head_stride < 0");
  if (p.q_row_stride < p.head_dim || p.q_head_stride < p.head_dim) {
    return Invalid("q_row_stride and q_head_stride must be >= head_dim");
  }
  if (p.kv_row_stride < p.head_dim) return Invalid("kv_row_stride must be >= head_dim");
  if (p.hkv > 1 && p.kv_head_stride < p.head_dim)
    return Invalid("kv_head_stride must be >= head_dim");
  if (p.dtype != DType::kF32) {
    // 16-byte cp.async / TMA loads of 8 elements: bases and strides in multiples of 8 elements.
    if (!Aligned16(p.q) || !Aligned16(p.k) || !Aligned16(p.v)) {
      return Invalid("q, k and v must be 16-byte aligned");
    }
    if (p.q_row_stride % 8 || p.q_head_stride % 8 || p.kv_row_stride % 8 || p.kv_head_stride % 8) {
      return Invalid("q/kv row and head strides must be multiples of 8 elements");
    }
  }
  const int out_size = DTypeSize(p.out_dtype);
  if (reinterpret_cast<uintptr_t>(p.o) % (2 * out_size) != 0) {
    return Invalid("o must be aligned to two elements of out_dtype");
  }
  return absl::OkStatus();
}

template <typename Element>
absl::Status DispatchHeadDim(const AttentionKernelParams& kp, bool use_sm90,
                             const DeviceContext& ctx) {
  if (use_sm90) return RunAttentionSm90(kp, ctx);
  if (kp.p.head_dim == 64) {
    CUDA_CHECK((LaunchAttentionSm80<64, Element>(kp, ctx.stream)));
  } else {
    CUDA_CHECK((LaunchAttentionSm80<128, Element>(kp, ctx.stream)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status BlockSparseAttention(const AttentionParams& p, const DeviceContext& ctx) {
  PREFILL_RETURN_IF_ERROR(Validate(p));
  if (p.lq == 0) return absl::OkStatus();

  AttentionKernelParams kp;
  kp.p = p;
  kp.num_q_blocks = p.lq / kBlockSize;
  kp.num_items = p.hq * kp.num_q_blocks;
  kp.group = p.hq / p.hkv;
  kp.scale_log2 = p.scale * 1.4426950408889634f;
  kp.rescale_threshold_log2 = RescaleThresholdLog2();

  const bool f32 = p.dtype == DType::kF32;
  const int64_t q_elems = static_cast<int64_t>(p.lq) * p.hq * p.head_dim;
  const int64_t kv_elems = static_cast<int64_t>(p.hkv) * p.lk * p.head_dim;
  kp.num_kv_blocks = p.lk / kBlockSize;
  auto carve = [&](ScratchCarver& c) {
    int32_t* schedule = c.Take<int32_t>(kp.num_items);
    int32_t* kv_range = c.Take<int32_t>(static_cast<size_t>(p.hkv) * kp.num_kv_blocks * 2);
    void* q16 = f32 ? c.Take<uint16_t>(q_elems) : nullptr;
    void* k16 = f32 ? c.Take<uint16_t>(kv_elems) : nullptr;
    void* v16 = f32 ? c.Take<uint16_t>(kv_elems) : nullptr;
    return std::tuple{schedule, kv_range, q16, k16, v16};
  };
  ScratchCarver plan;
  carve(plan);
  absl::StatusOr<void*> scratch = ctx.scratch->Reserve(plan.bytes(), ctx.stream);
  if (!scratch.ok()) return scratch.status();
  ScratchCarver carver(*scratch);
  auto [schedule, kv_range, q16, k16, v16] = carve(carver);
  kp.schedule = schedule;

  if (f32) {
    // Packed bf16 copies: Q [lq][hq][D], K/V [hkv][lk][D].
    CUDA_CHECK(LaunchConvertF32ToBf16(static_cast<const float*>(p.q), p.q_row_stride,
                                      p.q_head_stride, p.lq, p.hq, p.head_dim, q16, ctx.sm_count,
                                      ctx.stream));
    CUDA_CHECK(LaunchConvertF32ToBf16(static_cast<const float*>(p.k), p.kv_head_stride,
                                      p.kv_row_stride, p.hkv, p.lk, p.head_dim, k16, ctx.sm_count,
                                      ctx.stream));
    CUDA_CHECK(LaunchConvertF32ToBf16(static_cast<const float*>(p.v), p.kv_head_stride,
                                      p.kv_row_stride, p.hkv, p.lk, p.head_dim, v16, ctx.sm_count,
                                      ctx.stream));
    kp.p.dtype = DType::kBF16;
    kp.p.q = q16;
    kp.p.k = k16;
    kp.p.v = v16;
    kp.p.q_row_stride = static_cast<int64_t>(p.hq) * p.head_dim;
    kp.p.q_head_stride = p.head_dim;
    kp.p.kv_row_stride = p.head_dim;
    kp.p.kv_head_stride = static_cast<int64_t>(p.lk) * p.head_dim;
  }
  CUDA_CHECK(LaunchBuildWorkSchedule(p.mask_row_offsets, kp.num_items, kp.num_q_blocks, kp.group,
                                     p.lk / kBlockSize, schedule, ctx.stream));

  bool use_sm90 = false;
  if (ctx.attention_path != AttentionPath::kSm80 && ctx.cc_major == 9) {
    const absl::Status eligible = Sm90Eligible(kp, ctx);
    if (ctx.attention_path == AttentionPath::kSm90 && !eligible.ok()) return eligible;
    use_sm90 = eligible.ok();
  }
  if (use_sm90 && p.causal) {
    CUDA_CHECK(LaunchKvBlockRange(p.k_pos, p.k_pos_head_stride, p.hkv, kp.num_kv_blocks, kBlockSize,
                                  kv_range, ctx.stream));
    kp.kv_block_range = kv_range;
  }
  if (kp.p.dtype == DType::kF16) return DispatchHeadDim<__half>(kp, use_sm90, ctx);
  return DispatchHeadDim<__nv_bfloat16>(kp, use_sm90, ctx);
}

}  // namespace prefill::cuda
