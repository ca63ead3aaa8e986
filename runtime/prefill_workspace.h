// PrefillWorkspace: the activations of RunTransformerPrefill in backend memory, kept from one
// request to the next. A process that serves requests (prefill run, the service) allocates
// them once for its longest prompt so far, and a request can have them made before its clock
// starts, as the KV cache's host memory is (on an H100 the ~14 GB of a 128K prompt cost
// ~10 ms of cudaMalloc and zero-fill per request).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "kernels/backend.h"
#include "runtime/model_config.h"

namespace prefill {

// Views into a PrefillWorkspace for `rows` rows: the residual stream (hidden), attention's
// output (or its bf16 where one rank's dense ring writes it) and lse in fp32; the GEMMs' inputs and
// outputs (normed, q, keys, values, gate_up) in the layer backend's activation dtype. The fused QKV
// projection lands in gate_up's memory, which the MLP alone uses, before RoPE splits it into q,
// keys and values. Every op writes its output whole before it is read: the memory is not cleared
// between requests.
struct Activations {
  DType dtype = DType::kF32;
  void *hidden = nullptr, *normed = nullptr, *q = nullptr, *keys = nullptr, *values = nullptr,
       *attn = nullptr, *lse = nullptr, *gate_up = nullptr;
};

class PrefillWorkspace {
 public:
  // Buffers for `rows` rows of model `c` in `dtype`: those held are kept when they are as
  // large, else freed and allocated anew.
  absl::Status Reserve(AttentionBackend& memory, DType dtype, const ModelConfig& c, int64_t rows);
  // Valid until the next Reserve; the rows and dtype of the last Reserve.
  Activations View() const;
  size_t bytes() const;  // held now (free device memory does not count them)

 private:
  static constexpr int kBuffers = 8;  // in Activations' order
  static std::array<size_t, kBuffers> Sizes(DType dtype, const ModelConfig& c, int64_t rows);
  DType dtype_ = DType::kF32;
  std::array<size_t, kBuffers> sizes_{};
  std::vector<BackendBuffer> buffers_;
};

}  // namespace prefill
