// tools/bench/colo_transports.cpp — colo's Queue and Topic as transports of
// the message benchmark, so that they run through the very same cells as the
// IPC baselines of transports.cpp.
//
//   colo-queue        a colo Queue (acks)            1->N: share (competing consumers)
//   colo-topic        a colo Topic, block readers    1->N: broadcast (every subscriber)
//   colo-*-batch      the same through the batch API: senders loan up to
//                     --batch messages and publish them together, readers
//                     take every available message up to 4 x --batch
//   A cell with one sender makes its object with exclusive_publisher.
//   (RemoteTopic) a colo Topic published in one namespace and read in
//                another, carried by colod     1->N: broadcast (`colo bench bridge`)
//
// The parent creates the object in a scratch namespace of its own
// ("msgbench-<pid>", removed at the end even after Ctrl-C); each forked end
// opens the namespace and the object by name, as an unrelated process would.
// Zero copy: loan() is Publisher::loan_for (the caller writes the payload in
// the ring), view() is Reader::receive_for / try_receive (the caller reads it
// in the ring). The copying path is publish() / receive() + memcpy.
//
// Ring size: the harness's depth (messages) times the record size (16-byte
// header + payload, 16-byte aligned), rounded up to a power of two — the
// same byte budget every other transport gets.
#include <algorithm>
#include <bit>
#include <cstring>
#include <optional>

#include "colo/channel.hpp"
#include "colo/node.hpp"
#include "format.hpp"     // human_bytes
#include "processes.hpp"  // ScratchNamespace
#include "transport.hpp"

namespace colo::bench {
namespace {

std::uint64_t ring_capacity_for(const Config& config) {
  const std::uint64_t record = (config.message_size + 16 + 15) & ~std::uint64_t{15};
  // A message must fit in half the ring (shm/ring.hpp); 4 KiB is the minimum.
  const std::uint64_t bytes = std::max<std::uint64_t>({record * config.depth, 2 * record + 4096, 4096});
  return std::bit_ceil(bytes);
}

[[noreturn]] void fail(const std::string& what, const Error& error) { throw TransportError(what + ": " + error.message); }

class ColoSender final : public Sender {
 public:
  explicit ColoSender(Publisher publisher, bool batches = false)
      : publisher_(std::move(publisher)), batches_(batches) {}

  bool send(std::span<const std::byte> message, Nanos timeout) override {
    const SendStatus status =
        timeout == kNoWait ? publisher_.try_publish(message) : publisher_.publish(message, timeout);
    return check(status);
  }

  bool zero_copy() const noexcept override { return true; }

  std::span<std::byte> loan(std::size_t size, Nanos timeout) override {
    loan_.reset();  // abandons an uncommitted one
    if (size > UINT32_MAX) throw TransportError("message larger than 4 GiB");
    const auto bytes = static_cast<std::uint32_t>(size);
    auto loan = timeout == kNoWait ? publisher_.try_loan(bytes) : publisher_.loan_for(bytes, timeout);
    if (!loan) {
      (void)check(publisher_.last_status());  // throws unless it was "no space in time"
      return {};
    }
    loan_.emplace(std::move(*loan));
    return loan_->data();
  }

  bool commit(Nanos /*timeout*/) override {
    if (!loan_) throw TransportError("commit() without a loan");
    loan_->commit();  // never waits: the space was claimed by loan()
    loan_.reset();
    return true;
  }

  bool batches() const noexcept override { return batches_; }

  std::size_t loan_batch(std::size_t count, std::size_t size, Nanos timeout) override {
    batch_.reset();
    loan_.reset();
    if (size > UINT32_MAX) throw TransportError("message larger than 4 GiB");
    const auto n = static_cast<std::uint32_t>(std::min<std::size_t>(count, 65536));
    const auto bytes = static_cast<std::uint32_t>(size);
    auto batch = timeout == kNoWait ? publisher_.try_loan_batch(n, bytes) : publisher_.loan_batch_for(n, bytes, timeout);
    if (!batch) {
      (void)check(publisher_.last_status());
      return 0;
    }
    batch_.emplace(std::move(*batch));
    return batch_->size();
  }

  std::span<std::byte> batch_slot(std::size_t i) override { return (*batch_)[static_cast<std::uint32_t>(i)]; }

  void commit_batch() override {
    if (!batch_) throw TransportError("commit_batch() without a batch");
    batch_->commit();
    batch_.reset();
  }

 private:
  // ok -> true; no space in time -> false; anything else is a real failure.
  static bool check(SendStatus status) {
    switch (status) {
      case SendStatus::ok: return true;
      case SendStatus::timed_out: return false;
      case SendStatus::too_large: throw TransportError("message larger than the object's max_message");
      case SendStatus::corrupt: throw TransportError("the ring's shared state failed validation");
    }
    throw TransportError("unknown send status");
  }

  Publisher publisher_;
  bool batches_;
  std::optional<Loan> loan_;
  std::optional<LoanBatch> batch_;
};

class ColoReceiver final : public Receiver {
 public:
  explicit ColoReceiver(Reader reader, bool batches = false) : reader_(std::move(reader)), batches_(batches) {}

  std::optional<std::size_t> receive(std::span<std::byte> buffer, Nanos timeout) override {
    auto message = next(timeout);
    if (!message) return std::nullopt;
    const auto data = message->data();
    if (data.size() > buffer.size()) throw TransportError("message larger than the receive buffer");
    if (!data.empty()) std::memcpy(buffer.data(), data.data(), data.size());
    return data.size();
  }

  bool zero_copy() const noexcept override { return true; }

  std::optional<std::span<const std::byte>> view(Nanos timeout) override {
    held_ = next(timeout);
    if (!held_) return std::nullopt;
    return held_->data();
  }

  void release() noexcept override { held_.reset(); }

  bool batches() const noexcept override { return batches_; }

  std::size_t view_batch(std::size_t max, Nanos timeout) override {
    held_.reset();
    batch_.release();
    batch_ = timeout == kNoWait ? reader_.try_receive_batch(max) : reader_.receive_batch_for(max, timeout);
    return batch_.size();
  }

  std::span<const std::byte> batch_message(std::size_t i) override { return batch_[i].data(); }

  void release_batch() noexcept override { batch_.release(); }

 private:
  std::optional<Message> next(Nanos timeout) {
    held_.reset();
    batch_.release();
    return timeout == kNoWait ? reader_.try_receive() : reader_.receive_for(timeout);
  }

  Reader reader_;
  bool batches_;
  std::optional<Message> held_;
  MessageBatch batch_;
};

// Queue and Topic differ only in how an object is made and how its ends open.
class ColoFactory : public TransportFactory {
 public:
  ColoFactory(bool queue, std::size_t batch) : queue_(queue), batch_(batch) {}

  std::string name() const override {
    return std::string(queue_ ? "colo-queue" : "colo-topic") + (batch_ > 1 ? "-batch" : "");
  }
  std::string description() const override {
    std::string kind = queue_ ? "colo Queue (shared-memory ring, competing consumers, acks)"
                              : "colo Topic (shared-memory ring, 'block' subscribers)";
    if (batch_ > 1)
      return kind + ", batch API: LoanBatch of up to " + std::to_string(batch_) +
             " messages, receive_batch_for; exclusive publisher when one sender";
    return kind + ", loan/commit + in-place views; exclusive publisher when one sender";
  }
  bool supports(Pattern) const override { return true; }
  Fanout fanout() const override { return queue_ ? Fanout::share : Fanout::broadcast; }

  std::string setup(const Config& config) override {
    if (!scratch_) {
      scratch_.emplace();
      if (auto ok = scratch_->open("msgbench-"); !ok) {
        scratch_.reset();
        fail("scratch namespace", ok.error());
      }
    }
    object_ = "bench-" + std::to_string(++cells_);
    config_ = config;
    const std::uint64_t capacity = ring_capacity_for(config);
    const auto max_message = static_cast<std::uint32_t>(std::max<std::size_t>(config.message_size, 16));
    auto& node = scratch_->node();
    scratch_->track(object_);
    const bool exclusive = config.senders == 1;
    if (queue_) {
      auto made = node.queue(object_, OpenMode::create,
                             QueueOptions{.capacity = capacity, .max_message = max_message, .acks = true,
                                          .exclusive_publisher = exclusive});
      if (!made) fail("create queue", made.error());
    } else {
      auto made = node.topic(object_, OpenMode::create,
                             TopicOptions{.capacity = capacity, .max_message = max_message,
                                          .exclusive_publisher = exclusive});
      if (!made) fail("create topic", made.error());
    }
    return "ring " + cli::human_bytes(capacity) + (exclusive ? ", exclusive publisher" : "");
  }

  std::unique_ptr<Sender> open_sender(int) override {
    Node node = open_node();
    if (queue_) {
      auto queue = node.queue(object_, OpenMode::open);
      if (!queue) fail("open queue", queue.error());
      auto producer = queue->producer();
      if (!producer) fail("producer", producer.error());
      return std::make_unique<ColoSender>(std::move(producer).value(), batch_ > 1);
    }
    auto topic = node.topic(object_, OpenMode::open);
    if (!topic) fail("open topic", topic.error());
    auto publisher = topic->publisher();
    if (!publisher) fail("publisher", publisher.error());
    return std::make_unique<ColoSender>(std::move(publisher).value(), batch_ > 1);
  }

  std::unique_ptr<Receiver> open_receiver(int) override {
    Node node = open_node();
    if (queue_) {
      auto queue = node.queue(object_, OpenMode::open);
      if (!queue) fail("open queue", queue.error());
      auto consumer = queue->consumer();
      if (!consumer) fail("consumer", consumer.error());
      return std::make_unique<ColoReceiver>(std::move(consumer).value(), batch_ > 1);
    }
    auto topic = node.topic(object_, OpenMode::open);
    if (!topic) fail("open topic", topic.error());
    auto subscriber = topic->subscribe(SubscribeOptions{});  // block, history 0: only what is published from now
    if (!subscriber) fail("subscribe", subscriber.error());
    return std::make_unique<ColoReceiver>(std::move(subscriber).value(), batch_ > 1);
  }

  void teardown() noexcept override {
    if (scratch_ && !object_.empty()) (void)scratch_->node().remove(object_);
    object_.clear();
  }

  ~ColoFactory() override {
    if (scratch_) (void)scratch_->remove_all();
  }

 private:
  Node open_node() const {
    NodeOptions options;
    options.ns = scratch_->ns();
    auto node = Node::open(options);
    if (!node) fail("open namespace", node.error());
    return std::move(node).value();
  }

  bool queue_;
  std::size_t batch_;
  std::optional<cli::ScratchNamespace> scratch_;
  std::string object_;
  Config config_;
  int cells_ = 0;
};

// A topic carried between two namespaces by someone else (RemoteTopic):
// senders open it in one, receivers in the other.
class RemoteTopicFactory final : public TransportFactory {
 public:
  explicit RemoteTopicFactory(RemoteTopic topic) : t_(std::move(topic)) {}

  std::string name() const override { return t_.name; }
  std::string description() const override { return t_.description; }
  bool supports(Pattern) const override { return true; }
  Fanout fanout() const override { return Fanout::broadcast; }

  std::string setup(const Config& config) override {
    if (config.message_size > t_.max_message)
      throw Unsupported("messages of " + std::to_string(config.message_size) +
                        " bytes exceed the topic's max_message (" + std::to_string(t_.max_message) + ")");
    if (t_.check)
      if (const std::string why = t_.check(); !why.empty()) throw TransportError(why);
    return t_.note;
  }

  std::unique_ptr<Sender> open_sender(int) override {
    auto topic = open_topic(t_.sender_ns);
    auto publisher = topic.publisher();
    if (!publisher) fail("publisher", publisher.error());
    return std::make_unique<ColoSender>(std::move(publisher).value());
  }

  std::unique_ptr<Receiver> open_receiver(int) override {
    auto topic = open_topic(t_.receiver_ns);
    auto subscriber = topic.subscribe(SubscribeOptions{});  // block, history 0: only what is published from now
    if (!subscriber) fail("subscribe", subscriber.error());
    return std::make_unique<ColoReceiver>(std::move(subscriber).value());
  }

  void teardown() noexcept override {}

 private:
  Topic open_topic(const std::string& ns) const {
    NodeOptions options;
    options.ns = ns;
    auto node = Node::open(options);
    if (!node) fail("open namespace " + ns, node.error());
    auto topic = node->topic(t_.topic, OpenMode::open);
    if (!topic) fail("open topic " + t_.topic + " in namespace " + ns, topic.error());
    return std::move(topic).value();
  }

  RemoteTopic t_;
};

}  // namespace

std::unique_ptr<TransportFactory> colo_queue_transport(std::size_t batch) {
  return std::make_unique<ColoFactory>(true, batch);
}
std::unique_ptr<TransportFactory> colo_topic_transport(std::size_t batch) {
  return std::make_unique<ColoFactory>(false, batch);
}
std::unique_ptr<TransportFactory> colo_remote_topic_transport(RemoteTopic topic) {
  return std::make_unique<RemoteTopicFactory>(std::move(topic));
}

}  // namespace colo::bench
