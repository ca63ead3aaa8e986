// HttpServer: a small HTTP/1.1 server on Debian's civetweb (C API) that hands every request
// to one function. The metrics Exposer and the prefill service's JSON API both run on it.
//
//   auto server = HttpServer::Create("127.0.0.1:8000", "prefill service", 4,
//                                    [](const HttpRequest& r) { return HttpResponse{200, ...}; });
//
// The handler runs on civetweb's worker threads (num_threads of them, several at once) and
// must be thread-safe. Responses are written whole with Connection: close. The destructor
// stops the server and waits for the requests in flight (about 10 ms). Like any civetweb
// server, starting one sets SIGPIPE to ignored for the whole process.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

struct mg_context;
struct mg_connection;

namespace prefill::monitoring {

struct HttpRequest {
  std::string method;         // "GET", "POST", ...
  std::string path;           // without the query string
  std::string authorization;  // the Authorization header; empty when absent
  std::string body;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra, e.g. Retry-After
};

using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

struct HostPort {
  std::string host;  // brackets kept for IPv6
  int port = 0;
};

// "host:port" (IPv6 hosts in brackets; port 0..65535). `what` names the address in errors.
absl::StatusOr<HostPort> ParseBindAddress(const std::string& address, const std::string& what);

class HttpServer {
 public:
  // `bind_address` as ParseBindAddress takes it; port 0 lets the kernel choose (see port()).
  // Request bodies over max_body_bytes get 413 without reaching the handler.
  // InvalidArgument for a malformed address or one not of this host; Unavailable when the
  // port is taken. `what` ("metrics endpoint", "prefill service") names the server in errors.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Create(const std::string& bind_address,
                                                            const std::string& what,
                                                            int num_threads, HttpHandler handler,
                                                            size_t max_body_bytes = 1 << 20);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const { return port_; }
  const std::string& host() const { return host_; }

 private:
  HttpServer() = default;
  static int HandleRequest(mg_connection* conn, void* self);

  mg_context* ctx_ = nullptr;
  std::string host_;
  int port_ = 0;
  size_t max_body_bytes_ = 0;
  HttpHandler handler_;
};

}  // namespace prefill::monitoring
