#include "parallel/nccl/nccl_check.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace prefill {

absl::Status NcclError(ncclResult_t result, const char* call, const char* file, int line) {
  const char* last = ncclGetLastError(nullptr);
  std::string message =
      absl::StrCat(file, ":", line, ": ", call, " failed: ", ncclGetErrorString(result),
                   last && *last ? absl::StrCat(" (", last, ")") : std::string());
  switch (result) {
    case ncclRemoteError:
    case ncclSystemError:
      return absl::UnavailableError(message);
    case ncclInvalidArgument:
    case ncclInvalidUsage:
      return absl::InvalidArgumentError(message);
    default:
      return absl::InternalError(message);
  }
}

}  // namespace prefill
