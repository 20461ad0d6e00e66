// bridge/links/rabbitmq/source.hpp — a RabbitMQ queue's messages into a
// topic or queue (docs/rabbitmq.md, "Source").
//
// The link consumes its queue (basic.consume, manual acks, basic.qos
// prefetch = [link.rabbitmq] prefetch) and publishes each delivery into the
// object, in delivery order, tagged as relayed (origin: the id of
// "rabbitmq/<server>/<queue>", origin sequence: counted on from what the
// ring holds of that origin; so a mirror never sends it back and
// federation never forwards it) with its metadata (colo/metadata.hpp):
// queue, exchange, routing key, message id, content type, timestamp,
// headers, and redelivery = 1 when RabbitMQ's redelivered flag is set.
//
// ACKNOWLEDGEMENTS go to RabbitMQ only for what the object has for good:
//   topic: once the message is in the ring (basic.ack, multiple, per batch);
//   queue: once a local consumer released (acknowledged, with acks) it and
//          every message before it (internal::released_below).
// So a colod crash or a local consumer's crash loses nothing: RabbitMQ
// delivers what it has no ack for again, flagged redelivered (a local
// consumer that died holding a message gets it again from the ring with
// deliveries() + 1, as for any queue).
//
// BACK-PRESSURE: when the ring is full, deliveries wait in colod's memory;
// RabbitMQ sends at most `prefetch` unacknowledged, so that bounds them.
// Nothing is dropped. A message larger than the object's max_message (with
// its metadata) is rejected (basic.reject, requeue false: the queue's
// dead-letter exchange gets it if it has one), counted as skipped and logged.
#pragma once

#include <deque>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "colo/channel.hpp"
#include "rabbitmq_link.hpp"

namespace colo::bridge::rabbitmq {

class Source final : public RabbitmqLink {
 public:
  Source(const Config& config, const RabbitmqServerConfig& server, const LinkConfig& link, const Log& log);
  ~Source() override { stop(); }

 private:
  Result<void> open() override;
  void step() override;
  void idle() override;
  void close() override;
  Result<void> set_up(Connection& connection) override;
  void on_lost() override;

  // A delivery not yet in the ring.
  struct Delivery {
    std::uint64_t tag;
    std::vector<std::byte> metadata;
    std::vector<std::byte> body;
  };
  void read_deliveries(std::chrono::microseconds wait);
  void take(const Incoming& in);
  bool publish_pending();  // false while the ring has no room (or the connection went)
  void acknowledge_released();  // queue: acks for what local consumers released
  void update_gauges();

  LinkObject object_;
  std::optional<Publisher> publisher_;
  const std::uint32_t origin_;
  std::uint64_t next_origin_seq_ = 1;
  std::deque<Delivery> pending_;
  // Queue: in the ring, not yet released: (ring sequence + 1, delivery tag), in order.
  std::deque<std::pair<std::uint64_t, std::uint64_t>> unreleased_;
};

}  // namespace colo::bridge::rabbitmq
