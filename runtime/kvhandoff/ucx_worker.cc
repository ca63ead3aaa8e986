#include "runtime/kvhandoff/ucx_worker.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"

namespace prefill {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

}  // namespace

absl::StatusCode UcsStatusCode(ucs_status_t status) {
  switch (status) {
    case UCS_OK:
      return absl::StatusCode::kOk;
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_ENDPOINT_TIMEOUT:
    case UCS_ERR_REJECTED:
    case UCS_ERR_IO_ERROR:
    case UCS_ERR_CANCELED:
    case UCS_ERR_NOT_CONNECTED:
    case UCS_ERR_BUSY:
    case UCS_ERR_NO_RESOURCE:
      return absl::StatusCode::kUnavailable;
    case UCS_ERR_TIMED_OUT:
      return absl::StatusCode::kDeadlineExceeded;
    case UCS_ERR_INVALID_PARAM:
    case UCS_ERR_INVALID_ADDR:
      return absl::StatusCode::kInvalidArgument;
    case UCS_ERR_NO_MEMORY:
    case UCS_ERR_EXCEEDS_LIMIT:
      return absl::StatusCode::kResourceExhausted;
    case UCS_ERR_UNSUPPORTED:
      return absl::StatusCode::kUnimplemented;
    default:
      return absl::StatusCode::kInternal;
  }
}

absl::Status UcsError(ucs_status_t status, const char* call, const char* file, int line) {
  return absl::Status(UcsStatusCode(status), absl::StrCat(call, ": ", ucs_status_string(status),
                                                          " (", file, ":", line, ")"));
}

absl::StatusOr<std::unique_ptr<UcxWorker>> UcxWorker::Create(ucs_thread_mode_t thread_mode) {
  std::unique_ptr<UcxWorker> w(new UcxWorker());
  ucp_config_t* config = nullptr;
  // UCX 1.13's TCP PUT zcopy (its rendezvous over TCP) aborts the process on an internal
  // assertion (tcp_ep.c: PUT_TX_WAITING_ACK) when the peer dies mid-transfer, which would take a
  // whole prefill job down with a receiver. Without it, rendezvous data goes as active-message
  // fragments, still sent from the registered buffer. The transport reads its settings from the
  // environment only (ucp_config_modify does not reach it in 1.13), so the default is set there,
  // once, before the first context; UCX_TCP_PUT_ENABLE=y in the environment restores PUT.
  static const bool tcp_put_default = [] {
    return setenv("UCX_TCP_PUT_ENABLE", "n", /*overwrite=*/0) == 0;
  }();
  (void)tcp_put_default;
  UCS_CHECK(ucp_config_read(nullptr, nullptr, &config));
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_AM;
  const ucs_status_t init = ucp_init(&params, config, &w->context_);
  ucp_config_release(config);
  UCS_CHECK(init);
  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wp.thread_mode = thread_mode;
  UCS_CHECK(ucp_worker_create(w->context_, &wp, &w->worker_));
  ucp_worker_attr_t attr{};
  attr.field_mask = UCP_WORKER_ATTR_FIELD_MAX_AM_HEADER;
  UCS_CHECK(ucp_worker_query(w->worker_, &attr));
  w->max_am_header_ = attr.max_am_header;
  return w;
}

UcxWorker::~UcxWorker() {
  if (worker_ != nullptr) ucp_worker_destroy(worker_);
  if (context_ != nullptr) ucp_cleanup(context_);
}

bool UcxWorker::Progress() {
  bool any = false;
  while (ucp_worker_progress(worker_) != 0) any = true;
  return any;
}

void UcxWorker::Backoff(int& idle_rounds, int max_sleep_us) {
  ++idle_rounds;
  if (idle_rounds < 64) return;
  const int shift = std::min(idle_rounds - 64, 20);
  std::this_thread::sleep_for(std::chrono::microseconds(std::min(10 << shift, max_sleep_us)));
}

absl::Status UcxWorker::ProgressUntil(const std::function<bool()>& done, double idle_timeout_s,
                                      std::string_view what, const uint64_t* activity) {
  Clock::time_point last = Clock::now();
  uint64_t seen = activity ? *activity : 0;
  int idle_rounds = 0;
  while (!done()) {
    bool any = Progress();
    if (activity != nullptr && *activity != seen) {
      seen = *activity;
      any = true;
    }
    if (any) {
      last = Clock::now();
      idle_rounds = 0;
      continue;
    }
    if (SecondsSince(last) > idle_timeout_s) {
      return absl::DeadlineExceededError(
          absl::StrCat(std::string(what), ": nothing happened for ", idle_timeout_s, " s"));
    }
    Backoff(idle_rounds);
  }
  return absl::OkStatus();
}

void UcxWorker::CloseEndpoint(ucp_ep_h ep, bool force, double timeout_s) {
  if (ep == nullptr) return;
  ucp_request_param_t p{};
  p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  p.flags = force ? UCP_EP_CLOSE_FLAG_FORCE : 0;
  ucs_status_ptr_t req = ucp_ep_close_nbx(ep, &p);
  if (req == nullptr || UCS_PTR_IS_ERR(req)) return;
  const Clock::time_point start = Clock::now();
  int idle_rounds = 0;
  while (ucp_request_check_status(req) == UCS_INPROGRESS && SecondsSince(start) < timeout_s) {
    if (!Progress()) Backoff(idle_rounds);
  }
  ucp_request_free(req);  // if still in progress, UCX releases it when done (or with the worker)
}

}  // namespace prefill
