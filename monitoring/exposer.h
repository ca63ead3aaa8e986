// Exposer: serves GET /metrics over HTTP with Debian's civetweb (C API), in the text format
// 0.0.4, from the collectables registered with it (usually one Registry).
//
//   absl::StatusOr<std::unique_ptr<Exposer>> exposer = Exposer::Create("127.0.0.1:9400");
//   if (!exposer.ok()) return exposer.status();   // e.g. Unavailable: port in use
//   (*exposer)->RegisterCollectable(registry);    // shared_ptr<Registry>, held weakly
//
// Two worker threads (not civetweb's default of 50) serve scrapes; each scrape snapshots
// the registries and writes the text, so a slow client never holds a metric's lock. Only
// /metrics is served (GET and HEAD); there is no document root. The destructor stops the
// server and waits for a scrape in flight to finish (about 10 ms). Like any civetweb
// server, starting one sets SIGPIPE to ignored for the whole process.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "monitoring/collectable.h"

namespace prefill::monitoring {

class HttpServer;
struct HttpRequest;
struct HttpResponse;

class Exposer {
 public:
  // `bind_address` is "host:port": "127.0.0.1:9400", "0.0.0.0:9400" (every interface),
  // "[::1]:9400". Port 0 lets the kernel choose a free port (see port()).
  // InvalidArgument for a malformed address; Unavailable when the port is taken.
  static absl::StatusOr<std::unique_ptr<Exposer>> Create(const std::string& bind_address,
                                                         int num_threads = 2);
  ~Exposer();
  Exposer(const Exposer&) = delete;
  Exposer& operator=(const Exposer&) = delete;

  // Held weakly: a collectable that is destroyed simply drops out of the scrape.
  void RegisterCollectable(const std::weak_ptr<Collectable>& collectable);
  void RemoveCollectable(const std::weak_ptr<Collectable>& collectable);

  int port() const;                 // the bound port
  const std::string& host() const;  // as given
  std::string url() const;          // http://host:port/metrics
  // The body GET /metrics serves now: the collectables' families merged by name (the first
  // collectable to define a name wins a clash of types), sorted by name.
  std::string Scrape() const;

 private:
  Exposer() = default;
  HttpResponse Handle(const HttpRequest& request) const;

  mutable absl::Mutex mu_;
  mutable std::vector<std::weak_ptr<Collectable>> collectables_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<HttpServer> server_;  // last: stopped before the collectables go
};

}  // namespace prefill::monitoring
