#include "daemon.hpp"

#include "instance.hpp"
#include "links/link_service.hpp"
#include "metrics_server.hpp"
#include "lock_service.hpp"
#include "uring_wait.hpp"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <random>
#include <string_view>
#include <zmq.hpp>

#include <mutex>
#include <thread>

#include "colo/channel.hpp"
#include "colo/internal/clock.hpp"
#include "colo/internal/federation.hpp"
#include "colo/internal/links.hpp"  // publish_annotated: relayed messages in batches
#include "colo/internal/text.hpp"
#include "colo/names.hpp"
#include "control.capnp.h"
#include "federation.capnp.h"

namespace colo::bridge {
namespace {

constexpr std::uint16_t kProtocol = 4;  // 2: batch frames; 3: stream epochs (Subscribe.epoch); 4: byte credit
// Cap'n Proto read limits for frames from the network: a frame is at most
// max_frame bytes, so its traversal is bounded by its own size in words;
// nesting is shallow in our schemas.
constexpr int kNestingLimit = 8;
// No ring publishes 2^62 messages (146 years at a billion a second): a
// sequence or a lost count beyond it is not one a colod sent, and taking it
// would make every later real message look like a duplicate.
constexpr std::uint64_t kMaxWireSequence = std::uint64_t{1} << 62;
constexpr std::uint64_t kLogEvery = 1000;  // after the first 10, log 1 bad frame in this many
constexpr std::size_t kMaxRelayedRuns = 1 << 16;  // per topic: 1 MiB of memory at most
// Batches: what the origin has ready within credit goes out in one frame of
// up to this many messages and payload bytes; a larger message goes alone.
constexpr std::size_t kMaxBatchEntries = 512;
constexpr std::size_t kMaxBatchBytes = 256 * 1024;
constexpr std::size_t kMaxBatchedMessage = 16 * 1024;
// The event loop's longest sleep with nothing federated (see poll_once).
constexpr std::uint64_t kIdlePollMs = 200;

// The credit window of a topic's streams to us, in payload bytes and in
// messages. Bytes: limits.credit_bytes, at most half the topic's ring
// (beyond our ring they would only wait in our memory), at least one of its
// largest messages; kNoByteLimit when credit_bytes is 0. Messages: one per
// 32 bytes of that (the entries of what waits cost memory too), at least
// limits.credit, at most 1,000,000; limits.credit without a byte limit.
// What a peer may leave waiting here stays within the byte window plus one
// message. Counted in bytes, a 64 MiB ring whose largest message is 4 KiB
// or 64 KiB still gets a window of 524,288 64-byte messages: with a window of
// 1,024 messages a 64-byte stream across two colods made 0.34-0.38x of raw
// ZeroMQ's msg/s, 0.57-0.73x with 16,384-65,536 (docs/benchmarks.md, "The
// credit window, swept").
constexpr std::uint64_t kNoByteLimit = ~std::uint64_t{0};  // Subscribe.creditBytes of a stream without one
constexpr std::int64_t kMaxByteCredit = std::int64_t{1} << 62;  // byte credit saturates here (forged frames)
constexpr std::uint64_t kWindowBytesPerMessage = 32;

std::uint64_t topic_window_bytes(const Config& config, const ChannelStats& topic) {
  if (config.credit_bytes == 0) return kNoByteLimit;
  return std::max<std::uint64_t>(std::min<std::uint64_t>(config.credit_bytes, topic.capacity / 2),
                                 std::max<std::uint64_t>(1, topic.max_message));
}

std::uint32_t topic_window(const Config& config, std::uint64_t window_bytes) {
  if (window_bytes == kNoByteLimit) return config.credit;
  return static_cast<std::uint32_t>(
      std::clamp<std::uint64_t>(window_bytes / kWindowBytesPerMessage, config.credit, 1'000'000));
}

// credit + more, at most kMaxByteCredit (credit is at most that, and below
// 0 by less than one message: the difference never overflows).
std::int64_t add_byte_credit(std::int64_t credit, std::uint64_t more) {
  if (more >= static_cast<std::uint64_t>(kMaxByteCredit - credit)) return kMaxByteCredit;
  return credit + static_cast<std::int64_t>(more);
}

// Where colod's loop cannot sleep on the rings' futex words itself
// (UringWait, uring_wait.hpp: Linux 6.7 and later), this wakes it when a
// cluster topic gets a message while it sleeps in zmq_poll, which cannot
// wait on a futex: one thread per topic sleeps on the ring as a registered
// waiter (so the publisher's commit wakes it, as it would a subscriber) and
// writes to an eventfd the loop polls. The loop arms it just before it
// sleeps, with the message count its cursors have read up to; one wake per
// arming. Without it a message would wait for the next poll timeout (a
// millisecond or more).
class Waker {
 public:
  static constexpr std::uint64_t kDisarmed = ~std::uint64_t{0};

  Waker(std::string ns, std::string topic, int eventfd)
      : thread_([this, ns, topic, eventfd] { run(ns, topic, eventfd); }) {}
  ~Waker() {
    stop_ = true;
    armed_.store(0);
    armed_.notify_all();
    thread_.join();
  }
  Waker(const Waker&) = delete;
  Waker& operator=(const Waker&) = delete;

  void arm(std::uint64_t count) {
    if (armed_.exchange(count) != count) armed_.notify_one();
  }
  void disarm() { armed_.store(kDisarmed); }

 private:
  void run(const std::string& ns, const std::string& topic_name, int eventfd) {
    NodeOptions options;
    options.ns = ns;
    auto node = Node::open(options);
    if (!node) return;  // the loop then wakes on its timeout, as without a waker
    auto topic = node->topic(topic_name, OpenMode::open);
    if (!topic) return;
    auto sleeper = topic->subscribe(SubscribeOptions{Backpressure::lossy, std::uint64_t{0}, std::nullopt});
    if (!sleeper) return;
    while (!stop_.load()) {
      std::uint64_t count = armed_.load();
      if (count == kDisarmed) {
        armed_.wait(kDisarmed);
        continue;
      }
      if (internal::wait_published(*sleeper, count, std::chrono::milliseconds(50)) &&
          armed_.compare_exchange_strong(count, kDisarmed)) {
        const std::uint64_t one = 1;
        (void)!::write(eventfd, &one, sizeof one);
      }
    }
  }

  std::atomic<std::uint64_t> armed_{kDisarmed};
  std::atomic<bool> stop_{false};
  std::thread thread_;  // last: starts after the members it uses
};

using internal::monotonic_ns;
using internal::realtime_ns;

// Serialises a built message into one ZeroMQ frame.
zmq::message_t to_frame(capnp::MessageBuilder& builder) {
  // The flat array becomes the frame's buffer (no second copy); ZeroMQ frees
  // it, possibly from its I/O thread, when the frame has been sent.
  auto* words = new kj::Array<capnp::word>(capnp::messageToFlatArray(builder));
  const auto bytes = words->asBytes();
  zmq::free_fn* release = [](void*, void* hint) { delete static_cast<kj::Array<capnp::word>*>(hint); };
  return zmq::message_t(const_cast<capnp::byte*>(bytes.begin()), bytes.size(), release, words);
}

// A frame from the network, copied into word-aligned memory and read with
// explicit limits. Throws kj::Exception on anything malformed.
class FrameReader {
 public:
  explicit FrameReader(const zmq::message_t& frame)
      : words_(kj::heapArray<capnp::word>((frame.size() + sizeof(capnp::word) - 1) / sizeof(capnp::word))) {
    if (frame.size() % sizeof(capnp::word) != 0) KJ_FAIL_REQUIRE("frame size is not a multiple of 8 bytes");
    std::memcpy(words_.begin(), frame.data(), frame.size());
    capnp::ReaderOptions options;
    options.traversalLimitInWords = words_.size() + 16;  // a frame cannot make us read more than itself
    options.nestingLimit = kNestingLimit;
    reader_.emplace(words_.asPtr(), options);
  }
  template <typename T>
  typename T::Reader root() {
    return reader_->getRoot<T>();
  }

 private:
  kj::Array<capnp::word> words_;
  std::optional<capnp::FlatArrayMessageReader> reader_;
};

std::string text_of(capnp::Text::Reader text) { return std::string(text.cStr(), text.size()); }
std::span<const std::byte> as_bytes(capnp::Data::Reader data) {
  return {reinterpret_cast<const std::byte*>(data.begin()), data.size()};
}
std::span<const std::byte> as_bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

// Messages of one object on their way into one frame: a `data` frame for
// one, a `batch` frame for several.
struct Staged {
  std::uint64_t sequence, timestamp;
  std::span<const std::byte> payload;  // valid until the frame is built
};
zmq::message_t data_frame(const std::string& origin, const std::string& object, std::uint32_t epoch,
                          const std::vector<Staged>& staged) {
  // One first segment big enough for the whole frame: no growth, no
  // zero-filled 8 KiB segment for a small one.
  std::size_t words = 32 + (origin.size() + object.size()) / 8;
  for (const auto& s : staged) words += 6 + (s.payload.size() + 7) / 8;
  capnp::MallocMessageBuilder builder(static_cast<unsigned>(words), capnp::AllocationStrategy::FIXED_SIZE);
  auto payload_of = [](const Staged& s) {
    return capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(s.payload.data()), s.payload.size());
  };
  if (staged.size() == 1) {
    auto data = builder.initRoot<wire::PeerFrame>().initData();
    data.setOrigin(origin);
    data.setObject(object);
    data.setSequence(staged[0].sequence);
    data.setTimestamp(staged[0].timestamp);
    data.setPayload(payload_of(staged[0]));
    data.setEpoch(epoch);
  } else {
    auto batch = builder.initRoot<wire::PeerFrame>().initBatch();
    batch.setOrigin(origin);
    batch.setObject(object);
    batch.setEpoch(epoch);
    auto entries = batch.initEntries(static_cast<unsigned>(staged.size()));
    for (unsigned i = 0; i < staged.size(); ++i) {
      entries[i].setSequence(staged[i].sequence);
      entries[i].setTimestamp(staged[i].timestamp);
      entries[i].setPayload(payload_of(staged[i]));
    }
  }
  return to_frame(builder);
}

void set_int(zmq::socket_t& s, int option, int value) {
  if (zmq_setsockopt(s.handle(), option, &value, sizeof value) != 0)
    throw zmq::error_t();
}
void set_int64(zmq::socket_t& s, int option, std::int64_t value) {  // ZMQ_MAXMSGSIZE is 64-bit
  if (zmq_setsockopt(s.handle(), option, &value, sizeof value) != 0) throw zmq::error_t();
}
void set_bytes(zmq::socket_t& s, int option, const std::string& value) {
  if (zmq_setsockopt(s.handle(), option, value.data(), value.size()) != 0) throw zmq::error_t();
}

Result<std::string> read_key_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Error{Errc::not_found, path + ": cannot read the secret key file"};
  std::string key;
  in >> key;
  if (key.size() != 40) return Error{Errc::invalid_argument, path + ": a CURVE secret key is 40 Z85 characters"};
  return key;
}

}  // namespace

Result<KeyPair> generate_keypair() {
  char pub[41] = {}, sec[41] = {};
  if (zmq_curve_keypair(pub, sec) != 0)
    return Error{Errc::system, std::string("cannot make a CURVE key pair: ") + zmq_strerror(zmq_errno())};
  return KeyPair{pub, sec};
}

Result<std::string> public_key_of(const std::string& secret_key) {
  char pub[41] = {};
  if (secret_key.size() != 40 || zmq_curve_public(pub, secret_key.c_str()) != 0)
    return Error{Errc::invalid_argument, "not a Z85 CURVE secret key"};
  return std::string(pub);
}

// ------------------------------------------------------------------- state

struct Daemon::Impl {
  Config config;
  Log log;
  std::uint64_t incarnation = 0;
  std::uint64_t started_ns = 0;
  std::string public_key, secret_key;  // ours; empty: CURVE off

  std::optional<Node> node;
  // A cluster-scoped topic or queue of this namespace.
  struct ClusterObject {
    std::string name;
    std::optional<Topic> topic;      // a topic: this
    std::optional<Queue> queue;      // a queue: this
    std::optional<Publisher> relay;  // publishes what peers send us
    Backpressure backpressure = Backpressure::block;  // topic: of our cursors for peers
    // Queue: the node that holds it, and colod's own consumer, which takes
    // messages out of our ring for peers (see "CLUSTER QUEUE" in daemon.hpp).
    std::string home;
    bool at_home = false;
    std::optional<Consumer> taker;
    std::uint32_t local_consumers = 0;  // live consumers of our ring other than colod (refreshed each loop)
    std::uint64_t depth = 0;            // messages in our ring not yet taken (refreshed each loop)
    // Traffic with all peers, for `colo stat` (the control socket's status).
    std::uint64_t messages_in = 0, messages_out = 0, bytes_in = 0, bytes_out = 0, lost = 0, duplicates = 0;
    // Topic: the ring sequences of the records we relayed, as runs
    // [first, last] (bursts from a peer are contiguous), so that a lapped
    // cursor can tell how many of the records it missed were our own
    // messages. Exact from relayed_known_from on (our start, or the oldest
    // run forgotten to stay within kMaxRelayedRuns).
    std::deque<std::pair<std::uint64_t, std::uint64_t>> relayed_runs;
    std::uint64_t relayed_known_from = 0;
    void note_relayed(std::uint64_t ring_seq) {
      if (!relayed_runs.empty() && relayed_runs.back().second + 1 == ring_seq) {
        relayed_runs.back().second = ring_seq;
        return;
      }
      relayed_runs.emplace_back(ring_seq, ring_seq);
      if (relayed_runs.size() > kMaxRelayedRuns) {
        relayed_known_from = relayed_runs.front().second + 1;
        relayed_runs.pop_front();
      }
    }
    // How many records in ring sequences [from, to) we know we relayed.
    std::uint64_t relayed_between(std::uint64_t from, std::uint64_t to) const {
      std::uint64_t n = 0;
      for (const auto& [first, last] : relayed_runs) {
        const std::uint64_t lo = std::max(first, from), hi = std::min(last + 1, to);
        if (lo < hi) n += hi - lo;
      }
      return n;
    }
    // A topic: how the loop learns of a publish while it sleeps (started once
    // sockets are open). With io_uring, `sleeper` registers as a sleeping
    // reader while the loop sleeps on the ring's futex word; without, a Waker.
    std::optional<Subscriber> sleeper;
    std::unique_ptr<Waker> waker;
    // Topic: messages, and payload bytes, a peer may have sent us and we
    // have not yet published (topic_window); a queue uses limits.credit
    // messages and no byte limit.
    std::uint32_t window = 0;
    std::uint64_t window_bytes = kNoByteLimit;
    bool is_queue() const noexcept { return queue.has_value(); }
  };
  std::vector<ClusterObject> objects;

  // What we send to one peer for one topic (we are the origin).
  struct OutStream {
    std::optional<Subscriber> cursor;  // lossy, on our ring: what to send next
    // Block topics: a blocking subscriber at the oldest message the peer has
    // not yet confirmed (by credit): our writers wait for it, so whatever
    // the peer may ask again after a dropped link is still here.
    std::optional<Subscriber> retain;
    std::optional<Message> retain_head;  // the oldest unconfirmed message of ours, held (after `retain`: destroyed first)
    std::uint64_t received_through = 0;  // the peer has received our messages up to this wire sequence
    std::uint64_t credit = 0;
    // Byte credit (topics, protocol 4): a message starts only while this is
    // above 0, so it goes below by less than one message.
    bool byte_limited = false;
    std::int64_t credit_bytes = 0;
    bool can_send() const noexcept { return credit > 0 && (!byte_limited || credit_bytes > 0); }
    // Read from the ring after the byte credit ran out (a read takes up to
    // kMaxBatchEntries messages before their sizes are known, so that
    // frames stay large), copied, in order; they go first when credit
    // comes. At most one read's worth.
    struct Overflow {
      std::uint64_t wire_seq, timestamp;
      std::string payload;
    };
    std::deque<Overflow> overflow;
    std::uint64_t missed_seen = 0;
    std::uint64_t last_sent = 0;       // sequence of the last data frame sent
    std::uint64_t next_read = 0;       // ring sequence the cursor reads next (for arming the waker)
    std::uint64_t subscribed_from = ~std::uint64_t{0};  // fromSequence of the last subscribe (a repeat is logged quietly)
    std::uint32_t epoch = 0;           // of the last subscribe: echoed in every frame of this stream
    std::deque<zmq::message_t> pending;  // encoded frames not accepted by ZeroMQ yet (a few: lost, batches)
    // Queues: messages taken from our ring for the peer, with their wire
    // sequence, kept until it confirms receipt (receivedThrough) and sent
    // again after a new subscribe. Bounded by the peer's credit.
    bool queue_stream = false;
    std::deque<std::pair<std::uint64_t, std::string>> unconfirmed;
    std::size_t unsent = 0;         // index in `unconfirmed` of the first not sent in this session
    std::uint64_t next_seq = 1;     // wire sequence of the next message taken
  };
  // What we receive from one peer for one topic.
  struct InStream {
    std::uint64_t last_delivered = 0;  // highest origin sequence published here
    std::uint64_t uncredited = 0;      // published since the last credit we sent
    std::uint64_t acked_through = 0;   // receivedThrough we last told the origin
    // The stream's epoch: our subscribes sent so far; frames of another are
    // dropped (early_frame). `allowance`: messages the origin may still send
    // in this epoch (the subscribe's credit and every credit frame since,
    // less what arrived); what comes beyond it is dropped (over_credit).
    std::uint32_t epoch = 0;
    std::uint64_t allowance = 0;
    // The same in payload bytes (topics): a message is taken while the byte
    // allowance is above 0, the rule the origin sends by. `uncredited_bytes`:
    // of the messages published since the last credit we sent.
    bool byte_limited = false;
    std::int64_t allowance_bytes = 0;
    std::uint64_t uncredited_bytes = 0;
    std::uint64_t unacked_bytes = 0;  // received since we last told the origin receivedThrough
    bool resubscribe = false;          // the subscribe could not be sent: try again at the next heartbeat
    // Queue at its home, seen from a non-home host: credit follows demand
    // (our consumers' appetite), not publication; `outstanding` is credit
    // granted and not yet used by the home.
    bool demand = false;
    std::uint64_t outstanding = 0;
    // Received while our ring was full (a blocking subscriber is slow), in
    // order. Bounded: the origin sends at most `credit` messages beyond what
    // we confirmed, and we confirm only what we published.
    std::deque<std::pair<std::uint64_t, std::string>> waiting;
    // The highest sequence we have from the origin (delivered or waiting).
    std::uint64_t newest() const noexcept {
      return waiting.empty() ? last_delivered : std::max(last_delivered, waiting.back().first);
    }
  };
  struct Peer {
    PeerConfig config;
    std::uint32_t id = 0;
    zmq::socket_t dealer;
    // Per topic index. Deques: a topic declared at run time is appended
    // without moving the others (a held Message points at its Reader).
    std::deque<OutStream> out;
    std::deque<InStream> in;
    std::string routing_id;            // of its DEALER on our ROUTER; "" until its hello
    std::uint64_t peer_incarnation = 0;
    std::uint64_t last_hello_in_ns = 0;  // last hello (or data, lost) from it on our ROUTER
    std::uint32_t silent_heartbeats = 0;  // our heartbeats since then
    std::uint64_t state_since_ns = 0;
    bool connected = false;
    PeerCounters counters;
  };
  std::vector<Peer> peers;
  DaemonCounters counters;

  // Metrics: the event loop renders the Prometheus text every heartbeat;
  // the HTTP thread only serves the last rendering (no shared counters).
  std::mutex metrics_mutex;
  std::string metrics_text;
  std::unique_ptr<LockService> locks;  // cluster-scope locks ([[lock_backend]]); null without backends
  std::unique_ptr<LinkService> links;  // links to other systems ([[link]]); null without links
  std::unique_ptr<MetricsServer> http;  // null without [metrics] port
  std::optional<NamespaceLock> instance_lock;  // held for our life: one colod per namespace

  zmq::context_t context;
  zmq::socket_t router, zap, monitor, control;
  bool control_bound = false;  // the socket file is ours to remove at the end
  std::string control_path() const {
    return config.control_socket.empty() ? default_control_socket(config.ns) : config.control_socket;
  }
  int wake_fd = -1;  // eventfd the topics' Wakers write to
  // Sleeps on the sockets and the topics' futex words at once; null: Wakers
  // (a kernel before 6.7, io_uring disabled, or COLOD_WAKER_THREADS=1).
  std::unique_ptr<UringWait> uring;
  void start_ring_wake(ClusterObject& object);
  void sleep_on_sockets_and_rings(std::vector<zmq::pollitem_t>& items, int timeout_ms);
  std::vector<void*> handled_sockets_;  // sockets with input in the last pass (asked again before a sleep)
  // Scratch of sleep_on_sockets_and_rings, kept to avoid allocating per sleep.
  struct SleepScratch {
    std::vector<UringWait::FutexWord> words;
    std::vector<Subscriber*> registered;  // the topics' sleepers armed on `words`
    std::vector<int> fds;
    std::vector<std::size_t> item_of_fd;  // fds[i] is items[item_of_fd[i]]'s
    std::vector<std::size_t> readable;
  } sleep_scratch_;
  std::uint64_t next_full_look_ns_ = 0;  // a lingering loop asks every socket at least this often
  // While messages flow, the loop polls the rings itself for a short while
  // after each move instead of sleeping behind a Waker: a publish is then
  // picked up without the waker thread's wake-up and the eventfd (one
  // thread hop less on the hot path). The window follows the gaps seen
  // between moves (about twice their average, 2 to 50 us; none when they
  // are longer than 40 us: a pass that only looks costs each socket's
  // ZMQ_EVENTS, two system calls, and finds nothing) and is
  // closed for kContendedNs once the loop sees itself descheduled: on a
  // host whose CPUs are wanted elsewhere it sleeps at once, as a blocking
  // reader of the ring does.
  struct Linger {
    std::uint64_t until_ns = 0;            // poll without sleeping until then
    std::uint64_t last_move_ns = 0;
    std::uint64_t gap_ns = 0;              // average gap between moves (EWMA, 1/8)
    std::uint64_t last_poll_end_ns = 0;    // when the last lingering pass ended (0: it did not linger)
    std::uint64_t contended_until_ns = 0;  // no lingering until then
  } linger;
  std::uint64_t moved() const;  // messages relayed in and out so far, all peers
  // A topic's first message (as a count: its sequence + 1) that a stream with
  // credit has not read; Waker::kDisarmed if none waits for one.
  std::uint64_t first_unread(int topic) const {
    std::uint64_t count = Waker::kDisarmed;
    for (const auto& peer : peers) {
      const auto& out = peer.out[topic];
      if (out.cursor && out.can_send()) count = std::min(count, out.next_read + 1);
    }
    return count;
  }
  std::uint64_t next_heartbeat_ns = 0;
  std::uint64_t next_queue_refresh_ns = 0;
  std::uint64_t heartbeats = 0;

  explicit Impl(Config c) : config(std::move(c)) {}
  ~Impl() {
    http.reset();
    for (auto& object : objects) object.waker.reset();  // joins the threads before the eventfd closes
    if (wake_fd >= 0) ::close(wake_fd);
    // The context's destructor waits until every socket of it is closed;
    // the peers' dealers are declared before it, so they would close after:
    // a start() that failed once the sockets were open (a taken metrics
    // port) would hang colod's exit. run() has closed them already.
    close_sockets();
  }
  // Idempotent.
  void close_sockets() {
    for (auto& peer : peers) peer.dealer.close();
    router.close();
    control.close();
    monitor.close();
    zap.close();
  }

  int object_index(std::string_view name) const {
    for (std::size_t i = 0; i < objects.size(); ++i)
      if (objects[i].name == name) return static_cast<int>(i);
    return -1;
  }
  Peer* peer_by_name(std::string_view name) {
    for (auto& p : peers)
      if (p.config.name == name) return &p;
    return nullptr;
  }
  Peer* peer_by_routing_id(const std::string& id) {
    for (auto& p : peers)
      if (!p.routing_id.empty() && p.routing_id == id) return &p;
    return nullptr;
  }

  // Data on a connection whose hello has not arrived yet (a peer's DEALER
  // that reconnected sends what was queued before its next hello), or of a
  // stream's earlier epoch (in flight when we subscribed again). Not an
  // attack and not lost: dropped here, and sent again in the new stream.
  void early_frame() {
    ++counters.early_frames;
    if (counters.early_frames <= 3 || counters.early_frames % kLogEvery == 0)
      log.write(LogLevel::info, "frame #%llu of a stream we asked to restart dropped (it will be sent again)",
                static_cast<unsigned long long>(counters.early_frames));
  }

  void heard_from(Peer& peer, std::uint64_t now) {
    peer.last_hello_in_ns = now;
    peer.silent_heartbeats = 0;
  }
  // A hello (or any frame) from it on our ROUTER within 3 heartbeat intervals.
  bool session_alive(const Peer& peer, std::uint64_t now) const {
    // Silent means both: 3 intervals of wall time, and 3 of our own heartbeats. A colod
    // that was not running for a while (descheduled on a loaded host) runs
    // one heartbeat when it is back, maybe before ZeroMQ's I/O thread has
    // handed it the hellos waiting in its socket: the peer was not silent,
    // we were. Declaring it down would cost both sides a new stream.
    return peer.last_hello_in_ns != 0 && (now - peer.last_hello_in_ns < 3ull * config.heartbeat_ms * 1'000'000 ||
                                          peer.silent_heartbeats < 3);
  }

  void bad_frame(const char* where, const std::string& why) {
    ++counters.bad_frames;
    if (counters.bad_frames <= 10 || counters.bad_frames % kLogEvery == 0)
      log.write(LogLevel::warn, "bad frame #%llu on %s dropped: %s", static_cast<unsigned long long>(counters.bad_frames),
                where, why.c_str());
  }

  Result<void> start();
  Result<void> start_metrics();
  Result<void> declare_topic(const std::string& name);
  void render_metrics();
  void open_sockets();
  void open_dealer(Peer& peer);
  void poll_once(int timeout_ms);
  void heartbeat();
  void on_router();
  void on_router_frame(const std::string& routing_id, zmq::message_t& frame);
  void on_dealer(Peer& peer);
  void on_dealer_frame(Peer& peer, const zmq::message_t& frame);
  void on_zap();
  void on_monitor();
  void on_control();
  // The reply to one control request (`request`, a ControlRequest), built into `builder`.
  void answer_control(const zmq::message_t& request, capnp::MessageBuilder& builder);
  void pump(Peer& peer);
  void pump_queue(Peer& peer, int queue);
  bool send_pending(Peer& peer, OutStream& out);
  void refresh_queue(ClusterObject& queue);
  void grant_demand(Peer& peer, int queue);
  void requeue_unconfirmed();
  bool queue_link(const ClusterObject& queue, const Peer& peer) const {
    return queue.at_home || queue.home == peer.config.name;  // a queue's messages go through its home only
  }
  std::uint64_t push_backlog() const { return 4ull * config.credit; }
  // A message that came from a peer, still in its frame (or in `waiting`).
  struct Incoming {
    std::uint64_t seq;  // at the origin
    std::span<const std::byte> payload;
  };
  void deliver(Peer& peer, int object, std::span<const Incoming> messages);
  void on_rewind(Peer& peer, int object, std::uint64_t sequence);
  std::size_t publish_from(Peer& peer, int object, std::span<const Incoming> messages);
  // Scratch vectors of deliver/publish_from/drain, kept to avoid allocating per frame.
  std::vector<Incoming> incoming_, fresh_, waiting_view_;
  std::vector<internal::AnnotatedMessage> annotated_;
  std::vector<std::uint64_t> ring_seqs_;
  void drain(Peer& peer, int topic);
  void acknowledge(Peer& peer, int topic, bool force);
  void advance_retain(OutStream& out);
  void subscribe(Peer& peer, int topic);
  bool send_to_peer_router(Peer& peer, zmq::message_t&& frame);
};

Daemon::Daemon(Config config) : impl_(std::make_unique<Impl>(std::move(config))) {}
Daemon::~Daemon() = default;

Result<void> Daemon::start() { return impl_->start(); }

Result<void> Daemon::Impl::start() {
  log.configure(config.node_name, config.log_level);
  started_ns = monotonic_ns();
  incarnation = std::random_device{}() | static_cast<std::uint64_t>(std::random_device{}()) << 32;
  if (!config.secret_key_file.empty()) {
    auto key = read_key_file(config.secret_key_file);
    if (!key) return std::move(key).error();
    secret_key = *key;
    auto pub = public_key_of(secret_key);
    if (!pub) return Error{Errc::invalid_argument, config.secret_key_file + ": " + pub.error().message};
    public_key = *pub;
  }
  // One colod per namespace, and a control socket that is ours: both before
  // anything is opened, so that a second colod changes nothing.
  NodeOptions node_options;
  node_options.ns = config.ns;
  auto lock = NamespaceLock::take(node_options.shm_dir, config.ns);
  if (!lock) return std::move(lock).error();
  instance_lock.emplace(std::move(lock).value());
  if (auto prepared = prepare_control_socket(control_path()); !prepared) return prepared;
  auto opened = Node::open(node_options);
  if (!opened) return std::move(opened).error();
  node.emplace(std::move(opened).value());
  for (const auto& t : config.topics) {
    ClusterObject local;
    local.name = t.name;
    auto topic = node->topic(t.name, OpenMode::create_or_open, TopicOptions{t.capacity, t.max_message, t.history});
    if (!topic) return Error{topic.error().code, "cluster topic '" + t.name + "': " + topic.error().message};
    local.topic.emplace(std::move(topic).value());
    const auto stats = local.topic->stats();
    local.relayed_known_from = stats.published;  // what was relayed before we started is unknown
    local.window_bytes = topic_window_bytes(config, stats);
    local.window = topic_window(config, local.window_bytes);
    auto relay = local.topic->publisher();
    if (!relay) return Error{relay.error().code, "cluster topic '" + t.name + "': " + relay.error().message};
    local.relay.emplace(std::move(relay).value());
    local.backpressure = t.lossy ? Backpressure::lossy : Backpressure::block;
    objects.push_back(std::move(local));
  }
  for (const auto& q : config.queues) {
    ClusterObject local;
    local.name = q.name;
    local.home = q.home;
    local.at_home = q.home == config.node_name;
    auto queue = node->queue(q.name, OpenMode::create_or_open,
                             QueueOptions{q.capacity, q.max_message, q.acks, q.max_deliveries});
    if (!queue) return Error{queue.error().code, "cluster queue '" + q.name + "': " + queue.error().message};
    local.queue.emplace(std::move(queue).value());
    auto relay = local.queue->producer();
    if (!relay) return Error{relay.error().code, "cluster queue '" + q.name + "': " + relay.error().message};
    local.relay.emplace(std::move(relay).value());
    auto taker = local.queue->consumer();
    if (!taker) return Error{taker.error().code, "cluster queue '" + q.name + "': " + taker.error().message};
    local.taker.emplace(std::move(taker).value());
    objects.push_back(std::move(local));
  }
  for (const auto& pc : config.peers) {
    Peer peer;
    peer.config = pc;
    peer.id = internal::origin_id(pc.name);
    peer.out.resize(objects.size());
    peer.in.resize(objects.size());
    peer.state_since_ns = started_ns;
    for (std::size_t t = 0; t < objects.size(); ++t)
      peer.in[t].demand = objects[t].is_queue() && !objects[t].at_home && objects[t].home == pc.name;
    // Resume where our ring says we stopped (what a previous colod delivered).
    for (std::size_t t = 0; t < objects.size(); ++t) {
      const auto high = objects[t].is_queue() ? internal::relayed_high_water(*objects[t].queue)
                                              : internal::relayed_high_water(*objects[t].topic);
      if (auto it = high.find(peer.id); it != high.end()) peer.in[t].last_delivered = it->second;
    }
    peers.push_back(std::move(peer));
  }
  try {
    open_sockets();
  } catch (const zmq::error_t& e) {
    return Error{Errc::system, std::string("ZeroMQ: ") + e.what()};
  }
  // The first sleep asks every socket (sleep_on_sockets_and_rings).
  handled_sockets_ = {monitor.handle(), control.handle()};
  if (zap) handled_sockets_.push_back(zap.handle());
  if (auto metrics = start_metrics(); !metrics) return metrics;
  wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd < 0) return Error{Errc::system, internal::errno_text("eventfd")};
  const char* threads_asked = std::getenv("COLOD_WAKER_THREADS");
  if (threads_asked && std::string_view(threads_asked) == "1") {
    log.write(LogLevel::info, "ring wake-ups: waker threads (COLOD_WAKER_THREADS=1)");
  } else if (auto opened = UringWait::open()) {
    uring = std::move(opened).value();
    log.write(LogLevel::info, "ring wake-ups: io_uring (the loop sleeps on sockets and rings at once)");
  } else {
    log.write(LogLevel::info, "ring wake-ups: waker threads (%s)", opened.error().message.c_str());
  }
  for (auto& object : objects)
    if (!object.is_queue()) start_ring_wake(object);
  if (!config.lock_backends.empty()) {
    locks = std::make_unique<LockService>(config, log);
    if (auto started = locks->start(); !started) return started;
  }
  if (!config.links.empty()) {
    links = std::make_unique<LinkService>(config, log);
    if (auto started = links->start(); !started) return started;
  }
  if (secret_key.empty() && config.insecure)
    log.write(LogLevel::warn,
              "CURVE is off and [security] insecure = true: anyone who reaches %s can claim to be a peer and send "
              "or receive its messages (docs/security.md)",
              config.listen.c_str());
  log.write(LogLevel::info,
            "started: namespace %s, listening on %s, %zu peer(s), %zu cluster topic(s), %zu cluster queue(s), "
            "%zu lock backend(s), %zu link(s), CURVE %s",
            config.ns.c_str(), config.listen.c_str(), peers.size(), objects.size() - config.queues.size(),
            config.queues.size(), config.lock_backends.size(), config.links.size(), secret_key.empty() ? "off" : "on");
  return Ok{};
}

void Daemon::Impl::open_sockets() {
  const bool curve = !secret_key.empty();
  if (curve) {
    // The ZAP handler must be bound before any CURVE server socket.
    zap = zmq::socket_t(context, zmq::socket_type::rep);
    zap.bind("inproc://zeromq.zap.01");
  }
  router = zmq::socket_t(context, zmq::socket_type::router);
  set_int(router, ZMQ_LINGER, 0);
  set_int(router, ZMQ_ROUTER_MANDATORY, 1);  // a reply to a peer that just left is an error, not a silent drop
  set_int64(router, ZMQ_MAXMSGSIZE, config.max_frame);
  set_int(router, ZMQ_HEARTBEAT_IVL, static_cast<int>(config.heartbeat_ms));
  set_int(router, ZMQ_HEARTBEAT_TIMEOUT, static_cast<int>(3 * config.heartbeat_ms));
  set_int(router, ZMQ_SNDHWM, static_cast<int>(4 * config.credit + 64));
  if (curve) {
    set_int(router, ZMQ_CURVE_SERVER, 1);
    set_bytes(router, ZMQ_CURVE_SECRETKEY, secret_key);
    set_bytes(router, ZMQ_ZAP_DOMAIN, "colo");
  }
  zmq_socket_monitor(router.handle(), "inproc://colod-router-monitor",
                     ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                         ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_DISCONNECTED);
  monitor = zmq::socket_t(context, zmq::socket_type::pair);
  monitor.connect("inproc://colod-router-monitor");
  router.bind(config.listen);

  for (auto& peer : peers) open_dealer(peer);

  // Control socket: its directory is ours and closed to others
  // (prepare_control_socket checked it in start()).
  control = zmq::socket_t(context, zmq::socket_type::router);
  set_int(control, ZMQ_LINGER, 0);
  set_int64(control, ZMQ_MAXMSGSIZE, 64 * 1024);
  control.bind("ipc://" + control_path());
  control_bound = true;
}

// Our connection to the peer's listen socket (a new one replaces the old:
// the peer sees a new routing id, a new session, and subscribes again).
void Daemon::Impl::open_dealer(Peer& peer) {
  if (peer.dealer) peer.dealer.close();  // linger 0: what it still queued is dropped
  peer.dealer = zmq::socket_t(context, zmq::socket_type::dealer);
  set_int(peer.dealer, ZMQ_LINGER, 0);
  set_int(peer.dealer, ZMQ_IMMEDIATE, 1);  // queue nothing for a peer that is not connected
  set_int(peer.dealer, ZMQ_SNDHWM, static_cast<int>(config.credit + 64));
  set_int64(peer.dealer, ZMQ_MAXMSGSIZE, config.max_frame);
  set_int(peer.dealer, ZMQ_HEARTBEAT_IVL, static_cast<int>(config.heartbeat_ms));
  set_int(peer.dealer, ZMQ_HEARTBEAT_TIMEOUT, static_cast<int>(3 * config.heartbeat_ms));
  set_int(peer.dealer, ZMQ_RECONNECT_IVL, 100);
  set_int(peer.dealer, ZMQ_RECONNECT_IVL_MAX, 2000);
  if (!secret_key.empty()) {
    set_bytes(peer.dealer, ZMQ_CURVE_SERVERKEY, peer.config.public_key);
    set_bytes(peer.dealer, ZMQ_CURVE_PUBLICKEY, public_key);
    set_bytes(peer.dealer, ZMQ_CURVE_SECRETKEY, secret_key);
  }
  peer.dealer.connect(peer.config.endpoint);
}

// A topic made cluster-scoped at run time (`colo federate NAME`): from now
// until this colod stops; the config file is what a restart remembers.
// Peers must declare it too, or they drop its frames as unknown (counted).
Result<void> Daemon::Impl::declare_topic(const std::string& name) {
  if (auto ok = validate_object_name(name); !ok) return std::move(ok).error();
  if (object_index(name) >= 0) return Ok{};  // already federated
  ClusterObject local;
  local.name = name;
  auto topic = node->topic(name, OpenMode::create_or_open);
  if (!topic) {
    // An existing topic with other parameters: open it as it is.
    if (topic.error().code != Errc::parameter_mismatch) return std::move(topic).error();
    topic = node->topic(name, OpenMode::open);
    if (!topic) return std::move(topic).error();
  }
  local.topic.emplace(std::move(topic).value());
  const auto stats = local.topic->stats();
  // As the config's check for [[topic]]s: its messages must fit in a frame.
  if (kFrameOverhead + stats.max_message > config.max_frame)
    return Error{Errc::invalid_argument,
                 "topic '" + name + "' takes messages of up to " + std::to_string(stats.max_message) +
                     " bytes, which do not fit in a federation frame of [limits] max_frame = " +
                     std::to_string(config.max_frame) + " bytes (a frame adds up to " + std::to_string(kFrameOverhead) +
                     "): raise max_frame in " + config.path + " to at least " +
                     std::to_string(kFrameOverhead + stats.max_message) + " on every host, or federate a topic "
                     "with a smaller max_message"};
  local.relayed_known_from = stats.published;
  local.window_bytes = topic_window_bytes(config, stats);
  local.window = topic_window(config, local.window_bytes);
  auto relay = local.topic->publisher();
  if (!relay) return std::move(relay).error();
  local.relay.emplace(std::move(relay).value());
  objects.push_back(std::move(local));
  const int t = static_cast<int>(objects.size() - 1);
  const auto high = internal::relayed_high_water(*objects.back().topic);
  for (auto& peer : peers) {
    peer.out.emplace_back();
    auto& in = peer.in.emplace_back();
    if (auto it = high.find(peer.id); it != high.end()) in.last_delivered = it->second;
    if (!peer.routing_id.empty()) subscribe(peer, t);
  }
  start_ring_wake(objects.back());
  log.write(LogLevel::info, "topic %s: declared cluster-scoped over the control socket", name.c_str());
  return Ok{};
}

// ---------------------------------------------------------------- metrics

Result<void> Daemon::Impl::start_metrics() {
  if (config.metrics_port == 0) return Ok{};
  render_metrics();
  auto server = MetricsServer::start(config.metrics_address, config.metrics_port, MetricsServer::Limits{}, [this] {
    std::lock_guard<std::mutex> lock(metrics_mutex);
    return metrics_text;
  });
  if (!server)
    return Error{server.error().code, server.error().message + " (in use? see [metrics] in " + config.path + ")"};
  http = std::move(server).value();
  return Ok{};
}

// Prometheus text format 0.0.4: one family per counter, labelled by peer.
void Daemon::Impl::render_metrics() {
  std::string out;
  auto family = [&](const char* name, const char* type, const char* help) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  };
  auto sample = [&](const std::string& name, const std::string& labels, std::uint64_t value) {
    out += name + (labels.empty() ? "" : "{" + labels + "}") + " " + std::to_string(value) + "\n";
  };
  family("colod_up", "gauge", "1 while the daemon runs");
  sample("colod_up", "node=\"" + config.node_name + "\",namespace=\"" + config.ns + "\"", 1);
  family("colod_uptime_seconds", "gauge", "seconds since the daemon started");
  sample("colod_uptime_seconds", "", (monotonic_ns() - started_ns) / 1'000'000'000);
  const auto queues = static_cast<std::uint64_t>(std::count_if(objects.begin(), objects.end(),
                                                               [](const ClusterObject& o) { return o.is_queue(); }));
  family("colod_cluster_topics", "gauge", "cluster topics federated");
  sample("colod_cluster_topics", "", objects.size() - queues);
  family("colod_cluster_queues", "gauge", "cluster queues federated");
  sample("colod_cluster_queues", "", queues);
  family("colod_object_messages_total", "counter", "messages of a cluster topic or queue exchanged with peers");
  for (const auto& o : objects) {
    const std::string labels = "object=\"" + o.name + "\",kind=\"" + (o.is_queue() ? "queue" : "topic") + "\"";
    sample("colod_object_messages_total", labels + ",direction=\"in\"", o.messages_in);
    sample("colod_object_messages_total", labels + ",direction=\"out\"", o.messages_out);
  }
  family("colod_queue_in_flight", "gauge", "queue messages sent to peers and not yet confirmed");
  for (std::size_t i = 0; i < objects.size(); ++i) {
    if (!objects[i].is_queue()) continue;
    std::uint64_t in_flight = 0;
    for (const auto& p : peers) in_flight += p.out[i].unconfirmed.size();
    sample("colod_queue_in_flight", "object=\"" + objects[i].name + "\"", in_flight);
  }
  family("colod_peer_connected", "gauge", "1 if a hello arrived from the peer within 3 heartbeat intervals");
  for (const auto& p : peers) sample("colod_peer_connected", "peer=\"" + p.config.name + "\"", p.connected ? 1 : 0);
  family("colod_peer_messages_total", "counter", "messages exchanged with the peer");
  for (const auto& p : peers) {
    sample("colod_peer_messages_total", "peer=\"" + p.config.name + "\",direction=\"in\"", p.counters.messages_in);
    sample("colod_peer_messages_total", "peer=\"" + p.config.name + "\",direction=\"out\"", p.counters.messages_out);
  }
  family("colod_peer_bytes_total", "counter", "payload bytes exchanged with the peer");
  for (const auto& p : peers) {
    sample("colod_peer_bytes_total", "peer=\"" + p.config.name + "\",direction=\"in\"", p.counters.bytes_in);
    sample("colod_peer_bytes_total", "peer=\"" + p.config.name + "\",direction=\"out\"", p.counters.bytes_out);
  }
  family("colod_peer_lost_total", "counter", "messages the peer no longer retained for us");
  for (const auto& p : peers) sample("colod_peer_lost_total", "peer=\"" + p.config.name + "\"", p.counters.lost);
  family("colod_peer_duplicates_total", "counter", "resent messages dropped as already delivered");
  for (const auto& p : peers)
    sample("colod_peer_duplicates_total", "peer=\"" + p.config.name + "\"", p.counters.duplicates);
  family("colod_peer_over_credit_total", "counter", "messages the peer sent beyond the credit we granted (dropped)");
  for (const auto& p : peers)
    sample("colod_peer_over_credit_total", "peer=\"" + p.config.name + "\"", p.counters.over_credit);
  family("colod_peer_rewinds_total", "counter", "streams resumed lower: we held sequences the peer never sent");
  for (const auto& p : peers) sample("colod_peer_rewinds_total", "peer=\"" + p.config.name + "\"", p.counters.rewinds);
  family("colod_peer_gaps_filled_total", "counter", "streams resumed after a reconnection");
  for (const auto& p : peers)
    sample("colod_peer_gaps_filled_total", "peer=\"" + p.config.name + "\"", p.counters.gaps_filled);
  family("colod_bad_frames_total", "counter", "malformed or unexpected frames dropped");
  sample("colod_bad_frames_total", "", counters.bad_frames);
  family("colod_rejected_peers_total", "counter", "connections refused by the CURVE allow-list");
  sample("colod_rejected_peers_total", "", counters.rejected_peers);
  family("colod_failed_handshakes_total", "counter", "failed handshakes on the listen socket");
  sample("colod_failed_handshakes_total", "", counters.failed_handshakes);
  family("colod_dropped_connections_total", "counter", "connections closed on the listen socket");
  sample("colod_dropped_connections_total", "", counters.dropped_connections);
  family("colod_early_frames_total", "counter",
         "data of a stream we asked to restart: before a reconnected link's hello, or of an earlier epoch (dropped, sent again)");
  sample("colod_early_frames_total", "", counters.early_frames);
  family("colod_refused_sessions_total", "counter", "hellos naming a peer whose session is alive, from another connection");
  sample("colod_refused_sessions_total", "", counters.refused_sessions);
  family("colod_ring_wakes_total", "counter", "event loop sleeps ended by a publish into a cluster topic (io_uring)");
  sample("colod_ring_wakes_total", "", counters.ring_wakes);
  if (locks) locks->render_metrics(out);
  if (links) links->render_metrics(out);
  std::lock_guard<std::mutex> lock(metrics_mutex);
  metrics_text = std::move(out);
}

// ------------------------------------------------------------------- loop

int Daemon::run(const std::atomic<bool>& stop_requested) {
  auto& d = *impl_;
  while (!stop_requested.load()) {
    try {
      d.poll_once(20);
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      d.log.write(LogLevel::error, "ZeroMQ: %s", e.what());
      return 1;
    }
  }
  d.log.write(LogLevel::info, "stopping: closing sockets");
  if (d.locks) d.locks->stop();  // hands back or marks lost every cluster lock it holds
  if (d.links) d.links->stop();  // each link finishes or leaves what it has in flight (bounded)
  d.requeue_unconfirmed();
  d.http.reset();
  d.close_sockets();
  if (d.control_bound) ::unlink(d.control_path().c_str());
  d.log.write(LogLevel::info, "stopped");
  return 0;
}

void Daemon::Impl::poll_once(int timeout_ms) {
  std::vector<zmq::pollitem_t> items;
  items.push_back({router.handle(), 0, ZMQ_POLLIN, 0});
  items.push_back({monitor.handle(), 0, ZMQ_POLLIN, 0});
  items.push_back({control.handle(), 0, ZMQ_POLLIN, 0});
  if (zap) items.push_back({zap.handle(), 0, ZMQ_POLLIN, 0});
  const std::size_t first_peer = items.size();
  for (auto& peer : peers) items.push_back({peer.dealer.handle(), 0, ZMQ_POLLIN, 0});
  // Streams with credit and messages waiting: poll without sleeping.
  bool busy = false;
  // Queue consumers and backlog: read from the ring's counters (liveness
  // costs a /proc read per reader), every few milliseconds.
  if (monotonic_ns() >= next_queue_refresh_ns) {
    next_queue_refresh_ns = monotonic_ns() + 5'000'000;
    for (auto& object : objects)
      if (object.is_queue()) refresh_queue(object);
  }
  for (auto& peer : peers) {
    for (std::size_t t = 0; t < objects.size(); ++t) {
      const auto& out = peer.out[t];
      busy |= !out.pending.empty();  // ZeroMQ's queue to the peer was full
      busy |= !out.overflow.empty() && out.can_send();
      busy |= out.queue_stream && out.credit > 0 && (out.unsent < out.unconfirmed.size() || objects[t].depth > 0);
      busy |= !peer.in[t].waiting.empty();
    }
  }
  // Lingering after a move (see Linger): poll without sleeping, no waker.
  const std::uint64_t now = monotonic_ns();
  bool lingering = false;
  if (!busy && now < linger.until_ns && now >= linger.contended_until_ns) {
    constexpr std::uint64_t kDescheduledNs = 20'000;
    constexpr std::uint64_t kContendedNs = 50'000'000;
    if (linger.last_poll_end_ns != 0 && now - linger.last_poll_end_ns > kDescheduledNs)
      linger.contended_until_ns = now + kContendedNs;
    else
      lingering = true;
  }
  // Topics: a stream with credit waits for a publish through its Waker,
  // armed at the first message its cursor has not read.
  if (!busy && !lingering)
    for (std::size_t t = 0; t < objects.size(); ++t) {
      if (!objects[t].waker) continue;
      if (const std::uint64_t count = first_unread(static_cast<int>(t)); count != Waker::kDisarmed)
        objects[t].waker->arm(count);
    }
  items.push_back({nullptr, wake_fd, ZMQ_POLLIN, 0});
  // With no cluster topic or queue nothing needs a look between socket
  // events but the heartbeat: sleep until it (at most kIdlePollMs, to see a
  // stop request soon), so that an idle colod costs next to nothing.
  if (objects.empty()) {
    const std::uint64_t until_heartbeat = next_heartbeat_ns > now ? (next_heartbeat_ns - now) / 1'000'000 : 0;
    timeout_ms = static_cast<int>(std::clamp<std::uint64_t>(until_heartbeat, 1, kIdlePollMs));
  }
  if (uring && !busy)
    sleep_on_sockets_and_rings(items, lingering ? 0 : timeout_ms);
  else
    zmq::poll(items.data(), items.size(), std::chrono::milliseconds(lingering ? 0 : busy ? 1 : timeout_ms));
  const std::uint64_t moved_before = moved();
  for (auto& object : objects)
    if (object.waker) object.waker->disarm();
  if (items.back().revents & ZMQ_POLLIN) {
    std::uint64_t wakes = 0;
    (void)!::read(wake_fd, &wakes, sizeof wakes);
  }
  handled_sockets_.clear();
  for (const auto& item : items)
    if (item.socket && item.revents) handled_sockets_.push_back(item.socket);
  if (items[0].revents & ZMQ_POLLIN) on_router();
  if (items[1].revents & ZMQ_POLLIN) on_monitor();
  if (items[2].revents & ZMQ_POLLIN) on_control();
  if (zap && (items[3].revents & ZMQ_POLLIN)) on_zap();
  for (std::size_t i = 0; i < peers.size(); ++i)
    if (items[first_peer + i].revents & ZMQ_POLLIN) on_dealer(peers[i]);
  for (auto& peer : peers) {
    for (std::size_t t = 0; t < objects.size(); ++t)
      if (!peer.in[t].waiting.empty()) drain(peer, static_cast<int>(t));
    for (std::size_t t = 0; t < objects.size(); ++t)
      if (peer.in[t].demand) grant_demand(peer, static_cast<int>(t));
    pump(peer);
  }
  if (moved() != moved_before) {
    constexpr std::uint64_t kMinLingerNs = 2'000, kMaxLingerNs = 50'000;
    constexpr std::uint64_t kLingerWorthNs = 40'000;  // longer gaps: lingering does not pay
    const std::uint64_t at = monotonic_ns();
    if (linger.last_move_ns != 0) {
      const std::uint64_t gap = at - linger.last_move_ns;
      linger.gap_ns = linger.gap_ns - linger.gap_ns / 8 + gap / 8;
    }
    linger.last_move_ns = at;
    linger.until_ns = at + (linger.gap_ns <= kLingerWorthNs
                                ? std::clamp<std::uint64_t>(2 * linger.gap_ns, kMinLingerNs, kMaxLingerNs)
                                : 0);
  }
  if (monotonic_ns() >= next_heartbeat_ns) heartbeat();
  // A hole between this pass's end and the next one's start is time the
  // loop was not running: descheduled (its own work does not count).
  linger.last_poll_end_ns = lingering ? monotonic_ns() : 0;
}

void Daemon::Impl::start_ring_wake(ClusterObject& object) {
  if (uring) {
    auto sleeper = object.topic->subscribe(SubscribeOptions{Backpressure::lossy, std::uint64_t{0}, std::nullopt});
    if (sleeper) {
      object.sleeper.emplace(std::move(sleeper).value());
      return;
    }
    log.write(LogLevel::warn, "topic %s: no reader slot for the loop's ring wake-ups (%s); a waker thread instead",
              object.name.c_str(), sleeper.error().message.c_str());
  }
  object.waker = std::make_unique<Waker>(config.ns, object.name, wake_fd);
}

// The loop's sleep with io_uring: registered as a sleeping reader on each
// topic a stream waits on (so the publisher's commit wakes us, as it would a
// subscriber), it sleeps on those futex words and the sockets' descriptors
// at once. A ZeroMQ socket's descriptor only signals news (ZMQ_FD): what
// ZeroMQ holds already is seen through ZMQ_EVENTS, which is what zmq_poll
// asks of every socket before it sleeps. Each such question costs system
// calls (ZeroMQ's mailbox poll and its fork check), so only the sockets
// whose state may have changed unseen are asked: before the sleep, the data
// sockets (we send on them between events) and those handled in the last
// pass; after it, those whose descriptor fired. A socket nobody touched
// since it was last asked can only change by a command from ZeroMQ's I/O
// thread, which makes its descriptor readable. A timeout of 0 (lingering)
// only looks, and asks every socket once a millisecond: a loop that lingers
// from move to move under steady traffic never sleeps on the descriptors,
// and `colo peers` must still be answered.
void Daemon::Impl::sleep_on_sockets_and_rings(std::vector<zmq::pollitem_t>& items, int timeout_ms) {
  if (timeout_ms == 0) {
    if (const std::uint64_t now = monotonic_ns(); now >= next_full_look_ns_) {
      next_full_look_ns_ = now + 1'000'000;
      zmq::poll(items.data(), items.size(), std::chrono::milliseconds(0));
      return;
    }
  }
  const auto has_input = [](const zmq::pollitem_t& item) {
    int events = 0;
    std::size_t size = sizeof events;
    return zmq_getsockopt(item.socket, ZMQ_EVENTS, &events, &size) == 0 && (events & ZMQ_POLLIN) != 0;
  };
  const auto may_have_changed = [&](const zmq::pollitem_t& item) {
    if (item.socket == router.handle()) return true;
    for (const auto& peer : peers)
      if (item.socket == peer.dealer.handle()) return true;
    return std::find(handled_sockets_.begin(), handled_sockets_.end(), item.socket) != handled_sockets_.end();
  };
  bool ready = false;
  for (auto& item : items)
    if (item.socket && may_have_changed(item) && has_input(item)) {
      item.revents = ZMQ_POLLIN;
      ready = true;
    }
  if (ready || timeout_ms == 0) return;  // input, or lingering (see Linger): no sleep; the rings are read anyway
  // Registered before the last look at each ring: a publish after it wakes us.
  auto& [words, registered, fds, item_of_fd, readable] = sleep_scratch_;
  words.clear();
  registered.clear();
  for (std::size_t t = 0; t < objects.size() && !ready; ++t) {
    if (!objects[t].sleeper) continue;
    const std::uint64_t count = first_unread(static_cast<int>(t));
    if (count == Waker::kDisarmed) continue;
    if (auto wait = internal::arm_publish_wait(*objects[t].sleeper, count)) {
      words.push_back({wait->word, wait->value});
      registered.push_back(&*objects[t].sleeper);
    } else {
      ready = true;  // published already
    }
  }
  if (ready) {
    for (auto* sleeper : registered) internal::end_publish_wait(*sleeper);
    return;
  }
  fds.clear();
  item_of_fd.clear();
  for (std::size_t i = 0; i < items.size(); ++i) {
    int fd = items[i].fd;
    std::size_t size = sizeof fd;
    if (items[i].socket && zmq_getsockopt(items[i].socket, ZMQ_FD, &fd, &size) != 0) continue;
    fds.push_back(fd);
    item_of_fd.push_back(i);
  }
  const auto woken = uring->wait(fds, words, timeout_ms, &readable);
  for (auto* sleeper : registered) internal::end_publish_wait(*sleeper);
  if (woken == UringWait::Woken::futex) ++counters.ring_wakes;
  if (woken == UringWait::Woken::failed) {
    // Not expected once open() checked it: the loop goes on with threads,
    // and this pass looks at every socket.
    log.write(LogLevel::warn, "ring wake-ups: io_uring failed; waker threads from now on");
    uring.reset();
    for (auto& object : objects)
      if (object.sleeper) {
        object.sleeper.reset();
        start_ring_wake(object);
      }
    zmq::poll(items.data(), items.size(), std::chrono::milliseconds(0));
    return;
  }
  for (const std::size_t i : readable) {
    auto& item = items[item_of_fd[i]];
    if (!item.socket || has_input(item)) item.revents = ZMQ_POLLIN;  // a raw fd readable, or a socket with input
  }
}

std::uint64_t Daemon::Impl::moved() const {
  std::uint64_t n = 0;
  for (const auto& peer : peers) n += peer.counters.messages_in + peer.counters.messages_out;
  return n;
}

// Every interval: a hello to each peer (it doubles as our heartbeat and lets
// a restarted peer find us), connection state, and resubscriptions that
// were waiting for room in our ring.
void Daemon::Impl::heartbeat() {
  const std::uint64_t now = monotonic_ns();
  next_heartbeat_ns = now + std::uint64_t{config.heartbeat_ms} * 1'000'000;
  ++heartbeats;
  if (http) render_metrics();
  for (auto& peer : peers) {
    capnp::MallocMessageBuilder builder;
    auto hello = builder.initRoot<wire::PeerFrame>().initHello();
    hello.setNode(config.node_name);
    hello.setProtocol(kProtocol);
    hello.setIncarnation(incarnation);
    hello.setNamespace(config.ns);
    auto frame = to_frame(builder);
    (void)peer.dealer.send(frame, zmq::send_flags::dontwait);  // not connected: nothing to say
    if (peer.silent_heartbeats < UINT32_MAX) ++peer.silent_heartbeats;
    const bool alive = session_alive(peer, now);
    if (alive != peer.connected) {
      peer.connected = alive;
      peer.state_since_ns = now;
      log.write(alive ? LogLevel::info : LogLevel::warn, "peer %s %s", peer.config.name.c_str(),
                alive ? "connected" : "disconnected (no hello for 3 heartbeat intervals)");
      if (!alive) {
        // Stop holding our writers back for it; it resumes by subscribing
        // again (from what we still retain) when it is back. It may not
        // know it was declared down (a colod descheduled for 3 heartbeats
        // finds our hellos waiting when it runs again), so our connection
        // to it is made anew: a new connection is a new session there,
        // whose first act is to subscribe again. Without that our streams
        // to it would stay stopped for good.
        //
        // Its connection to us (the routing id) is kept: frames still on
        // it come in order after what we have, and are taken as before. A
        // new session there would make us subscribe again while its old
        // stream is in flight: frames dropped before its next hello and
        // taken after it would leave a hole the resend cannot fill (they
        // count as duplicates then).
        for (std::size_t t = 0; t < objects.size(); ++t) {
          auto& out = peer.out[t];
          out.cursor.reset();
          out.retain_head.reset();
          out.retain.reset();
          out.pending.clear();
          out.overflow.clear();
          out.credit = 0;
          out.unsent = 0;
          if (!out.unconfirmed.empty())
            log.write(LogLevel::warn, "queue %s: %zu message(s) sent to %s and not confirmed: kept for it",
                      objects[t].name.c_str(), out.unconfirmed.size(), peer.config.name.c_str());
        }
        open_dealer(peer);
      }
    }
    if (!peer.routing_id.empty())
      for (std::size_t t = 0; t < objects.size(); ++t) {
        // A stream that never brought anything is asked for again now and
        // then: the peer may have declared the topic after our subscribe.
        const bool never = peer.in[t].last_delivered == 0 && peer.in[t].waiting.empty();
        if (peer.in[t].resubscribe || (never && heartbeats % 10 == 0)) subscribe(peer, static_cast<int>(t));
        acknowledge(peer, static_cast<int>(t), true);  // a quiet stream still confirms its tail
      }
  }
}

// ------------------------------------------------------- receiving side

void Daemon::Impl::on_router() {
  for (int budget = 0; budget < 4096; ++budget) {
    zmq::message_t identity;
    if (!router.recv(identity, zmq::recv_flags::dontwait)) return;
    // [routing id, frame]: keep up to 4 parts, drain the rest of a longer one.
    std::vector<zmq::message_t> parts;
    for (bool more = identity.more(); more;) {
      zmq::message_t part;
      if (!router.recv(part, zmq::recv_flags::dontwait)) break;
      more = part.more();
      if (parts.size() < 4) parts.push_back(std::move(part));
    }
    const std::string routing_id(static_cast<const char*>(identity.data()), identity.size());
    if (parts.size() != 1) {
      bad_frame("listen socket", "expected one frame per message, got " + std::to_string(parts.size()));
      continue;
    }
    on_router_frame(routing_id, parts[0]);
  }
}

void Daemon::Impl::on_router_frame(const std::string& routing_id, zmq::message_t& frame) {
  try {
    FrameReader reader(frame);
    auto root = reader.root<wire::PeerFrame>();
    // With CURVE, ZAP admitted the connection and named the peer (User-Id).
    const char* user = secret_key.empty() ? nullptr : zmq_msg_gets(frame.handle(), "User-Id");
    switch (root.which()) {
      case wire::PeerFrame::HELLO: {
        auto hello = root.getHello();
        const std::string name = text_of(hello.getNode());
        Peer* peer = peer_by_name(name);
        if (peer == nullptr) return bad_frame("listen socket", "hello from unknown node '" + name + "'");
        if (user != nullptr && name != user)
          return bad_frame("listen socket", "hello claims node '" + name + "' with the key of '" + user + "'");
        if (hello.getProtocol() != kProtocol)
          return bad_frame("listen socket", "node '" + name + "' speaks protocol " + std::to_string(hello.getProtocol()));
        const std::uint64_t now = monotonic_ns();
        // A second connection naming a peer whose session is alive does not
        // replace it: without CURVE, anyone may claim a name. The same colod
        // (its incarnation, a random number only its hellos to us carry)
        // on a new connection is the peer that reconnected: taken at once.
        // Another claim is taken once the old session has been silent for 3
        // heartbeat intervals.
        if (peer->routing_id != routing_id && !peer->routing_id.empty() && session_alive(*peer, now) &&
            hello.getIncarnation() != peer->peer_incarnation) {
          ++counters.refused_sessions;
          if (counters.refused_sessions <= 10 || counters.refused_sessions % kLogEvery == 0)
            log.write(LogLevel::warn,
                      "hello #%llu naming peer %s from a second connection while its session is alive: refused "
                      "(another colod claiming it is taken once the old session has been silent for 3 heartbeats)",
                      static_cast<unsigned long long>(counters.refused_sessions), name.c_str());
          return;
        }
        heard_from(*peer, now);
        const bool fresh = peer->routing_id != routing_id || peer->peer_incarnation != hello.getIncarnation();
        if (!fresh) return;
        // A new connection (or a restarted peer): answer, then resume every topic.
        peer->routing_id = routing_id;
        peer->peer_incarnation = hello.getIncarnation();
        log.write(LogLevel::info, "peer %s: new session (incarnation %016llx)", name.c_str(),
                  static_cast<unsigned long long>(peer->peer_incarnation));
        capnp::MallocMessageBuilder builder;
        auto reply = builder.initRoot<wire::PeerFrame>().initHello();
        reply.setNode(config.node_name);
        reply.setProtocol(kProtocol);
        reply.setIncarnation(incarnation);
        reply.setNamespace(config.ns);
        (void)send_to_peer_router(*peer, to_frame(builder));
        for (std::size_t t = 0; t < objects.size(); ++t) {
          if (peer->in[t].last_delivered != 0) ++peer->counters.gaps_filled;
          subscribe(*peer, static_cast<int>(t));
        }
        return;
      }
      case wire::PeerFrame::DATA: {
        Peer* peer = peer_by_routing_id(routing_id);
        if (peer == nullptr) return early_frame();
        heard_from(*peer, monotonic_ns());  // any frame shows it alive: a hello may queue behind a burst of data
        auto data = root.getData();
        if (text_of(data.getOrigin()) != peer->config.name)
          return bad_frame("listen socket", "data from " + peer->config.name + " claims origin '" +
                                                text_of(data.getOrigin()) + "'");
        const int t = object_index(text_of(data.getObject()));
        if (t < 0)
          return bad_frame("listen socket",
                           "data for '" + text_of(data.getObject()) + "', not a cluster topic or queue");
        if (data.getSequence() == 0 || data.getSequence() > kMaxWireSequence)
          return bad_frame("listen socket", "data from " + peer->config.name + " with sequence " +
                                                std::to_string(data.getSequence()) + ", not 1 to 2^62");
        if (data.getEpoch() != peer->in[t].epoch) return early_frame();
        const auto payload = data.getPayload();
        const Incoming one{data.getSequence(), as_bytes(payload)};
        deliver(*peer, t, std::span(&one, 1));
        acknowledge(*peer, t, false);
        return;
      }
      case wire::PeerFrame::BATCH: {
        Peer* peer = peer_by_routing_id(routing_id);
        if (peer == nullptr) return early_frame();
        heard_from(*peer, monotonic_ns());
        auto batch = root.getBatch();
        if (text_of(batch.getOrigin()) != peer->config.name)
          return bad_frame("listen socket", "batch from " + peer->config.name + " claims origin '" +
                                                text_of(batch.getOrigin()) + "'");
        const int t = object_index(text_of(batch.getObject()));
        if (t < 0)
          return bad_frame("listen socket",
                           "batch for '" + text_of(batch.getObject()) + "', not a cluster topic or queue");
        if (batch.getEpoch() != peer->in[t].epoch) return early_frame();
        incoming_.clear();
        for (auto entry : batch.getEntries()) {
          if (entry.getSequence() == 0 || entry.getSequence() > kMaxWireSequence)
            return bad_frame("listen socket", "batch from " + peer->config.name + " with sequence " +
                                                  std::to_string(entry.getSequence()) + ", not 1 to 2^62");
          incoming_.push_back({entry.getSequence(), as_bytes(entry.getPayload())});
        }
        deliver(*peer, t, incoming_);
        acknowledge(*peer, t, false);
        return;
      }
      case wire::PeerFrame::LOST: {
        Peer* peer = peer_by_routing_id(routing_id);
        if (peer == nullptr) return early_frame();
        heard_from(*peer, monotonic_ns());
        auto lost = root.getLost();
        const int t = object_index(text_of(lost.getObject()));
        if (t < 0) return bad_frame("listen socket", "lost for '" + text_of(lost.getObject()) + "'");
        if (lost.getFromSequence() == 0 || lost.getCount() == 0 ||
            lost.getFromSequence() > kMaxWireSequence || lost.getCount() > kMaxWireSequence - lost.getFromSequence())
          return bad_frame("listen socket", "lost from " + peer->config.name + " of " + std::to_string(lost.getCount()) +
                                                " from sequence " + std::to_string(lost.getFromSequence()) +
                                                ": beyond sequence 2^62");
        if (lost.getEpoch() != peer->in[t].epoch) return early_frame();  // the new stream tells its own
        peer->counters.lost += lost.getCount();
        objects[t].lost += lost.getCount();
        auto& in = peer->in[t];
        // The lost range comes after what is waiting: never step back, never wrap.
        const std::uint64_t count = std::min<std::uint64_t>(lost.getCount(), UINT64_MAX - lost.getFromSequence());
        const std::uint64_t last = lost.getFromSequence() + count - 1;
        if (count > 0 && last > in.last_delivered) in.last_delivered = last;
        log.write(LogLevel::warn, "topic %s: %llu message(s) from %s no longer retained there (from sequence %llu): lost",
                  objects[t].name.c_str(), static_cast<unsigned long long>(lost.getCount()), peer->config.name.c_str(),
                  static_cast<unsigned long long>(lost.getFromSequence()));
        return;
      }
      case wire::PeerFrame::REWIND: {
        Peer* peer = peer_by_routing_id(routing_id);
        if (peer == nullptr) return early_frame();
        heard_from(*peer, monotonic_ns());
        auto rewind = root.getRewind();
        const int t = object_index(text_of(rewind.getObject()));
        if (t < 0) return bad_frame("listen socket", "rewind for '" + text_of(rewind.getObject()) + "'");
        if (rewind.getEpoch() != peer->in[t].epoch) return early_frame();
        on_rewind(*peer, t, rewind.getSequence());
        return;
      }
      default:
        return bad_frame("listen socket", "unexpected frame kind " + std::to_string(static_cast<int>(root.which())));
    }
  } catch (const kj::Exception& e) {
    bad_frame("listen socket", std::string("malformed: ") + e.getDescription().cStr());
  }
}

// The origin has published up to `sequence` only, and we hold higher ones
// of it (see Rewind in the schema): forget those, resume after the highest
// one our ring holds up to there, and subscribe again.
void Daemon::Impl::on_rewind(Peer& peer, int t, std::uint64_t sequence) {
  auto& in = peer.in[t];
  const std::uint64_t held = in.newest();
  if (sequence >= held)
    return bad_frame("listen socket", "rewind from " + peer.config.name + " to " + std::to_string(sequence) +
                                          ", but we hold only up to " + std::to_string(held));
  while (!in.waiting.empty() && in.waiting.back().first > sequence) in.waiting.pop_back();
  const auto& object = objects[t];
  in.last_delivered = object.is_queue() ? internal::relayed_high_water(*object.queue, peer.id, sequence)
                                        : internal::relayed_high_water(*object.topic, peer.id, sequence);
  ++peer.counters.rewinds;
  log.write(LogLevel::warn,
            "%s: %s has published up to sequence %llu only, and we held up to %llu of it (a forged frame, or its "
            "ring is new): resuming after %llu",
            object.name.c_str(), peer.config.name.c_str(), static_cast<unsigned long long>(sequence),
            static_cast<unsigned long long>(held), static_cast<unsigned long long>(in.newest()));
  subscribe(peer, t);
}

// Messages from `peer` (one data frame, or a batch frame's entries): those
// not seen before are published into our ring at once, in one claim per run
// that fits, when nothing is waiting before them; the rest wait in order
// behind what waits (drain publishes them).
void Daemon::Impl::deliver(Peer& peer, int t, std::span<const Incoming> messages) {
  auto& in = peer.in[t];
  fresh_.clear();
  std::uint64_t over_credit = 0;
  for (const auto& m : messages) {
    // Every message sent counts against credit, a duplicate too.
    if (in.allowance == 0 || (in.byte_limited && in.allowance_bytes <= 0)) {
      ++over_credit;
      continue;
    }
    --in.allowance;
    if (in.byte_limited) {
      in.allowance_bytes -= static_cast<std::int64_t>(m.payload.size());
      in.unacked_bytes += m.payload.size();
    }
    if (in.outstanding > 0) --in.outstanding;  // a message the home sent on our demand credit
    const std::uint64_t newest = fresh_.empty() ? in.newest() : std::max(in.newest(), fresh_.back().seq);
    if (m.seq <= newest) {
      ++peer.counters.duplicates;
      ++objects[t].duplicates;
      continue;
    }
    fresh_.push_back(m);
  }
  if (over_credit > 0) {
    const std::uint64_t before = peer.counters.over_credit;
    peer.counters.over_credit += over_credit;
    if (before < 10 || before / kLogEvery != peer.counters.over_credit / kLogEvery)
      log.write(LogLevel::warn,
                "%s: %llu message(s) from %s beyond the credit we granted dropped (%llu so far; a colod never "
                "sends beyond credit)",
                objects[t].name.c_str(), static_cast<unsigned long long>(over_credit), peer.config.name.c_str(),
                static_cast<unsigned long long>(peer.counters.over_credit));
  }
  std::size_t done = in.waiting.empty() ? publish_from(peer, t, fresh_) : 0;
  for (; done < fresh_.size(); ++done)
    in.waiting.emplace_back(fresh_[done].seq, std::string(reinterpret_cast<const char*>(fresh_[done].payload.data()),
                                                          fresh_[done].payload.size()));
}

// Publishes messages from `peer` into object t's ring, relayed (origin,
// origin sequence), in order, as batches; returns how many are done
// (published, or skipped if impossible), stopping where the ring has no
// room now.
std::size_t Daemon::Impl::publish_from(Peer& peer, int t, std::span<const Incoming> messages) {
  auto& in = peer.in[t];
  auto& object = objects[t];
  std::size_t done = 0;
  while (done < messages.size()) {
    const std::size_t n = std::min(messages.size() - done, kMaxBatchEntries);
    annotated_.clear();
    for (std::size_t i = 0; i < n; ++i) {
      const auto& m = messages[done + i];
      annotated_.push_back({peer.id, m.seq, {}, m.payload});
    }
    ring_seqs_.resize(n);
    const std::size_t published =
        internal::publish_annotated(*object.relay, annotated_, std::chrono::nanoseconds(0), ring_seqs_.data());
    for (std::size_t i = 0; i < published; ++i) {
      const auto& m = messages[done + i];
      ++peer.counters.messages_in;
      peer.counters.bytes_in += m.payload.size();
      ++object.messages_in;
      object.bytes_in += m.payload.size();
      if (object.is_queue())
        ++object.depth;  // until the next refresh: else grant_demand would ask again for what just came
      else
        object.note_relayed(ring_seqs_[i]);
      in.last_delivered = std::max(in.last_delivered, m.seq);  // a lost range may already be past it
      if (!in.demand) {
        ++in.uncredited;
        in.uncredited_bytes += m.payload.size();
      }
    }
    done += published;
    if (published == n) continue;
    if (object.relay->last_status() == SendStatus::timed_out) break;  // no room yet: the rest waits
    // An impossible message (larger than the ring takes): skipped, logged.
    const auto& bad = messages[done];
    bad_frame("listen socket", "cannot publish into '" + object.name + "' (message of " +
                                   std::to_string(bad.payload.size()) + " bytes): skipped");
    in.last_delivered = std::max(in.last_delivered, bad.seq);
    if (!in.demand) {
      ++in.uncredited;
      in.uncredited_bytes += bad.payload.size();
    }
    ++done;
  }
  return done;
}

// Tells the origin what we have received (so it may stop retaining it for
// us: retention waits for the network, never for our ring, which is what
// keeps two busy hosts from waiting on each other) and how many more it may
// send (credit, for what we published).
void Daemon::Impl::acknowledge(Peer& peer, int t, bool force) {
  auto& in = peer.in[t];
  const std::uint64_t newest = in.newest();
  const std::uint32_t window = objects[t].is_queue() ? config.credit : objects[t].window;
  const std::uint32_t chunk = std::max<std::uint32_t>(1, window / 4);
  const bool credit_due = in.uncredited >= std::max<std::uint32_t>(1, window / 2) ||
                          (in.byte_limited && in.uncredited_bytes >= std::max<std::uint64_t>(1, objects[t].window_bytes / 2));
  // Receipts by bytes too: the origin's ring (of our size) holds back its
  // writers for what we have not confirmed, which may be a few messages
  // of its largest size.
  const bool receipt_due = newest >= in.acked_through + chunk ||
                           (in.byte_limited && in.unacked_bytes >= std::max<std::uint64_t>(1, objects[t].window_bytes / 4));
  if (!credit_due && !receipt_due && !(force && (in.uncredited > 0 || newest > in.acked_through))) return;
  capnp::MallocMessageBuilder builder;
  auto credit = builder.initRoot<wire::PeerFrame>().initCredit();
  credit.setObject(objects[t].name);
  credit.setMessages(static_cast<std::uint32_t>(in.uncredited));
  credit.setReceivedThrough(newest);
  credit.setBytes(in.byte_limited ? in.uncredited_bytes : 0);
  if (send_to_peer_router(peer, to_frame(builder))) {
    in.allowance += in.uncredited;
    in.uncredited = 0;
    if (in.byte_limited) in.allowance_bytes = add_byte_credit(in.allowance_bytes, in.uncredited_bytes);
    in.uncredited_bytes = 0;
    in.unacked_bytes = 0;
    in.acked_through = newest;
  }
}

// Publishes what came from `peer` for topic `t` into our ring, in order,
// while there is room; confirms it to the origin with credit.
void Daemon::Impl::drain(Peer& peer, int t) {
  auto& in = peer.in[t];
  while (!in.waiting.empty()) {
    waiting_view_.clear();
    for (std::size_t i = 0; i < in.waiting.size() && i < kMaxBatchEntries; ++i)
      waiting_view_.push_back({in.waiting[i].first, as_bytes(in.waiting[i].second)});
    const std::size_t done = publish_from(peer, t, waiting_view_);
    for (std::size_t i = 0; i < done; ++i) in.waiting.pop_front();
    if (done < waiting_view_.size()) break;  // no room yet: the rest stays waiting
  }
  // Credit goes out in chunks of half the window (acknowledge): the origin
  // never runs dry while we keep up, and pays one frame per credit/2 messages.
  acknowledge(peer, t, false);
}

void Daemon::Impl::subscribe(Peer& peer, int t) {
  if (objects[t].is_queue() && !queue_link(objects[t], peer)) return;
  auto& in = peer.in[t];
  capnp::MallocMessageBuilder builder;
  auto sub = builder.initRoot<wire::PeerFrame>().initSubscribe();
  sub.setObject(objects[t].name);
  // After what we delivered and what is waiting to be: both are ours already.
  const std::uint64_t newest = in.newest();
  sub.setFromSequence(newest + 1);
  // The window counts what is still waiting, so that it stays bounded.
  // A demand stream starts with none: grant_demand asks when our consumers want.
  const std::uint32_t window = objects[t].is_queue() ? config.credit : objects[t].window;
  std::uint32_t credit =
      in.demand ? 0 : static_cast<std::uint32_t>(window > in.waiting.size() ? window - in.waiting.size() : 0);
  // The byte window, less what waits, likewise (a queue's stream has none).
  const std::uint64_t window_bytes = objects[t].is_queue() ? kNoByteLimit : objects[t].window_bytes;
  std::uint64_t credit_bytes = kNoByteLimit;
  if (window_bytes != kNoByteLimit) {
    std::uint64_t waiting_bytes = 0;
    for (const auto& w : in.waiting) waiting_bytes += w.second.size();
    credit_bytes = window_bytes > waiting_bytes ? window_bytes - waiting_bytes : 0;
    if (credit_bytes == 0) credit = 0;
  }
  sub.setCredit(credit);
  sub.setCreditBytes(credit_bytes);
  // A new epoch: what the origin sent before it reads this is dropped here
  // when it arrives, and sent again from fromSequence.
  sub.setEpoch(in.epoch + 1);
  in.resubscribe = !send_to_peer_router(peer, to_frame(builder));
  if (!in.resubscribe) {
    ++in.epoch;
    in.allowance = credit;
    in.uncredited = 0;
    in.byte_limited = credit_bytes != kNoByteLimit;
    in.allowance_bytes = in.byte_limited ? static_cast<std::int64_t>(credit_bytes) : 0;
    in.uncredited_bytes = 0;
    in.unacked_bytes = 0;
    in.outstanding = 0;  // the origin starts again from the credit above
  }
}

bool Daemon::Impl::send_to_peer_router(Peer& peer, zmq::message_t&& frame) {
  if (peer.routing_id.empty()) return false;
  try {
    zmq::message_t id(peer.routing_id.data(), peer.routing_id.size());
    if (!router.send(id, zmq::send_flags::sndmore | zmq::send_flags::dontwait)) return false;
    return router.send(frame, zmq::send_flags::dontwait).has_value();
  } catch (const zmq::error_t& e) {
    if (e.num() != EHOSTUNREACH) throw;
    peer.routing_id.clear();  // that connection is gone; its next hello starts a new session
    return false;
  }
}

// --------------------------------------------------------- origin side

void Daemon::Impl::on_dealer(Peer& peer) {
  for (int budget = 0; budget < 1024; ++budget) {
    zmq::message_t frame;
    if (!peer.dealer.recv(frame, zmq::recv_flags::dontwait)) return;
    while (frame.more()) {  // we expect single frames; drop the rest of anything else
      zmq::message_t rest;
      if (!peer.dealer.recv(rest, zmq::recv_flags::dontwait)) break;
      frame = std::move(rest);
      bad_frame(("link to " + peer.config.name).c_str(), "multipart message");
    }
    on_dealer_frame(peer, frame);
  }
}

void Daemon::Impl::on_dealer_frame(Peer& peer, const zmq::message_t& frame) {
  try {
    FrameReader reader(frame);
    auto root = reader.root<wire::PeerFrame>();
    switch (root.which()) {
      case wire::PeerFrame::HELLO:
        if (text_of(root.getHello().getNode()) != peer.config.name)
          bad_frame(("link to " + peer.config.name).c_str(),
                    "answered by node '" + text_of(root.getHello().getNode()) + "'");
        break;
      case wire::PeerFrame::SUBSCRIBE: {
        auto sub = root.getSubscribe();
        const int t = object_index(text_of(sub.getObject()));
        if (t < 0) {
          bad_frame(("link to " + peer.config.name).c_str(), "subscribe to '" + text_of(sub.getObject()) + "'");
          break;
        }
        auto& out = peer.out[t];
        if (objects[t].is_queue()) {
          if (!queue_link(objects[t], peer)) {
            bad_frame(("link to " + peer.config.name).c_str(),
                      "subscribe to queue '" + objects[t].name + "', whose home is " + objects[t].home);
            break;
          }
          // What the peer has (below fromSequence) is confirmed; the rest is sent again.
          const std::uint64_t from = std::max<std::uint64_t>(1, sub.getFromSequence());
          while (!out.unconfirmed.empty() && out.unconfirmed.front().first < from) out.unconfirmed.pop_front();
          out.next_seq = std::max(out.next_seq, from);
          out.epoch = sub.getEpoch();
          out.queue_stream = true;
          out.unsent = 0;
          out.pending.clear();
          out.credit = sub.getCredit();
          // The peer asks again now and then while nothing came (heartbeat): quiet then.
          log.write(from == out.subscribed_from ? LogLevel::debug : LogLevel::info,
                    "queue %s: sending to %s from sequence %llu (%zu not confirmed, sent again)",
                    objects[t].name.c_str(), peer.config.name.c_str(), static_cast<unsigned long long>(from),
                    out.unconfirmed.size());
          out.subscribed_from = from;
          break;
        }
        out.cursor.reset();
        out.retain_head.reset();
        out.retain.reset();
        out.received_through = sub.getFromSequence() > 0 ? sub.getFromSequence() - 1 : 0;
        out.pending.clear();
        out.epoch = sub.getEpoch();
        out.credit = 0;
        out.byte_limited = false;
        out.credit_bytes = 0;
        out.overflow.clear();
        if (const std::uint64_t published = objects[t].topic->published(); out.received_through > published) {
          // The peer holds sequences of ours we never published: a forged
          // frame, or our ring is new. It forgets them and asks again.
          log.write(LogLevel::warn,
                    "topic %s: %s asks from sequence %llu, but we published only %llu: told to rewind (it holds "
                    "sequences of ours we never sent: forged, or our ring was made anew)",
                    objects[t].name.c_str(), peer.config.name.c_str(),
                    static_cast<unsigned long long>(sub.getFromSequence()), static_cast<unsigned long long>(published));
          capnp::MallocMessageBuilder builder;
          auto rewind = builder.initRoot<wire::PeerFrame>().initRewind();
          rewind.setObject(objects[t].name);
          rewind.setEpoch(out.epoch);
          rewind.setSequence(published);
          out.pending.push_back(to_frame(builder));
          out.received_through = published;
          (void)send_pending(peer, out);
          break;
        }
        SubscribeOptions options{Backpressure::lossy, std::uint64_t{0}, std::nullopt};
        if (sub.getFromSequence() > 0) options.from_sequence = sub.getFromSequence() - 1;  // ring sequences are 0-based
        if (objects[t].backpressure == Backpressure::block) {
          // First the retaining cursor, so nothing from the asked sequence on can be reclaimed.
          // A bridge cursor: it never holds back what we relay, so no deadlock.
          auto retain = internal::subscribe_bridge(*objects[t].topic, options.from_sequence);
          if (retain) out.retain.emplace(std::move(retain).value());
          else log.write(LogLevel::error, "topic %s: cannot hold it for %s: %s", objects[t].name.c_str(),
                         peer.config.name.c_str(), retain.error().message.c_str());
        }
        auto cursor = objects[t].topic->subscribe(options);
        if (!cursor) {
          log.write(LogLevel::error, "topic %s: cannot follow it for %s: %s", objects[t].name.c_str(),
                    peer.config.name.c_str(), cursor.error().message.c_str());
          break;
        }
        out.cursor.emplace(std::move(cursor).value());
        // Where it starts: the asked sequence, or (0: "what comes next") the tail. If it
        // starts earlier (retained history), the waker wakes at once and reading catches up.
        out.next_read = sub.getFromSequence() > 0 ? sub.getFromSequence() - 1 : objects[t].topic->published();
        out.credit = sub.getCredit();
        out.byte_limited = sub.getCreditBytes() != kNoByteLimit;
        out.credit_bytes = out.byte_limited ? add_byte_credit(0, sub.getCreditBytes()) : 0;
        out.missed_seen = 0;
        out.last_sent = sub.getFromSequence() > 0 ? sub.getFromSequence() - 1 : 0;
        log.write(sub.getFromSequence() == out.subscribed_from ? LogLevel::debug : LogLevel::info,
                  "topic %s: streaming to %s from sequence %llu", objects[t].name.c_str(), peer.config.name.c_str(),
                  static_cast<unsigned long long>(sub.getFromSequence()));
        out.subscribed_from = sub.getFromSequence();
        break;
      }
      case wire::PeerFrame::CREDIT: {
        auto credit = root.getCredit();
        const int t = object_index(text_of(credit.getObject()));
        if (t < 0) {
          bad_frame(("link to " + peer.config.name).c_str(), "credit for '" + text_of(credit.getObject()) + "'");
          break;
        }
        auto& out = peer.out[t];
        out.credit += credit.getMessages();
        if (out.byte_limited) out.credit_bytes = add_byte_credit(out.credit_bytes, credit.getBytes());
        // It cannot have received what we did not send it: a receipt
        // beyond that would release what it may yet need.
        const std::uint64_t sent_through =
            out.queue_stream ? (out.unsent > 0 ? out.unconfirmed[out.unsent - 1].first : 0) : out.last_sent;
        out.received_through = std::max(out.received_through, std::min(credit.getReceivedThrough(), sent_through));
        advance_retain(out);
        while (out.unsent > 0 && out.unconfirmed.front().first <= out.received_through) {
          out.unconfirmed.pop_front();  // the peer has it: ours no more
          --out.unsent;
        }
        break;
      }
      default:
        bad_frame(("link to " + peer.config.name).c_str(),
                  "unexpected frame kind " + std::to_string(static_cast<int>(root.which())));
    }
  } catch (const kj::Exception& e) {
    bad_frame(("link to " + peer.config.name).c_str(), std::string("malformed: ") + e.getDescription().cStr());
  }
}

// Moves the retaining cursor past relayed messages (never sent) and ours
// that the peer has received; it stops holding the first of ours it has not.
void Daemon::Impl::advance_retain(OutStream& out) {
  if (!out.retain) return;
  for (int budget = 0; budget < 65536; ++budget) {
    if (!out.retain_head) {
      auto next = out.retain->try_receive();
      if (!next) return;
      if (next->origin() != 0) continue;  // relayed: released at once
      out.retain_head.emplace(std::move(*next));
    }
    if (out.retain_head->sequence() + 1 > out.received_through) return;  // hold it: not received yet
    out.retain_head.reset();
  }
}

// Sends what this host published on each topic the peer follows, while its
// credit lasts and ZeroMQ takes frames: as many messages as are ready go in
// one batch frame (kMaxBatchEntries, kMaxBatchBytes), so that a busy stream
// costs one frame per batch, and a quiet one no waiting (a batch of one).
void Daemon::Impl::pump(Peer& peer) {
  // Spans into the ring: a batch is held until its frames are built.
  std::vector<Staged> staged;
  for (std::size_t t = 0; t < objects.size(); ++t) {
    if (objects[t].is_queue()) {
      pump_queue(peer, static_cast<int>(t));
      continue;
    }
    auto& out = peer.out[t];
    if (!out.cursor) {
      if (!out.pending.empty()) (void)send_pending(peer, out);  // a rewind that ZeroMQ did not take at once
      continue;
    }
    advance_retain(out);
    std::size_t staged_bytes = 0;
    auto flush = [&] {
      if (staged.empty()) return;
      out.pending.push_back(data_frame(config.node_name, objects[t].name, out.epoch, staged));
      staged.clear();
      staged_bytes = 0;
    };
    // One message into the frame being built, counted against credit.
    auto stage = [&](std::uint64_t wire_seq, std::uint64_t timestamp, std::span<const std::byte> bytes) {
      if (bytes.size() > kMaxBatchedMessage) {
        flush();
        staged.push_back({wire_seq, timestamp, bytes});  // a frame of its own
        flush();
      } else {
        // A batch stays within max_frame (every host's, as the config
        // docs ask): a larger frame would drop the connection for good.
        if (frame_bytes(staged.size() + 1, staged_bytes + bytes.size()) > config.max_frame) flush();
        staged.push_back({wire_seq, timestamp, bytes});
        staged_bytes += bytes.size();
      }
      out.last_sent = wire_seq;
      --out.credit;
      if (out.byte_limited) out.credit_bytes -= static_cast<std::int64_t>(bytes.size());
      ++peer.counters.messages_out;
      peer.counters.bytes_out += bytes.size();
      ++objects[t].messages_out;
      objects[t].bytes_out += bytes.size();
      if (staged.size() >= kMaxBatchEntries || staged_bytes >= kMaxBatchBytes) flush();
    };
    // Read in batches (one cursor update per batch), as many as the credit allows.
    for (int budget = 0; budget < 64; ++budget) {
      if (!out.pending.empty() && !send_pending(peer, out)) break;
      if (!out.overflow.empty()) {
        // What the last read left for want of byte credit goes first (the
        // frames copy it: popped once they are built).
        std::size_t n = 0;
        for (; n < out.overflow.size() && out.can_send(); ++n)
          stage(out.overflow[n].wire_seq, out.overflow[n].timestamp, as_bytes(out.overflow[n].payload));
        flush();
        out.overflow.erase(out.overflow.begin(), out.overflow.begin() + static_cast<std::ptrdiff_t>(n));
        if (!out.overflow.empty()) break;  // no credit yet
        continue;
      }
      if (!out.can_send()) break;
      auto got = out.cursor->try_receive_batch(static_cast<std::size_t>(std::min<std::uint64_t>(out.credit, kMaxBatchEntries)));
      if (got.empty()) break;
      const std::uint64_t missed = out.cursor->missed();
      if (missed != out.missed_seen) {
        // The cursor was lapped: the records just before this batch are
        // gone. Those we relayed were never the peer's to get; the rest are
        // our own messages, lost for it. The lost range ends where this
        // batch's first wire sequence starts, so the peer never steps back.
        const std::uint64_t here = got[0].sequence();
        const std::uint64_t gone = std::min(missed - out.missed_seen, here);
        out.missed_seen = missed;
        const std::uint64_t ours = gone - objects[t].relayed_between(here - gone, here);
        if (ours > 0) {
          flush();  // what was staged comes before the gap
          capnp::MallocMessageBuilder builder;
          auto lost = builder.initRoot<wire::PeerFrame>().initLost();
          lost.setObject(objects[t].name);
          lost.setFromSequence(here + 1 - ours);
          lost.setCount(ours);
          lost.setEpoch(out.epoch);
          log.write(LogLevel::warn, "topic %s: %llu message(s) for %s were no longer retained here: lost%s",
                    objects[t].name.c_str(), static_cast<unsigned long long>(ours), peer.config.name.c_str(),
                    here - gone < objects[t].relayed_known_from ? " (at most: some may be relayed ones)" : "");
          out.pending.push_back(to_frame(builder));
        }
      }
      const std::uint64_t read_at = realtime_ns();  // the batch's send time, one clock read
      for (const auto& message : got) {
        out.next_read = message.sequence() + 1;
        if (message.origin() != 0) continue;  // relayed from another host: never sent on
        const auto bytes = message.data();
        const std::uint64_t wire_seq = message.sequence() + 1;  // 1-based on the wire: 0 means "none yet"
        if (out.can_send())
          stage(wire_seq, read_at, bytes);
        else  // the byte credit ran out within this read (the message credit covers all of it)
          out.overflow.push_back({wire_seq, read_at, std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size())});
      }
      flush();  // the frames copy the payloads out of the ring: then the batch may go
      got.release();
    }
    flush();
    if (!out.pending.empty() && !send_pending(peer, out)) return;
  }
}

bool Daemon::Impl::send_pending(Peer& peer, OutStream& out) {
  while (!out.pending.empty()) {
    if (!peer.dealer.send(out.pending.front(), zmq::send_flags::dontwait)) return false;  // stays pending
    out.pending.pop_front();
  }
  return true;
}

// Sends queue messages to the peer while its credit lasts, batched as for
// topics: first those sent before its last subscribe and not confirmed,
// then new ones taken from our ring. The home takes for a peer's consumers
// (they asked, by credit); a non-home host takes towards the home only when
// it has no consumers of its own or more backlog than push_backlog():
// otherwise its messages are consumed here, at memory speed.
void Daemon::Impl::pump_queue(Peer& peer, int t) {
  auto& object = objects[t];
  auto& out = peer.out[t];
  if (!out.queue_stream) return;
  std::vector<Staged> staged;
  for (int budget = 0; budget < 64; ++budget) {
    if (!send_pending(peer, out)) return;
    if (out.credit == 0) return;
    // Take what the credit allows (up to a batch) beyond what is still to be sent.
    const std::size_t want = std::min<std::uint64_t>(out.credit, kMaxBatchEntries);
    while (out.unconfirmed.size() - out.unsent < want) {
      // A host whose own consumers keep up sends only its backlog beyond push_backlog().
      std::size_t room = want - (out.unconfirmed.size() - out.unsent);
      if (!object.at_home && object.local_consumers > 0) {
        if (object.depth <= push_backlog()) break;
        room = static_cast<std::size_t>(std::min<std::uint64_t>(room, object.depth - push_backlog()));
      }
      auto got = object.taker->try_receive_batch(room);  // one atomic step for the batch
      if (got.empty()) break;
      for (const auto& message : got) {
        const auto bytes = message.data();
        out.unconfirmed.emplace_back(out.next_seq++,
                                     std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
        if (object.depth > 0) --object.depth;
      }
      got.release();  // with acks, acknowledged: the copies in `unconfirmed` are now what we owe the peer
    }
    if (out.unsent == out.unconfirmed.size()) return;
    std::size_t bytes = 0;
    while (out.unsent < out.unconfirmed.size() && staged.size() < want &&
           (staged.empty() || (bytes + out.unconfirmed[out.unsent].second.size() <= kMaxBatchBytes &&
                               frame_bytes(staged.size() + 1, bytes + out.unconfirmed[out.unsent].second.size()) <=
                                   config.max_frame))) {
      const auto& [seq, payload] = out.unconfirmed[out.unsent++];
      staged.push_back({seq, realtime_ns(), as_bytes(payload)});
      bytes += payload.size();
      ++peer.counters.messages_out;
      peer.counters.bytes_out += payload.size();
      ++object.messages_out;
      object.bytes_out += payload.size();
    }
    out.credit -= staged.size();
    out.pending.push_back(data_frame(config.node_name, object.name, out.epoch, staged));
    staged.clear();
  }
}

// How many consumers other than us read the queue here, and its backlog.
void Daemon::Impl::refresh_queue(ClusterObject& object) {
  const auto stats = object.queue->stats();
  const auto self = static_cast<std::uint32_t>(::getpid());
  object.local_consumers = 0;
  for (const auto& reader : stats.readers)
    if (reader.alive && reader.pid != self) ++object.local_consumers;
  object.depth = stats.depth;
}

// A non-home host asks the home for what its consumers are ready to take:
// up to `credit` messages in our ring, in flight and waiting together;
// nothing while it has no consumers (the home keeps them for others).
void Daemon::Impl::grant_demand(Peer& peer, int t) {
  auto& object = objects[t];
  auto& in = peer.in[t];
  if (peer.routing_id.empty() || object.local_consumers == 0) return;
  const std::uint64_t target = config.credit;
  const std::uint64_t have = object.depth + in.outstanding + in.waiting.size();
  if (have >= target || target - have < std::max<std::uint64_t>(1, target / 4)) return;  // ask in chunks
  const std::uint64_t want = target - have;
  const std::uint64_t newest = in.newest();
  capnp::MallocMessageBuilder builder;
  auto credit = builder.initRoot<wire::PeerFrame>().initCredit();
  credit.setObject(object.name);
  credit.setMessages(static_cast<std::uint32_t>(want));
  credit.setReceivedThrough(newest);
  if (send_to_peer_router(peer, to_frame(builder))) {
    in.outstanding += want;
    in.allowance += want;
    in.acked_through = newest;
  }
}

// On a clean stop: queue messages sent to a peer and not confirmed go back
// into our ring, to be consumed here or sent again by the next colod. A
// peer that did receive one (its confirmation not back yet) delivers it
// too: at least once, as with a consumer that dies before its ack.
void Daemon::Impl::requeue_unconfirmed() {
  // Bounded: a full ring (no local consumer) must not hold the stop for long.
  const std::uint64_t deadline = monotonic_ns() + 2'000'000'000;
  for (auto& peer : peers)
    for (std::size_t t = 0; t < objects.size(); ++t) {
      auto& out = peer.out[t];
      if (out.unconfirmed.empty()) continue;
      std::size_t requeued = 0;
      for (const auto& [seq, payload] : out.unconfirmed) {
        const std::uint64_t now = monotonic_ns();
        if (now >= deadline) break;
        const auto status = objects[t].relay->publish(as_bytes(payload), std::chrono::nanoseconds(deadline - now));
        if (status == SendStatus::ok) ++requeued;
      }
      log.write(requeued == out.unconfirmed.size() ? LogLevel::info : LogLevel::error,
                "queue %s: %zu of %zu message(s) sent to %s and not confirmed put back into the queue",
                objects[t].name.c_str(), requeued, out.unconfirmed.size(), peer.config.name.c_str());
      out.unconfirmed.clear();
    }
}

// ------------------------------------------------------ security, status

// ZAP (RFC 27): admit CURVE clients whose public key belongs to a configured
// peer; the peer's name becomes the connection's User-Id.
void Daemon::Impl::on_zap() {
  std::vector<zmq::message_t> request;
  do {
    zmq::message_t part;
    if (!zap.recv(part, zmq::recv_flags::dontwait)) break;
    request.push_back(std::move(part));
  } while (request.back().more() && request.size() < 16);
  auto text = [&](std::size_t i) {
    return i < request.size() ? std::string(static_cast<const char*>(request[i].data()), request[i].size())
                              : std::string();
  };
  std::string user, status = "400", reason = "unknown key";
  if (text(5) == "CURVE" && request.size() >= 7 && request[6].size() == 32) {
    char z85[41] = {};
    zmq_z85_encode(z85, static_cast<const std::uint8_t*>(request[6].data()), 32);
    for (const auto& peer : peers)
      if (peer.config.public_key == z85) {
        user = peer.config.name;
        status = "200";
        reason = "OK";
      }
    if (status != "200") {
      ++counters.rejected_peers;
      log.write(LogLevel::warn, "refused a connection from %s: key %s is not a configured peer's", text(3).c_str(), z85);
    }
  } else {
    ++counters.rejected_peers;
  }
  const std::vector<std::string> reply = {"1.0", text(1), status, reason, user, ""};
  for (std::size_t i = 0; i < reply.size(); ++i)
    (void)zap.send(zmq::buffer(reply[i]), i + 1 < reply.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
}

void Daemon::Impl::on_monitor() {
  for (int budget = 0; budget < 256; ++budget) {
    zmq::message_t event, address;
    if (!monitor.recv(event, zmq::recv_flags::dontwait)) return;
    if (event.more()) (void)monitor.recv(address, zmq::recv_flags::dontwait);
    if (event.size() < 6) continue;
    std::uint16_t id = 0;
    std::memcpy(&id, event.data(), sizeof id);
    if (id == ZMQ_EVENT_DISCONNECTED) {
      ++counters.dropped_connections;
    } else {
      ++counters.failed_handshakes;
      log.write(LogLevel::warn, "handshake failed on the listen socket (%s)",
                id == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH ? "authentication" : "protocol");
    }
  }
}

void Daemon::Impl::on_control() {
  zmq::message_t identity, empty, request;
  if (!control.recv(identity, zmq::recv_flags::dontwait)) return;
  // REQ clients send [identity, "", request]; DEALER clients [identity, request].
  std::vector<zmq::message_t> parts;
  bool more = identity.more();
  while (more && parts.size() < 3) {
    zmq::message_t part;
    if (!control.recv(part, zmq::recv_flags::dontwait)) break;
    more = part.more();
    parts.push_back(std::move(part));
  }
  if (parts.empty()) return;
  const bool req_envelope = parts.size() == 2 && parts[0].size() == 0;
  capnp::MallocMessageBuilder builder;
  answer_control(parts.back(), builder);
  (void)control.send(identity, zmq::send_flags::sndmore | zmq::send_flags::dontwait);
  if (req_envelope) (void)control.send(zmq::message_t(), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
  auto frame = to_frame(builder);
  (void)control.send(frame, zmq::send_flags::dontwait);
}

void Daemon::Impl::answer_control(const zmq::message_t& request, capnp::MessageBuilder& builder) {
  auto reply = builder.initRoot<wire::ControlReply>();
  try {
    FrameReader reader(request);
    auto req = reader.root<wire::ControlRequest>();
    if (req.which() == wire::ControlRequest::STATUS) {
      reply.setOk(true);
      auto status = reply.initStatus();
      status.setNode(config.node_name);
      status.setNamespace(config.ns);
      status.setUptimeMs((monotonic_ns() - started_ns) / 1'000'000);
      status.setBadFrames(counters.bad_frames);
      status.setRejectedPeers(counters.rejected_peers);
      status.setFailedHandshakes(counters.failed_handshakes);
      status.setDroppedConnections(counters.dropped_connections);
      status.setEarlyFrames(counters.early_frames);
      status.setRefusedSessions(counters.refused_sessions);
      status.setRingWait(uring ? "io_uring" : "threads");
      status.setRingWakes(counters.ring_wakes);
      auto list = status.initPeers(static_cast<unsigned>(peers.size()));
      for (std::size_t i = 0; i < peers.size(); ++i) {
        const auto& p = peers[i];
        auto ps = list[static_cast<unsigned>(i)];
        ps.setName(p.config.name);
        ps.setEndpoint(p.config.endpoint);
        ps.setConnected(p.connected);
        ps.setSinceMs((monotonic_ns() - p.state_since_ns) / 1'000'000);
        ps.setMessagesIn(p.counters.messages_in);
        ps.setMessagesOut(p.counters.messages_out);
        ps.setBytesIn(p.counters.bytes_in);
        ps.setBytesOut(p.counters.bytes_out);
        ps.setGapsFilled(p.counters.gaps_filled);
        ps.setLost(p.counters.lost);
        ps.setDuplicates(p.counters.duplicates);
        ps.setOverCredit(p.counters.over_credit);
        ps.setRewinds(p.counters.rewinds);
      }
      std::vector<std::string> topic_names;
      for (const auto& object : objects)
        if (!object.is_queue()) topic_names.push_back(object.name);
      auto names = status.initTopics(static_cast<unsigned>(topic_names.size()));
      for (std::size_t i = 0; i < topic_names.size(); ++i) names.set(static_cast<unsigned>(i), topic_names[i]);
      auto list_objects = status.initObjects(static_cast<unsigned>(objects.size()));
      for (std::size_t i = 0; i < objects.size(); ++i) {
        const auto& o = objects[i];
        auto os = list_objects[static_cast<unsigned>(i)];
        os.setName(o.name);
        os.setKind(o.is_queue() ? "queue" : "topic");
        os.setHome(o.home);
        os.setMessagesIn(o.messages_in);
        os.setMessagesOut(o.messages_out);
        os.setBytesIn(o.bytes_in);
        os.setBytesOut(o.bytes_out);
        os.setLost(o.lost);
        os.setDuplicates(o.duplicates);
        std::uint64_t in_flight = 0;
        for (const auto& p : peers) in_flight += p.out[i].unconfirmed.size();
        os.setInFlight(in_flight);
      }
      const auto link_status = links ? links->status() : std::vector<LinkStatus>();
      auto list_links = status.initLinks(static_cast<unsigned>(link_status.size()));
      for (std::size_t i = 0; i < link_status.size(); ++i) {
        const auto& l = link_status[i];
        auto ls = list_links[static_cast<unsigned>(i)];
        ls.setName(l.name);
        ls.setSystem(l.system);
        ls.setMode(l.mode);
        ls.setObject(l.object);
        ls.setObjectKind(l.object_kind);
        ls.setRemote(l.remote);
        ls.setState(to_string(l.state));
        ls.setStateMs(l.state_ms);
        ls.setLastError(l.last_error);
        ls.setLastErrorMs(l.last_error_ms);
        const auto& c = l.counters;
        ls.setProduced(c.produced);
        ls.setAcknowledged(c.acknowledged);
        ls.setReturned(c.returned);
        ls.setInFlight(c.in_flight);
        ls.setLagMessages(c.lag_messages);
        ls.setLagBytes(c.lag_bytes);
        ls.setErrors(c.errors);
        ls.setLost(c.lost);
        ls.setSkipped(c.skipped);
        ls.setDuplicates(c.duplicates);
        ls.setRedelivered(c.redelivered);
        ls.setOutages(c.outages);
      }
    } else if (req.which() == wire::ControlRequest::DECLARE_TOPIC) {
      auto declared = declare_topic(text_of(req.getDeclareTopic()));
      reply.setOk(declared.has_value());
      if (!declared) reply.setError(declared.error().message);
    } else if (req.which() == wire::ControlRequest::PAUSE_LINK || req.which() == wire::ControlRequest::RESUME_LINK) {
      const bool pause = req.which() == wire::ControlRequest::PAUSE_LINK;
      const std::string name = text_of(pause ? req.getPauseLink() : req.getResumeLink());
      Result<void> done = Error{Errc::not_found, "this colod has no links ([[link]] in its config)"};
      if (links) done = pause ? links->pause(name) : links->resume(name);
      reply.setOk(done.has_value());
      if (!done) reply.setError(done.error().message);
    } else {
      reply.setOk(false);
      reply.setError("unknown request");
    }
  } catch (const kj::Exception& e) {
    reply.setOk(false);
    reply.setError(std::string("malformed request: ") + e.getDescription().cStr());
  }
}

// ------------------------------------------------- without sockets (fuzzing)

void Daemon::feed_listen_frame(const std::string& routing_id, std::span<const std::byte> frame) {
  zmq::message_t message(frame.data(), frame.size());
  impl_->on_router_frame(routing_id, message);
}

bool Daemon::feed_link_frame(const std::string& peer_name, std::span<const std::byte> frame) {
  Impl::Peer* peer = impl_->peer_by_name(peer_name);
  if (peer == nullptr) return false;
  impl_->on_dealer_frame(*peer, zmq::message_t(frame.data(), frame.size()));
  return true;
}

std::vector<std::byte> Daemon::answer_control(std::span<const std::byte> request) {
  capnp::MallocMessageBuilder builder;
  impl_->answer_control(zmq::message_t(request.data(), request.size()), builder);
  const auto words = capnp::messageToFlatArray(builder);
  const auto bytes = words.asBytes();
  return {reinterpret_cast<const std::byte*>(bytes.begin()), reinterpret_cast<const std::byte*>(bytes.end())};
}

}  // namespace colo::bridge
