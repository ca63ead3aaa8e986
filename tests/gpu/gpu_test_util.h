// Helpers of the GPU tests: skip without a device, device buffers through the backend, and
// host <-> device copies of std::vectors.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"

namespace prefill::gpu_test {

// GTEST_SKIP() returns from the calling function: call it at the top of a TEST body or SetUp.
#define PREFILL_SKIP_WITHOUT_GPU()                                          \
  do {                                                                      \
    if (!::prefill::CudaDeviceAvailable()) {                                \
      GTEST_SKIP() << "no CUDA device (cudaGetDeviceCount failed or is 0)"; \
    }                                                                       \
  } while (0)

inline std::unique_ptr<AttentionBackend> MakeBackend(
    cuda::AttentionPath path = cuda::AttentionPath::kAuto) {
  CudaBackendOptions options;
  options.attention_path = path;
  auto backend = CreateCudaBackend(options);
  EXPECT_TRUE(backend.ok()) << backend.status();
  return backend.ok() ? *std::move(backend) : nullptr;
}

// Compute capability major of device 0 (0 when none).
inline int DeviceMajor() {
  int major = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0) != cudaSuccess) return 0;
  return major;
}

// A device copy of a host vector (or `bytes` bytes of uninitialised-but-zeroed memory).
class DeviceBuffer {
 public:
  DeviceBuffer() : buffer_(nullptr, [](void*) {}) {}
  DeviceBuffer(AttentionBackend& backend, size_t bytes) : buffer_(nullptr, [](void*) {}) {
    auto b = backend.Allocate(bytes);
    EXPECT_TRUE(b.ok()) << b.status();
    if (b.ok()) buffer_ = *std::move(b);
    bytes_ = bytes;
  }
  template <typename T>
  DeviceBuffer(AttentionBackend& backend, const std::vector<T>& host)
      : DeviceBuffer(backend, host.size() * sizeof(T)) {
    Upload(backend, host.data(), host.size() * sizeof(T));
  }
  void Upload(AttentionBackend& backend, const void* src, size_t bytes) {
    EXPECT_TRUE(backend.CopyToBackend(buffer_.get(), src, bytes).ok());
  }
  template <typename T>
  std::vector<T> Download(AttentionBackend& backend) const {
    std::vector<T> out(bytes_ / sizeof(T));
    EXPECT_TRUE(backend.CopyToHost(out.data(), buffer_.get(), out.size() * sizeof(T)).ok());
    return out;
  }
  void* get() const { return buffer_.get(); }
  template <typename T>
  T* as() const {
    return static_cast<T*>(buffer_.get());
  }

 private:
  BackendBuffer buffer_;
  size_t bytes_ = 0;
};

}  // namespace prefill::gpu_test
