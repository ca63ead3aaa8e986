// The CUDA LayerBackend: the dense math of a decoder layer on the device and stream of a CUDA
// AttentionBackend (kernels/cuda/cuda_backend.h), so layer ops and attention ops are ordered on
// one stream without extra synchronisation. Linear multiplies bf16 weights (PrepareMatrix's
// copy) by a bf16 rounding of the fp32 activation through cuBLAS, fp32 accumulation and output;
// the other ops are the kernels of kernels/cuda/layer_ops.h. Ops return once queued, except
// PrepareMatrix, which waits for its upload.
#pragma once

#include <cstddef>
#include <memory>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/layer_backend.h"

namespace prefill {

struct CudaLayerBackendOptions {
  // Linear converts its input to bf16 in a scratch buffer, in chunks of rows that fit in this
  // many bytes (at least one row): a 128k-token prefill through a 14336-wide down projection
  // would otherwise need 3.7 GB. Chunks of ~2k rows keep the GEMMs at full speed.
  size_t linear_scratch_bytes = size_t{64} << 20;
  // PrepareMatrix uploads in chunks of this many bytes' worth of fp32 values through two
  // page-locked host slots (and, for sources that are not bf16, a device staging buffer).
  size_t upload_chunk_bytes = size_t{32} << 20;
};

// A LayerBackend on `attention`'s device and stream; `attention` must outlive it.
// FailedPrecondition when `attention` is not a CUDA backend (CreateCudaBackend).
absl::StatusOr<std::unique_ptr<LayerBackend>> CreateCudaLayerBackend(
    const AttentionBackend& attention, const CudaLayerBackendOptions& options = {});

}  // namespace prefill
