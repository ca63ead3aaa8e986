// Socket addresses as users write them ("host:port", "[v6]:port"), for the KV handoff's
// --kv-target / --listen and the serve API's kv_target: parsed and resolved here, without any
// transport.
#pragma once

#include <sys/socket.h>

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace prefill {

struct SocketAddress {
  sockaddr_storage addr{};
  socklen_t length = 0;
};

// "host:port", "[v6]:port"; names are resolved. passive: for listening ("0.0.0.0:0" is fine,
// port 0 picks a free port); otherwise the port must be 1..65535.
absl::StatusOr<SocketAddress> ResolveHostPort(std::string_view host_port, bool passive);
std::string SocketAddressText(const sockaddr_storage& addr);  // "127.0.0.1:13337"

}  // namespace prefill
