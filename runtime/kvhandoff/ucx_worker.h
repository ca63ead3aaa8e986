// The UCX plumbing of the KV handoff, private to runtime/kvhandoff: the UCS_CHECK macro and a
// UCP context + worker with bounded progress loops, shared by the sink and the receiver.
#pragma once

#include <ucp/api/ucp.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>

#include "absl/status/statusor.h"

namespace prefill {

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

// A UCP context with one worker (active messages; env UCX_* applies). thread_mode: SINGLE
// for one thread; SERIALIZED where several threads take turns (never at once).
class UcxWorker {
 public:
  static absl::StatusOr<std::unique_ptr<UcxWorker>> Create(
      ucs_thread_mode_t thread_mode = UCS_THREAD_MODE_SINGLE);
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

}  // namespace prefill
