#include "scheduler/request_table.h"

#include "absl/strings/str_cat.h"

namespace prefill {
namespace {

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

}  // namespace

const char* RequestStateName(RequestState state) {
  switch (state) {
    case RequestState::kQueued:
      return "queued";
    case RequestState::kRunning:
      return "running";
    case RequestState::kDone:
      return "done";
    case RequestState::kFailed:
      return "failed";
    case RequestState::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

absl::Status RequestTable::Submit(ServeRequest request, int64_t tokens, int ranks) {
  absl::MutexLock lock(&mu_);
  if (!admitting_)
    return absl::UnavailableError("the server is stopping and takes no new requests");
  if (requests_.count(request.id) != 0) {
    return absl::AlreadyExistsError(
        absl::StrCat("a request with id '", request.id, "' exists already"));
  }
  if (static_cast<int>(queue_.size()) >= max_queued_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the queue is full (", max_queued_, " requests wait)"));
  }
  TrackedRequest t;
  t.tokens = tokens;
  t.ranks = ranks;
  t.arrival = arrivals_++;
  t.submitted = std::chrono::steady_clock::now();
  const std::string id = request.id;
  t.request = std::move(request);
  queue_.insert(KeyOf(t));
  requests_.emplace(id, std::move(t));
  ++version_;
  changed_.SignalAll();
  return absl::OkStatus();
}

std::optional<nlohmann::json> RequestTable::Describe(const std::string& id) const {
  absl::MutexLock lock(&mu_);
  auto it = requests_.find(id);
  if (it == requests_.end()) return std::nullopt;
  const TrackedRequest& t = it->second;
  const auto now = std::chrono::steady_clock::now();
  const auto queue_end =
      t.state == RequestState::kQueued ? now : (t.first_rank >= 0 ? t.started : t.finished);
  nlohmann::json j = {{"id", id},
                      {"state", RequestStateName(t.state)},
                      {"tokens", t.tokens},
                      {"ranks", t.ranks},
                      {"priority", t.request.priority},
                      {"queue_seconds", Seconds(queue_end - t.submitted)},
                      {"result", t.result.is_null() ? nlohmann::json() : t.result},
                      {"error", t.error.empty() ? nlohmann::json() : nlohmann::json(t.error)}};
  return j;
}

absl::Status RequestTable::Cancel(const std::string& id) {
  absl::MutexLock lock(&mu_);
  auto it = requests_.find(id);
  if (it == requests_.end())
    return absl::NotFoundError(absl::StrCat("no request with id '", id, "'"));
  TrackedRequest& t = it->second;
  if (t.state != RequestState::kQueued) {
    return absl::FailedPreconditionError(absl::StrCat("request '", id, "' is ",
                                                      RequestStateName(t.state),
                                                      ": only queued requests can be cancelled"));
  }
  t.state = RequestState::kCancelled;
  t.error = "cancelled by the client";
  t.finished = std::chrono::steady_clock::now();
  queue_.erase(KeyOf(t));
  finished_order_.push_back(id);
  ForgetOldFinished();
  ++version_;
  changed_.SignalAll();
  return absl::OkStatus();
}

std::optional<int> RequestTable::NextRanks() const {
  absl::MutexLock lock(&mu_);
  if (queue_.empty()) return std::nullopt;
  return requests_.at(std::get<2>(*queue_.begin())).ranks;
}

StartedRequest RequestTable::StartNext(int first_rank) {
  absl::MutexLock lock(&mu_);
  TrackedRequest& t = requests_.at(std::get<2>(*queue_.begin()));
  queue_.erase(queue_.begin());
  t.state = RequestState::kRunning;
  t.started = std::chrono::steady_clock::now();
  t.first_rank = first_rank;
  ++running_;
  return {t.request, t.tokens, t.ranks, Seconds(t.started - t.submitted)};
}

RequestTable::Finished RequestTable::Finish(const std::string& id, nlohmann::json result, bool ok) {
  absl::MutexLock lock(&mu_);
  TrackedRequest& t = requests_.at(id);
  t.state = ok ? RequestState::kDone : RequestState::kFailed;
  t.finished = std::chrono::steady_clock::now();
  if (!ok) t.error = result.value("error", std::string("failed"));
  t.result = std::move(result);
  --running_;
  finished_order_.push_back(id);
  const Finished f{t.first_rank, t.ranks, Seconds(t.finished - t.submitted)};
  ForgetOldFinished();
  ++version_;
  changed_.SignalAll();
  return f;
}

void RequestTable::ForgetOldFinished() {
  while (static_cast<int>(finished_order_.size()) > keep_finished_) {
    requests_.erase(finished_order_.front());
    finished_order_.pop_front();
  }
}

void RequestTable::StopAdmission(const std::string& reason) {
  absl::MutexLock lock(&mu_);
  admitting_ = false;
  for (auto& [id, t] : requests_) {
    if (t.state != RequestState::kQueued) continue;
    t.state = RequestState::kCancelled;
    t.error = reason;
    t.finished = std::chrono::steady_clock::now();
    finished_order_.push_back(id);
  }
  queue_.clear();
  ForgetOldFinished();
  ++version_;
  changed_.SignalAll();
}

bool RequestTable::admitting() const {
  absl::MutexLock lock(&mu_);
  return admitting_;
}

int RequestTable::queued() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(queue_.size());
}

int RequestTable::running() const {
  absl::MutexLock lock(&mu_);
  return running_;
}

void RequestTable::WaitForChange(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  const uint64_t seen = version_;
  const absl::Time deadline = absl::Now() + timeout;
  while (version_ == seen) {
    if (changed_.WaitWithDeadline(&mu_, deadline)) break;
  }
}

}  // namespace prefill
