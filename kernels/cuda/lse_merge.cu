// LSE merge: one warp per (row, head) entry; every lane reads both log-sum-exps before lane 0
// overwrites lse_acc, so the update is in place without a race.
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/lse_merge.h"

namespace prefill::cuda {
namespace {

constexpr int kWarpsPerBlock = 8;

// o_acc/o_part: [rows, head_dim] fp32; lse_acc/lse_part: [rows].
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    LseMergeKernel(const LseMergeParams p, bool vec4) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= p.rows) return;
  // LseMergeParams::AccEntry (host-only code).
  const int64_t acc = p.run > 0 ? (row / p.run) * p.acc_run_stride + row % p.run : row;
  const float lse_a = p.lse_acc[acc];
  const float lse_b = p.lse_part[row];
  // The CPU's rule, case by case: a part that saw no key leaves acc alone (whatever its O
  // holds); an acc that saw none takes the part; otherwise fp32 weights (the CPU
  // computes them in double: they agree to a few ulps).
  if (lse_b == -INFINITY) return;
  float wa, wb, lse;
  if (lse_a == -INFINITY) {
    wa = 0.f;
    wb = 1.f;
    lse = lse_b;
  } else {
    const float m = fmaxf(lse_a, lse_b);
    const float ea = expf(lse_a - m), eb = expf(lse_b - m);
    const float total = ea + eb;  // in [1, 2]
    wa = ea / total;
    wb = eb / total;
    lse = m + logf(total);
  }
  float* o_acc = p.o_acc + acc * p.head_dim;
  const float* o_part = p.o_part + row * p.head_dim;
  if (vec4) {
    for (int e = lane * 4; e < p.head_dim; e += 128) {
      const float4 a = *reinterpret_cast<const float4*>(o_acc + e);
      const float4 b = *reinterpret_cast<const float4*>(o_part + e);
      *reinterpret_cast<float4*>(o_acc + e) =
          wa == 0.f ? b
                    : make_float4(a.x * wa + b.x * wb, a.y * wa + b.y * wb, a.z * wa + b.z * wb,
                                  a.w * wa + b.w * wb);
    }
  } else {
    for (int e = lane; e < p.head_dim; e += 32)
      o_acc[e] = wa == 0.f ? o_part[e] : o_acc[e] * wa + o_part[e] * wb;
  }
  __syncwarp();
  if (lane == 0) p.lse_acc[acc] = lse;
}

cudaError_t LaunchLseMerge(const LseMergeParams& p, cudaStream_t stream) {
  const bool vec4 = p.head_dim % 4 == 0 && reinterpret_cast<uintptr_t>(p.o_acc) % 16 == 0 &&
                    reinterpret_cast<uintptr_t>(p.o_part) % 16 == 0;
  const int64_t blocks = (p.rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
  LseMergeKernel<<<static_cast<unsigned>(blocks), kWarpsPerBlock * 32, 0, stream>>>(p, vec4);
  return cudaGetLastError();
}

}  // namespace

absl::Status MergeByLse(const LseMergeParams& p, const DeviceContext& ctx) {
  if (p.rows < 0) return absl::InvalidArgumentError("LseMergeParams.rows < 0");
  if (p.rows == 0) return absl::OkStatus();
  if (p.head_dim <= 0) return absl::InvalidArgumentError("LseMergeParams.head_dim <= 0");
  if (!p.o_acc || !p.lse_acc || !p.o_part || !p.lse_part) {
    return absl::InvalidArgumentError(
        "LseMergeParams: null pointer (o_acc, lse_acc, o_part, lse_part)");
  }
  if (!p.RunsValid()) {
    return absl::InvalidArgumentError("LseMergeParams: run must be >= 0 and acc_run_stride >= run");
  }
  if ((p.rows + kWarpsPerBlock - 1) / kWarpsPerBlock > 0x7fffffff) {
    return absl::InvalidArgumentError(absl::StrCat("LseMergeParams.rows too large: ", p.rows));
  }
  CUDA_CHECK(LaunchLseMerge(p, ctx.stream));
  return absl::OkStatus();
}

}  // namespace prefill::cuda
