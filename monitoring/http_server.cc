#include "monitoring/http_server.h"

#include <civetweb.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "monitoring/civetweb_thread_stack.h"

namespace prefill::monitoring {
namespace {

// civetweb reports why a start failed only through its log callback, from the starting
// thread: collect those lines here while Create runs.
thread_local std::string* start_log = nullptr;

int LogMessage(const mg_connection*, const char* message) {
  if (start_log) {
    if (!start_log->empty()) *start_log += "; ";
    *start_log += message;
  } else {
    std::fprintf(stderr, "http server: civetweb: %s\n", message);
  }
  return 1;  // handled: civetweb prints nothing itself
}

const char* ReasonPhrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 409:
      return "Conflict";
    case 413:
      return "Payload Too Large";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Status";
  }
}

// Writes the whole response. The headers are written here rather than by
// mg_send_http_ok/mg_send_http_error, which add a Date header through gmtime(): not
// thread-safe, and two workers answering at once race on its static buffer.
int SendResponse(mg_connection* conn, const HttpResponse& r, bool head) {
  std::string headers =
      absl::StrCat("HTTP/1.1 ", r.status, " ", ReasonPhrase(r.status),
                   "\r\nContent-Type: ", r.content_type, "\r\nContent-Length: ", r.body.size(),
                   "\r\nCache-Control: no-store\r\nConnection: close\r\n");
  for (const auto& [name, value] : r.headers) absl::StrAppend(&headers, name, ": ", value, "\r\n");
  headers += "\r\n";
  mg_write(conn, headers.data(), headers.size());
  if (!head) mg_write(conn, r.body.data(), r.body.size());
  return r.status;
}

// Opens and closes one connection to the listener, so civetweb's master thread wakes from
// its 2-second poll() and sees the stop flag.
void PokeListener(const std::string& bound_host, int port) {
  std::string host = bound_host;
  if (!host.empty() && host.front() == '[') host = host.substr(1, host.size() - 2);
  if (host.empty() || host == "0.0.0.0") host = "127.0.0.1";
  if (host == "::") host = "::1";
  addrinfo hints{};
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* addresses = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &addresses) != 0) return;
  const int fd = socket(addresses->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd >= 0) {
    (void)connect(fd, addresses->ai_addr, addresses->ai_addrlen);
    close(fd);
  }
  freeaddrinfo(addresses);
}

// The body, up to `limit` bytes; false when it is longer (or the client went away).
bool ReadBody(mg_connection* conn, size_t limit, std::string& body) {
  const mg_request_info* request = mg_get_request_info(conn);
  if (request->content_length > static_cast<long long>(limit)) return false;
  char chunk[16384];
  for (int n; (n = mg_read(conn, chunk, sizeof chunk)) > 0;) {
    if (body.size() + static_cast<size_t>(n) > limit) return false;
    body.append(chunk, static_cast<size_t>(n));
  }
  return true;
}

}  // namespace

absl::StatusOr<HostPort> ParseBindAddress(const std::string& address, const std::string& what) {
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(what, " address '", address, "' ", why,
                                                   " (expected host:port, e.g. 127.0.0.1:9400)"));
  };
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) return bad("has no host");
  HostPort hp;
  hp.host = address.substr(0, colon);
  const std::string port = address.substr(colon + 1);
  if (port.empty() || port.find_first_not_of("0123456789") != std::string::npos ||
      !absl::SimpleAtoi(port, &hp.port) || hp.port > 65535) {
    return bad("has no port number in [0, 65535]");
  }
  const bool bracketed = hp.host.front() == '[';
  if (bracketed != (hp.host.back() == ']') ||
      (!bracketed && hp.host.find(':') != std::string::npos)) {
    return bad("needs an IPv6 host in brackets, like [::1]:9400");
  }
  return hp;
}

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Create(const std::string& bind_address,
                                                               const std::string& what,
                                                               int num_threads, HttpHandler handler,
                                                               size_t max_body_bytes) {
  absl::StatusOr<HostPort> hp = ParseBindAddress(bind_address, what);
  if (!hp.ok()) return hp.status();
  if (num_threads < 1)
    return absl::InvalidArgumentError(absl::StrCat(what, ": needs at least one thread"));
  if (!ThreadStackFloorActive()) {
    return absl::InternalError(absl::StrCat(
        what, ": pthread_attr_setstacksize is not interposed (civetweb_thread_stack.h)"));
  }
  static std::once_flag init_once;
  std::call_once(init_once, [] { mg_init_library(0); });

  std::unique_ptr<HttpServer> server(new HttpServer());
  server->host_ = hp->host;
  server->handler_ = std::move(handler);
  server->max_body_bytes_ = max_body_bytes;
  const std::string ports = absl::StrCat(hp->host, ":", hp->port);
  const std::string threads = absl::StrCat(num_threads);
  const char* options[] = {
      "listening_ports", ports.c_str(),       "num_threads", threads.c_str(), "request_timeout_ms",
      "10000",           "enable_keep_alive", "no",          nullptr};
  mg_callbacks callbacks{};
  callbacks.log_message = LogMessage;
  mg_init_data init{&callbacks, server.get(), options};
  char error_text[256] = "";
  unsigned error_code = 0;
  mg_error_data error{&error_code, error_text, sizeof error_text};
  std::string log;
  start_log = &log;
  server->ctx_ = mg_start2(&init, &error);
  start_log = nullptr;
  if (!server->ctx_) {
    const std::string why = log.empty() ? std::string(error_text) : log;
    if (absl::StrContains(why, "Address already in use")) {
      return absl::UnavailableError(
          absl::StrCat(what, ": cannot listen on ", ports,
                       ": the port is already in use (another process, or another rank on this "
                       "host, holds it; choose another port)"));
    }
    if (absl::StrContains(why, "Cannot assign requested address")) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": cannot listen on ", ports,
                                                     ": the address is not one of this host's"));
    }
    return absl::UnavailableError(absl::StrCat(what, ": cannot listen on ", ports, ": ", why));
  }
  mg_server_port bound[4];
  const int n = mg_get_server_ports(server->ctx_, 4, bound);
  server->port_ = n > 0 ? bound[0].port : hp->port;
  mg_set_request_handler(server->ctx_, "/", &HttpServer::HandleRequest, server.get());
  return server;
}

HttpServer::~HttpServer() {
  if (!ctx_) return;
  // mg_stop joins civetweb's threads, so no request runs after it; its master thread
  // notices the stop only when poll() returns, so a helper pokes the port meanwhile
  // (shutdown in ~10 ms instead of up to 2 s).
  std::atomic<bool> stopped{false};
  std::thread poker([&] {
    while (!stopped.load()) {
      PokeListener(host_, port_);
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
  mg_stop(ctx_);
  stopped = true;
  poker.join();
}

int HttpServer::HandleRequest(mg_connection* conn, void* self) {
  const HttpServer& server = *static_cast<const HttpServer*>(self);
  const mg_request_info* info = mg_get_request_info(conn);
  HttpRequest request;
  request.method = info->request_method ? info->request_method : "";
  request.path = info->local_uri ? info->local_uri : "";
  if (const char* auth = mg_get_header(conn, "Authorization")) request.authorization = auth;
  const bool head = request.method == "HEAD";
  if (!ReadBody(conn, server.max_body_bytes_, request.body)) {
    return SendResponse(conn,
                        {413,
                         "application/json",
                         absl::StrCat("{\"error\": \"the request body is over ",
                                      server.max_body_bytes_, " bytes\"}\n"),
                         {}},
                        head);
  }
  return SendResponse(conn, server.handler_(request), head);
}

}  // namespace prefill::monitoring
