#include "scheduler/batch_runner.h"

#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/status_macros.h"
#include "nlohmann/json.hpp"
#include "scheduler/manifest.h"
#include "scheduler/request_record.h"
#include "scheduler/result_store.h"

namespace prefill {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

// The plan rank 0 makes and every rank follows.
struct BatchPlan {
  std::vector<BatchRequest> requests;  // still to run
  std::vector<int64_t> tokens;
  Placement placement;
  std::vector<std::string> manifest_ids;  // every valid id, manifest order (results.jsonl)
  BatchSummary summary;
};

json ToJson(const BatchPlan& p) {
  json j = {{"ids", p.manifest_ids},      {"tokens", p.tokens},
            {"requests", json::array()},  {"waves", json::array()},
            {"total", p.summary.total},   {"skipped", p.summary.skipped},
            {"failed", p.summary.failed}, {"invalid", p.summary.invalid}};
  for (const BatchRequest& r : p.requests) {
    j["requests"].push_back({{"id", r.id},
                             {"tokens", r.tokens_path},
                             {"embeddings", r.embeddings_path},
                             {"mode", r.mode ? AttentionModeName(*r.mode) : ""},
                             {"tau", r.tau.value_or(0.f)}});
  }
  for (const Wave& w : p.placement.waves) {
    json wave = json::array();
    for (const Assignment& a : w.assignments) wave.push_back({a.request, a.first_rank, a.ranks});
    j["waves"].push_back(wave);
  }
  return j;
}

BatchPlan FromJson(const json& j) {
  BatchPlan p;
  p.manifest_ids = j["ids"].get<std::vector<std::string>>();
  p.tokens = j["tokens"].get<std::vector<int64_t>>();
  for (const json& r : j["requests"]) {
    BatchRequest b;
    b.id = r["id"];
    b.tokens_path = r["tokens"];
    b.embeddings_path = r["embeddings"];
    if (!r["mode"].get<std::string>().empty())
      b.mode = *ParseAttentionMode(r["mode"].get<std::string>());
    if (r["tau"].get<float>() > 0) b.tau = r["tau"].get<float>();
    p.requests.push_back(b);
  }
  for (const json& w : j["waves"]) {
    Wave wave;
    for (const json& a : w)
      wave.assignments.push_back({a[0].get<int>(), a[1].get<int>(), a[2].get<int>()});
    p.placement.waves.push_back(wave);
  }
  p.summary.total = j["total"];
  p.summary.skipped = j["skipped"];
  p.summary.failed = j["failed"];
  p.summary.invalid = j["invalid"];
  return p;
}

// Rank 0: manifest, resume, lengths, placement. Requests that cannot run get their error
// records here.
absl::StatusOr<BatchPlan> MakePlan(const BatchOptions& o, const LoadedModel& model,
                                   int world_size) {
  absl::StatusOr<Manifest> manifest = LoadManifest(o.manifest_path);
  if (!manifest.ok()) return manifest.status();
  if (!manifest->problems.empty() && !o.skip_invalid) {
    return absl::InvalidArgumentError(
        absl::StrCat(o.manifest_path, ": ", manifest->problems.size(),
                     " bad line(s), nothing was run (fix them, or pass --skip-invalid):",
                     DescribeProblems(manifest->problems)));
  }
  absl::StatusOr<ResultStore> store = ResultStore::Open(o.out_dir);
  if (!store.ok()) return store.status();
  const std::map<std::string, json> records = store->ReadRecords();
  BatchPlan plan;
  plan.summary.total = static_cast<int>(manifest->requests.size());
  plan.summary.invalid = static_cast<int>(manifest->problems.size());
  std::vector<PlacementInput> inputs;
  for (const BatchRequest& r : manifest->requests) {
    plan.manifest_ids.push_back(r.id);
    if (store->IsDone(r.id, records)) {
      ++plan.summary.skipped;
      continue;
    }
    absl::StatusOr<int64_t> tokens = PromptLength({r.tokens_path, r.embeddings_path}, model.config);
    if (!tokens.ok()) {
      ++plan.summary.failed;
      PREFILL_RETURN_IF_ERROR(
          store->WriteRecord(ErrorRecord(r.id, 0, std::string(tokens.status().message()))));
      continue;
    }
    plan.requests.push_back(r);
    plan.tokens.push_back(*tokens);
    inputs.push_back({*tokens, r.priority});
  }
  const PlacementPolicy policy{world_size, o.min_tokens_per_rank, o.max_tokens_per_rank};
  plan.placement = PlanPlacement(inputs, policy);
  for (const auto& [r, why] : plan.placement.refused) {
    ++plan.summary.failed;
    PREFILL_RETURN_IF_ERROR(
        store->WriteRecord(ErrorRecord(plan.requests[r].id, plan.tokens[r], why)));
  }
  return plan;
}

absl::StatusOr<std::string> BroadcastFromRoot(MpiCommunicator& world, std::string text) {
  uint64_t size = text.size();
  if (MPI_Bcast(&size, 1, MPI_UINT64_T, 0, world.comm()) != MPI_SUCCESS)
    return absl::UnavailableError("plan broadcast failed");
  text.resize(size);
  if (MPI_Bcast(text.data(), static_cast<int>(size), MPI_CHAR, 0, world.comm()) != MPI_SUCCESS) {
    return absl::UnavailableError("plan broadcast failed");
  }
  return text;
}

// Every rank of a group prefills the request; the group's rank 0 records the outcome.
absl::Status RunAssignment(const BatchOptions& o, const LoadedModel& model, const BatchPlan& plan,
                           const Assignment& a, const ModelExecution& group,
                           const ResultStore& store) {
  const BatchRequest& r = plan.requests[a.request];
  PrefillRequestOptions options = o.defaults;
  options.kv_out = store.KvDir(r.id);
  options.request_id = r.id;
  if (r.mode) options.mode = *r.mode;
  if (r.tau) options.tau = *r.tau;
  const auto start = Clock::now();
  if (o.metrics != nullptr) o.metrics->SetRequestsRunning(1);
  absl::StatusOr<json> result =
      PrefillRequest(model, {r.tokens_path, r.embeddings_path}, options, group);
  if (o.metrics != nullptr) {
    o.metrics->SetRequestsRunning(0);
    RecordRequestMetrics(result, plan.tokens[a.request] / a.ranks,
                         std::chrono::duration<double>(Clock::now() - start).count(), *o.metrics);
  }
  if (group.host->rank() != 0) return absl::OkStatus();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return store.WriteRecord(
      ResultRecord(r.id, plan.tokens[a.request], a.ranks, options, result, seconds));
}

// This rank's CP group of one wave: the split of the MPI world and, on GPU ranks, the split
// of the NCCL world (ncclCommSplit); both null on a rank idle in the wave.
struct WaveGroup {
  std::unique_ptr<Communicator> host, nccl;
  Communicator* device() const { return nccl ? nccl.get() : host.get(); }
};

// Collective over the world (idle ranks pass kNoColor), so every rank calls it every wave.
absl::StatusOr<WaveGroup> SplitForWave(MpiCommunicator& world, ExecutionContext& ctx, int color) {
  WaveGroup g;
  absl::StatusOr<std::unique_ptr<Communicator>> host = world.Split(color, world.rank());
  if (!host.ok()) return host.status();
  g.host = std::move(*host);
  if (ctx.comm != &world) {
    absl::StatusOr<std::unique_ptr<Communicator>> nccl = ctx.comm->Split(color, world.rank());
    if (!nccl.ok()) return nccl.status();
    g.nccl = std::move(*nccl);
  }
  return g;
}

void PrintProgress(const std::string& mode, const BatchSummary& s, int64_t planned_tokens,
                   double seconds, bool done) {
  if (mode == "off") return;
  const int finished = s.skipped + s.succeeded + s.failed;
  const double rate = seconds > 0 ? s.tokens / seconds : 0;
  const double eta = rate > 0 ? (planned_tokens - s.tokens) / rate : 0;
  const std::string line = absl::StrFormat(
      "prefill run: %d/%d requests (%d ok, %d failed, %d skipped), %.0f tokens/s, ETA %.0f s",
      finished, s.total, s.succeeded, s.failed, s.skipped, rate, eta);
  // Under mpirun stdout is mpirun's pty even when its own output is a file: "auto" trusts
  // the terminal only when TERM says there is one.
  const bool in_place =
      mode == "line" ||
      (mode == "auto" && isatty(STDOUT_FILENO) && std::getenv("TERM") != nullptr &&
       std::string(std::getenv("TERM")) != "dumb" && std::getenv("CI") == nullptr);
  if (in_place) {
    std::printf("\r%s\033[K%s", line.c_str(), done ? "\n" : "");
  } else {
    std::printf("%s\n", line.c_str());
  }
  std::fflush(stdout);
}

}  // namespace

absl::StatusOr<BatchSummary> RunBatch(const BatchOptions& o, MpiCommunicator& world,
                                      ExecutionContext& ctx) {
  const auto start = Clock::now();
  absl::StatusOr<LoadedModel> model = LoadModel(o.model_dir);
  absl::StatusOr<PreparedModel> prepared =
      model.ok() ? PrepareModel(model->config, model->weights, *ctx.backend, *ctx.layers)
                 : model.status();
  PREFILL_RETURN_IF_ERROR(AgreeOnStatus(world, prepared.status()));
  PrefillWorkspace workspace;  // the activations, made for the longest prompt so far

  absl::StatusOr<BatchPlan> plan = absl::UnknownError("not planned");
  std::string text;
  if (world.rank() == 0) {
    plan = MakePlan(o, *model, world.size());
    if (plan.ok()) text = ToJson(*plan).dump();
  } else {
    plan = BatchPlan{};
  }
  PREFILL_RETURN_IF_ERROR(AgreeOnStatus(world, plan.status()));
  absl::StatusOr<std::string> shared = BroadcastFromRoot(world, std::move(text));
  if (!shared.ok()) return shared.status();
  plan = FromJson(json::parse(*shared));
  absl::StatusOr<ResultStore> store = ResultStore::Open(o.out_dir);
  PREFILL_RETURN_IF_ERROR(AgreeOnStatus(world, store.status()));

  BatchSummary summary = plan->summary;
  int64_t planned_tokens = 0;
  for (const Wave& w : plan->placement.waves) {
    for (const Assignment& a : w.assignments) planned_tokens += plan->tokens[a.request];
  }
  int64_t waiting = 0;
  for (const Wave& w : plan->placement.waves) waiting += static_cast<int64_t>(w.assignments.size());
  for (const Wave& wave : plan->placement.waves) {
    waiting -= static_cast<int64_t>(wave.assignments.size());
    if (o.metrics != nullptr) o.metrics->SetRequestsWaiting(waiting);
    double stop = o.stop_requested() ? 1 : 0;
    PREFILL_RETURN_IF_ERROR(world.AllReduceMax(&stop, 1));
    if (stop > 0) {
      summary.stopped = true;
      break;
    }
    int color = Communicator::kNoColor;
    const Assignment* mine = nullptr;
    for (size_t g = 0; g < wave.assignments.size(); ++g) {
      const Assignment& a = wave.assignments[g];
      if (world.rank() >= a.first_rank && world.rank() < a.first_rank + a.ranks) {
        color = static_cast<int>(g);
        mine = &a;
      }
    }
    absl::StatusOr<WaveGroup> group = SplitForWave(world, ctx, color);
    if (!group.ok()) return group.status();
    absl::Status wave_status;
    if (mine != nullptr) {
      const ModelExecution on{ctx.backend.get(), ctx.layers.get(),  &*prepared, group->device(),
                              group->host.get(), ctx.device_memory, &workspace, ctx.remote_kv_sink};
      wave_status = RunAssignment(o, *model, *plan, *mine, on, *store);
    }
    PREFILL_RETURN_IF_ERROR(AgreeOnStatus(world, wave_status));
    if (world.rank() == 0) {
      const std::map<std::string, json> records = store->ReadRecords();
      for (const Assignment& a : wave.assignments) {
        const json& r = records.at(plan->requests[a.request].id);
        (r["status"] == "ok" ? summary.succeeded : summary.failed)++;
        summary.tokens += plan->tokens[a.request];
      }
      PREFILL_RETURN_IF_ERROR(store->RewriteResults(plan->manifest_ids));
      summary.seconds = std::chrono::duration<double>(Clock::now() - start).count();
      PrintProgress(o.progress, summary, planned_tokens, summary.seconds, false);
    }
  }
  if (world.rank() == 0) {
    PREFILL_RETURN_IF_ERROR(store->RewriteResults(plan->manifest_ids));
    summary.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    PrintProgress(o.progress, summary, planned_tokens, summary.seconds, true);
  }
  return summary;
}

}  // namespace prefill
