// bridge/links/rabbitmq/mirror.hpp — a topic's or queue's messages into a
// RabbitMQ exchange (docs/rabbitmq.md, "Mirror").
//
// WHAT GOES OUT: every message published on this host (origin() == 0), in
// sequence order, relayed ones skipped (as a Kafka mirror). Each one is
// published persistent (delivery mode 2), mandatory (an unroutable message
// comes back: counted and logged, never silently dropped), with the
// message-id property "ORIGIN:OBJECT:EPOCH:SEQ" (MessageId: node name,
// object, the object's creation time in ns, the message's sequence) and
// the timestamp property (s, when colod read it); a header table only on a
// copy that may be in RabbitMQ already: colo.redelivery = 1. Properties,
// not headers, for the rest: RabbitMQ decodes a message's header table on
// every publish (it looks for the CC and BCC routing headers in it), and a
// table of one entry or five cost it 20-40% of its publish rate (measured
// with rabbitmq-c alone).
//
// CONFIRMS: the channel is in confirm mode; at most `window` messages are
// published and not yet confirmed. basic.ack (one, or `multiple`: every
// tag up to it) confirms; basic.nack refuses (block: published again over
// a new connection; lossy: lost); basic.return (unroutable) comes before
// its message's ack and marks it skipped (lossy: lost).
//
// READERS: ahead and retain (mirror_ring.hpp, as every mirror's); the
// checkpoint's confirmed_below follows retain.
//
// AT LEAST ONCE. RabbitMQ cannot be read back, so where the mirror is lives
// in a checkpoint (checkpoint.hpp): confirmed_below, moved as confirms
// come, and published_below, moved before each publish. A mirror that
// starts again (colod killed and restarted) resumes at confirmed_below and
// marks what it publishes below published_below with colo.redelivery; the
// same after a lost connection (block mode: everything unconfirmed is
// published again, marked). So a consumer sees each message at least once,
// and a copy it may have seen before is marked, with its message id to
// deduplicate by.
//
// THE FENCE. A colod killed with publishes in its socket leaves them to
// RabbitMQ, which may take them in after the new colod published its marked
// copies (RabbitMQ reads a connection only as its flow control allows, and
// what the killed process had sent stays in the kernel's buffers): the
// unmarked first copy would then come after the marked one, out of order.
// So each connection of a mirror first declares an exclusive queue named
// for the host, namespace and link (fence_name()); RabbitMQ refuses it to
// a second connection (RESOURCE_LOCKED) until the first one is closed, its
// channel's publishes all handled, and the queue deleted with it. A mirror
// publishes nothing before it holds the fence: set_up() waits for it (at
// most 3 heartbeats, in which RabbitMQ drops a silent connection; longer,
// the open fails and is retried). A user who may not declare queues gets a
// warning, and the mirror goes on without the fence.
//
// LOSSY: no retain; what is unconfirmed when the connection goes is lost
// (counted and logged), and while RabbitMQ is unreachable the mirror keeps
// reading the ring and drops what it reads (counted, logged with sequences).
#pragma once

#include <optional>
#include <string>

#include "../mirror_ring.hpp"
#include "checkpoint.hpp"
#include "colo/channel.hpp"
#include "rabbitmq_link.hpp"

namespace colo::bridge::rabbitmq {

// The fence queue of a mirror: "colo.fence.<node>.<namespace>.<link>", or,
// when that is longer than an AMQP short string allows, its first 200
// bytes, '~' and a hash of the whole in hex.
std::string fence_name(const std::string& node, const std::string& ns, const std::string& link);

class Mirror final : public RabbitmqLink {
 public:
  Mirror(const Config& config, const RabbitmqServerConfig& server, const LinkConfig& link, const Log& log);
  ~Mirror() override { stop(); }

 private:
  Result<void> open() override;
  void step() override;
  void idle() override;
  void close() override;
  Result<void> set_up(Connection& connection) override;
  Result<void> hold_fence(Connection& connection);
  void on_lost() override;

  // The window (ring_): its entry i has the delivery tag first_tag_ + i
  // (tags count publishes on the channel).
  Result<void> open_ahead(std::uint64_t from, bool restarted);
  // Publishes the held batch from the ring's current() on, up to the
  // window, and writes the run at once (Connection::flush()); false when
  // the window is full or the connection went (then lost() has run).
  bool publish_batch();
  bool publish(const MessageView& m);
  // Confirms and returns: waits up to `wait` for the first frame, then
  // takes what is there. lost() on a broken connection.
  void read_frames(std::chrono::microseconds wait);
  void on_confirm(std::uint64_t tag, bool multiple, bool ack);
  void on_return(const Incoming& in);
  void drop_while_down();  // lossy, disconnected
  void advance_retain();
  void update_gauges();

  const bool lossy_;
  const std::uint32_t window_;
  const std::string fence_;  // the exclusive queue each connection holds first
  LinkObject object_;
  MessageId id_;
  std::optional<Checkpoint> checkpoint_;
  MirrorRing ring_;
  std::uint64_t published_high_ = 0;   // no message at or above this sequence was handed to RabbitMQ
  std::uint64_t redeliver_below_ = 0;  // messages below this may be in RabbitMQ already: marked
  std::uint64_t read_at_s_ = 0;        // when the held batch was read: its messages' timestamp
  std::uint64_t first_tag_ = 1;        // delivery tag of the window's first entry
};

}  // namespace colo::bridge::rabbitmq
