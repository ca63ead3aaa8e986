#include "monitoring/exposer.h"

#include <civetweb.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "monitoring/civetweb_thread_stack.h"
#include "monitoring/text_format.h"

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
    std::fprintf(stderr, "monitoring: civetweb: %s\n", message);
  }
  return 1;  // handled: civetweb prints nothing itself
}

struct HostPort {
  std::string host;  // brackets kept for IPv6
  int port = 0;
};

absl::StatusOr<HostPort> ParseBindAddress(const std::string& address) {
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics address '", address, "' ", why, " (expected host:port, e.g. 127.0.0.1:9400)"));
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
  if (bracketed != (hp.host.back() == ']') || (!bracketed && hp.host.find(':') != std::string::npos)) {
    return bad("needs an IPv6 host in brackets, like [::1]:9400");
  }
  return hp;
}

// Writes the whole response. The headers are written here rather than by
// mg_send_http_ok/mg_send_http_error, which add a Date header through gmtime(): not
// thread-safe, and two workers answering at once race on its static buffer.
int SendResponse(mg_connection* conn, int status, const char* reason, const char* content_type,
                 const std::string& body, bool head) {
  const std::string headers = absl::StrCat("HTTP/1.1 ", status, " ", reason, "\r\nContent-Type: ", content_type,
                                           "\r\nContent-Length: ", body.size(),
                                           "\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n");
  mg_write(conn, headers.data(), headers.size());
  if (!head) mg_write(conn, body.data(), body.size());
  return status;
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

}  // namespace

absl::StatusOr<std::unique_ptr<Exposer>> Exposer::Create(const std::string& bind_address, int num_threads) {
  absl::StatusOr<HostPort> hp = ParseBindAddress(bind_address);
  if (!hp.ok()) return hp.status();
  if (num_threads < 1) return absl::InvalidArgumentError("the metrics exposer needs at least one thread");
  if (!ThreadStackFloorActive()) {
    return absl::InternalError("metrics endpoint: pthread_attr_setstacksize is not interposed (civetweb_thread_stack.h)");
  }
  static std::once_flag init_once;
  std::call_once(init_once, [] { mg_init_library(0); });

  std::unique_ptr<Exposer> exposer(new Exposer());
  exposer->host_ = hp->host;
  const std::string ports = absl::StrCat(hp->host, ":", hp->port);
  const std::string threads = absl::StrCat(num_threads);
  const char* options[] = {"listening_ports", ports.c_str(), "num_threads", threads.c_str(),
                           "request_timeout_ms", "10000", "enable_keep_alive", "no", nullptr};
  mg_callbacks callbacks{};
  callbacks.log_message = LogMessage;
  mg_init_data init{&callbacks, exposer.get(), options};
  char error_text[256] = "";
  unsigned error_code = 0;
  mg_error_data error{&error_code, error_text, sizeof error_text};
  std::string log;
  start_log = &log;
  exposer->ctx_ = mg_start2(&init, &error);
  start_log = nullptr;
  if (!exposer->ctx_) {
    const std::string why = log.empty() ? std::string(error_text) : log;
    if (absl::StrContains(why, "Address already in use")) {
      return absl::UnavailableError(absl::StrCat(
          "metrics endpoint: cannot listen on ", ports,
          ": the port is already in use (another process, or another rank on this host, holds it; "
          "choose another metrics port, or 0 to turn the endpoint off)"));
    }
    if (absl::StrContains(why, "Cannot assign requested address")) {
      return absl::InvalidArgumentError(absl::StrCat("metrics endpoint: cannot listen on ", ports,
                                                     ": the address is not one of this host's"));
    }
    return absl::UnavailableError(absl::StrCat("metrics endpoint: cannot listen on ", ports, ": ", why));
  }
  mg_server_port bound[4];
  const int n = mg_get_server_ports(exposer->ctx_, 4, bound);
  exposer->port_ = n > 0 ? bound[0].port : hp->port;
  mg_set_request_handler(exposer->ctx_, "/", &Exposer::HandleRequest, exposer.get());
  return exposer;
}

Exposer::~Exposer() {
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

void Exposer::RegisterCollectable(const std::weak_ptr<Collectable>& collectable) {
  absl::MutexLock lock(&mu_);
  collectables_.push_back(collectable);
}

void Exposer::RemoveCollectable(const std::weak_ptr<Collectable>& collectable) {
  absl::MutexLock lock(&mu_);
  const auto same = [&](const std::weak_ptr<Collectable>& c) {
    return !c.owner_before(collectable) && !collectable.owner_before(c);
  };
  collectables_.erase(std::remove_if(collectables_.begin(), collectables_.end(), same), collectables_.end());
}

std::string Exposer::url() const { return absl::StrCat("http://", host_, ":", port_, "/metrics"); }

std::string Exposer::Scrape() const {
  std::vector<std::shared_ptr<Collectable>> live;
  {
    absl::MutexLock lock(&mu_);
    std::erase_if(collectables_, [](const std::weak_ptr<Collectable>& c) { return c.expired(); });
    for (const auto& c : collectables_) {
      if (auto locked = c.lock()) live.push_back(std::move(locked));
    }
  }
  std::vector<FamilySnapshot> families;
  for (const auto& c : live) {
    for (FamilySnapshot& f : c->Collect()) {
      auto same = std::find_if(families.begin(), families.end(),
                               [&](const FamilySnapshot& g) { return g.name == f.name; });
      if (same == families.end()) {
        families.push_back(std::move(f));
        continue;
      }
      // The same name from two collectables: one group, each label set once.
      if (same->type != f.type) continue;
      for (MetricSnapshot& m : f.metrics) {
        const bool seen = std::any_of(same->metrics.begin(), same->metrics.end(),
                                      [&](const MetricSnapshot& x) { return x.labels == m.labels; });
        if (!seen) same->metrics.push_back(std::move(m));
      }
      std::sort(same->metrics.begin(), same->metrics.end(),
                [](const MetricSnapshot& a, const MetricSnapshot& b) { return a.labels < b.labels; });
    }
  }
  std::stable_sort(families.begin(), families.end(),
                   [](const FamilySnapshot& a, const FamilySnapshot& b) { return a.name < b.name; });
  return SerializeText(families);
}

int Exposer::HandleRequest(mg_connection* conn, void* self) {
  const mg_request_info* request = mg_get_request_info(conn);
  const char* uri = request->local_uri ? request->local_uri : "";
  const bool head = std::strcmp(request->request_method, "HEAD") == 0;
  if (std::strcmp(uri, "/metrics") != 0) {
    return SendResponse(conn, 404, "Not Found", "text/plain; charset=utf-8",
                        "Not found: metrics are served at /metrics\n", head);
  }
  if (!head && std::strcmp(request->request_method, "GET") != 0) {
    return SendResponse(conn, 405, "Method Not Allowed", "text/plain; charset=utf-8",
                        "Only GET and HEAD are allowed\n", false);
  }
  return SendResponse(conn, 200, "OK", kTextContentType, static_cast<const Exposer*>(self)->Scrape(), head);
}

}  // namespace prefill::monitoring
