#include "runtime/tensor.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace prefill {

Tensor Tensor::Zeros(DType dtype, std::vector<int64_t> shape) {
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.bytes.assign(static_cast<size_t>(t.numel()) * DTypeSize(dtype), std::byte{0});
  return t;
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string Tensor::ShapeString() const { return TensorView(*this).ShapeString(); }
std::string TensorView::ShapeString() const {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

std::vector<float> ToF32(const Tensor& t) {
  std::vector<float> out(t.numel());
  ConvertToF32(t.dtype, t.bytes.data(), out.data(), t.numel());
  return out;
}

Tensor FromF32(std::span<const float> values, DType dtype, std::vector<int64_t> shape) {
  Tensor t = Tensor::Zeros(dtype, std::move(shape));
  ConvertFromF32(dtype, values.data(), t.bytes.data(), t.numel());
  return t;
}

}  // namespace prefill
