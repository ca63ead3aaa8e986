// Tensor: a host-resident, owning, contiguous row-major array of one DType.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "kernels/dtype.h"

namespace prefill {

struct Tensor {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::vector<std::byte> bytes;

  static Tensor Zeros(DType dtype, std::vector<int64_t> shape);
  int64_t numel() const;
  template <typename T>
  T* data() {
    return reinterpret_cast<T*>(bytes.data());
  }
  template <typename T>
  const T* data() const {
    return reinterpret_cast<const T*>(bytes.data());
  }
  std::string ShapeString() const;  // "[32768, 8, 64]"
};

// A tensor's dtype, shape and bytes, not owned: the KV cache in the download's host memory,
// which the sinks read in place (a copy into Tensors cost ~0.5 s per GB of fresh pages).
struct TensorView {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::span<const std::byte> bytes;

  TensorView() = default;
  TensorView(DType d, std::vector<int64_t> s, std::span<const std::byte> b)
      : dtype(d), shape(std::move(s)), bytes(b) {}
  TensorView(const Tensor& t)
      : dtype(t.dtype), shape(t.shape), bytes(t.bytes) {}  // NOLINT: a view of it
  std::string ShapeString() const;
};

// fp32 copy of any tensor.
std::vector<float> ToF32(const Tensor& t);
// Tensor of `dtype` from fp32 values (rounded to nearest even for bf16/f16).
Tensor FromF32(std::span<const float> values, DType dtype, std::vector<int64_t> shape);

}  // namespace prefill
