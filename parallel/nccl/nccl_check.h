// NCCL_CHECK: the one way NCCL calls report failure, as an absl::Status naming the call, the
// site, ncclGetErrorString and NCCL's last error message. Codes say whether to retry: a remote
// or system error (a lost peer, a broken connection) is Unavailable, a misuse is
// InvalidArgument, anything else Internal. ncclInProgress (non-blocking communicators) is not
// an error.
#pragma once

#include <nccl.h>

#include "absl/status/status.h"

namespace prefill {

absl::Status NcclError(ncclResult_t result, const char* call, const char* file, int line);

}  // namespace prefill

#define NCCL_CHECK(call)                                                      \
  do {                                                                        \
    const ncclResult_t nccl_check_rc_ = (call);                               \
    if (nccl_check_rc_ != ncclSuccess && nccl_check_rc_ != ncclInProgress) {  \
      return ::prefill::NcclError(nccl_check_rc_, #call, __FILE__, __LINE__); \
    }                                                                         \
  } while (0)
