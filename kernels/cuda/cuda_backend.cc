// The CUDA AttentionBackend: owns the device choice, one non-blocking compute stream and the
// scratch buffer; each op forwards to its entry in kernels/cuda/.
#include "kernels/cuda/cuda_backend.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/attention/block_sparse_attention.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_memory_ledger.h"
#include "kernels/cuda/estimation/round_robin_mask_estimator.h"
#include "kernels/cuda/event_phase_timer.h"
#include "kernels/cuda/gather_rows.h"
#include "kernels/cuda/key_pooling.h"
#include "kernels/cuda/layer_ops.h"
#include "kernels/cuda/lse_merge.h"
#include "kernels/cuda/staged_download.h"
#include "kernels/host_arena.h"
#include "kernels/status_macros.h"

namespace prefill {
namespace {

// Sizes of the live buffers from Allocate, so that their release reaches the ledger (a
// BackendBuffer's deleter is a plain function pointer and cannot carry the size).
class BufferSizes {
 public:
  void Add(void* ptr, size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    bytes_[ptr] = bytes;
  }
  size_t Take(void* ptr) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = bytes_.find(ptr);
    if (it == bytes_.end()) return 0;
    const size_t bytes = it->second;
    bytes_.erase(it);
    return bytes;
  }

 private:
  std::mutex mu_;
  std::unordered_map<void*, size_t> bytes_;
};

BufferSizes& LiveBuffers() {
  static BufferSizes* sizes = new BufferSizes;  // outlives every buffer, even static ones
  return *sizes;
}

void FreeBuffer(void* ptr) {
  cuda::NoteDeviceRelease(LiveBuffers().Take(ptr));
  (void)cudaFree(ptr);
}

class CudaBackend final : public AttentionBackend {
 public:
  explicit CudaBackend(const cuda::DeviceContext& ctx)
      : ctx_(ctx),
        scratch_(std::make_unique<cuda::DeviceScratch>()),
        mask_storage_(std::make_unique<cuda::DeviceScratch>()) {
    ctx_.scratch = scratch_.get();
  }
  ~CudaBackend() override {
    (void)cudaSetDevice(ctx_.device);
    downloader_.reset();  // waits on events of the compute stream: before the stream goes
    scratch_.reset();     // frees on the stream, before the stream goes
    mask_storage_.reset();
    (void)cudaStreamSynchronize(ctx_.stream);
    (void)cudaStreamDestroy(ctx_.stream);
  }

  std::string_view name() const override { return "cuda"; }
  const cuda::DeviceContext& context() const { return ctx_; }

  absl::Status Attention(const AttentionParams& p) override {
    CUDA_CHECK(cudaSetDevice(ctx_.device));
    return cuda::BlockSparseAttention(p, ctx_);
  }
  absl::Status MergeByLse(const LseMergeParams& p) override {
    CUDA_CHECK(cudaSetDevice(ctx_.device));
    return cuda::MergeByLse(p, ctx_);
  }
  absl::Status PoolKeys(const PoolKeysParams& p) override {
    CUDA_CHECK(cudaSetDevice(ctx_.device));
    return cuda::PoolKeys(p, ctx_);
  }
  absl::StatusOr<BlockMask> EstimateMask(const MaskEstimateParams& p) override {
    CUDA_CHECK(cudaSetDevice(ctx_.device));
    return cuda::EstimateRoundRobinMask(p, ctx_);
  }
  // The ids are built in mask_storage_ and never leave the device; the host gets the row
  // offsets (one wait, to size the ids).
  absl::StatusOr<BackendBlockMask> EstimateMaskInBackend(const MaskEstimateParams& p) override {
    CUDA_CHECK(cudaSetDevice(ctx_.device));
    cuda::DeviceMaskCsr csr;
    absl::StatusOr<BlockMask> mask =
        cuda::EstimateRoundRobinMaskOnDevice(p, ctx_, *mask_storage_, &csr);
    if (!mask.ok()) return mask.status();
    return BackendBlockMask{*std::move(mask), csr.row_offsets, csr.kv_blocks};
  }

  absl::StatusOr<BackendBuffer> Allocate(size_t bytes) override {
    CUDA_CHECK(cudaSetDevice(ctx_.device));
    void* ptr = nullptr;
    CUDA_CHECK(cudaMalloc(&ptr, bytes ? bytes : 1));
    BackendBuffer buffer(ptr, FreeBuffer);
    LiveBuffers().Add(ptr, bytes);
    cuda::NoteDeviceAllocation(bytes);
    // Zero-filled in stream order: every later op on the stream sees zeros.
    CUDA_CHECK(cudaMemsetAsync(ptr, 0, bytes, ctx_.stream));
    return buffer;
  }
  absl::Status CopyToBackend(void* dst, const void* host_src, size_t bytes) override {
    if (bytes == 0) return absl::OkStatus();
    CUDA_CHECK(cudaSetDevice(ctx_.device));
    // From pageable memory the call returns once the source is staged: the caller may reuse it.
    CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, ctx_.stream));
    return absl::OkStatus();
  }
  absl::Status CopyToHost(void* host_dst, const void* src, size_t bytes) override {
    if (bytes == 0) return absl::OkStatus();
    CUDA_CHECK(cudaSetDevice(ctx_.device));
    // A copy into pageable memory holds the driver until it has run, and with it the KV
    // downloader's thread (measured: a layer's download left until the end of the prefill):
    // the stream's queued work is waited for first, which holds nothing.
    CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
    CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, ctx_.stream));
    CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
    return absl::OkStatus();
  }
  absl::Status GatherRows(const GatherRowsParams& p) override {
    CUDA_CHECK(cudaSetDevice(ctx_.device));
    return cuda::GatherRows(p, ctx_);
  }
  absl::Status Synchronize() override {
    CUDA_CHECK(cudaSetDevice(ctx_.device));
    CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
    return absl::OkStatus();
  }

  // Pageable, 2 MiB aligned and marked for transparent huge pages (fewer first-touch faults
  // for the StagedDownloader's memcpy): page-locking GBs would stall the compute thread.
  absl::StatusOr<BackendBuffer> AllocateHost(size_t bytes) override {
    return HostArena::Process().Allocate(bytes);
  }
  void ReserveHost(size_t bytes) override { HostArena::Process().Reserve(bytes); }
  // Page-locks at most a quarter of the host's memory: the rest of a larger KV cache goes
  // through the staging ring.
  size_t PrepareHost(size_t bytes) override {
    // The downloader's page-locked slots and stream are made here too (~5 ms at a request's
    // first download otherwise).
    if (!EnsureDownloader().ok()) return 0;
    HostArena& arena = HostArena::Process();
    arena.Reserve(bytes);
    const size_t quarter = static_cast<size_t>(sysconf(_SC_PHYS_PAGES)) *
                           static_cast<size_t>(sysconf(_SC_PAGE_SIZE)) / 4;
    const int device = ctx_.device;
    return arena.Pin(
        std::min(bytes, quarter),
        [device](void* p, size_t n) {
          return cudaSetDevice(device) == cudaSuccess &&
                 cudaHostRegister(p, n, cudaHostRegisterDefault) == cudaSuccess;
        },
        [](void* p) { (void)cudaHostUnregister(p); });
  }
  // Converted into a stream-ordered staging buffer on the compute stream (so src may be
  // overwritten right after); the StagedDownloader copies it out and frees it.
  absl::Status StartDownload(const DownloadParams& p) override {
    if (p.n == 0) return absl::OkStatus();
    CUDA_CHECK(cudaSetDevice(ctx_.device));
    PREFILL_RETURN_IF_ERROR(EnsureDownloader());
    const size_t bytes = static_cast<size_t>(p.n) * DTypeSize(p.dtype);
    void* staging = nullptr;
    CUDA_CHECK(cudaMallocAsync(&staging, bytes, ctx_.stream));
    const cuda::ConvertParams convert{
        .src = p.src, .dst = staging, .n = p.n, .dtype = p.dtype, .src_dtype = p.src_dtype};
    if (absl::Status s = cuda::LaunchConvert(convert, ctx_); !s.ok()) {
      (void)cudaFreeAsync(staging, ctx_.stream);
      return s;
    }
    cudaEvent_t converted = nullptr;
    CUDA_CHECK(cudaEventCreateWithFlags(&converted, cudaEventDisableTiming));
    if (cudaError_t e = cudaEventRecord(converted, ctx_.stream); e != cudaSuccess) {
      (void)cudaEventDestroy(converted);
      return cuda::CudaErrorStatus(e, "cudaEventRecord(converted, ctx_.stream)", __FILE__,
                                   __LINE__);
    }
    downloader_->Start({.src = staging,
                        .bytes = bytes,
                        .host_dst = p.host_dst,
                        .ready = converted,
                        .free_after = staging});
    return absl::OkStatus();
  }
  int64_t DownloadsStarted() const override { return downloader_ ? downloader_->started() : 0; }
  absl::Status WaitForDownloads(int64_t ticket) override {
    return ticket > 0 && downloader_ ? downloader_->WaitLanded(ticket) : absl::OkStatus();
  }
  absl::Status FinishDownloads() override {
    return downloader_ ? downloader_->Finish() : absl::OkStatus();
  }
  absl::StatusOr<std::unique_ptr<PhaseTimer>> NewPhaseTimer() override {
    return cuda::MakeEventPhaseTimer(ctx_.device, ctx_.stream);
  }

 private:
  absl::Status EnsureDownloader() {
    if (downloader_) return absl::OkStatus();
    absl::StatusOr<std::unique_ptr<cuda::StagedDownloader>> d =
        cuda::StagedDownloader::Create(ctx_.device, kDownloadSlotBytes);
    if (!d.ok()) return d.status();
    downloader_ = *std::move(d);
    return absl::OkStatus();
  }

  cuda::DeviceContext ctx_;
  std::unique_ptr<cuda::DeviceScratch> scratch_;
  std::unique_ptr<cuda::DeviceScratch> mask_storage_;  // the CSR of the last EstimateMaskInBackend
  // 2 x 8 MiB page-locked: the DMA of one slot (~0.2 ms) hides under the memcpy of the other.
  static constexpr size_t kDownloadSlotBytes = size_t{8} << 20;
  std::unique_ptr<cuda::StagedDownloader> downloader_;  // made at the first download
};

}  // namespace

absl::StatusOr<std::unique_ptr<AttentionBackend>> CreateCudaBackend(
    const CudaBackendOptions& options) {
  int count = 0;
  const cudaError_t count_error = cudaGetDeviceCount(&count);
  if (count_error != cudaSuccess || count == 0) {
    return absl::UnavailableError(absl::StrCat(
        "no CUDA device: ",
        count_error == cudaSuccess ? "device count 0" : cudaGetErrorString(count_error)));
  }
  if (options.device_id < 0 || options.device_id >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("device_id ", options.device_id, " out of range [0, ", count, ")"));
  }
  cuda::DeviceContext ctx;
  ctx.device = options.device_id;
  ctx.attention_path = options.attention_path;
  CUDA_CHECK(cudaSetDevice(ctx.device));
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, ctx.device));
  ctx.sm_count = prop.multiProcessorCount;
  ctx.cc_major = prop.major;
  ctx.cc_minor = prop.minor;
  ctx.max_smem_per_block_optin = prop.sharedMemPerBlockOptin;
  if (ctx.cc_major < 8) {
    return absl::UnavailableError(absl::StrCat("device ", ctx.device, " (", prop.name,
                                               ") has compute capability ", prop.major, ".",
                                               prop.minor, "; the CUDA backend needs 8.0+"));
  }
  if (options.attention_path == cuda::AttentionPath::kSm90 && ctx.cc_major != 9) {
    return absl::InvalidArgumentError("attention_path kSm90 needs a compute capability 9.0 device");
  }
  CUDA_CHECK(cudaStreamCreateWithFlags(&ctx.stream, cudaStreamNonBlocking));
  return std::unique_ptr<AttentionBackend>(new CudaBackend(ctx));
}

std::unique_ptr<AttentionBackend> MakeCudaBackend(int device_id) {
  CudaBackendOptions options;
  options.device_id = device_id;
  absl::StatusOr<std::unique_ptr<AttentionBackend>> backend = CreateCudaBackend(options);
  if (!backend.ok()) {
    std::fprintf(stderr, "MakeCudaBackend(%d): %s\n", device_id,
                 std::string(backend.status().message()).c_str());
    return nullptr;
  }
  return *std::move(backend);
}

cudaStream_t CudaBackendStream(const AttentionBackend& backend) {
  const auto* cuda = dynamic_cast<const CudaBackend*>(&backend);
  return cuda ? cuda->context().stream : nullptr;
}

int CudaBackendDevice(const AttentionBackend& backend) {
  const auto* cuda = dynamic_cast<const CudaBackend*>(&backend);
  return cuda ? cuda->context().device : -1;
}

bool CudaDeviceAvailable() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

}  // namespace prefill
