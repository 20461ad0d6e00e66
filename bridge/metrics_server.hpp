// bridge/metrics_server.hpp — colod's /metrics and /health over HTTP.
//
// Why not an HTTP library: cpp-httplib (which colod uses as etcd's client)
// serves each connection on a thread of a fixed pool with a timeout per
// read only, so 8 clients that send a byte every few seconds hold every
// thread and the endpoint stops answering (slowloris); it bounds neither
// the time a request may take to arrive nor the connections it keeps. What
// Prometheus needs is two GETs, so this is one thread, one poll(2) loop:
//
//   - a request must arrive whole within `request_timeout` of its accept
//     (and its answer be taken by the client within the same time), else
//     the connection is closed;
//   - at most `max_connections` are kept: a new one closes the oldest, so
//     slow clients cannot lock a fast scraper out;
//   - a request line and headers of more than `max_request` bytes are
//     refused (400), anything but GET /metrics or /health gets 404 or 405,
//     and every answer closes its connection (HTTP/1.1, Connection: close).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "colo/error.hpp"

namespace colo::bridge {

class MetricsServer {
 public:
  struct Limits {
    std::size_t max_connections = 32;
    std::chrono::milliseconds request_timeout{2000};
    std::size_t max_request = 8192;
  };

  // Listens on address:port (an IPv4 or IPv6 address; port 0 picks one,
  // see port()) and serves from a thread of its own. `metrics` renders
  // the Prometheus text; it is called on that thread.
  static Result<std::unique_ptr<MetricsServer>> start(const std::string& address, std::uint16_t port, Limits limits,
                                                      std::function<std::string()> metrics);
  ~MetricsServer();  // stops and joins the thread, closes every connection
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  std::uint16_t port() const noexcept { return port_; }

 private:
  MetricsServer(int listen_fd, int wake_fd, std::uint16_t port, Limits limits, std::function<std::string()> metrics);
  void run();

  int listen_fd_, wake_fd_;
  std::uint16_t port_;
  Limits limits_;
  std::function<std::string()> metrics_;
  std::thread thread_;  // last: starts after the members it uses
};

}  // namespace colo::bridge
