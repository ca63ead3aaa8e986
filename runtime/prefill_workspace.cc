#include "runtime/prefill_workspace.h"

#include <algorithm>

namespace prefill {

std::array<size_t, PrefillWorkspace::kBuffers> PrefillWorkspace::Sizes(DType dtype,
                                                                       const ModelConfig& c,
                                                                       int64_t rows) {
  const size_t n = static_cast<size_t>(rows), f = sizeof(float), e = DTypeSize(dtype),
               d = c.hidden_size;
  const size_t q_dim = static_cast<size_t>(c.num_heads) * c.head_dim;
  const size_t kv_dim = static_cast<size_t>(c.num_kv_heads) * c.head_dim;
  const size_t wide =
      std::max<size_t>(2 * static_cast<size_t>(c.intermediate_size), q_dim + 2 * kv_dim);
  return {n * d * f,      n * d * e,     n * q_dim * e,       n * kv_dim * e,
          n * kv_dim * e, n * q_dim * f, n * c.num_heads * f, n * wide * e};
}

absl::Status PrefillWorkspace::Reserve(AttentionBackend& memory, DType dtype, const ModelConfig& c,
                                       int64_t rows) {
  const std::array<size_t, kBuffers> need = Sizes(dtype, c, rows);
  bool fits = buffers_.size() == kBuffers;
  for (int i = 0; fits && i < kBuffers; ++i) fits = need[i] <= sizes_[i];
  dtype_ = dtype;
  if (fits) return absl::OkStatus();
  buffers_.clear();  // before the new ones: both would not fit where memory is tight
  sizes_ = {};
  std::vector<BackendBuffer> buffers;
  for (size_t bytes : need) {
    absl::StatusOr<BackendBuffer> b = memory.Allocate(bytes);
    if (!b.ok()) return b.status();
    buffers.push_back(*std::move(b));
  }
  buffers_ = std::move(buffers);
  sizes_ = need;
  return absl::OkStatus();
}

Activations PrefillWorkspace::View() const {
  if (buffers_.size() != kBuffers) return Activations{dtype_};
  void* b[kBuffers];
  for (int i = 0; i < kBuffers; ++i) b[i] = buffers_[i].get();
  return Activations{dtype_, b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]};
}

size_t PrefillWorkspace::bytes() const {
  size_t total = 0;
  for (size_t s : sizes_) total += s;
  return total;
}

}  // namespace prefill
