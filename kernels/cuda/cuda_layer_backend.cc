// The CUDA LayerBackend: validation of every op's params (once, here), then the launchers of
// kernels/cuda/layer_ops.h or cuBLAS, queued on the attention backend's stream. Owns a cuBLAS
// handle bound to that stream with its own workspace, and a scratch buffer for the bf16 copy of
// an fp32 input to Linear (the attention output; other activations are bf16 already).
#include "kernels/cuda/cuda_layer_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cublas_check.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_context.h"
#include "kernels/cuda/layer_ops.h"
#include "kernels/dtype.h"
#include "kernels/status_macros.h"

namespace prefill {
namespace {

constexpr int64_t kIntMax = std::numeric_limits<int>::max();  // cuBLAS sizes are int

absl::Status Invalid(const char* op, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(op, ": ", what));
}

// True when [a, a + a_bytes) and [b, b + b_bytes) share a byte.
bool Overlap(const void* a, int64_t a_bytes, const void* b, int64_t b_bytes) {
  const auto pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
  return a_bytes > 0 && b_bytes > 0 && pa < pb + static_cast<uintptr_t>(b_bytes) &&
         pb < pa + static_cast<uintptr_t>(a_bytes);
}

// Elementwise ops allow exact aliasing (each element is read and written by one thread) but
// not a shifted overlap, where one thread's write is another's pending read.
bool PartialOverlap(const void* a, const void* b, int64_t bytes) {
  return a != b && Overlap(a, bytes, b, bytes);
}

void FreeDeviceMemory(void* ptr) { (void)cudaFree(ptr); }

bool IsActivationDType(DType d) { return d == DType::kF32 || d == DType::kBF16; }

absl::Status CheckActivationDType(const char* op, DType d) {
  if (IsActivationDType(d)) return absl::OkStatus();
  return Invalid(op,
                 absl::StrCat("activations must be f32 or bf16, not ", std::string(DTypeName(d))));
}

absl::Status ValidateLinear(const LinearParams& p) {
  if (p.rows < 0) return Invalid("Linear", absl::StrCat("rows (", p.rows, ") < 0"));
  if (!IsActivationDType(p.x_dtype) || !IsActivationDType(p.y_dtype)) {
    return Invalid("Linear", "x and y must be f32 or bf16");
  }
  if (!p.w || !p.w->data) return Invalid("Linear", "null w or w->data (not a prepared matrix)");
  if (p.w->rows < 1 || p.w->cols < 1 || p.w->rows > kIntMax || p.w->cols > kIntMax) {
    return Invalid("Linear", absl::StrCat("w is [", p.w->rows, ", ", p.w->cols,
                                          "]; each side must be in [1, 2^31)"));
  }
  const int64_t x_stride = p.x_row_stride ? p.x_row_stride : p.w->cols;
  if (x_stride < p.w->cols || x_stride > kIntMax) {
    return Invalid("Linear",
                   absl::StrCat("x_row_stride (", x_stride, ") must be in [w.cols, 2^31)"));
  }
  if (x_stride != p.w->cols && p.x_dtype != DType::kBF16)
    return Invalid("Linear", "a strided x must be bf16");
  if (p.rows == 0) return absl::OkStatus();
  if (!p.x || !p.y) return Invalid("Linear", "null x or y");
  const int64_t x_bytes =
      ((p.rows - 1) * x_stride + p.w->cols) * static_cast<int64_t>(DTypeSize(p.x_dtype));
  const int64_t y_bytes = p.rows * p.w->rows * static_cast<int64_t>(DTypeSize(p.y_dtype));
  if (Overlap(p.x, x_bytes, p.y, y_bytes)) return Invalid("Linear", "y must not alias x");
  if (p.bias && Overlap(p.bias, p.w->rows * int64_t{sizeof(float)}, p.y, y_bytes)) {
    return Invalid("Linear", "bias must not alias y");
  }
  return absl::OkStatus();
}

absl::Status ValidateRmsNorm(const RmsNormParams& p) {
  if (p.rows < 0 || p.features < 1) {
    return Invalid("RmsNorm", absl::StrCat("rows (", p.rows, ") must be >= 0 and features (",
                                           p.features, ") >= 1"));
  }
  if (!(p.eps >= 0.f) || !std::isfinite(p.eps))
    return Invalid("RmsNorm", "eps must be finite and >= 0");
  if (p.rows == 0) return absl::OkStatus();
  if (!p.x || !p.y || !p.weight) return Invalid("RmsNorm", "null x, y or weight");
  PREFILL_RETURN_IF_ERROR(CheckActivationDType("RmsNorm", p.y_dtype));
  const int64_t bytes = p.rows * p.features * int64_t{sizeof(float)};
  const int64_t y_bytes = p.rows * p.features * static_cast<int64_t>(DTypeSize(p.y_dtype));
  if (p.y_dtype == DType::kF32 ? PartialOverlap(p.x, p.y, bytes)
                               : Overlap(p.x, bytes, p.y, y_bytes)) {
    return Invalid("RmsNorm", "y must be x (both f32) or not overlap it");
  }
  if (Overlap(p.weight, p.features * int64_t{sizeof(float)}, p.y, y_bytes)) {
    return Invalid("RmsNorm", "weight must not alias y");
  }
  return absl::OkStatus();
}

absl::Status ValidateSplitQkv(const QkvSplitParams& p) {
  if (p.rows < 0) return Invalid("SplitQkv", absl::StrCat("rows (", p.rows, ") < 0"));
  if (p.heads < 1 || p.kv_heads < 0) {
    return Invalid("SplitQkv", absl::StrCat("heads (", p.heads, ") must be >= 1 and kv_heads (",
                                            p.kv_heads, ") >= 0"));
  }
  if (p.head_dim < 2 || p.head_dim % 2 != 0 || p.head_dim > cuda::kMaxRopeHeadDim) {
    return Invalid("SplitQkv", absl::StrCat("head_dim (", p.head_dim, ") must be even, in [2, ",
                                            cuda::kMaxRopeHeadDim, "]"));
  }
  const int64_t row_values = (p.heads + 2 * int64_t{p.kv_heads}) * p.head_dim;
  if (row_values > kIntMax) return Invalid("SplitQkv", "(heads + 2 kv_heads) * head_dim >= 2^31");
  PREFILL_RETURN_IF_ERROR(CheckActivationDType("SplitQkv", p.dtype));
  if (p.rows == 0) return absl::OkStatus();
  if (!p.qkv || !p.q || !p.positions || !p.inv_freq || (p.kv_heads > 0 && (!p.k || !p.v))) {
    return Invalid("SplitQkv", "null qkv, q, k, v, positions or inv_freq");
  }
  const int64_t e = static_cast<int64_t>(DTypeSize(p.dtype)), in_bytes = p.rows * row_values * e;
  const int64_t q_bytes = p.rows * p.heads * p.head_dim * e,
                kv_bytes = p.rows * p.kv_heads * p.head_dim * e;
  if (Overlap(p.qkv, in_bytes, p.q, q_bytes) || Overlap(p.qkv, in_bytes, p.k, kv_bytes) ||
      Overlap(p.qkv, in_bytes, p.v, kv_bytes)) {
    return Invalid("SplitQkv", "q, k and v must not overlap qkv");
  }
  return absl::OkStatus();
}

absl::Status ValidateSwiGlu(const SwiGluParams& p) {
  if (p.n < 0 || p.rows < 0)
    return Invalid("SwiGlu", absl::StrCat("n (", p.n, ") and rows (", p.rows, ") must be >= 0"));
  if (p.row_stride != 0 && p.row_stride < p.n)
    return Invalid("SwiGlu", "row_stride must be 0 or >= n");
  PREFILL_RETURN_IF_ERROR(CheckActivationDType("SwiGlu", p.dtype));
  if (p.n == 0 || p.rows == 0) return absl::OkStatus();
  if (!p.gate || !p.up) return Invalid("SwiGlu", "null gate or up");
  // Within a row, up is gate or clear of it; across rows, the fused layout [gate | up] keeps
  // each row's up in a gap of gate's rows.
  const int64_t e = static_cast<int64_t>(DTypeSize(p.dtype));
  const auto gate = reinterpret_cast<uintptr_t>(p.gate), up = reinterpret_cast<uintptr_t>(p.up);
  const bool interleaved =
      p.row_stride >= 2 * p.n && (up == gate + p.n * e || gate == up + p.n * e);
  if (!interleaved &&
      PartialOverlap(p.gate, p.up,
                     ((p.rows - 1) * (p.row_stride ? p.row_stride : p.n) + p.n) * e)) {
    return Invalid("SwiGlu", "up must be gate, the other half of a fused row, or not overlap it");
  }
  return absl::OkStatus();
}

absl::Status ValidateEmbed(const EmbedParams& p) {
  if (p.rows < 0) return Invalid("Embed", absl::StrCat("rows (", p.rows, ") < 0"));
  if (!p.table || !p.table->data) return Invalid("Embed", "null table (not a prepared matrix)");
  if (p.rows == 0) return absl::OkStatus();
  if (!p.ids || !p.y) return Invalid("Embed", "null ids or y");
  return absl::OkStatus();
}

class CudaLayerBackend final : public LayerBackend {
 public:
  CudaLayerBackend(const cuda::DeviceContext& ctx, const CudaLayerBackendOptions& options)
      : ctx_(ctx), options_(options), scratch_(std::make_unique<cuda::DeviceScratch>()) {
    ctx_.scratch = scratch_.get();
  }
  ~CudaLayerBackend() override {
    (void)cudaSetDevice(ctx_.device);
    scratch_.reset();                          // frees on the stream, while the stream is alive
    (void)cudaStreamSynchronize(ctx_.stream);  // queued GEMMs may still use the workspace
    if (handle_) (void)cublasDestroy(handle_);
    if (workspace_) (void)cudaFree(workspace_);
    for (UploadSlot& slot : upload_slots_) {
      if (slot.host) (void)cudaFreeHost(slot.host);
      if (slot.done) (void)cudaEventDestroy(slot.done);
    }
  }

  // The handle runs on the attention backend's stream with a workspace of its own (cuBLAS
  // recommends 32 MiB on Hopper, 4 MiB before; a fixed workspace also keeps cuBLAS from
  // allocating inside a captured graph).
  absl::Status Init() {
    CUDA_CHECK(cudaSetDevice(ctx_.device));
    CUDA_CHECK(cudaDeviceGetAttribute(&ctx_.sm_count, cudaDevAttrMultiProcessorCount, ctx_.device));
    CUDA_CHECK(
        cudaDeviceGetAttribute(&ctx_.cc_major, cudaDevAttrComputeCapabilityMajor, ctx_.device));
    CUDA_CHECK(
        cudaDeviceGetAttribute(&ctx_.cc_minor, cudaDevAttrComputeCapabilityMinor, ctx_.device));
    CUBLAS_CHECK(cublasCreate(&handle_));
    // cublasSetStream resets the workspace to cuBLAS' own pool: set ours after it.
    CUBLAS_CHECK(cublasSetStream(handle_, ctx_.stream));
    const size_t workspace_bytes = ctx_.cc_major >= 9 ? size_t{32} << 20 : size_t{4} << 20;
    CUDA_CHECK(cudaMalloc(&workspace_, workspace_bytes));
    CUBLAS_CHECK(cublasSetWorkspace(handle_, workspace_, workspace_bytes));
    return absl::OkStatus();
  }

  std::string_view name() const override { return "cuda"; }
  DType activation_dtype() const override { return DType::kBF16; }
  // Enough rows that cuBLAS picks the kernels of a long prompt's GEMMs.
  int64_t warm_up_rows() const override { return 8192; }

  using LayerBackend::PrepareMatrix;
  // bf16 copy of the stacked sources in device memory. Chunks of options_.upload_chunk_bytes go
  // through two page-locked slots: the host copies chunk i+1 into one while the other's DMA
  // runs. A bf16 source lands as it is; f32 (and f16, widened on the host) is uploaded into a
  // device staging buffer and rounded there. Waits for the upload, so the caller may free or
  // unmap the sources on return.
  absl::StatusOr<WeightMatrix> PrepareMatrix(std::span<const MatrixSource> stacked) override {
    absl::StatusOr<int64_t> rows = StackedRows(stacked);
    if (!rows.ok()) return rows.status();
    const int64_t cols = stacked[0].cols;
    if (*rows > kIntMax || cols > kIntMax) {
      return Invalid("PrepareMatrix",
                     absl::StrCat("[", *rows, ", ", cols, "]: each side must be in [1, 2^31)"));
    }
    CUDA_CHECK(cudaSetDevice(ctx_.device));
    void* data = nullptr;
    CUDA_CHECK(cudaMalloc(&data, static_cast<size_t>(*rows * cols) * sizeof(uint16_t)));
    WeightMatrix m;
    m.owned = BackendBuffer(data, FreeDeviceMemory);
    m.data = data;
    m.rows = *rows;
    m.cols = cols;
    PREFILL_RETURN_IF_ERROR(EnsureUploadSlots());
    auto* dst = static_cast<uint16_t*>(data);
    for (const MatrixSource& source : stacked) {
      PREFILL_RETURN_IF_ERROR(Upload(source, dst));
      dst += source.rows * cols;
    }
    CUDA_CHECK(cudaStreamSynchronize(ctx_.stream));
    return m;
  }

  // Row-major y [rows, out] = x [rows, in] * W [out, in]^T is, column-major, y^T = W^T x^T:
  // cuBLAS sees W as a column-major [in, out] matrix (lda = in) transposed, x as [in, rows]
  // (ldb = in) and writes y as [out, rows] (ldc = out), with beta = 1 when it accumulates. A
  // bf16 x goes in as it is; an fp32 one goes to bf16 in chunks of rows that fit the scratch,
  // every chunk stream-ordered after the previous chunk's GEMM.
  absl::Status Linear(const LinearParams& p) override {
    PREFILL_RETURN_IF_ERROR(ValidateLinear(p));
    if (p.rows == 0) return absl::OkStatus();
    CUDA_CHECK(cudaSetDevice(ctx_.device));
    PREFILL_RETURN_IF_ERROR(CheckDeviceMatrix(*p.w));
    const int64_t in = p.w->cols, out = p.w->rows, x_stride = p.x_row_stride ? p.x_row_stride : in;
    const int64_t row_bytes = in * int64_t{sizeof(uint16_t)};
    const bool convert = p.x_dtype != DType::kBF16;
    const int64_t chunk =
        convert
            ? std::clamp<int64_t>(static_cast<int64_t>(options_.linear_scratch_bytes) / row_bytes,
                                  1, std::min(p.rows, kIntMax))
            : std::min(p.rows, kIntMax);
    void* x16 = const_cast<void*>(p.x);
    if (convert) {
      absl::StatusOr<void*> scratch =
          scratch_->Reserve(static_cast<size_t>(chunk * row_bytes), ctx_.stream);
      if (!scratch.ok()) return scratch.status();
      x16 = *scratch;
    }
    const float alpha = 1.f, beta = p.accumulate ? 1.f : 0.f;
    const cudaDataType_t y_type = p.y_dtype == DType::kBF16 ? CUDA_R_16BF : CUDA_R_32F;
    const size_t y_size = DTypeSize(p.y_dtype);
    for (int64_t begin = 0; begin < p.rows; begin += chunk) {
      const int64_t count = std::min(chunk, p.rows - begin);
      const void* x_chunk = static_cast<const uint16_t*>(x16) + (convert ? 0 : begin * x_stride);
      if (convert) {
        const cuda::ConvertParams to_bf16{
            .src = static_cast<const float*>(p.x) + begin * in, .dst = x16, .n = count * in};
        PREFILL_RETURN_IF_ERROR(cuda::LaunchConvert(to_bf16, ctx_));
      }
      CUBLAS_CHECK(cublasGemmEx(
          handle_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(out), static_cast<int>(count),
          static_cast<int>(in), &alpha, p.w->data, CUDA_R_16BF, static_cast<int>(in), x_chunk,
          CUDA_R_16BF, static_cast<int>(x_stride), &beta,
          static_cast<char*>(p.y) + static_cast<size_t>(begin * out) * y_size, y_type,
          static_cast<int>(out), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
    if (p.bias) {
      const cuda::BiasAddParams bias{
          .y = p.y, .bias = p.bias, .rows = p.rows, .cols = out, .dtype = p.y_dtype};
      PREFILL_RETURN_IF_ERROR(cuda::LaunchBiasAdd(bias, ctx_));
    }
    return absl::OkStatus();
  }

  absl::Status RmsNorm(const RmsNormParams& p) override {
    PREFILL_RETURN_IF_ERROR(ValidateRmsNorm(p));
    CUDA_CHECK(cudaSetDevice(ctx_.device));
    return cuda::LaunchRmsNorm(p, ctx_);
  }
  absl::Status SplitQkv(const QkvSplitParams& p) override {
    PREFILL_RETURN_IF_ERROR(ValidateSplitQkv(p));
    CUDA_CHECK(cudaSetDevice(ctx_.device));
    return cuda::LaunchSplitQkv(p, ctx_);
  }
  absl::Status SwiGlu(const SwiGluParams& p) override {
    PREFILL_RETURN_IF_ERROR(ValidateSwiGlu(p));
    CUDA_CHECK(cudaSetDevice(ctx_.device));
    return cuda::LaunchSwiGlu(p, ctx_);
  }
  absl::Status Embed(const EmbedParams& p) override {
    PREFILL_RETURN_IF_ERROR(ValidateEmbed(p));
    if (p.rows == 0) return absl::OkStatus();
    CUDA_CHECK(cudaSetDevice(ctx_.device));
    PREFILL_RETURN_IF_ERROR(CheckDeviceMatrix(*p.table));
    return cuda::LaunchEmbed({p.ids, p.rows, p.table->data, p.table->rows, p.table->cols, p.y},
                             ctx_);
  }

 private:
  // One source into dst (bf16 device memory), through the upload slots, queued on the stream.
  absl::Status Upload(const MatrixSource& source, uint16_t* dst) {
    const int64_t n = source.rows * source.cols;
    const bool bf16 = source.dtype == DType::kBF16;
    float* staging = nullptr;  // device fp32 chunk for the sources that are rounded on the device
    if (!bf16) {
      CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&staging), upload_chunk_ * sizeof(float),
                                 ctx_.stream));
    }
    struct FreeOnStream {
      cudaStream_t stream;
      void operator()(float* ptr) const { (void)cudaFreeAsync(ptr, stream); }
    };
    std::unique_ptr<float, FreeOnStream> staging_owner(staging, FreeOnStream{ctx_.stream});
    const auto* src = static_cast<const char*>(source.data);
    const size_t src_size = DTypeSize(source.dtype);
    for (int64_t begin = 0; begin < n; begin += upload_chunk_, ++uploaded_chunks_) {
      const int64_t count = std::min(upload_chunk_, n - begin);
      UploadSlot& slot = upload_slots_[uploaded_chunks_ % 2];
      CUDA_CHECK(cudaEventSynchronize(slot.done));  // its previous DMA has read it
      if (bf16 || source.dtype == DType::kF32) {
        std::memcpy(slot.host, src + begin * src_size, static_cast<size_t>(count) * src_size);
      } else {
        ConvertToF32(source.dtype, src + begin * src_size, static_cast<float*>(slot.host), count);
      }
      if (bf16) {
        CUDA_CHECK(cudaMemcpyAsync(dst + begin, slot.host, count * sizeof(uint16_t),
                                   cudaMemcpyHostToDevice, ctx_.stream));
      } else {
        // Stream-ordered after the previous chunk's rounding, which read the staging buffer.
        CUDA_CHECK(cudaMemcpyAsync(staging, slot.host, count * sizeof(float),
                                   cudaMemcpyHostToDevice, ctx_.stream));
        const cuda::ConvertParams convert{.src = staging, .dst = dst + begin, .n = count};
        PREFILL_RETURN_IF_ERROR(cuda::LaunchConvert(convert, ctx_));
      }
      CUDA_CHECK(cudaEventRecord(slot.done, ctx_.stream));
    }
    return absl::OkStatus();
  }

  // A WeightMatrix carries no device tag: one prepared by the CPU backend (fp32 host memory)
  // would be read as bf16 device memory and fault the context. One pointer query per Linear
  // (no synchronisation) turns that into InvalidArgument.
  absl::Status CheckDeviceMatrix(const WeightMatrix& w) const {
    cudaPointerAttributes attributes{};
    CUDA_CHECK(cudaPointerGetAttributes(&attributes, w.data));
    const bool device_memory =
        attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged;
    if (!device_memory || attributes.device != ctx_.device) {
      return Invalid("Linear", absl::StrCat("w->data is not memory of device ", ctx_.device,
                                            " (a matrix prepared by another backend?)"));
    }
    return absl::OkStatus();
  }

  cuda::DeviceContext ctx_;
  CudaLayerBackendOptions options_;
  // The two page-locked slots of PrepareMatrix, made at its first call (weights are prepared
  // once per process) and kept: page-locking is slow, reuse is free.
  struct UploadSlot {
    void* host = nullptr;
    cudaEvent_t done = nullptr;
  };
  absl::Status EnsureUploadSlots() {
    if (upload_slots_[0].host) return absl::OkStatus();
    upload_chunk_ = std::max<int64_t>(
        4, static_cast<int64_t>(options_.upload_chunk_bytes / sizeof(float)) / 4 * 4);
    for (UploadSlot& slot : upload_slots_) {
      CUDA_CHECK(cudaHostAlloc(&slot.host, upload_chunk_ * sizeof(float), cudaHostAllocDefault));
      CUDA_CHECK(cudaEventCreateWithFlags(&slot.done, cudaEventDisableTiming));
      CUDA_CHECK(cudaEventRecord(slot.done, ctx_.stream));
    }
    return absl::OkStatus();
  }

  std::unique_ptr<cuda::DeviceScratch> scratch_;
  cublasHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  UploadSlot upload_slots_[2];
  int64_t uploaded_chunks_ = 0;  // alternates the slots
  int64_t upload_chunk_ =
      0;  // values per slot (a multiple of 4: bf16 destinations stay 8-byte aligned)
};

}  // namespace

absl::StatusOr<std::unique_ptr<LayerBackend>> CreateCudaLayerBackend(
    const AttentionBackend& attention, const CudaLayerBackendOptions& options) {
  const int device = CudaBackendDevice(attention);
  if (device < 0) {
    return absl::FailedPreconditionError(absl::StrCat("CreateCudaLayerBackend: attention backend '",
                                                      std::string(attention.name()),
                                                      "' is not a CUDA backend"));
  }
  if (options.linear_scratch_bytes == 0 || options.upload_chunk_bytes == 0) {
    return absl::InvalidArgumentError(
        "CudaLayerBackendOptions: scratch and upload chunk sizes must be > 0");
  }
  cuda::DeviceContext ctx;
  ctx.device = device;
  ctx.stream = CudaBackendStream(attention);
  auto backend = std::make_unique<CudaLayerBackend>(ctx, options);
  if (absl::Status s = backend->Init(); !s.ok()) return s;  // the destructor frees what Init made
  return std::unique_ptr<LayerBackend>(std::move(backend));
}

}  // namespace prefill
