// CUDA_CHECK: the one checking macro of the CUDA backend. In a function returning
// absl::Status (or absl::StatusOr<T>), a failing CUDA runtime call returns a Status naming the
// expression, file:line and cudaGetErrorString. Launch errors are checked the same way right
// after each launch: CUDA_CHECK(cudaGetLastError()).
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace prefill::cuda {

// Out-of-memory is ResourceExhausted (a caller may shrink and retry); everything else is
// Internal: a sticky device error or a bug, not worth retrying on the same context.
inline absl::Status CudaErrorStatus(cudaError_t error, const char* expr, const char* file,
                                    int line) {
  std::string message =
      absl::StrCat(file, ":", line, ": ", expr, " failed: ", cudaGetErrorName(error), " (",
                   cudaGetErrorString(error), ")");
  if (error == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

}  // namespace prefill::cuda

#define CUDA_CHECK(expr)                                                                       \
  do {                                                                                         \
    const cudaError_t prefill_cuda_error_ = (expr);                                            \
    if (prefill_cuda_error_ != cudaSuccess) {                                                  \
      return ::prefill::cuda::CudaErrorStatus(prefill_cuda_error_, #expr, __FILE__, __LINE__); \
    }                                                                                          \
  } while (0)
