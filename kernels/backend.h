// AttentionBackend: the table of operations the context-parallel engine runs, one
// implementation per device (kernels/cpu always, kernels/cuda when built with PREFILL_CUDA).
// Each op takes one params struct; pointers live in the backend's memory (host memory on
// the CPU, device memory on CUDA), which the engine allocates and fills through the backend,
// so the engine's plans run unchanged on either.
#pragma once

#include <memory>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/attention_params.h"
#include "kernels/block_mask.h"
#include "kernels/dtype.h"
#include "kernels/mask_estimation_params.h"
#include "kernels/phase_timer.h"

namespace prefill {

// Memory owned by a backend; freed by the backend's deleter.
using BackendBuffer = std::unique_ptr<void, void (*)(void*)>;

// dst[i * bytes_each ..] = src[src_offsets[i] ..] for i < count: packs the KV blocks a peer
// asked for into one contiguous send buffer. src_offsets is a host array.
struct GatherRowsParams {
  const void* src = nullptr;
  void* dst = nullptr;
  const int64_t* src_offsets = nullptr;  // [count] byte offsets into src
  int64_t count = 0;
  int64_t bytes_each = 0;
};

// A mask whose ids stay in the backend's memory for the attention call that follows: no host
// round trip of the ids, the bulk of a mask (128 MB at 128K tokens and density 1). `host` has
// the shape, q_block_ids, row_offsets and visible_blocks but no ids (kv_blocks empty);
// `row_offsets` and `kv_blocks` are backend memory, valid until the next EstimateMaskInBackend.
struct BackendBlockMask {
  BlockMask host;
  const int32_t* row_offsets = nullptr;
  const int32_t* kv_blocks = nullptr;

  int64_t selected_blocks() const { return host.row_offsets.empty() ? 0 : host.row_offsets.back(); }
  double density() const {
    return host.visible_blocks ? static_cast<double>(selected_blocks()) / host.visible_blocks : 0.0;
  }
};

// host_dst[0 .. n) = dtype(src[0 .. n)): n values of backend memory (src_dtype: fp32, or bf16
// on CUDA) leave for the host in storage dtype (rounded to nearest even), e.g. a layer's K or
// V for the KV cache.
struct DownloadParams {
  const void* src = nullptr;
  int64_t n = 0;
  DType dtype = DType::kF32;
  void* host_dst = nullptr;  // n * DTypeSize(dtype) bytes, best from AllocateHost
  DType src_dtype = DType::kF32;
};

class AttentionBackend {
 public:
  virtual ~AttentionBackend() = default;
  virtual std::string_view name() const = 0;

  virtual absl::Status Attention(const AttentionParams& p) = 0;
  virtual absl::Status MergeByLse(const LseMergeParams& p) = 0;
  virtual absl::Status PoolKeys(const PoolKeysParams& p) = 0;
  // The mask comes back on the host: the exchange plan is built from it.
  virtual absl::StatusOr<BlockMask> EstimateMask(const MaskEstimateParams& p) = 0;
  // The same mask, its ids left in backend memory (one rank needs no exchange plan).
  virtual absl::StatusOr<BackendBlockMask> EstimateMaskInBackend(const MaskEstimateParams& p) = 0;

  virtual absl::StatusOr<BackendBuffer> Allocate(size_t bytes) = 0;  // zero-filled
  virtual absl::Status CopyToBackend(void* dst, const void* host_src, size_t bytes) = 0;
  virtual absl::Status CopyToHost(void* host_dst, const void* src, size_t bytes) = 0;
  virtual absl::Status GatherRows(const GatherRowsParams& p) = 0;
  // Waits for all work the backend has queued (a no-op on the CPU).
  virtual absl::Status Synchronize() = 0;

  // Host memory for downloads, not zero-filled (pageable: CUDA stages through a small
  // page-locked ring rather than page-locking GBs), from the process's HostArena.
  virtual absl::StatusOr<BackendBuffer> AllocateHost(size_t bytes) = 0;
  // Announces `bytes` of AllocateHost calls to come (a request's KV cache): their pages are
  // faulted in on background threads meanwhile (kernels/host_arena.h).
  virtual void ReserveHost(size_t bytes) = 0;
  // The same, called before a request runs (a job's load): where downloads gain by it (CUDA:
  // DMA straight to page-locked memory, no staging copy) the memory is also page-locked, at
  // ~0.5 s per GB, once per process. Returns the bytes page-locked.
  virtual size_t PrepareHost(size_t bytes) = 0;
  // Starts a download after the work queued so far has produced src; on CUDA it converts on
  // the compute stream and copies on a copy stream and thread of its own, so later work does not
  // wait for the transfer and src may be overwritten by work queued after the call. Returns once
  // queued (the CPU converts at once).
  virtual absl::Status StartDownload(const DownloadParams& p) = 0;
  // Downloads started so far: read after a StartDownload, the ticket of that download.
  virtual int64_t DownloadsStarted() const = 0;
  // Waits until the downloads up to `ticket` have landed (they land in the order started); the
  // first error so far. Another thread may wait while this one starts more.
  virtual absl::Status WaitForDownloads(int64_t ticket) = 0;
  // Waits until every started download has landed in host memory.
  virtual absl::Status FinishDownloads() = 0;
  // A timer of the work queued on this backend from now on (kernels/phase_timer.h).
  virtual absl::StatusOr<std::unique_ptr<PhaseTimer>> NewPhaseTimer() = 0;
};

// threads <= 0: all hardware threads.
std::unique_ptr<AttentionBackend> MakeCpuBackend(int threads);

}  // namespace prefill
