// The two loops of `prefill serve`.
//
// RunServeWorker: every rank's main thread. It waits for an assignment from rank 0's
// dispatcher, joins the request's CP group (communicators made the first time a group of
// those ranks runs, then reused), prefills the request with the model loaded once, and the
// group's first rank reports the result record back. It returns when the dispatcher says
// stop. A rank that receives SIGTERM/SIGINT tells the dispatcher, which drains the service.
//
// RunServeDispatcher: a thread of rank 0. It starts the next queued request (priority, then
// arrival) as soon as an aligned group of the ranks it needs is free (RankPool: no waves), and
// records each result. Draining (a signal on any rank): admission stops, queued requests are
// cancelled, running ones finish, then every rank is told to stop.
//
// MPI: rank 0 calls MPI from both threads, so `prefill serve` runs with MPI_THREAD_MULTIPLE.
// Control messages (serve_control.h) travel on `control`, a duplicate of the world.
#pragma once

#include <mpi.h>

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "monitoring/prefill_metrics.h"
#include "parallel/mpi_communicator.h"
#include "runtime/execution_context.h"
#include "runtime/model_job.h"
#include "scheduler/request_table.h"

namespace prefill {

struct ServeWorkerOptions {
  MpiCommunicator* world = nullptr;
  MPI_Comm control = MPI_COMM_NULL;
  ExecutionContext* ctx = nullptr;
  const LoadedModel* model = nullptr;
  const PreparedModel* prepared = nullptr;
  PrefillRequestOptions defaults;  // per request: mode, tau, kv_out, kv_target, request_id
  monitoring::PrefillMetrics* metrics = nullptr;
  std::function<bool()> stop_requested = [] { return false; };
  std::string scratch_dir = "/tmp";  // inline prompts become files here while they run
};

absl::Status RunServeWorker(const ServeWorkerOptions& options);

struct ServeDispatcherOptions {
  MPI_Comm control = MPI_COMM_NULL;
  int world_size = 1;
  RequestTable* table = nullptr;
  monitoring::PrefillMetrics* metrics = nullptr;
  std::function<bool()> stop_requested = [] { return false; };
};

absl::Status RunServeDispatcher(const ServeDispatcherOptions& options);

}  // namespace prefill
