// UcxKvSink: each rank of a prefill group streams its own KV shards straight to a decode
// server over UCX (UCP active messages, kv_handoff_protocol.h), in parallel with the other
// ranks: no gather through rank 0. Commit returns OK only after the server acknowledged the
// whole request (every layer of every rank). Also here: the UCX plumbing kv-receiver shares
// (the UCS_CHECK macro, address parsing, a context + worker with bounded progress loops).
//
// Zero-copy: each tensor is registered (ucp_mem_map) and sent in place from its host buffer;
// UCX picks eager or rendezvous by size and transport (shared memory / CMA, TCP, RDMA when
// present). KV caches are host memory at this point; a UCX built with CUDA could send device
// memory directly, Debian's libucx0 is not (docs/kv-handoff.md).
// The sink takes layers during the prefill (KvLayerStreamer's thread): each PutLayer sends its
// layer before it returns, under the compute of the next layers; Commit then only sends the
// commit message and waits for the acknowledgement.
#pragma once

#include <sys/socket.h>
#include <ucp/api/ucp.h>

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "parallel/communicator.h"
#include "runtime/kv_sink.h"

namespace prefill {

// ---- UCX plumbing ----------------------------------------------------------------------

// UCS status -> absl code: a lost or unreachable peer is Unavailable, a timeout
// DeadlineExceeded, a bad parameter InvalidArgument, no memory ResourceExhausted.
absl::StatusCode UcsStatusCode(ucs_status_t status);
absl::Status UcsError(ucs_status_t status, const char* call, const char* file, int line);

}  // namespace prefill

// UCS_CHECK(call): the one way UCX calls returning ucs_status_t report failure; returns an
// absl::Status naming the call, the UCX reason and the site from the enclosing function.
#define UCS_CHECK(call)                                                         \
  do {                                                                          \
    const ucs_status_t ucs_check_status_ = (call);                              \
    if (ucs_check_status_ != UCS_OK) {                                          \
      return ::prefill::UcsError(ucs_check_status_, #call, __FILE__, __LINE__); \
    }                                                                           \
  } while (0)

namespace prefill {

// "host:port", "[v6]:port"; names are resolved. passive: for listening ("0.0.0.0:0" is fine,
// port 0 picks a free port); otherwise the port must be 1..65535.
struct SocketAddress {
  sockaddr_storage addr{};
  socklen_t length = 0;
};
absl::StatusOr<SocketAddress> ResolveHostPort(std::string_view host_port, bool passive);
std::string SocketAddressText(const sockaddr_storage& addr);  // "127.0.0.1:13337"

// A UCP context with one worker (active messages; env UCX_* applies). thread_mode: SINGLE
// for one thread; SERIALIZED where several threads take turns (never at once).
class UcxWorker {
 public:
  static absl::StatusOr<std::unique_ptr<UcxWorker>> Create(ucs_thread_mode_t thread_mode = UCS_THREAD_MODE_SINGLE);
  ~UcxWorker();
  UcxWorker(const UcxWorker&) = delete;
  UcxWorker& operator=(const UcxWorker&) = delete;

  ucp_context_h context() const { return context_; }
  ucp_worker_h worker() const { return worker_; }
  size_t max_am_header() const { return max_am_header_; }

  // One progress pass; true when anything happened.
  bool Progress();
  // Called after a pass in which nothing happened: spins a little, then sleeps (10 us, doubling
  // up to max_sleep_us), so that several ranks and a receiver sharing a few cores do not starve
  // each other. Yielding instead measured 2x slower on 2 cores; 160 us is short enough for a
  // loopback TCP socket buffer not to run dry.
  void Backoff(int& idle_rounds, int max_sleep_us = 160);
  // Progresses until done(). DeadlineExceeded (naming `what`) when nothing happened for
  // idle_timeout_s seconds; `activity` (optional) counts events the callbacks saw.
  absl::Status ProgressUntil(const std::function<bool()>& done, double idle_timeout_s,
                             std::string_view what, const uint64_t* activity = nullptr);
  // Closes an endpoint: flushes it (bounded by timeout_s), or drops it at once when `force`.
  void CloseEndpoint(ucp_ep_h ep, bool force, double timeout_s);

 private:
  UcxWorker() = default;
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  size_t max_am_header_ = 0;
};

// ---- The sink --------------------------------------------------------------------------

struct UcxKvSinkOptions {
  std::string target;           // host:port of a kv-receiver / decode server
  double timeout_seconds = 60;  // no progress for this long (connect, send, acknowledgement): fail
};

// Validates `target` and `timeout_seconds` (InvalidArgument naming --kv-target / --kv-timeout).
absl::Status ValidateUcxKvSinkOptions(const UcxKvSinkOptions& options);

std::unique_ptr<KvSink> MakeUcxKvSink(Communicator& comm, UcxKvSinkOptions options);

}  // namespace prefill
