// GatherRows: dst[i * bytes_each ..] = src[src_offsets[i] ..]. The host offsets go to scratch
// first (stream-ordered), then one 2-D grid copies: blockIdx.y picks rows, x covers the bytes
// of a row, 16 bytes per thread when every address is 16-byte aligned.
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/gather_rows.h"

namespace prefill::cuda {
namespace {

constexpr int kThreads = 256;

template <typename Word>
__global__ void __launch_bounds__(kThreads)
    GatherRowsKernel(const char* __restrict__ src, char* __restrict__ dst,
                     const int64_t* __restrict__ offsets, int64_t count, int64_t bytes_each) {
  const int64_t words = bytes_each / static_cast<int64_t>(sizeof(Word));
  for (int64_t row = blockIdx.y; row < count; row += gridDim.y) {
    const Word* s = reinterpret_cast<const Word*>(src + offsets[row]);
    Word* d = reinterpret_cast<Word*>(dst + row * bytes_each);
    for (int64_t w = blockIdx.x * int64_t{kThreads} + threadIdx.x; w < words;
         w += int64_t{gridDim.x} * kThreads) {
      d[w] = s[w];
    }
  }
}

}  // namespace

absl::Status GatherRows(const GatherRowsParams& p, const DeviceContext& ctx) {
  if (p.count < 0 || p.bytes_each < 0) {
    return absl::InvalidArgumentError("GatherRowsParams: negative count or bytes_each");
  }
  if (p.count == 0 || p.bytes_each == 0) return absl::OkStatus();
  if (!p.src || !p.dst || !p.src_offsets) {
    return absl::InvalidArgumentError("GatherRowsParams: null src, dst or src_offsets");
  }
  uint64_t align_bits = reinterpret_cast<uintptr_t>(p.src) | reinterpret_cast<uintptr_t>(p.dst) |
                        static_cast<uint64_t>(p.bytes_each);
  for (int64_t i = 0; i < p.count; ++i) {
    if (p.src_offsets[i] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("GatherRowsParams.src_offsets[", i, "] < 0"));
    }
    align_bits |= static_cast<uint64_t>(p.src_offsets[i]);
  }
  ScratchCarver plan;
  plan.Take<int64_t>(p.count);
  absl::StatusOr<void*> scratch = ctx.scratch->Reserve(plan.bytes(), ctx.stream);
  if (!scratch.ok()) return scratch.status();
  ScratchCarver carve(*scratch);
  int64_t* offsets = carve.Take<int64_t>(p.count);
  CUDA_CHECK(cudaMemcpyAsync(offsets, p.src_offsets, p.count * sizeof(int64_t),
                             cudaMemcpyHostToDevice, ctx.stream));

  const bool vec16 = align_bits % 16 == 0;
  const int64_t words = vec16 ? p.bytes_each / 16 : p.bytes_each;
  const int64_t x = (words + kThreads - 1) / kThreads;
  dim3 grid(static_cast<unsigned>(x < 64 ? x : 64),
            static_cast<unsigned>(p.count < 65535 ? p.count : 65535));
  const char* src = static_cast<const char*>(p.src);
  char* dst = static_cast<char*>(p.dst);
  if (vec16) {
    GatherRowsKernel<uint4>
        <<<grid, kThreads, 0, ctx.stream>>>(src, dst, offsets, p.count, p.bytes_each);
  } else {
    GatherRowsKernel<uint8_t>
        <<<grid, kThreads, 0, ctx.stream>>>(src, dst, offsets, p.count, p.bytes_each);
  }
  CUDA_CHECK(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace prefill::cuda
