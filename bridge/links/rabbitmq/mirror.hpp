// bridge/links/rabbitmq/mirror.hpp — a topic's or queue's messages into a
// RabbitMQ exchange (docs/rabbitmq.md, "Mirror").
//
// WHAT GOES OUT: every message published on this host (origin() == 0), in
// sequence order, relayed ones skipped (as a Kafka mirror). Each one is
// published persistent (delivery mode 2), mandatory (an unroutable message
// comes back: counted and logged, never silently dropped), with headers
// colo.origin (node name), colo.object, colo.seq (its sequence in the
// object), colo.epoch (the object's creation time, ns) and colo.time (when
// colod read it, ns), colo.redelivery = 1 if it may be in RabbitMQ already,
// and the timestamp property (s).
//
// CONFIRMS: the channel is in confirm mode; at most `window` messages are
// published and not yet confirmed. basic.ack (one, or `multiple`: every
// tag up to it) confirms; basic.nack refuses (block: published again over
// a new connection; lossy: lost); basic.return (unroutable) comes before
// its message's ack and marks it skipped (lossy: lost).
//
// READERS (in the object's ring), as the Kafka mirror's:
//   ahead   what to publish: a block or lossy subscriber, or a tap (queue).
//   retain  block mode only: held at the oldest message not yet confirmed,
//           so the ring keeps everything from there and holds local writers
//           back when full: nothing is lost while colod runs.
//
//   ring:  ... [confirmed][published, unconfirmed][read][unread] ...
//                        ^retain, checkpoint          ^ahead
//
// AT LEAST ONCE. RabbitMQ cannot be read back, so where the mirror is lives
// in a checkpoint (checkpoint.hpp): confirmed_below, moved as confirms
// come, and published_below, moved before each publish. A mirror that
// starts again (colod killed and restarted) resumes at confirmed_below and
// marks what it publishes below published_below with colo.redelivery; the
// same after a lost connection (block mode: everything unconfirmed is
// published again, marked). So a consumer sees each message at least once,
// and a copy it may have seen before is marked, with (colo.origin,
// colo.object, colo.epoch, colo.seq) to deduplicate by.
//
// LOSSY: no retain; what is unconfirmed when the connection goes is lost
// (counted and logged), and while RabbitMQ is unreachable the mirror keeps
// reading the ring and drops what it reads (counted, logged with sequences).
#pragma once

#include <deque>
#include <optional>
#include <string>

#include "checkpoint.hpp"
#include "colo/channel.hpp"
#include "rabbitmq_link.hpp"

namespace colo::bridge::rabbitmq {

class Mirror final : public RabbitmqLink {
 public:
  Mirror(const Config& config, const RabbitmqServerConfig& server, const LinkConfig& link, const Log& log);
  ~Mirror() override { stop(); }

 private:
  Result<void> open() override;
  void step() override;
  void idle() override;
  void close() override;
  Result<void> set_up(Connection& connection) override { return connection.confirm_select(); }
  void on_lost() override;

  // A message published and not yet confirmed; in_flight_[i] has the
  // delivery tag first_tag_ + i (tags count publishes on the channel).
  struct InFlight {
    std::uint64_t seq;
    std::uint32_t bytes;
    bool done;      // confirmed (or refused) already: waits for those before it
    bool returned;  // came back unroutable (counted then)
  };
  Result<void> open_ahead(std::uint64_t from, bool restarted);
  // Publishes the held batch from next_in_batch_ on; false when the window
  // is full or the connection went (then lost() has run).
  bool publish_batch();
  bool publish(const MessageView& m);
  // Confirms and returns: waits up to `wait` for the first frame, then
  // takes what is there. lost() on a broken connection.
  void read_frames(std::chrono::microseconds wait);
  void on_confirm(std::uint64_t tag, bool multiple, bool ack);
  void on_return(const Incoming& in);
  void drop_while_down();  // lossy, disconnected
  void advance_retain();
  std::uint64_t confirmed_below() const noexcept;
  void update_gauges();
  void note_lost(std::uint64_t first, std::uint64_t last, std::uint64_t count, const char* why);

  const bool lossy_;
  const std::uint32_t window_;
  LinkObject object_;
  std::optional<Checkpoint> checkpoint_;

  std::optional<Reader> ahead_;
  MessageBatch ahead_batch_;
  std::size_t next_in_batch_ = 0;
  std::uint64_t handled_through_ = 0;  // every message below this sequence is published, skipped or not ours
  std::uint64_t published_high_ = 0;   // no message at or above this sequence was handed to RabbitMQ
  std::uint64_t redeliver_below_ = 0;  // messages below this may be in RabbitMQ already: marked
  std::uint64_t missed_seen_ = 0;

  std::optional<Reader> retain_;  // block mode
  MessageBatch retain_batch_;
  std::uint64_t retain_next_ = 0;

  std::deque<InFlight> in_flight_;
  std::uint64_t first_tag_ = 1;  // delivery tag of in_flight_.front()
  std::uint64_t pending_ = 0;    // in in_flight_ and not done
  std::uint64_t in_flight_bytes_ = 0;
  std::uint32_t idle_polls_ = 0;
};

}  // namespace colo::bridge::rabbitmq
