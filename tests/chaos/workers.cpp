#include "workers.hpp"

#include <fcntl.h>
#include <sys/file.h>  // flock
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <random>
#include <thread>
#include <unordered_map>
#include <vector>

#include "colo/node.hpp"

namespace colo::chaos {
namespace {

using namespace std::chrono_literals;

constexpr auto kPublishTimeout = 200ms;
constexpr auto kReceiveSlice = 100ms;
constexpr auto kIdleToEndLocal = 2s;      // a draining reader ends after this long without a message
constexpr auto kIdleToEndFederated = 8s;  // ... for a federated one (colod may still be reconnecting)

std::optional<Node> open_node(const WorkerContext& ctx, const char* role) {
  NodeOptions options;
  options.ns = ctx.ns;
  auto node = Node::open(options);
  if (!node) {
    std::fprintf(stderr, "colo-chaos: %s %u: namespace %s: %s\n", role, ctx.id, ctx.ns.c_str(),
                 node.error().message.c_str());
    return std::nullopt;
  }
  return std::move(*node);
}

// The payload of a message, or nullopt (a corrupt-message violation counted) if it has none.
std::optional<Payload> payload_of(SharedRecords& r, std::span<const std::byte> bytes, const char* where) {
  Payload p{};
  if (bytes.size() >= sizeof p) std::memcpy(&p, bytes.data(), sizeof p);
  if (bytes.size() < sizeof p || p.magic != kPayloadMagic) {
    report_violation(r, Check::corrupt_message, "%s: a message of %zu bytes without the chaos payload", where,
                     bytes.size());
    return std::nullopt;
  }
  return p;
}

void pause_for(int us) {
  if (us > 0) std::this_thread::sleep_for(std::chrono::microseconds(us));
}

}  // namespace

void report_violation(SharedRecords& records, Check check, const char* format, ...) {
  // The first violations of each checker are shown; the rest only counted
  // (one fault can make thousands, and the first ones say what happened).
  constexpr std::uint64_t kShown = 20;
  const std::uint64_t seen =
      records.violations[static_cast<std::size_t>(check)].fetch_add(1, std::memory_order_relaxed);
  if (seen >= kShown) return;
  char text[600];
  int n = std::snprintf(text, sizeof text, "colo-chaos: VIOLATION %s: ", kCheckNames[static_cast<std::size_t>(check)]);
  va_list args;
  va_start(args, format);
  n += std::vsnprintf(text + n, sizeof text - n - 1, format, args);
  va_end(args);
  if (n > static_cast<int>(sizeof text) - 80) n = sizeof text - 80;
  if (seen + 1 == kShown)
    n += std::snprintf(text + n, sizeof text - n, "\ncolo-chaos: (further violations of this checker counted, not shown)");
  text[n++] = '\n';
  (void)!::write(STDERR_FILENO, text, n);
}

int run_publisher(const WorkerContext& ctx, Op op) {
  const bool queue = op == Op::queue_produce;
  const char* role = queue ? "producer" : "publisher";
  auto node = open_node(ctx, role);
  if (!node) return 3;
  std::optional<Publisher> pub;
  if (queue) {
    auto q = node->queue(ctx.object, OpenMode::open);
    if (q) {
      auto p = q->producer();
      if (p) pub.emplace(std::move(*p));
      else std::fprintf(stderr, "colo-chaos: producer %u: %s\n", ctx.id, p.error().message.c_str());
    } else {
      std::fprintf(stderr, "colo-chaos: producer %u: %s\n", ctx.id, q.error().message.c_str());
    }
  } else {
    auto t = node->topic(ctx.object, OpenMode::open);
    if (t) {
      auto p = t->publisher();
      if (p) pub.emplace(std::move(*p));
      else std::fprintf(stderr, "colo-chaos: publisher %u: %s\n", ctx.id, p.error().message.c_str());
    } else {
      std::fprintf(stderr, "colo-chaos: publisher %u: %s\n", ctx.id, t.error().message.c_str());
    }
  }
  if (!pub) return 3;

  SharedRecords& r = *ctx.records;
  std::mt19937_64 rng(ctx.seed);
  std::byte buffer[64] = {};
  std::uint64_t counter = 0;
  while (r.current_phase() == Phase::run) {
    if (ctx.sabotage && counter == 500) {
      const std::byte garbage[8] = {};  // no payload: every subscriber must call it corrupt
      if (pub->publish(garbage, kPublishTimeout) != SendStatus::ok) continue;
    }
    const Payload p{ctx.id, kPayloadMagic, counter};
    std::memcpy(buffer, &p, sizeof p);
    const std::size_t size = sizeof p + rng() % (sizeof buffer - sizeof p + 1);
    switch (pub->publish(std::span<const std::byte>(buffer, size), kPublishTimeout)) {
      case SendStatus::ok:
        ++counter;
        r.committed[ctx.id].store(counter, std::memory_order_release);
        r.count(op);
        pause_for(ctx.pause_us);
        break;
      case SendStatus::timed_out:
        r.count(Op::publish_timeout);  // the same counter again: it was not published
        break;
      case SendStatus::too_large:
      case SendStatus::corrupt:
        std::fprintf(stderr, "colo-chaos: %s %u: publish failed (%s)\n", role, ctx.id,
                     pub->last_status() == SendStatus::corrupt ? "ring corrupt" : "too large");
        return 3;
    }
  }
  // Sabotage: claim two messages more than were published.
  if (ctx.sabotage) r.committed[ctx.id].store(counter + 2, std::memory_order_release);
  return 0;
}

int run_subscriber(const WorkerContext& ctx, Op op) {
  auto node = open_node(ctx, "subscriber");
  if (!node) return 3;
  auto topic = node->topic(ctx.object, OpenMode::open);
  if (!topic) {
    std::fprintf(stderr, "colo-chaos: subscriber: %s\n", topic.error().message.c_str());
    return 3;
  }
  SubscribeOptions options;
  options.backpressure = Backpressure::block;
  auto sub = topic->subscribe(options);
  if (!sub) {
    std::fprintf(stderr, "colo-chaos: subscriber: %s\n", sub.error().message.c_str());
    return 3;
  }
  SharedRecords& r = *ctx.records;
  const Check order = op == Op::fed_delivery ? Check::fed_order : Check::topic_order;
  const char* where = op == Op::fed_delivery ? "federated subscriber" : "subscriber";
  // Per writer, the next counter expected. A witness subscribed before any
  // writer started, so it expects 0 first; another subscriber takes the first
  // message it sees from a writer as its start.
  std::unordered_map<std::uint32_t, std::uint64_t> next;
  const auto idle_to_end = ctx.gaps_are_lost ? kIdleToEndFederated : kIdleToEndLocal;
  auto last_message = std::chrono::steady_clock::now();
  // One message from a writer: in order, once, and (unless gaps are counted
  // as lost) without a gap.
  std::uint64_t origin_seq = 0;  // of the message being checked (federated: its sequence on alpha)
  auto check = [&](const Payload& p) {
    auto it = next.find(p.writer);
    if (it == next.end()) it = next.emplace(p.writer, ctx.witness >= 0 ? 0 : p.counter).first;
    std::uint64_t& expected = it->second;
    if (p.counter == expected) {
      ++expected;
    } else if (p.counter > expected && ctx.gaps_are_lost) {
      // Allowed only as far as colod counts it lost (checked at the end): say where it was.
      r.witness_gaps[ctx.witness].fetch_add(p.counter - expected, std::memory_order_relaxed);
      std::fprintf(stderr, "colo-chaos: %s: writer %u: messages %llu-%llu missing (origin sequence now %llu)\n", where,
                   p.writer, static_cast<unsigned long long>(expected), static_cast<unsigned long long>(p.counter - 1),
                   static_cast<unsigned long long>(origin_seq));
      expected = p.counter + 1;
    } else if (p.counter > expected) {
      report_violation(r, order, "%s (witness %d): writer %u: message %llu when %llu was next: %llu missing", where,
                       ctx.witness, p.writer, static_cast<unsigned long long>(p.counter),
                       static_cast<unsigned long long>(expected), static_cast<unsigned long long>(p.counter - expected));
      expected = p.counter + 1;
    } else {
      report_violation(r, order, "%s (witness %d): writer %u: message %llu again or out of order (%llu was next)", where,
                       ctx.witness, p.writer, static_cast<unsigned long long>(p.counter),
                       static_cast<unsigned long long>(expected));
    }
    if (ctx.witness >= 0) r.witness_next[ctx.witness][p.writer].store(expected, std::memory_order_relaxed);
  };
  std::uint64_t received = 0;
  for (;;) {
    const Phase phase = r.current_phase();
    if (phase == Phase::drain) {
      if (ctx.witness < 0) return 0;  // only witnesses are checked to the end
      if (std::chrono::steady_clock::now() - last_message > idle_to_end) return 0;
    }
    auto batch = sub->receive_batch_for(256, kReceiveSlice);
    if (batch.empty()) continue;
    last_message = std::chrono::steady_clock::now();
    for (const auto& m : batch) {
      auto p = payload_of(r, m.data(), where);
      if (!p) continue;
      r.count(op);
      if (p->writer >= kMaxWriters) {
        report_violation(r, Check::corrupt_message, "%s: writer id %u out of range", where, p->writer);
        continue;
      }
      ++received;
      origin_seq = m.origin_sequence();
      // Sabotage: lose one message (as if never received), take another twice.
      if (ctx.sabotage && received == 1000) continue;
      check(*p);
      if (ctx.sabotage && received == 1500) check(*p);
    }
  }
}

namespace {

// Appends one delivery to the consumption log: one write(2) of a whole
// record with O_APPEND, so records of concurrent consumers never interleave
// and a kill leaves whole records only.
bool log_consumption(int fd, const Payload& p, std::uint32_t consumer, std::uint32_t deliveries, bool from_dlq) {
  const Consumption c{p.writer, consumer, p.counter, deliveries, from_dlq ? 1u : 0u};
  return ::write(fd, &c, sizeof c) == static_cast<ssize_t>(sizeof c);
}

}  // namespace

int run_consumer(const WorkerContext& ctx) {
  auto node = open_node(ctx, "consumer");
  if (!node) return 3;
  auto queue = node->queue(ctx.object, OpenMode::open);
  if (!queue) {
    std::fprintf(stderr, "colo-chaos: consumer %u: %s\n", ctx.id, queue.error().message.c_str());
    return 3;
  }
  auto consumer = queue->consumer();
  if (!consumer) {
    std::fprintf(stderr, "colo-chaos: consumer %u: %s\n", ctx.id, consumer.error().message.c_str());
    return 3;
  }
  const int fd = ::open(ctx.path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0) {
    std::fprintf(stderr, "colo-chaos: consumer %u: %s: %s\n", ctx.id, ctx.path.c_str(), std::strerror(errno));
    return 3;
  }
  SharedRecords& r = *ctx.records;
  auto last_message = std::chrono::steady_clock::now();
  std::uint64_t taken = 0;
  for (;;) {
    if (r.current_phase() == Phase::drain && std::chrono::steady_clock::now() - last_message > kIdleToEndLocal)
      return 0;
    auto m = consumer->receive_for(kReceiveSlice);
    if (!m) continue;
    last_message = std::chrono::steady_clock::now();
    auto p = payload_of(r, m->data(), "consumer");
    if (!p) continue;  // released (acknowledged) as it goes: nothing to redeliver
    // Sabotage: one message logged twice, one not at all, one never published.
    if (ctx.sabotage && ++taken <= 300) {
      if (taken == 100) (void)log_consumption(fd, *p, ctx.id, m->deliveries(), false);
      if (taken == 200) continue;
      if (taken == 300) (void)log_consumption(fd, {p->writer, kPayloadMagic, p->counter + (1ull << 40)}, ctx.id, 1, false);
    }
    if (!log_consumption(fd, *p, ctx.id, m->deliveries(), false)) {
      std::fprintf(stderr, "colo-chaos: consumer %u: cannot append to %s: %s\n", ctx.id, ctx.path.c_str(),
                   std::strerror(errno));
      return 3;
    }
    r.count(Op::queue_consume);
    if (m->deliveries() > 1) r.count(Op::queue_redelivery);
    m->release();  // the acknowledgement, after the record
  }
}

long drain_queue(const WorkerContext& ctx) {
  auto node = open_node(ctx, "final drain");
  if (!node) return -1;
  const int fd = ::open(ctx.path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0) {
    std::fprintf(stderr, "colo-chaos: final drain: %s: %s\n", ctx.path.c_str(), std::strerror(errno));
    return -1;
  }
  long taken = 0;
  for (const bool dlq : {false, true}) {
    const std::string name = dlq ? ctx.object + ".dlq" : ctx.object;
    auto queue = node->queue(name, OpenMode::open);
    if (!queue) {
      std::fprintf(stderr, "colo-chaos: final drain: %s: %s\n", name.c_str(), queue.error().message.c_str());
      ::close(fd);
      return -1;
    }
    auto consumer = queue->consumer();
    if (!consumer) {
      std::fprintf(stderr, "colo-chaos: final drain: %s: %s\n", name.c_str(), consumer.error().message.c_str());
      ::close(fd);
      return -1;
    }
    // A dead consumer's held messages come back through the next receive:
    // wait a little before calling the queue empty.
    while (auto m = consumer->receive_for(500ms)) {
      if (auto p = payload_of(*ctx.records, m->data(), "final drain")) {
        (void)log_consumption(fd, *p, kFinalConsumer, m->deliveries(), dlq);
        ++taken;
      }
    }
  }
  ::close(fd);
  return taken;
}

bool store_write(SharedRecords& records, std::size_t lock, int fd, std::uint64_t token, std::uint64_t holder) {
  // flock, not a mutex in shared memory: the kernel releases it when a
  // holder is killed, and it orders the check with the appended record.
  while (::flock(fd, LOCK_EX) != 0 && errno == EINTR) {
  }
  std::atomic<std::uint64_t>& newest = records.store_max[lock];
  bool accepted = token >= newest.load(std::memory_order_acquire);
  if (accepted) {
    newest.store(token, std::memory_order_release);
    const StoreWrite w{token, holder};
    (void)!::write(fd, &w, sizeof w);
  }
  ::flock(fd, LOCK_UN);
  return accepted;
}

namespace {

// The critical section of a cluster-scope lock. A cluster hold is a lease:
// a holder on one host may be paused, or cut off with its colod, past it,
// and then another host's holder is granted the lock while the first still
// runs: no real-time overlap check can hold. What must hold is what the
// lease promises: while lease_lost() says false, no other holder has a
// newer token, so the store refuses no write of a holder whose lease is
// still valid after the refusal. A refused write after the lease was lost
// is the fencing doing its work (counted, allowed).
void hold_cluster_lock(SharedRecords& r, LockGuard& guard, int fd, std::uint64_t holder, std::mt19937_64& rng,
                       std::size_t slot) {
  const std::uint64_t token = guard.fencing_token();
  // Longer than the host lock's critical section: a lease that runs out
  // should sometimes do so with a holder inside.
  for (int i = 0; i < 3; ++i) {
    if (guard.lease_lost()) {
      r.count(Op::lease_lost_in_hold);
      return;
    }
    r.count(Op::store_write_in_hold);
    if (!store_write(r, slot, fd, token, holder)) {
      if (guard.lease_lost()) {
        r.count(Op::store_refused_lease_lost);
        return;
      }
      report_violation(r, Check::lock_overlap,
                       "the store refused token %llu of a cluster holder whose lease is valid: it has seen token %llu",
                       static_cast<unsigned long long>(token),
                       static_cast<unsigned long long>(r.store_max[slot].load()));
    }
    pause_for(static_cast<int>(rng() % 1000));
  }
}

}  // namespace

int run_lock_holder(const WorkerContext& ctx) {
  auto node = open_node(ctx, "lock holder");
  if (!node) return 3;
  auto lock = node->lock(ctx.object, OpenMode::open);
  if (!lock) {
    std::fprintf(stderr, "colo-chaos: lock holder: %s\n", lock.error().message.c_str());
    return 3;
  }
  const int fd = ::open(ctx.path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0) {
    std::fprintf(stderr, "colo-chaos: lock holder: %s: %s\n", ctx.path.c_str(), std::strerror(errno));
    return 3;
  }
  SharedRecords& r = *ctx.records;
  const std::size_t slot = ctx.lock_slot;
  std::atomic<std::uint64_t>& occupant = r.occupant[slot];
  std::mt19937_64 rng(ctx.seed);
  const std::uint64_t holder = static_cast<std::uint64_t>(::getpid()) << 32 | ctx.id;
  std::uint64_t grants = 0;
  while (r.current_phase() == Phase::run) {
    auto guard = lock->try_acquire_for(500ms);
    if (!guard) continue;
    const std::uint64_t token = guard->fencing_token();
    r.count(ctx.cluster ? Op::cluster_lock_grant : Op::lock_grant);
    ++grants;
    if (ctx.sabotage && ctx.cluster && grants == 100) {
      // Sabotage of a cluster lock: a newer token in the store while this
      // holder's lease is valid (as if another host held the lock too): its
      // own writes must now be refused while it still holds.
      (void)store_write(r, slot, fd, token + (std::uint64_t{1} << 40), holder);
    } else if (ctx.sabotage && grants == 100) {
      // Sabotage: a stale token written past the store's check, and the
      // critical section left occupied (the next holder must see an overlap).
      const StoreWrite stale{token / 2, holder};
      (void)!::write(fd, &stale, sizeof stale);
      occupant.store(token + 1000000);
      continue;  // the guard releases the lock
    }
    if (ctx.sabotage && !ctx.cluster && grants == 200) return 3;  // a worker that fails by itself
    if (ctx.cluster) {
      hold_cluster_lock(r, *guard, fd, holder, rng, slot);
    } else {
      // Whoever was in the critical section must have left it, or died in
      // it (then this grant says owner_died).
      const std::uint64_t before = occupant.exchange(token, std::memory_order_acq_rel);
      if (before != 0 && !guard->owner_died())
        report_violation(r, Check::lock_overlap, "token %llu granted while token %llu is in the critical section",
                         static_cast<unsigned long long>(token), static_cast<unsigned long long>(before));
      for (int i = 0; i < 2; ++i) {
        r.count(Op::store_write_in_hold);
        if (!store_write(r, slot, fd, token, holder))
          report_violation(r, Check::lock_overlap,
                           "the store refused token %llu of the current holder: it has seen token %llu",
                           static_cast<unsigned long long>(token),
                           static_cast<unsigned long long>(r.store_max[slot].load()));
        pause_for(static_cast<int>(rng() % 200));
      }
      std::uint64_t mine = token;
      if (!occupant.compare_exchange_strong(mine, 0, std::memory_order_acq_rel))
        report_violation(r, Check::lock_overlap, "token %llu found token %llu in the critical section when leaving",
                         static_cast<unsigned long long>(token), static_cast<unsigned long long>(mine));
    }
    guard->unlock();
    // Sometimes a write arrives late, after the lock has passed on (a
    // delayed request): the store must refuse it once a newer token wrote.
    if (rng() % 3 == 0) {
      pause_for(static_cast<int>(rng() % 500));
      r.count(store_write(r, slot, fd, token, holder) ? Op::store_late_accepted : Op::store_late_refused);
    }
  }
  return 0;
}

}  // namespace colo::chaos
