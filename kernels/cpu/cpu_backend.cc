// The CPU AttentionBackend: the always-present backend and the reference for the others.

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/backend.h"
#include "kernels/cpu/block_sparse_attention.h"
#include "kernels/cpu/key_pooling.h"
#include "kernels/cpu/lse_merge.h"
#include "kernels/cpu/parallel_for.h"
#include "kernels/cpu/round_robin_mask_estimator.h"
#include "kernels/host_arena.h"

namespace prefill {
namespace {

class CpuBackend final : public AttentionBackend {
 public:
  explicit CpuBackend(int threads) : threads_(threads) {}
  std::string_view name() const override { return "cpu"; }
  absl::Status Attention(const AttentionParams& p) override {
    return cpu::BlockSparseAttention(p, threads_);
  }
  absl::Status MergeByLse(const LseMergeParams& p) override { return cpu::MergeByLse(p); }
  absl::Status PoolKeys(const PoolKeysParams& p) override { return cpu::PoolKeys(p); }
  absl::StatusOr<BlockMask> EstimateMask(const MaskEstimateParams& p) override {
    return cpu::EstimateRoundRobinMask(p, threads_);
  }
  absl::StatusOr<BackendBlockMask> EstimateMaskInBackend(const MaskEstimateParams& p) override {
    absl::StatusOr<BlockMask> mask = EstimateMask(p);
    if (!mask.ok()) return mask.status();
    // Host memory is this backend's memory: the ids move into it.
    resident_ids_ = std::move(mask->kv_blocks);
    resident_offsets_ = mask->row_offsets;
    mask->kv_blocks.clear();
    return BackendBlockMask{*std::move(mask), resident_offsets_.data(), resident_ids_.data()};
  }
  absl::StatusOr<BackendBuffer> Allocate(size_t bytes) override {
    void* ptr = std::calloc(bytes ? bytes : 1, 1);
    if (ptr == nullptr) {
      return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", bytes, " bytes"));
    }
    return BackendBuffer(ptr, &std::free);
  }
  absl::Status CopyToBackend(void* dst, const void* src, size_t bytes) override {
    std::memcpy(dst, src, bytes);
    return absl::OkStatus();
  }
  absl::Status CopyToHost(void* dst, const void* src, size_t bytes) override {
    std::memcpy(dst, src, bytes);
    return absl::OkStatus();
  }
  absl::Status GatherRows(const GatherRowsParams& p) override {
    const auto* src = static_cast<const std::byte*>(p.src);
    auto* dst = static_cast<std::byte*>(p.dst);
    for (int64_t i = 0; i < p.count; ++i) {
      std::memcpy(dst + i * p.bytes_each, src + p.src_offsets[i], p.bytes_each);
    }
    return absl::OkStatus();
  }
  absl::Status Synchronize() override { return absl::OkStatus(); }

  absl::StatusOr<BackendBuffer> AllocateHost(size_t bytes) override {
    return HostArena::Process().Allocate(bytes);
  }
  void ReserveHost(size_t bytes) override { HostArena::Process().Reserve(bytes); }
  size_t PrepareHost(size_t bytes) override {
    ReserveHost(bytes);
    return 0;  // the CPU writes downloads in place: nothing to page-lock
  }
  absl::Status StartDownload(const DownloadParams& p) override {
    if (p.src_dtype != DType::kF32)
      return absl::InvalidArgumentError("StartDownload: CPU memory holds fp32 values");
    constexpr int64_t kChunk = int64_t{1} << 20;
    auto* dst = static_cast<char*>(p.host_dst);
    const auto* src = static_cast<const float*>(p.src);
    cpu::ParallelFor((p.n + kChunk - 1) / kChunk, threads_, [&](int64_t c) {
      const int64_t begin = c * kChunk;
      ConvertFromF32(p.dtype, src + begin, dst + begin * DTypeSize(p.dtype),
                     std::min(kChunk, p.n - begin));
    });
    ++downloads_;
    return absl::OkStatus();
  }
  // Downloads land before StartDownload returns.
  int64_t DownloadsStarted() const override { return downloads_; }
  absl::Status WaitForDownloads(int64_t) override { return absl::OkStatus(); }
  absl::Status FinishDownloads() override { return absl::OkStatus(); }
  absl::StatusOr<std::unique_ptr<PhaseTimer>> NewPhaseTimer() override {
    return MakeHostPhaseTimer();
  }

 private:
  int threads_;
  std::vector<int32_t> resident_offsets_, resident_ids_;  // of the last EstimateMaskInBackend
  std::atomic<int64_t> downloads_{0};
};

}  // namespace

std::unique_ptr<AttentionBackend> MakeCpuBackend(int threads) {
  return std::make_unique<CpuBackend>(threads);
}

}  // namespace prefill
