#include "runtime/kv_sink.h"

#include "absl/strings/str_cat.h"
#include "runtime/socket_address.h"

namespace prefill {

bool ValidKvRequestId(std::string_view id) {
  constexpr size_t kMaxBytes = 128;
  if (id.empty() || id.size() > kMaxBytes || id == "." || id == "..") return false;
  for (char c : id) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
          c == '_' || c == '-')) {
      return false;
    }
  }
  return true;
}

absl::Status ValidateKvTarget(const KvTarget& target) {
  if (absl::StatusOr<SocketAddress> a = ResolveHostPort(target.address, false); !a.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--kv-target ", a.status().message()));
  }
  if (!(target.timeout_seconds > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("--kv-timeout ", target.timeout_seconds,
                                                   " must be a positive number of seconds"));
  }
  return absl::OkStatus();
}

}  // namespace prefill
