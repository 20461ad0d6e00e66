#include "rabbitmq_link.hpp"

#include <thread>

#include "colo/internal/clock.hpp"
#include "mirror.hpp"
#include "source.hpp"

namespace colo::bridge::rabbitmq {
namespace {

using internal::monotonic_ns;
constexpr std::chrono::milliseconds kTimeout{10'000};  // connect, handshake, each RPC
constexpr std::uint64_t kFirstBackoffNs = 100'000'000;  // after a lost connection, then doubling
constexpr std::uint64_t kMaxBackoffNs = 5'000'000'000;

std::string describe_link(const RabbitmqServerConfig& server, const LinkConfig& link) {
  const auto& r = link.rabbitmq;
  std::string d = "rabbitmq server " + server.name;
  if (link.mode == LinkMode::source) return d + ", queue " + r.queue;
  if (r.exchange.empty()) return d + ", queue " + r.routing_key + " (default exchange)";
  d += ", exchange " + r.exchange + " key " + r.routing_key;
  return r.queue.empty() ? d : d + " (queue " + r.queue + ")";
}

}  // namespace

RabbitmqLink::RabbitmqLink(const Config& config, RabbitmqServerConfig server, LinkConfig link, const Log& log)
    : Link(std::move(link), log),
      server_(std::move(server)),
      node_name_(config.node_name),
      ns_(config.ns),
      description_(describe_link(server_, config_)) {}

Result<void> RabbitmqLink::connect() {
  auto opened = Connection::open(server_, kTimeout);
  if (!opened) return std::move(opened).error();
  auto& c = **opened;
  if (auto ok = c.declare(config_.rabbitmq); !ok) return ok;
  if (auto ok = set_up(c); !ok) return ok;
  std::lock_guard<std::mutex> lock(connection_mutex_);
  connection_ = std::move(opened).value();
  return Ok{};
}

void RabbitmqLink::disconnect() {
  std::unique_ptr<Connection> dropped;
  {
    std::lock_guard<std::mutex> lock(connection_mutex_);
    dropped = std::move(connection_);
  }
  dropped.reset();  // outside the lock: a polite close waits for the server (bounded)
}

void RabbitmqLink::interrupt() noexcept {
  std::lock_guard<std::mutex> lock(connection_mutex_);
  if (connection_) connection_->interrupt();
}

void RabbitmqLink::lost(const std::string& why) {
  disconnect();
  on_lost();
  down_since_ns_ = monotonic_ns();
  backoff_ns_ = kFirstBackoffNs;
  next_attempt_ns_ = down_since_ns_ + backoff_ns_;
  report_down("rabbitmq: connection lost: " + why + "; connecting again");
}

bool RabbitmqLink::reconnect() {
  const std::uint64_t now = monotonic_ns();
  if (now < next_attempt_ns_) {
    std::this_thread::sleep_for(std::chrono::nanoseconds(std::min<std::uint64_t>(next_attempt_ns_ - now, 50'000'000)));
    return false;
  }
  if (auto ok = connect(); !ok) {
    disconnect();
    report_error("rabbitmq: connecting again: " + ok.error().message);
    backoff_ns_ = std::min(kMaxBackoffNs, backoff_ns_ * 2);
    next_attempt_ns_ = monotonic_ns() + backoff_ns_;
    return false;
  }
  log_.write(LogLevel::info, "link %s: %s: connected again after %.1f s", config_.name.c_str(), describe().c_str(),
             static_cast<double>(monotonic_ns() - down_since_ns_) / 1e9);
  report_up();
  return true;
}

Result<std::unique_ptr<Link>> make_link(const Config& config, const RabbitmqServerConfig& server,
                                        const LinkConfig& link, const Log& log) {
  switch (link.mode) {
    case LinkMode::mirror: return std::unique_ptr<Link>(new Mirror(config, server, link, log));
    case LinkMode::source: return std::unique_ptr<Link>(new Source(config, server, link, log));
    case LinkMode::spill: break;  // refused by the config's loader
  }
  return Error{Errc::invalid_argument, "link " + link.name + ": a RabbitMQ link mirrors or sources"};
}

}  // namespace colo::bridge::rabbitmq
