// colo/channel.hpp — topics (publish/subscribe) and queues (competing consumers).
//
//   auto node = colo::Node::open().value();
//   auto topic = node.topic("prices").value();              // create-or-open
//   auto pub = topic.publisher().value();
//   pub.publish(as_bytes(span(quote)), 1s);                 // copying form
//   if (auto loan = pub.try_loan(64)) {                     // zero copy
//     fill(loan->data()); loan->commit();
//   }
//   if (auto batch = pub.try_loan_batch(64, sizeof(Quote))) {   // many at once
//     for (std::uint32_t i = 0; i < batch->size(); ++i) fill((*batch)[i]);
//     batch->commit();                                      // one publication
//   }
//   auto sub = topic.subscribe({.backpressure = colo::Backpressure::lossy}).value();
//   if (auto msg = sub.receive_for(100ms)) use(msg->data()); // view into the ring
//   auto got = sub.receive_batch_for(256, 100ms);           // every available, up to 256
//   for (const auto& m : got) use(m.data());
//   got.release();                                          // all at once
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
// COST MODEL. The unit of cost is the batch, not the message. Per batch (a
// single message is a batch of one):
// - a publisher pays one atomic read-modify-write (a 16-byte CAS on the
//   ring's tail), or none with `exclusive_publisher`; then a release store
//   that publishes the whole batch, and a load of a read-mostly word to see
//   whether a reader sleeps (a futex wake only if one does);
// - a subscriber pays one store of its cursor; a queue consumer one 16-byte
//   CAS on the queue's take cursor (and a store to release the batch);
// - per message: its payload and a 16-byte header, packed at 16 bytes (a
//   64-byte message takes 80 bytes of ring).
// So batches of tens of messages cost little more than one message; the
// per-message forms cost one batch each. Waiting readers spin only while a
// message is likely within tens of microseconds and the host has a CPU to
// spare, then sleep on a futex.
//
// Views: a Message or MessageBatch points into the ring. While it is held,
// writers cannot reuse its bytes: a blocking subscriber or a consumer holds
// them anyway, a lossy subscriber holds back writers only for that batch.
// Release messages promptly (copy what must live longer).
//
// Threads: a Publisher, Subscriber or Consumer belongs to one thread at a
// time (it is a slot in the ring, 64 of each per object); open one per
// thread. Handles keep their object mapped, so they may outlive the
// Topic/Queue they came from; a Loan, LoanBatch, Message or MessageBatch
// must not outlive its handle, and a handle has at most one of them at a
// time.
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
  // One publisher at a time: a second publisher() is refused (Errc::busy)
  // while the first one's process lives. Publishing then needs no atomic
  // read-modify-write at all.
  bool exclusive_publisher = false;
};

struct QueueOptions {
  std::uint64_t capacity = 1 << 20;
  std::uint32_t max_message = 64 * 1024;
  bool acks = false;
  std::uint32_t max_deliveries = 5;  // with acks: then dead-letter to NAME.dlq
  bool exclusive_publisher = false;  // as TopicOptions::exclusive_publisher (one producer)
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

class Publisher;
class Reader;

// A writable region of the ring. Commit or abandon it (abandoned on destruction).
class Loan {
 public:
  std::span<std::byte> data() const noexcept { return {data_, size_}; }
  void commit() noexcept;
  void abandon() noexcept;
  Loan(Loan&& other) noexcept
      : publisher_(other.publisher_), data_(other.data_), size_(other.size_), claim_(other.claim_) {
    other.publisher_ = nullptr;
  }
  Loan& operator=(Loan&&) = delete;
  Loan(const Loan&) = delete;
  ~Loan() { abandon(); }

 private:
  friend struct detail::ChannelAccess;
  Loan(Publisher* publisher, std::byte* data, std::uint32_t size, std::uint64_t claim) noexcept
      : publisher_(publisher), data_(data), size_(size), claim_(claim) {}
  Publisher* publisher_;
  std::byte* data_;
  std::uint32_t size_;
  std::uint64_t claim_;  // which of the publisher's claims: a stale loan does nothing
};

// Several messages of one size, written in place and published together
// (one publication, or a few with commit(count)). size() may be less than
// asked: a batch never crosses the ring's end, and a claim holds at most
// about half the ring; loan again for the rest. What is not published when
// the batch ends (abandon, destruction) is given up and counted.
class LoanBatch {
 public:
  std::uint32_t size() const noexcept { return count_; }             // messages loaned
  std::uint32_t message_size() const noexcept { return message_size_; }
  std::uint32_t published() const noexcept { return published_; }
  // The i-th message's bytes (i < size()).
  std::span<std::byte> operator[](std::uint32_t i) const noexcept;
  // Publishes messages [published(), count): those written so far, in order.
  // Readers see them at once, the rest when published. commit() = all.
  void commit(std::uint32_t count) noexcept;
  void commit() noexcept { commit(count_); }
  void abandon() noexcept;  // ends the batch; unpublished messages are given up
  LoanBatch(LoanBatch&& other) noexcept
      : publisher_(other.publisher_), count_(other.count_), message_size_(other.message_size_),
        published_(other.published_), claim_(other.claim_) {
    other.publisher_ = nullptr;
  }
  LoanBatch& operator=(LoanBatch&&) = delete;
  LoanBatch(const LoanBatch&) = delete;
  ~LoanBatch() { abandon(); }

 private:
  friend struct detail::ChannelAccess;
  LoanBatch(Publisher* publisher, std::uint32_t count, std::uint32_t message_size, std::uint64_t claim) noexcept
      : publisher_(publisher), count_(count), message_size_(message_size), claim_(claim) {}
  Publisher* publisher_;
  std::uint32_t count_;
  std::uint32_t message_size_;
  std::uint32_t published_ = 0;
  std::uint64_t claim_;  // which of the publisher's claims: a stale batch does nothing
};

// One message of a MessageBatch: a read-only view, valid until the batch is
// released.
struct MessageView {
  const std::byte* bytes = nullptr;
  std::uint32_t size = 0;
  std::uint64_t seq = 0;
  std::uint32_t delivery_count = 1;
  std::uint32_t origin_host = 0;
  std::uint64_t origin_seq = 0;
  const std::byte* meta_bytes = nullptr;
  std::uint32_t meta_size = 0;

  std::span<const std::byte> data() const noexcept { return {bytes, size}; }
  std::uint64_t sequence() const noexcept { return seq; }
  std::uint32_t deliveries() const noexcept { return delivery_count; }  // queue: 1 the first time
  std::uint32_t origin() const noexcept { return origin_host; }         // as Message::origin()
  std::uint64_t origin_sequence() const noexcept { return origin_seq; }
  std::span<const std::byte> metadata() const noexcept { return {meta_bytes, meta_size}; }  // as Message::metadata()
};

// Every message that was available, up to the asked maximum, in order:
// views into the ring, held until release() (on destruction); for a queue
// with acks, release() acknowledges them all. Empty if none came.
class MessageBatch {
 public:
  std::size_t size() const noexcept { return count_; }
  bool empty() const noexcept { return count_ == 0; }
  const MessageView& operator[](std::size_t i) const noexcept { return views_[i]; }
  const MessageView* begin() const noexcept { return views_; }
  const MessageView* end() const noexcept { return views_ + count_; }
  void release() noexcept;
  MessageBatch() noexcept = default;
  MessageBatch(MessageBatch&& other) noexcept : reader_(other.reader_), views_(other.views_), count_(other.count_) {
    other.reader_ = nullptr;
    other.count_ = 0;
  }
  MessageBatch& operator=(MessageBatch&& other) noexcept;  // releases the batch it held
  MessageBatch(const MessageBatch&) = delete;
  ~MessageBatch() { release(); }

 private:
  friend struct detail::ChannelAccess;
  friend class Reader;  // hands a batch of one over to a Message
  MessageBatch(Reader* reader, const MessageView* views, std::size_t count) noexcept
      : reader_(reader), views_(views), count_(count) {}
  Reader* reader_ = nullptr;
  const MessageView* views_ = nullptr;
  std::size_t count_ = 0;
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
  // What colod recorded about where the message came from, beside its
  // bytes: for a message from a Kafka topic, its key, headers, partition and
  // offset (colo/metadata.hpp decodes it). Empty for messages published
  // with this API. Valid, like data(), until the message is released.
  std::span<const std::byte> metadata() const noexcept { return {meta_, meta_size_}; }
  void release() noexcept;
  Message(Message&& other) noexcept;
  Message& operator=(Message&& other) noexcept;  // releases the message it held
  Message(const Message&) = delete;
  ~Message() { release(); }

 private:
  friend struct detail::ChannelAccess;
  friend class Reader;
  Message(Reader* reader, const MessageView& view) noexcept
      : reader_(reader), data_(view.bytes), size_(view.size), seq_(view.seq), deliveries_(view.delivery_count),
        origin_(view.origin_host), origin_seq_(view.origin_seq), meta_(view.meta_bytes), meta_size_(view.meta_size) {}
  Reader* reader_;
  const std::byte* data_;
  std::uint32_t size_;
  std::uint64_t seq_;
  std::uint32_t deliveries_;
  std::uint32_t origin_;
  std::uint64_t origin_seq_;
  const std::byte* meta_;
  std::uint32_t meta_size_;
};

// Writes to a topic or a queue.
class Publisher {
 public:
  std::optional<Loan> try_loan(std::uint32_t size) noexcept;
  // Waits for space up to `timeout`; nullopt on timeout or error (see last_status()).
  std::optional<Loan> loan_for(std::uint32_t size, std::chrono::nanoseconds timeout) noexcept;
  SendStatus try_publish(std::span<const std::byte> bytes) noexcept;
  SendStatus publish(std::span<const std::byte> bytes, std::chrono::nanoseconds timeout) noexcept;

  // Up to `count` (1..65536) messages of `size` bytes each, written in
  // place; see LoanBatch. nullopt as for loan_for.
  std::optional<LoanBatch> try_loan_batch(std::uint32_t count, std::uint32_t size) noexcept;
  std::optional<LoanBatch> loan_batch_for(std::uint32_t count, std::uint32_t size,
                                          std::chrono::nanoseconds timeout) noexcept;
  // Copies and publishes `messages` in order, as few publications as fit,
  // waiting for space up to `timeout` in all. Returns how many were
  // published: all of them, or last_status() says why not the rest.
  std::size_t publish_batch(std::span<const std::span<const std::byte>> messages,
                            std::chrono::nanoseconds timeout) noexcept;

  SendStatus last_status() const noexcept { return last_; }

  Publisher(Publisher&& other) noexcept;
  Publisher& operator=(Publisher&&) = delete;
  Publisher(const Publisher&) = delete;
  ~Publisher();

 private:
  friend struct detail::ChannelAccess;
  friend class Loan;
  friend class LoanBatch;
  struct Handle;  // the publisher's slot and its claim in progress (process-local)
  Publisher(std::shared_ptr<detail::ChannelState> state, std::unique_ptr<Handle> handle) noexcept;
  std::shared_ptr<detail::ChannelState> state_;
  std::unique_ptr<Handle> handle_;
  SendStatus last_ = SendStatus::ok;
};

// Reads a topic (a subscriber) or a queue (a consumer). One Message or
// MessageBatch at a time: release it before receiving the next.
class Reader {
 public:
  std::optional<Message> try_receive() noexcept;
  std::optional<Message> receive_for(std::chrono::nanoseconds timeout) noexcept;
  // Every available message, up to `max` (1..65536); empty if none (came
  // within `timeout`). A queue consumer takes them all with one atomic step.
  MessageBatch try_receive_batch(std::size_t max) noexcept;
  MessageBatch receive_batch_for(std::size_t max, std::chrono::nanoseconds timeout) noexcept;
  // Lossy subscriber: messages overwritten before it could read them.
  std::uint64_t missed() const noexcept;

  Reader(Reader&& other) noexcept;
  Reader& operator=(Reader&&) = delete;
  Reader(const Reader&) = delete;
  ~Reader();

 private:
  friend struct detail::ChannelAccess;
  friend class Message;
  friend class MessageBatch;
  struct Handle;  // the reader's cursor in the ring (process-local)
  Reader(std::shared_ptr<detail::ChannelState> state, std::unique_ptr<Handle> handle) noexcept;
  void release() noexcept;  // the message or batch held
  std::shared_ptr<detail::ChannelState> state_;
  std::unique_ptr<Handle> handle_;
};
using Subscriber = Reader;
using Consumer = Reader;

// What a reader of a ring is. `bridge`: colod's cursor for a peer host (it
// holds back local writers like `block`, and is lapped by messages from
// other hosts like `lossy`, so that federation cannot deadlock). `tap`: a
// cursor over a queue that sees every message enqueued and takes none
// (colod's mirror of a queue into Kafka); writers wait for it like for a
// `block` subscriber.
enum class ReaderMode : std::uint32_t { block, lossy, bridge, consumer, tap };
// "block", "lossy", "bridge", "consumer", "tap" (a static string).
const char* to_string(ReaderMode mode) noexcept;

struct ReaderStats {
  std::uint32_t pid = 0;
  bool alive = false;
  ReaderMode mode = ReaderMode::block;
  std::uint64_t delivered = 0, bytes = 0, missed = 0, skipped_bad = 0, redelivered = 0, dead_lettered = 0, waits = 0;
  std::uint64_t batches = 0;  // receives that returned messages (a single message is one)
  std::uint64_t lag = 0;  // subscriber or tap: messages published and not yet read
  bool holding = false;   // queue: has a message taken and not released
};

struct PublisherStats {
  std::uint32_t pid = 0;
  bool alive = false;
  std::uint64_t published = 0, bytes = 0, waits = 0, abandoned = 0;
  std::uint64_t batches = 0;  // publications (a single message is one)
};

struct ChannelStats {
  ObjectKind kind = ObjectKind::topic;  // topic or queue
  std::uint64_t capacity = 0;
  std::uint32_t max_message = 0;
  bool acks = false;
  std::uint32_t max_deliveries = 0;
  std::uint32_t history = 0;     // topic
  bool exclusive_publisher = false;
  std::uint64_t published = 0;   // messages committed (sequence at tail)
  std::uint64_t retained = 0;    // messages still in the ring (tail - head)
  std::uint64_t depth = 0;       // queue: not yet taken
  std::uint64_t used_bytes = 0;  // tail - head
  std::uint64_t dead_claims = 0, bad_records = 0, dead_readers = 0, dropped_unacked = 0;
  // Publications end with a fence (the ring's waiters slept often enough
  // that fences cost less than the barrier each sleep would otherwise pay).
  bool fenced_commits = false;
  std::vector<PublisherStats> publishers;
  std::vector<ReaderStats> readers;
  // Publisher or reader slots whose shared words are impossible (a pid no
  // process can have, an unknown reader mode, a cursor ahead of the tail):
  // memory scribbled on, not listed above.
  std::uint32_t damaged_slots = 0;
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
