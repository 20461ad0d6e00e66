// tests/chaos/workers.hpp — the bodies of the chaos run's worker processes.
// The driver (chaos.cpp) forks each one through Children::spawn, SIGKILLs,
// SIGSTOPs and SIGCONTs them, and starts killed ones again as new
// incarnations. Each body opens its own Node (nothing of the driver's
// libcolo state is used across fork), runs until the shared phase tells it
// to stop, and returns its exit status: 0 when it ended as told, 3 when it
// could not set up (it says why on stderr), which the driver counts as a
// failed worker.
//
// What each records (records.hpp) is what its checker needs:
// - writers (topic publishers, queue producers): committed[writer] = the
//   number of messages whose publish returned ok, stored after each one. A
//   writer killed between its publish and that store leaves one message
//   more than it recorded: the checkers allow exactly one, only for killed
//   writers.
// - topic subscribers: check order, duplicates and gaps online, per writer;
//   a witness also keeps witness_next[writer] for the final comparison.
// - queue consumers: append one Consumption per delivery to the log before
//   releasing (= acknowledging) it, so a consumer killed between the two
//   shows a redelivery the checker can attribute to its death.
// - lock holders: occupy a shared cell while they hold the lock and write
//   their token to the fenced store (a file whose flock serialises the
//   token check and the appended record). Holders of a cluster-scope lock
//   check their lease instead of the shared cell (workers.cpp says why).
#pragma once

#include <cstdint>
#include <string>

#include "records.hpp"

namespace colo::chaos {

// What every worker is given. Strings are copied before fork.
struct WorkerContext {
  SharedRecords* records = nullptr;
  std::string ns;             // the colo namespace it works in
  std::string object;         // its topic, queue or lock
  std::uint32_t id = 0;       // writer or consumer incarnation id; cluster lock holders: their host
  std::uint64_t seed = 0;     // its own random choices (sizes, pauses)
  std::string path;           // consumers: the consumption log; holders: the fenced store
  int witness = -1;           // subscribers: the witness slot it fills, -1: none
  bool gaps_are_lost = false; // federated witness: a gap is counted (colod says what it lost), not a violation
  std::size_t lock_slot = 0;  // holders: which lock's records (records.hpp, kLocks)
  bool cluster = false;       // holders: a cluster-scope lock (its hold is a lease)
  int pause_us = 0;           // writers: pause after each message (keeps the run's logs and CPU bounded)
  // `colo-chaos --sabotage`: the worker plants the faults its checkers must
  // catch (workers.cpp says which), to show that every checker can fail.
  bool sabotage = false;
};

int run_publisher(const WorkerContext& ctx, Op op);  // topic publisher or queue producer (op says which)
int run_subscriber(const WorkerContext& ctx, Op op);
int run_consumer(const WorkerContext& ctx);
int run_lock_holder(const WorkerContext& ctx);

// The driver's final drain of a queue and its NAME.dlq, logged like a
// consumer's deliveries (consumer kFinalConsumer). Returns the messages taken,
// or -1 (error on stderr).
long drain_queue(const WorkerContext& ctx);

// The fenced store of lock `lock` (records.hpp, kLocks): accepts a write iff
// its token is at least the newest token accepted so far; appends every accepted write (token, holder) to the
// file. Returns true if accepted.
struct StoreWrite {
  std::uint64_t token;
  std::uint64_t holder;  // pid << 32 | attempt: who wrote it
};
bool store_write(SharedRecords& records, std::size_t lock, int fd, std::uint64_t token, std::uint64_t holder);

}  // namespace colo::chaos
