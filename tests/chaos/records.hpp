// tests/chaos/records.hpp — what the chaos run's processes record for its
// checkers: a block of shared anonymous memory (made by the driver before it
// forks anything, so every worker inherits it and it outlives every kill -9),
// the payload every message carries, and the record a queue consumer appends
// (O_APPEND, one write per record) to the consumption log.
//
//   SharedRecords (shared anonymous memory, zeroed)
//   +-----------------------------------------------------------------+
//   | phase                       run / stop writers / drain          |
//   | ops[kind], violations[checker]       counters, atomics          |
//   | committed[writer]           messages a writer saw published     |
//   | writer_killed[writer]       1: the driver SIGKILLed it          |
//   | consumer_killed[consumer]   1: the driver SIGKILLed it          |
//   | witness_next[witness][writer]  next counter a witness expects   |
//   | witness_gaps[witness]       messages a witness never got        |
//   | occupant[lock], store_max[lock]  each lock's critical section   |
//   |                             and the newest token of its store   |
//   +-----------------------------------------------------------------+
//
// Writer and consumer ids are incarnations: the driver hands a fresh id to
// every process it starts, so a restarted publisher is a new writer whose
// counters start at 0 again.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace colo::chaos {

inline constexpr std::uint32_t kMaxWriters = 16384;    // publisher/producer incarnations in one run
inline constexpr std::uint32_t kMaxConsumers = 16384;  // queue consumer incarnations in one run
inline constexpr std::uint32_t kPayloadMagic = 0xC4A05C0Du;

// The first bytes of every message (the rest, up to its size, is padding).
struct Payload {
  std::uint32_t writer;   // incarnation id
  std::uint32_t magic;    // kPayloadMagic: anything else is a corrupt message
  std::uint64_t counter;  // 0, 1, 2 ... per writer, in publish order
};
static_assert(sizeof(Payload) == 16);

// One delivery of a queue message, appended to the consumption log.
struct Consumption {
  std::uint32_t writer;
  std::uint32_t consumer;    // incarnation id (kFinalConsumer: the driver's final drain)
  std::uint64_t counter;
  std::uint32_t deliveries;  // Message::deliveries()
  std::uint32_t from_dlq;    // 1: taken from NAME.dlq by the final drain
};
static_assert(sizeof(Consumption) == 24);
inline constexpr std::uint32_t kFinalConsumer = kMaxConsumers - 1;

// What the run counts: operations by kind.
enum class Op : std::uint32_t {
  topic_publish,       // local topic: messages committed
  topic_delivery,      // local topic: messages received (witness and other subscribers)
  fed_publish,         // federated topic, on host alpha
  fed_delivery,        // federated topic, received on host beta
  queue_produce,
  queue_consume,       // deliveries, redeliveries included
  queue_redelivery,    // deliveries of a message a killed consumer had taken (Message::deliveries() > 1)
  lock_grant,
  cluster_lock_grant,    // grants of the cluster-scope locks (--backends), every host
  store_write_in_hold,   // fenced-store writes by the holder of the lock (must be accepted)
  store_late_accepted,   // a writer's late write (after release) accepted: no newer token seen yet
  store_late_refused,    // ... refused: a newer token was written
  lease_lost_in_hold,    // a cluster lock holder found its lease lost (lease_lost()) before a write
  store_refused_lease_lost,  // ... or the store refused it, and then its lease was lost (allowed)
  publish_timeout,     // publishes that timed out (a stopped subscriber or colod held them)
  count
};
inline constexpr const char* kOpNames[] = {
    "topic publish",        "topic delivery",         "federated publish",     "federated delivery",
    "queue produce",        "queue consume",          "queue redelivery",      "lock grant",
    "cluster lock grant",   "store write in hold",    "store late accepted",   "store late refused",
    "lease lost in hold",   "store refused, lease lost", "publish timed out",
};
static_assert(std::size(kOpNames) == static_cast<std::size_t>(Op::count));

// What the checkers find: violations by checker.
enum class Check : std::uint32_t {
  topic_order,        // a subscriber got a writer's messages out of order, twice, or with a gap
  topic_complete,     // the witness did not get exactly the committed messages
  fed_order,          // the federated witness: out of order or twice
  fed_complete,       // ... missed more than colod counted as lost
  queue_lost,         // a committed queue message never consumed
  queue_duplicate,    // consumed twice without the first consumer's death
  queue_phantom,      // consumed but never published
  lock_overlap,       // two holders in the critical section at once
  lock_stale_accepted,  // the store accepted a token older than one it had accepted
  corrupt_message,    // a message without the payload's magic
  worker_failed,      // a worker ended by itself with an error
  colod_died,         // a colod ended without being killed
  count
};
inline constexpr const char* kCheckNames[] = {
    "topic: in order, once, no gap",      "topic: witness got every committed message",
    "federation: in order, once",         "federation: gaps only as counted lost",
    "queue: committed message consumed",  "queue: redelivered only after a consumer death",
    "queue: consumed only what was published", "lock: no overlapping holders",
    "lock: no stale token accepted",      "messages: intact payload",
    "workers: none failed by itself",     "colod: none died by itself",
};
static_assert(std::size(kCheckNames) == static_cast<std::size_t>(Check::count));

enum class Phase : std::uint32_t { run = 0, stop_writers = 1, drain = 2 };

inline constexpr std::size_t kWitnesses = 2;  // 0: the local topic's, 1: the federated topic's
// Locks with a critical section and a fenced store each: 0 the host lock,
// 1.. the cluster-scope locks, one per lock server (--backends).
inline constexpr std::size_t kLocks = 4;

struct SharedRecords {
  std::atomic<std::uint32_t> phase{0};
  std::atomic<std::uint64_t> ops[static_cast<std::size_t>(Op::count)];
  std::atomic<std::uint64_t> violations[static_cast<std::size_t>(Check::count)];
  std::atomic<std::uint64_t> committed[kMaxWriters];
  std::atomic<std::uint8_t> writer_killed[kMaxWriters];
  std::atomic<std::uint8_t> consumer_killed[kMaxConsumers];
  std::atomic<std::uint64_t> witness_next[kWitnesses][kMaxWriters];
  std::atomic<std::uint64_t> witness_gaps[kWitnesses];
  std::atomic<std::uint64_t> occupant[kLocks];   // token of the holder in the critical section, 0: none
  std::atomic<std::uint64_t> store_max[kLocks];  // the fenced store's newest token (changed under its flock)

  void count(Op op, std::uint64_t n = 1) { ops[static_cast<std::size_t>(op)].fetch_add(n, std::memory_order_relaxed); }
  std::uint64_t count_of(Op op) const { return ops[static_cast<std::size_t>(op)].load(); }
  std::uint64_t violations_of(Check c) const { return violations[static_cast<std::size_t>(c)].load(); }
  Phase current_phase() const { return static_cast<Phase>(phase.load(std::memory_order_acquire)); }
};

// Counts a violation and says what was seen on stderr (the run's output),
// prefixed "colo-chaos: VIOLATION <checker>:". Async-signal-safe enough for
// a worker: one formatted write.
void report_violation(SharedRecords& records, Check check, const char* format, ...)
    __attribute__((format(printf, 3, 4)));

}  // namespace colo::chaos
