// bridge/links/rabbitmq/rabbitmq_link.hpp — colod's RabbitMQ links
// (docs/rabbitmq.md): what the two modes share, and make_link(), which
// LinkService calls for a [[link]] whose other side is a [[rabbitmq]] server.
//
//   mirror.cpp  object -> an exchange with a routing key (or a queue):
//               persistent messages, publisher confirms; the ring is read
//               past a message only once RabbitMQ confirmed it; at least
//               once across colod crashes (checkpoint.hpp)
//   source.cpp  a queue -> object: basic.consume with manual acks and a
//               prefetch window; a delivery is acknowledged once the object
//               has it for good (a queue: once a local consumer released it)
//
// CONNECTION. One AMQP connection with one channel per link. open()
// connects, declares (or checks) the exchange, queue and binding, and sets
// the mode's channel up (set_up()). A connection lost later (the server
// restarted, the network dropped it, a missed heartbeat, the server closed
// the channel) is an outage: the link goes `down` (counted in `outages`,
// logged), on_lost() lets the mode put its state back, and step() connects
// again with backoff (100 ms, doubling to 5 s) until it is back (logged
// with how long it was down).
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "../link.hpp"
#include "amqp_client.hpp"

namespace colo::bridge::rabbitmq {

Result<std::unique_ptr<Link>> make_link(const Config& config, const RabbitmqServerConfig& server,
                                        const LinkConfig& link, const Log& log);

class RabbitmqLink : public Link {
 public:
  RabbitmqLink(const Config& config, RabbitmqServerConfig server, LinkConfig link, const Log& log);

 protected:
  std::string describe() const override { return description_; }
  const char* system() const noexcept override { return "rabbitmq"; }
  void interrupt() noexcept override;

  // Connects, declares, set_up(). On success connection_ is usable.
  Result<void> connect();
  // The mode's channel set-up after the declarations (confirm.select;
  // basic.qos and basic.consume).
  virtual Result<void> set_up(Connection& connection) = 0;
  // The connection was lost (or a step found it unusable): it is dropped,
  // the link is `down`, and on_lost() puts the mode's state back.
  void lost(const std::string& why);
  virtual void on_lost() = 0;
  // Called by step() while connection_ is null: connects again when the
  // backoff allows; true once connected (the link is `running` again).
  bool reconnect();
  // Drops the connection (politely if it is usable). Link thread only.
  void disconnect();

  std::unique_ptr<Connection> connection_;  // null while disconnected
  const RabbitmqServerConfig server_;
  const std::string node_name_;  // our [node].name: the origin of what we mirror
  const std::string ns_;

 private:
  const std::string description_;
  std::mutex connection_mutex_;  // interrupt() against disconnect()
  std::uint64_t next_attempt_ns_ = 0, backoff_ns_ = 0, down_since_ns_ = 0;
};

}  // namespace colo::bridge::rabbitmq
