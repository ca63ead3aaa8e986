// RequestTable: the requests of `prefill serve` on rank 0, from admission to their result.
// The HTTP workers add, read and cancel; the dispatcher takes the next queued request
// (highest priority, then arrival) and records how it ended. Thread-safe.
//
// States: queued -> running -> done | failed; queued -> cancelled (DELETE, or the server
// stopping). Finished requests stay readable; the oldest are forgotten beyond `keep_finished`.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json.hpp"
#include "scheduler/serve_request.h"

namespace prefill {

enum class RequestState { kQueued, kRunning, kDone, kFailed, kCancelled };
const char* RequestStateName(RequestState state);

struct TrackedRequest {
  ServeRequest request;
  int64_t tokens = 0;
  int ranks = 0;  // the CP group it needs
  uint64_t arrival = 0;
  RequestState state = RequestState::kQueued;
  std::chrono::steady_clock::time_point submitted, started, finished;
  int first_rank = -1;
  nlohmann::json result;  // the `prefill run` record once finished
  std::string error;      // why it failed or was cancelled
};

// What the dispatcher starts: a copy, taken under the lock.
struct StartedRequest {
  ServeRequest request;
  int64_t tokens = 0;
  int ranks = 0;
  double queue_seconds = 0;
};

class RequestTable {
 public:
  RequestTable(int max_queued, int keep_finished = 10000)
      : max_queued_(max_queued), keep_finished_(keep_finished) {}

  // AlreadyExists for a known id; ResourceExhausted when max_queued wait already;
  // Unavailable once admission stopped.
  absl::Status Submit(ServeRequest request, int64_t tokens, int ranks);
  // {"id", "state", "tokens", "ranks", "queue_seconds", "result", "error"}; nullopt: unknown.
  std::optional<nlohmann::json> Describe(const std::string& id) const;
  // NotFound; FailedPrecondition when it is no longer queued.
  absl::Status Cancel(const std::string& id);

  // The ranks the next request needs (highest priority, then arrival); nullopt: none queued.
  std::optional<int> NextRanks() const;
  // Marks the next request running on [first_rank, first_rank + ranks) and returns it.
  StartedRequest StartNext(int first_rank);
  // Records how a running request ended; returns its first rank and ranks, and the seconds
  // from its submission.
  struct Finished {
    int first_rank = 0;
    int ranks = 0;
    double since_submit = 0;
  };
  Finished Finish(const std::string& id, nlohmann::json result, bool ok);

  // New requests are refused (Unavailable); queued ones are cancelled with `reason`.
  void StopAdmission(const std::string& reason);
  bool admitting() const;
  int queued() const;
  int running() const;
  // Blocks until a request is added or cancelled, or `timeout` passes.
  void WaitForChange(absl::Duration timeout);

 private:
  // The queued requests in start order: highest priority, then arrival.
  using QueueKey = std::tuple<int, uint64_t, std::string>;  // (-priority, arrival, id)
  static QueueKey KeyOf(const TrackedRequest& t) {
    return {-t.request.priority, t.arrival, t.request.id};
  }
  void ForgetOldFinished() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int max_queued_;
  const int keep_finished_;
  mutable absl::Mutex mu_;
  absl::CondVar changed_;
  std::map<std::string, TrackedRequest> requests_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> finished_order_ ABSL_GUARDED_BY(mu_);
  std::set<QueueKey> queue_ ABSL_GUARDED_BY(mu_);
  uint64_t arrivals_ ABSL_GUARDED_BY(mu_) = 0;
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  bool admitting_ ABSL_GUARDED_BY(mu_) = true;
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace prefill
