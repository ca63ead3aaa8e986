// BatchRunner: `prefill run` — works through a manifest of prompts with one model loaded
// once per rank. Rank 0 validates the manifest, skips what an earlier run finished, plans
// waves of concurrent CP groups (placement.h) and shares the plan; every wave splits the
// world into its groups (the MPI world, and on GPU ranks the NCCL world with ncclCommSplit), each
// group prefills its request and records the result; a failed request records its error and the
// batch goes on. Between waves the ranks agree whether a stop (SIGTERM/SIGINT) was requested; if so
// they return with the output resumable.
#pragma once

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "monitoring/prefill_metrics.h"
#include "nlohmann/json.hpp"
#include "parallel/mpi_communicator.h"
#include "runtime/execution_context.h"
#include "runtime/model_job.h"
#include "scheduler/placement.h"

namespace prefill {

struct BatchOptions {
  std::string manifest_path;
  std::string model_dir;
  std::string out_dir;
  bool skip_invalid = false;
  int64_t max_tokens_per_rank = 131072;
  int64_t min_tokens_per_rank = 8192;
  PrefillRequestOptions defaults;  // kv_out is set per request
  std::function<bool()> stop_requested = [] { return false; };
  monitoring::PrefillMetrics* metrics = nullptr;  // every rank records its share when set
  std::string progress = "auto";  // rank 0: "line" (updated in place), "log" (a line each), "off";
                                  // auto: line on a terminal
};

struct BatchSummary {
  int total = 0;         // requests in the manifest (valid ones)
  int skipped = 0;       // done by an earlier run
  int succeeded = 0;     // this run
  int failed = 0;        // this run
  int invalid = 0;       // manifest lines skipped with --skip-invalid
  bool stopped = false;  // a stop was requested; rerun to finish
  int64_t tokens = 0;
  double seconds = 0;
};

// ctx: the backends every request computes on, made once by the caller over `world`.
absl::StatusOr<BatchSummary> RunBatch(const BatchOptions& options, MpiCommunicator& world,
                                      ExecutionContext& ctx);

}  // namespace prefill
