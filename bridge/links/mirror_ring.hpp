// bridge/links/mirror_ring.hpp — what every mirror (Kafka's, RabbitMQ's)
// does on the ring side: the identity each message goes out with, the two
// readers of the object's ring, and the window of messages sent and not yet
// confirmed by the other system.
//
// READERS (in the object's ring):
//   ahead   reads what to send: a block subscriber (topic, block), a lossy
//           subscriber (topic, lossy), or a tap (queue). Polled, never
//           waited on: a reader asleep on the ring would make every local
//           publish pay a futex wake (about a microsecond, ten times the
//           publish itself).
//   retain  block mode only: a block reader (subscriber or tap) held at the
//           oldest message the other system has not confirmed. The ring
//           keeps every message from there on and holds local writers back
//           when it is full: nothing is lost while colod runs, whatever the
//           other system does.
//
//   ring:  ... [confirmed][sent, in flight][read, not sent][unread] ...
//                        ^retain                           ^ahead
//
// THE WINDOW: the messages sent and not yet confirmed, in sequence order.
// A confirmation (or a refusal) marks its message done; done messages leave
// from the front only, so the front is the oldest unconfirmed one, and
// retain is held there.
//
// Used by its link's thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <boost/circular_buffer.hpp>

#include "colo/channel.hpp"
#include "colo/internal/links.hpp"
#include "link.hpp"

namespace colo::bridge {

// The identity of a mirrored message: "ORIGIN:OBJECT:EPOCH:SEQ" (node name,
// object name, the object's epoch in ns, the message's sequence, both
// decimal). ':' is in neither a node's nor an object's name, so the four
// parts always split back. A Kafka record carries it in its one header,
// colo.id; a RabbitMQ message as its message-id property.
class MessageId {
 public:
  MessageId() = default;
  MessageId(std::string_view origin, std::string_view object, std::uint64_t epoch);
  // The id of sequence `seq`: a view into this object, valid until the next
  // call. Allocates nothing (the prefix is written once, here only digits).
  std::string_view of(std::uint64_t seq) noexcept;

  struct Parts {
    std::string_view origin, object;
    std::uint64_t epoch = 0, seq = 0;
  };
  // nullopt if `id` is not of this form.
  static std::optional<Parts> parse(std::string_view id) noexcept;

 private:
  std::string text_;  // the prefix "ORIGIN:OBJECT:EPOCH:", then room for 20 digits
  std::size_t prefix_ = 0;
};

class MirrorRing {
 public:
  // A message sent and not yet confirmed.
  struct InFlight {
    std::uint64_t seq = 0;
    std::uint32_t bytes = 0;
    bool done = false;      // confirmed or refused: leaves once those before it have
    bool returned = false;  // given back by the other system (counted then)
  };
  // Messages the ring overwrote before ahead read them: [first, first + count).
  struct Lapped {
    std::uint64_t first = 0, count = 0;
  };

  explicit MirrorRing(bool lossy) noexcept : lossy_(lossy) {}

  // Block mode: opens retain at the oldest message the ring holds, once (a
  // reopen of the link keeps it, so the ring goes on holding what the other
  // system lacks). Lossy: nothing.
  Result<void> hold(LinkObject& object);
  // Opens ahead at `from` (after a close_ahead(), or first). Returns how
  // many messages from `from` on the ring no longer had.
  Result<std::uint64_t> open_ahead(LinkObject& object, std::uint64_t from);
  bool reading() const noexcept { return ahead_.has_value(); }

  // When the held batch is all handled: releases it and reads the next one
  // (never waits). True if a batch is held after it. `lapped` receives what
  // the ring overwrote before ahead read it (lossy; count 0 if nothing).
  bool read(Lapped& lapped);
  // How long to wait for the other system after a read found nothing: 1 ms,
  // then 5 ms after 200 empty reads in a row.
  std::chrono::milliseconds idle_wait() const noexcept;
  // The held batch's next message to handle, or null when it is all
  // handled. Valid until read() or close_ahead().
  const MessageView* current() const noexcept {
    return next_in_batch_ < batch_.size() ? &batch_[next_in_batch_] : nullptr;
  }
  // current() is handled (sent, skipped, or not ours): on to the next.
  void advance() noexcept { handled_below_ = batch_[next_in_batch_++].sequence() + 1; }
  // Every message below this sequence is sent, skipped or not ours.
  std::uint64_t handled_below() const noexcept { return handled_below_; }

  // ---- the window
  void sent(std::uint64_t seq, std::uint32_t bytes);
  std::size_t window_size() const noexcept { return window_.size(); }  // done ones not yet left included
  InFlight& in_flight(std::size_t index) noexcept { return window_[index]; }
  const InFlight& in_flight(std::size_t index) const noexcept { return window_[index]; }
  // The index of `seq` in the window, if it is there. Confirmations come in
  // order, so the oldest one not done is looked at first.
  std::optional<std::size_t> find(std::uint64_t seq) const noexcept;
  // Marks `index` done (if it was not); the done ones at the front leave.
  // Returns how many left.
  std::size_t done(std::size_t index) noexcept;
  std::uint64_t pending() const noexcept { return pending_; }  // not done
  std::uint64_t pending_bytes() const noexcept { return window_bytes_; }  // of all in the window
  // The oldest message not yet confirmed (or what ahead reaches next):
  // everything below it is confirmed, skipped, or not ours.
  std::uint64_t confirmed_below() const noexcept { return window_.empty() ? handled_below_ : window_.front().seq; }
  // Empties the window (a new producer or connection starts afresh).
  void forget_window() noexcept;

  // Moves retain up to confirmed_below() (a bounded amount of work).
  void advance_retain();
  // Still to go: block, all retain holds (unread, in flight, confirmed but
  // in its last batch); lossy, unread and in flight.
  internal::Backlog lag() const noexcept;

  // Ahead and its batch go, and the window empties (retain stays).
  void close_ahead() noexcept;
  // Everything goes (colod stops: the ring no longer holds writers for the
  // other system).
  void close() noexcept;

 private:
  const bool lossy_;
  std::optional<Reader> ahead_;
  MessageBatch batch_;  // read, being sent
  std::size_t next_in_batch_ = 0;
  std::uint64_t handled_below_ = 0;
  std::uint64_t missed_seen_ = 0;  // ahead_->missed() already reported
  std::uint32_t empty_reads_ = 0;  // in a row

  std::optional<Reader> retain_;  // block mode
  MessageBatch retain_batch_;     // what retain holds
  std::uint64_t retain_next_ = 0;  // the sequence retain reads next

  // A circular buffer, grown by doubling and never shrunk: a deque here
  // allocated a block every 32 messages, and under perf those mallocs were
  // 5% of a 64-byte Kafka mirror's CPU (malloc's bins full of the freed
  // records librdkafka allocates per message).
  boost::circular_buffer<InFlight> window_;
  std::uint64_t window_bytes_ = 0;
  std::uint64_t pending_ = 0;
  std::size_t first_pending_ = 0;  // no entry before this index is pending (find()'s start)
};

}  // namespace colo::bridge
