// ServeApi: the JSON API of `prefill serve`, served by rank 0 (monitoring::HttpServer):
//   POST   /v1/prefill          a ServeRequest -> 202 {"id", "state": "queued", "tokens", "ranks"}
//   GET    /v1/requests/{id}    -> 200 RequestTable::Describe (the `prefill run` record once done)
//   DELETE /v1/requests/{id}    a queued request -> 200 cancelled; 409 once it runs
//   GET    /healthz             200 while the process serves
//   GET    /readyz              200 once every rank loaded the model, 503 while stopping
// Errors are JSON {"error": "..."}: 400 bad request (field, file, length, vocabulary, memory),
// 401 without the API key, 404, 405, 409 duplicate id or not cancellable, 413 body too large,
// 429 queue full (Retry-After), 503 stopping. Admission reads only what it must (the prompt's
// length); nothing reaches the ranks before it passed. Thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "monitoring/http_server.h"
#include "runtime/model_config.h"
#include "scheduler/placement.h"
#include "scheduler/request_table.h"
#include "scheduler/serve_request.h"

namespace prefill {

struct ServeApiOptions {
  ServeRequestLimits limits;
  PlacementPolicy placement;
  ModelConfig config;
  // Bytes one rank may hold (the memory estimate's limit); 0: not checked at admission.
  int64_t memory_per_rank = 0;
  std::string api_key;  // non-empty: /v1/ needs "Authorization: Bearer <key>"
  int retry_after_seconds = 5;
  std::function<bool()> ready = [] { return true; };
};

class ServeApi {
 public:
  ServeApi(RequestTable& table, ServeApiOptions options)
      : table_(table), options_(std::move(options)) {}
  monitoring::HttpResponse Handle(const monitoring::HttpRequest& request) const;

 private:
  monitoring::HttpResponse Submit(const std::string& body) const;
  monitoring::HttpResponse OnRequest(const std::string& method, const std::string& id) const;
  bool Authorized(const std::string& header) const;

  RequestTable& table_;
  const ServeApiOptions options_;
};

}  // namespace prefill
