#include "scheduler/serve_worker.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "scheduler/rank_pool.h"
#include "scheduler/request_record.h"
#include "scheduler/serve_control.h"

namespace prefill {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

constexpr auto kIdlePoll = std::chrono::milliseconds(1);

// The communicators of one CP group: MPI over its ranks, and on GPU ranks the backend's.
struct Group {
  std::unique_ptr<MpiCommunicator> host;
  std::unique_ptr<Communicator> device;
  Communicator* backend() const { return device ? device.get() : host.get(); }
};

// Made on first use, collectively over the group's ranks only (MPI_Comm_create_group), so
// ranks outside it go on with their own requests.
absl::StatusOr<Group*> GroupOf(std::map<std::pair<int, int>, Group>& groups,
                               const ServeWorkerOptions& o, int first, int ranks) {
  auto it = groups.find({first, ranks});
  if (it != groups.end()) return &it->second;
  Group g;
  absl::StatusOr<std::unique_ptr<MpiCommunicator>> host =
      MpiCommunicator::CreateRange(o.world->comm(), first, ranks, /*tag=*/first * 65536 + ranks);
  if (!host.ok()) return host.status();
  g.host = *std::move(host);
  if (o.ctx->device_comm_for) {
    absl::StatusOr<std::unique_ptr<Communicator>> device = o.ctx->device_comm_for(*g.host);
    if (!device.ok()) return device.status();
    g.device = *std::move(device);
  }
  return &groups.emplace(std::make_pair(first, ranks), std::move(g)).first->second;
}

// An inline prompt as a JSON file of ids for the time the request runs.
class InlinePrompt {
 public:
  InlinePrompt(const ServeWorkerOptions& o, const ServeRequest& r) {
    if (r.tokens.empty()) return;
    path_ = (std::filesystem::path(o.scratch_dir) /
             absl::StrCat("prefill-serve-", getpid(), "-", r.id, ".json"))
                .string();
    std::ofstream(path_) << json(r.tokens).dump();
  }
  ~InlinePrompt() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

absl::Status RunAssignment(const ServeWorkerOptions& o, const json& message,
                           std::map<std::pair<int, int>, Group>& groups,
                           PrefillWorkspace& workspace, PendingSends& sends) {
  const ServeRequest r = ServeRequest::FromJson(message["request"]);
  const int first = message["first_rank"], ranks = message["ranks"];
  const int64_t tokens = message["tokens"];
  absl::StatusOr<Group*> group = GroupOf(groups, o, first, ranks);
  if (!group.ok()) return group.status();
  PrefillRequestOptions options = o.defaults;
  options.request_id = r.id;
  options.kv_out = r.kv_out;
  options.kv_target = r.kv_target;
  if (r.mode) options.mode = *r.mode;
  if (r.tau) options.tau = *r.tau;
  const InlinePrompt prompt(o, r);
  const PromptSource source{r.tokens.empty() ? r.tokens_path : prompt.path(), r.embeddings_path};
  const ModelExecution on{o.ctx->backend.get(), o.ctx->layers.get(),  o.prepared,
                          (*group)->backend(),  (*group)->host.get(), o.ctx->device_memory,
                          &workspace,           o.ctx->remote_kv_sink};
  const auto start = Clock::now();
  const absl::StatusOr<json> result = PrefillRequest(*o.model, source, options, on);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (o.metrics != nullptr) RecordRequestMetrics(result, tokens / ranks, seconds, *o.metrics);
  if ((*group)->host->rank() != 0) return absl::OkStatus();
  return sends.Send(o.control, 0, kDoneTag,
                    {{"id", r.id},
                     {"ok", result.ok()},
                     {"record", ResultRecord(r.id, tokens, ranks, options, result, seconds)}});
}

}  // namespace

absl::Status RunServeWorker(const ServeWorkerOptions& o) {
  std::map<std::pair<int, int>, Group> groups;
  PrefillWorkspace workspace;  // the activations, made for the longest prompt so far
  PendingSends sends;
  bool asked_to_stop = false;
  while (true) {
    PREFILL_RETURN_IF_ERROR(sends.Progress());
    absl::StatusOr<std::optional<json>> message = TryReceiveJson(o.control, 0, kAssignTag);
    if (!message.ok()) return message.status();
    if (!message->has_value()) {
      if (!asked_to_stop && o.stop_requested()) {
        PREFILL_RETURN_IF_ERROR(sends.Send(o.control, 0, kStopTag, json::object()));
        asked_to_stop = true;
      }
      std::this_thread::sleep_for(kIdlePoll);
      continue;
    }
    if ((**message)["op"] == "stop") break;
    PREFILL_RETURN_IF_ERROR(RunAssignment(o, **message, groups, workspace, sends));
  }
  return sends.WaitAll();
}

absl::Status RunServeDispatcher(const ServeDispatcherOptions& o) {
  RankPool pool(o.world_size);
  PendingSends sends;
  bool draining = false;
  while (true) {
    PREFILL_RETURN_IF_ERROR(sends.Progress());
    while (true) {
      absl::StatusOr<std::optional<json>> done =
          TryReceiveJson(o.control, MPI_ANY_SOURCE, kDoneTag);
      if (!done.ok()) return done.status();
      if (!done->has_value()) break;
      const json& m = **done;
      const RequestTable::Finished f = o.table->Finish(m["id"], m["record"], m["ok"]);
      pool.Release(f.first_rank, f.ranks);
      if (o.metrics != nullptr && m["ok"].get<bool>() && m["record"].contains("kv_target")) {
        o.metrics->time_to_kv_handoff.Observe(f.since_submit);
      }
    }
    while (true) {
      absl::StatusOr<std::optional<json>> stop =
          TryReceiveJson(o.control, MPI_ANY_SOURCE, kStopTag);
      if (!stop.ok()) return stop.status();
      if (!stop->has_value()) break;
      draining = true;
    }
    if ((draining || o.stop_requested()) && o.table->admitting()) {
      draining = true;
      o.table->StopAdmission("cancelled: the server is stopping");
    }
    for (std::optional<int> ranks; (ranks = o.table->NextRanks());) {
      const std::optional<int> first = pool.Take(*ranks);
      if (!first) break;  // the head of the queue waits for its group: no overtaking
      const StartedRequest started = o.table->StartNext(*first);
      if (o.metrics != nullptr) o.metrics->request_queue_time.Observe(started.queue_seconds);
      const json assignment = {{"op", "run"},
                               {"request", started.request.ToJson()},
                               {"first_rank", *first},
                               {"ranks", started.ranks},
                               {"tokens", started.tokens}};
      for (int r = *first; r < *first + started.ranks; ++r) {
        PREFILL_RETURN_IF_ERROR(sends.Send(o.control, r, kAssignTag, assignment));
      }
    }
    if (o.metrics != nullptr) {
      o.metrics->SetRequestsWaiting(o.table->queued());
      o.metrics->SetRequestsRunning(o.table->running());
    }
    if (draining && o.table->running() == 0) break;
    o.table->WaitForChange(absl::Milliseconds(2));
  }
  for (int r = 0; r < o.world_size; ++r) {
    PREFILL_RETURN_IF_ERROR(sends.Send(o.control, r, kAssignTag, {{"op", "stop"}}));
  }
  return sends.WaitAll();
}

}  // namespace prefill
