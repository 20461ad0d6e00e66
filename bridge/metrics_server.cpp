#include "metrics_server.hpp"

#include <arpa/inet.h>   // inet_pton
#include <netinet/in.h>  // sockaddr_in(6)
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "colo/internal/clock.hpp"
#include "colo/internal/text.hpp"

namespace colo::bridge {
namespace {

struct Connection {
  int fd = -1;
  std::uint64_t deadline_ns = 0;  // the request must have come, and the answer gone, by then
  std::uint64_t accepted_ns = 0;
  std::string in;                 // the request so far
  std::string out;                // the answer not yet written
  std::size_t written = 0;
  bool answered = false;
};

std::string response(const char* status, const std::string& content_type, const std::string& body) {
  return std::string("HTTP/1.1 ") + status + "\r\nContent-Type: " + content_type +
         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
}

// The answer to a complete request head.
std::string answer(const std::string& head, const std::function<std::string()>& metrics) {
  const auto line_end = head.find_first_of("\r\n");
  const std::string line = head.substr(0, line_end);
  const auto sp1 = line.find(' ');
  const auto sp2 = sp1 == std::string::npos ? std::string::npos : line.find(' ', sp1 + 1);
  if (sp2 == std::string::npos || !line.substr(sp2 + 1).starts_with("HTTP/"))
    return response("400 Bad Request", "text/plain", "bad request\n");
  const std::string method = line.substr(0, sp1), target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  if (method != "GET") return response("405 Method Not Allowed", "text/plain", "only GET\n");
  const std::string path = target.substr(0, target.find('?'));
  if (path == "/metrics") return response("200 OK", "text/plain; version=0.0.4", metrics());
  if (path == "/health") return response("200 OK", "text/plain", "ok\n");
  return response("404 Not Found", "text/plain", "not found: /metrics or /health\n");
}

}  // namespace

Result<std::unique_ptr<MetricsServer>> MetricsServer::start(const std::string& address, std::uint16_t port,
                                                            Limits limits, std::function<std::string()> metrics) {
  sockaddr_storage storage{};
  socklen_t length = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&storage);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&storage);
  if (::inet_pton(AF_INET, address.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    length = sizeof *v4;
  } else if (::inet_pton(AF_INET6, address.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    length = sizeof *v6;
  } else {
    return Error{Errc::invalid_argument, "metrics: '" + internal::escaped(address, 64) + "' is not an IP address"};
  }
  const int fd = ::socket(storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Error{Errc::system, internal::errno_text("metrics: socket")};
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&storage), length) != 0 || ::listen(fd, 64) != 0) {
    const auto failure = internal::errno_text("metrics: cannot listen on " + address + ":" + std::to_string(port));
    ::close(fd);
    return Error{Errc::system, failure};
  }
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&storage), &length) == 0)
    port = ntohs(storage.ss_family == AF_INET ? v4->sin_port : v6->sin6_port);
  const int wake = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake < 0) {
    ::close(fd);
    return Error{Errc::system, internal::errno_text("metrics: eventfd")};
  }
  return std::unique_ptr<MetricsServer>(new MetricsServer(fd, wake, port, limits, std::move(metrics)));
}

MetricsServer::MetricsServer(int listen_fd, int wake_fd, std::uint16_t port, Limits limits,
                             std::function<std::string()> metrics)
    : listen_fd_(listen_fd), wake_fd_(wake_fd), port_(port), limits_(limits), metrics_(std::move(metrics)),
      thread_([this] { run(); }) {}

MetricsServer::~MetricsServer() {
  const std::uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof one);
  thread_.join();
  ::close(listen_fd_);
  ::close(wake_fd_);
}

void MetricsServer::run() {
  std::vector<Connection> connections;
  auto close_at = [&](std::size_t i) {
    ::close(connections[i].fd);
    connections.erase(connections.begin() + static_cast<std::ptrdiff_t>(i));
  };
  struct CloseAll {
    std::vector<Connection>& connections;
    ~CloseAll() {
      for (const auto& c : connections) ::close(c.fd);
    }
  } close_all{connections};
  std::vector<pollfd> fds;
  for (;;) {
    const std::uint64_t now = internal::monotonic_ns();
    // Connections past their deadline go first: a slow client gets no more.
    for (std::size_t i = connections.size(); i-- > 0;)
      if (now >= connections[i].deadline_ns) close_at(i);
    fds.clear();
    fds.push_back({wake_fd_, POLLIN, 0});
    fds.push_back({listen_fd_, POLLIN, 0});
    std::uint64_t next_deadline = now + 1'000'000'000;
    for (const auto& c : connections) {
      fds.push_back({c.fd, static_cast<short>(c.answered ? POLLOUT : POLLIN), 0});
      next_deadline = std::min(next_deadline, c.deadline_ns);
    }
    const int timeout_ms = static_cast<int>((next_deadline - now + 999'999) / 1'000'000);
    if (::poll(fds.data(), fds.size(), timeout_ms) < 0 && errno != EINTR) return;
    if (fds[0].revents != 0) return;  // stop
    // Served in reverse, so that closing one does not move those not yet seen.
    for (std::size_t i = connections.size(); i-- > 0;) {
      const short revents = fds[i + 2].revents;
      if (revents == 0) continue;
      auto& c = connections[i];
      if (!c.answered) {
        char buf[4096];
        const ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
          close_at(i);
          continue;
        }
        if (n > 0) c.in.append(buf, static_cast<std::size_t>(n));
        const auto end = c.in.find("\r\n\r\n");
        const auto bare_end = c.in.find("\n\n");
        if (end == std::string::npos && bare_end == std::string::npos) {
          if (c.in.size() > limits_.max_request) {
            c.out = response("400 Bad Request", "text/plain", "request too large\n");
            c.answered = true;
          }
          continue;
        }
        c.out = answer(c.in.substr(0, std::min(end, bare_end)), metrics_);
        c.answered = true;
      }
      const ssize_t n = ::send(c.fd, c.out.data() + c.written, c.out.size() - c.written, MSG_NOSIGNAL);
      if (n < 0 && errno != EAGAIN && errno != EINTR) {
        close_at(i);
        continue;
      }
      if (n > 0) c.written += static_cast<std::size_t>(n);
      if (c.written == c.out.size()) close_at(i);
    }
    if (fds[1].revents & POLLIN) {
      for (;;) {
        const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) break;
        if (connections.size() >= limits_.max_connections) {
          // The oldest goes: slow clients cannot hold the newest out.
          const auto oldest = std::min_element(connections.begin(), connections.end(), [](const auto& a, const auto& b) {
            return a.accepted_ns < b.accepted_ns;
          });
          close_at(static_cast<std::size_t>(oldest - connections.begin()));
        }
        const std::uint64_t at = internal::monotonic_ns();
        connections.push_back({fd, at + static_cast<std::uint64_t>(limits_.request_timeout.count()) * 1'000'000, at,
                               {}, {}, 0, false});
      }
    }
  }
}

}  // namespace colo::bridge
