// A plain-socket HTTP/1.1 client for the exposer tests (no curl in the test binary).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <string>

namespace prefill::monitoring::testing {

struct HttpResponse {
  int status = 0;       // 0 when the connection failed
  std::string headers;  // the status line and headers, CRLFs kept
  std::string body;

  // The value of header `name` (case-insensitive), or "".
  std::string Header(const std::string& name) const {
    size_t pos = 0;
    while ((pos = headers.find("\r\n", pos)) != std::string::npos) {
      pos += 2;
      const size_t colon = headers.find(':', pos);
      const size_t end = headers.find("\r\n", pos);
      if (colon == std::string::npos || end == std::string::npos || colon > end) continue;
      std::string key = headers.substr(pos, colon - pos);
      if (strcasecmp(key.c_str(), name.c_str()) != 0) continue;
      size_t v = colon + 1;
      while (v < end && headers[v] == ' ') ++v;
      return headers.substr(v, end - v);
    }
    return "";
  }
};

inline HttpResponse HttpRequest(int port, const std::string& method, const std::string& path) {
  HttpResponse response;
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return response;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval timeout{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return response;
  }
  const std::string request =
      method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    close(fd);
    return response;
  }
  std::string raw;
  char buffer[4096];
  ssize_t n;
  while ((n = recv(fd, buffer, sizeof buffer, 0)) > 0) raw.append(buffer, n);
  close(fd);
  const size_t split = raw.find("\r\n\r\n");
  if (split == std::string::npos || raw.compare(0, 9, "HTTP/1.1 ") != 0) return response;
  response.headers = raw.substr(0, split + 2);
  response.body = raw.substr(split + 4);
  response.status = std::stoi(raw.substr(9, 3));
  return response;
}

// Binds and listens on 127.0.0.1:0; returns the socket (the port stays taken until it is
// closed) and sets *port.
inline int ListenOnFreePort(int* port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      listen(fd, 1) != 0)
    return -1;
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  *port = ntohs(addr.sin_port);
  return fd;
}

}  // namespace prefill::monitoring::testing
