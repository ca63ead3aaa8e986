// MPI_CHECK: the one way MPI calls report failure. The communicator sets MPI_ERRORS_RETURN,
// so a failing call returns here as an absl::Status naming the call and the site.
#pragma once

#include <mpi.h>

#include "absl/status/status.h"

namespace prefill {

absl::Status MpiError(int code, const char* call, const char* file, int line);

}  // namespace prefill

#define MPI_CHECK(call)                                                     \
  do {                                                                      \
    const int mpi_check_rc_ = (call);                                       \
    if (mpi_check_rc_ != MPI_SUCCESS) {                                     \
      return ::prefill::MpiError(mpi_check_rc_, #call, __FILE__, __LINE__); \
    }                                                                       \
  } while (0)
