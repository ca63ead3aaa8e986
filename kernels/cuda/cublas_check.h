// CUBLAS_CHECK: CUDA_CHECK's sibling for cuBLAS calls. In a function returning absl::Status
// (or absl::StatusOr<T>), a failing cuBLAS call returns a Status naming the expression,
// file:line, the status name and cuBLAS' description of it.
#pragma once

#include <cublas_v2.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace prefill::cuda {

// An allocation failure is ResourceExhausted (a caller may shrink and retry), as in
// CudaErrorStatus; everything else is Internal: the entries validate their inputs first, so a
// rejected call is a bug or a broken context, not the caller's input.
inline absl::Status CublasErrorStatus(cublasStatus_t status, const char* expr, const char* file,
                                      int line) {
  std::string message =
      absl::StrCat(file, ":", line, ": ", expr, " failed: ", cublasGetStatusName(status), " (",
                   cublasGetStatusString(status), ")");
  if (status == CUBLAS_STATUS_ALLOC_FAILED) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

}  // namespace prefill::cuda

#define CUBLAS_CHECK(expr)                                                               \
  do {                                                                                   \
    const cublasStatus_t prefill_cublas_status_ = (expr);                                \
    if (prefill_cublas_status_ != CUBLAS_STATUS_SUCCESS) {                               \
      return ::prefill::cuda::CublasErrorStatus(prefill_cublas_status_, #expr, __FILE__, \
                                                __LINE__);                               \
    }                                                                                    \
  } while (0)
