// colo/channel.hpp — topics (publish/subscribe) and queues (competing consumers).
//
//   auto node = colo::Node::open().value();
//   auto topic = node.topic("prices").value();              // create-or-open
//   auto pub = topic.publisher().value();
//   pub.publish(as_bytes(span(quote)), 1s);                 // copying form
//   if (auto loan = pub.try_loan(64)) {                     // zero copy
//     fill(loan->data()); loan->commit();
//   }
//   auto sub = topic.subscribe({.backpressure = colo::Backpressure::lossy}).value();
//   if (auto msg = sub.receive_for(100ms)) use(msg->data()); // view into the ring
//
// Both live in one shared-memory ring per object (shm/ring.hpp has the
// algorithm, the layouts and the crash-safety rules):
// - Topic: every subscriber gets every message published after it
//   subscribed, in publish order per publisher. A `block` subscriber holds
//   writers back (with their timeout) when it is the slowest; a `lossy` one is
//   lapped instead and counts what it missed. `history` starts a new
//   subscriber up to N retained messages back (by default the topic's own
//   TopicOptions::history, which reclaim also spares while there is room).
// - Queue: each message goes to exactly one consumer. With acks, a message
//   taken by a consumer that dies before acknowledging is delivered again
//   (deliveries + 1), and after `max_deliveries` it moves to the queue
//   NAME.dlq. Without acks, delivery is at most once, and faster.
//
// Views: a Message points into the ring. While it is held, writers cannot
// reuse its bytes: a blocking subscriber or a consumer holds them anyway, a
// lossy subscriber holds back writers only for that one record. Release
// messages promptly (copy what must live longer).
//
// Threads: a Publisher, Subscriber or Consumer belongs to one thread at a
// time (it is a slot in the ring, 64 of each per object); open one per
// thread. Handles keep their object mapped, so they may outlive the
// Topic/Queue they came from; a Loan or Message must not outlive its handle.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "colo/error.hpp"
#include "colo/object.hpp"  // ObjectKind

namespace colo {

namespace detail {
struct ChannelState;   // the mapped ring a Topic or Queue and its handles share
struct ChannelAccess;  // libcolo's own way into the handles (broker/channel.cpp)
}  // namespace detail

// block: writers wait for this subscriber; lossy: it is lapped instead.
enum class Backpressure : std::uint32_t { block = 1, lossy = 2 };

struct TopicOptions {
  std::uint64_t capacity = 1 << 20;       // ring bytes, power of two, 4 KiB..16 GiB
  std::uint32_t max_message = 64 * 1024;  // payload bytes; at most about capacity/2
  // Newest messages the ring keeps for new subscribers while there is room
  // (writers never wait for history: when the ring is full the oldest go),
  // and how far back a subscriber starts unless it asks otherwise.
  std::uint32_t history = 0;
};

struct QueueOptions {
  std::uint64_t capacity = 1 << 20;
  std::uint32_t max_message = 64 * 1024;
  bool acks = false;
  std::uint32_t max_deliveries = 5;  // with acks: then dead-letter to NAME.dlq
};

struct SubscribeOptions {
  Backpressure backpressure = Backpressure::block;
  // Start up to this many retained messages back; unset: the topic's history.
  std::optional<std::uint64_t> history;
  // Instead: start at the message of this sequence (Message::sequence()), or
  // the oldest retained one, counting the ones no longer retained in
  // missed(): to resume where an earlier reader stopped.
  std::optional<std::uint64_t> from_sequence;
};

enum class SendStatus {
  ok,
  timed_out,   // no space within the timeout (a blocking subscriber or unacked messages hold it)
  too_large,   // larger than the object's max_message
  corrupt,     // the ring's shared state failed validation
};

// A writable region of the ring. Commit or abandon it (abandoned on destruction).
class Loan {
 public:
  std::span<std::byte> data() const noexcept { return {data_, size_}; }
  void commit() noexcept;
  void abandon() noexcept;
  Loan(Loan&& other) noexcept;
  Loan& operator=(Loan&&) = delete;
  Loan(const Loan&) = delete;
  ~Loan() { abandon(); }

 private:
  friend struct detail::ChannelAccess;
  Loan(detail::ChannelState* state, int slot, std::byte* data, std::uint32_t size, std::uint64_t pos,
       std::uint64_t seq, bool relayed) noexcept
      : state_(state), slot_(slot), data_(data), size_(size), pos_(pos), seq_(seq), relayed_(relayed) {}
  detail::ChannelState* state_;
  int slot_;
  std::byte* data_;
  std::uint32_t size_;
  std::uint64_t pos_;
  std::uint64_t seq_;
  bool relayed_;
};

// A received message: a read-only view into the ring, valid until released
// (on destruction). For a queue with acks, release() is the acknowledgement.
class Message {
 public:
  std::span<const std::byte> data() const noexcept { return {data_, size_}; }
  std::uint64_t sequence() const noexcept { return seq_; }
  std::uint32_t deliveries() const noexcept { return deliveries_; }  // queue: 1 the first time
  // Federated topics: the id of the host it was published on (colod derives
  // it from the host's node name), 0 if published on this host; and its
  // sequence there.
  std::uint32_t origin() const noexcept { return origin_; }
  std::uint64_t origin_sequence() const noexcept { return origin_seq_; }
  void release() noexcept;
  Message(Message&& other) noexcept;
  Message& operator=(Message&& other) noexcept;  // releases the message it held
  Message(const Message&) = delete;
  ~Message() { release(); }

 private:
  friend class Reader;  // releases it
  friend struct detail::ChannelAccess;
  Message(class Reader* reader, const std::byte* data, std::uint32_t size, std::uint64_t seq,
          std::uint32_t deliveries, std::uint64_t pos, std::uint32_t record_length, std::uint32_t origin,
          std::uint64_t origin_seq) noexcept
      : reader_(reader), data_(data), size_(size), seq_(seq), deliveries_(deliveries), pos_(pos),
        record_length_(record_length), origin_(origin), origin_seq_(origin_seq) {}
  class Reader* reader_;
  const std::byte* data_;
  std::uint32_t size_;
  std::uint64_t seq_;
  std::uint32_t deliveries_;
  std::uint64_t pos_;
  std::uint32_t record_length_;
  std::uint32_t origin_;
  std::uint64_t origin_seq_;
};

// Writes to a topic or a queue.
class Publisher {
 public:
  std::optional<Loan> try_loan(std::uint32_t size) noexcept;
  // Waits for space up to `timeout`; nullopt on timeout or error (see last_status()).
  std::optional<Loan> loan_for(std::uint32_t size, std::chrono::nanoseconds timeout) noexcept;
  SendStatus try_publish(std::span<const std::byte> bytes) noexcept;
  SendStatus publish(std::span<const std::byte> bytes, std::chrono::nanoseconds timeout) noexcept;
  SendStatus last_status() const noexcept { return last_; }

  Publisher(Publisher&& other) noexcept;
  Publisher& operator=(Publisher&&) = delete;
  Publisher(const Publisher&) = delete;
  ~Publisher();

 private:
  friend struct detail::ChannelAccess;
  Publisher(std::shared_ptr<detail::ChannelState> state, int slot) noexcept : state_(std::move(state)), slot_(slot) {}
  std::shared_ptr<detail::ChannelState> state_;
  int slot_;
  SendStatus last_ = SendStatus::ok;
};

// Reads a topic (a subscriber) or a queue (a consumer). One message at a
// time: release the previous Message before receiving the next.
class Reader {
 public:
  std::optional<Message> try_receive() noexcept;
  std::optional<Message> receive_for(std::chrono::nanoseconds timeout) noexcept;
  // Lossy subscriber: messages overwritten before it could read them.
  std::uint64_t missed() const noexcept;

  Reader(Reader&& other) noexcept;
  Reader& operator=(Reader&&) = delete;
  Reader(const Reader&) = delete;
  ~Reader();

 private:
  friend struct detail::ChannelAccess;
  friend class Message;
  struct Handle;  // the reader's cursor in the ring (process-local)
  Reader(std::shared_ptr<detail::ChannelState> state, std::unique_ptr<Handle> handle) noexcept;
  void release(const Message& message) noexcept;
  std::shared_ptr<detail::ChannelState> state_;
  std::unique_ptr<Handle> handle_;
};
using Subscriber = Reader;
using Consumer = Reader;

// What a reader of a ring is. `bridge`: colod's cursor for a peer host (it
// holds back local writers like `block`, and is lapped by messages from
// other hosts like `lossy`, so that federation cannot deadlock).
enum class ReaderMode : std::uint32_t { block, lossy, bridge, consumer };
// "block", "lossy", "bridge", "consumer" (a static string).
const char* to_string(ReaderMode mode) noexcept;

struct ReaderStats {
  std::uint32_t pid = 0;
  bool alive = false;
  ReaderMode mode = ReaderMode::block;
  std::uint64_t delivered = 0, bytes = 0, missed = 0, skipped_bad = 0, redelivered = 0, dead_lettered = 0, waits = 0;
  std::uint64_t lag = 0;  // topic: messages published and not yet read
  bool holding = false;   // queue: has a message taken and not released
};

struct PublisherStats {
  std::uint32_t pid = 0;
  bool alive = false;
  std::uint64_t published = 0, bytes = 0, waits = 0, abandoned = 0;
};

struct ChannelStats {
  ObjectKind kind = ObjectKind::topic;  // topic or queue
  std::uint64_t capacity = 0;
  std::uint32_t max_message = 0;
  bool acks = false;
  std::uint32_t max_deliveries = 0;
  std::uint32_t history = 0;     // topic
  std::uint64_t published = 0;   // messages committed (sequence at tail)
  std::uint64_t retained = 0;    // messages still in the ring (tail - head)
  std::uint64_t depth = 0;       // queue: not yet taken
  std::uint64_t used_bytes = 0;  // tail - head
  std::uint64_t dead_claims = 0, bad_records = 0, dead_readers = 0, dropped_unacked = 0;
  std::vector<PublisherStats> publishers;
  std::vector<ReaderStats> readers;
};

class Topic {
 public:
  Result<Publisher> publisher();
  Result<Subscriber> subscribe(SubscribeOptions options = {});
  ChannelStats stats() const;
  // Messages published so far (the next message's sequence); one atomic load.
  std::uint64_t published() const noexcept;
  const std::string& name() const noexcept;

  Topic(Topic&&) noexcept;
  Topic& operator=(Topic&&) noexcept;
  ~Topic();

 private:
  friend class Node;
  friend struct detail::ChannelAccess;
  explicit Topic(std::shared_ptr<detail::ChannelState> state) noexcept;
  std::shared_ptr<detail::ChannelState> state_;
};

class Queue {
 public:
  Result<Publisher> producer();
  Result<Consumer> consumer();
  ChannelStats stats() const;
  const std::string& name() const noexcept;

  Queue(Queue&&) noexcept;
  Queue& operator=(Queue&&) noexcept;
  ~Queue();

 private:
  friend class Node;
  friend struct detail::ChannelAccess;
  explicit Queue(std::shared_ptr<detail::ChannelState> state) noexcept;
  std::shared_ptr<detail::ChannelState> state_;
};

}  // namespace colo
