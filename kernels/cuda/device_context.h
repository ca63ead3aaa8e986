// DeviceContext: what every CUDA entry needs besides its params: the device's properties,
// the backend's compute stream, and a grow-only scratch buffer for temporaries (uploaded
// offsets, bf16 copies of fp32 inputs, the estimator's block scores, the work schedule).
// Everything is stream-ordered on `stream`, so one op's scratch may be reused by the next.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/statusor.h"

namespace prefill::cuda {

// Which attention kernel family runs. kAuto: sm90a on a compute-capability-9.0 device when
// the inputs allow TMA (16-byte aligned strides), the sm80 kernel otherwise.
enum class AttentionPath { kAuto, kSm80, kSm90 };

// Grow-only device buffer. Growing releases the old buffer stream-ordered (cudaFreeAsync),
// so work already queued on the stream that still reads it stays valid.
class DeviceScratch {
 public:
  DeviceScratch() = default;
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
  ~DeviceScratch();

  // At least `bytes` bytes (256-byte aligned), valid for work queued on `stream` until the
  // next Reserve.
  absl::StatusOr<void*> Reserve(size_t bytes, cudaStream_t stream);
  size_t capacity() const { return capacity_; }

 private:
  void* data_ = nullptr;
  size_t capacity_ = 0;
  cudaStream_t last_stream_ = nullptr;
};

struct DeviceContext {
  int device = 0;
  cudaStream_t stream = nullptr;
  int sm_count = 0;
  int cc_major = 0;
  int cc_minor = 0;
  size_t max_smem_per_block_optin = 0;  // bytes a block may get after cudaFuncSetAttribute
  AttentionPath attention_path = AttentionPath::kAuto;
  DeviceScratch* scratch = nullptr;
};

// Carves aligned sub-buffers out of one scratch reservation: first pass counts (base null),
// second pass hands out pointers.
class ScratchCarver {
 public:
  explicit ScratchCarver(void* base = nullptr) : base_(static_cast<char*>(base)) {}
  template <typename T>
  T* Take(size_t count) {
    offset_ = (offset_ + 255) & ~size_t{255};
    T* p = base_ ? reinterpret_cast<T*>(base_ + offset_) : nullptr;
    offset_ += count * sizeof(T);
    return p;
  }
  size_t bytes() const { return (offset_ + 255) & ~size_t{255}; }

 private:
  char* base_;
  size_t offset_ = 0;
};

}  // namespace prefill::cuda
