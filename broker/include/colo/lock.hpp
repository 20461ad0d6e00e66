// colo/lock.hpp — named, process-shared, robust locks with fencing tokens.
//
//   auto node = colo::Node::open().value();
//   auto lock = node.lock("orders/pool").value();
//   if (auto guard = lock.acquire()) {
//     if (guard->owner_died()) repair_pool();            // previous holder crashed
//     write_to_store(guard->fencing_token(), data);      // store rejects older tokens
//   }                                                    // released here
//
// Algorithm: a pthread robust, process-shared mutex in the lock's segment
// (broker/lock_record.hpp in colo's source draws it). Every grant bumps a
// 64-bit fencing epoch under the mutex, so tokens are strictly increasing
// over all grants of the lock, including across holder deaths: a dead
// holder's grant already bumped it.
// When a holder dies, the next acquirer is granted the lock with
// owner_died() == true; colo has already made the mutex consistent and
// counted the recovery, the caller repairs what the lock protects.
//
// Threads: a Lock may be shared by the threads of a process; a LockGuard
// belongs to the thread that acquired it (it must release it, like any
// mutex). The Lock must outlive its guards. A thread that already holds the
// lock and acquires it again gets an error, not a deadlock.
//
// Cluster scope (LockOptions{.scope = Scope::cluster}): the same API, and
// the lock excludes holders on every host. The local mutex still orders the
// processes of this host; the namespace's colod takes the cluster lock from
// ZooKeeper, etcd or Redis once and lets local holders pass it on while they
// queue for it, within a budget (docs/cluster-locks.md). Tokens are then
// cluster-wide: backend epoch << 20 | grant under that epoch. A cluster hold
// is a lease: check lease_lost() before each protected write, or register
// on_lease_lost(); send the token with the write in any case.
//
//   auto lock = node.lock("orders/pool", colo::OpenMode::create_or_open, {.scope = colo::Scope::cluster}).value();
//   auto guard = lock.acquire().value();             // Errc::not_ready if no colod serves the namespace
//   guard.on_lease_lost([] { stop_writing(); });    // from another thread, at once
//   if (!guard.lease_lost()) store.write(guard.fencing_token(), data);
#pragma once

#include <chrono>      // timed acquire
#include <cstdint>     // tokens and counters
#include <functional>  // lease-loss callback
#include <memory>      // the mapping handle
#include <optional>    // try forms
#include <string>

#include "colo/error.hpp"
#include "colo/object.hpp"  // Scope

namespace colo {

namespace detail {
class Registry;
struct LockRecord;
struct MappedObject;
struct LeaseWatch;
struct TableView;
struct TableGrants;
}  // namespace detail
namespace internal {
class ClusterLockKeeper;  // colod's side of a cluster-scope lock (not installed)
class LockWait;           // a blocking acquire in slices, for bindings (not installed)
}  // namespace internal

// Holding the lock: a named Lock's, or one key of a LockTable's
// (colo/lock_table.hpp). Move-only; releases on destruction.
class [[nodiscard]] LockGuard {
 public:
  // Strictly greater than the token of every earlier grant of this lock.
  std::uint64_t fencing_token() const noexcept { return token_; }
  // True if the previous holder died holding the lock: the protected state
  // may be half-updated.
  bool owner_died() const noexcept { return owner_died_; }
  bool owns_lock() const noexcept { return record_ != nullptr || table_ != nullptr; }

  // Cluster scope: true once this host no longer holds the cluster lock
  // for this grant (colod lost its session or lease, was killed or paused
  // past the lease, or the lease simply ran out). Another host may hold it
  // now: stop writing. Reads shared memory and the vDSO clock, no system
  // call. Always false for host scope (and after unlock()).
  bool lease_lost() const noexcept;
  // Cluster scope: calls `callback` once, from a thread of its own, as soon
  // as lease_lost() turns true while this guard holds the lock (e.g. to
  // signal a worker). Replaces an earlier callback. The callback may not
  // unlock this guard. Host scope: never called.
  void on_lease_lost(std::function<void()> callback);

  void unlock() noexcept;

  // Inline: a guard is moved through a Result on every acquire, and a call
  // per move showed in the table's fast path.
  LockGuard(LockGuard&& other) noexcept
      : record_(other.record_),
        table_(other.table_),
        table_entry_(other.table_entry_),
        token_(other.token_),
        sampled_ticks_(other.sampled_ticks_),
        owner_died_(other.owner_died_),
        cluster_(other.cluster_),
        watch_(other.watch_) {
    other.record_ = nullptr;
    other.table_ = nullptr;
    other.watch_ = nullptr;
  }
  LockGuard& operator=(LockGuard&& other) noexcept {
    if (this != &other) {
      unlock();
      record_ = other.record_;
      table_ = other.table_;
      table_entry_ = other.table_entry_;
      token_ = other.token_;
      sampled_ticks_ = other.sampled_ticks_;
      owner_died_ = other.owner_died_;
      cluster_ = other.cluster_;
      watch_ = other.watch_;
      other.record_ = nullptr;
      other.table_ = nullptr;
      other.watch_ = nullptr;
    }
    return *this;
  }
  LockGuard(const LockGuard&) = delete;
  LockGuard& operator=(const LockGuard&) = delete;
  ~LockGuard() {
    if (owns_lock()) unlock();  // moved-from guards (every acquire makes some) make no call
  }

 private:
  friend class Lock;
  friend struct detail::TableGrants;
  LockGuard(detail::LockRecord* record, std::uint64_t token, bool owner_died, std::uint64_t sampled_ticks,
            bool cluster) noexcept
      : record_(record), token_(token), sampled_ticks_(sampled_ticks), owner_died_(owner_died), cluster_(cluster) {}
  LockGuard(detail::TableView* table, std::uint64_t table_entry, std::uint64_t token, bool owner_died,
            std::uint64_t sampled_ticks, bool cluster) noexcept
      : record_(nullptr), table_(table), table_entry_(table_entry), token_(token), sampled_ticks_(sampled_ticks),
        owner_died_(owner_died), cluster_(cluster) {}
  void stop_watch() noexcept;
  detail::LockRecord* record_;         // a named lock's record, or
  detail::TableView* table_ = nullptr; // a lock table's key: the table and
  std::uint64_t table_entry_ = 0;      // its entry (index | distance from the key's home << 48)
  std::uint64_t token_;
  std::uint64_t sampled_ticks_;  // acquire time if this grant is timed, else 0
  bool owner_died_;
  bool cluster_;
  detail::LeaseWatch* watch_ = nullptr;  // on_lease_lost()'s thread (owned; raw to keep ~LockGuard inline)
};

// The holder as recorded in the lock, read without taking it (racy by design).
struct LockHolder {
  std::uint32_t pid = 0;   // 0: not held
  std::uint32_t tid = 0;
  std::uint64_t start_time = 0;
  double held_for_ns = 0;  // since its grant, or since a tool first saw it (see held_for_exact)
  bool held_for_exact = false;
  bool alive = false;      // pid + start time still running
};

// Cluster scope: whether this host holds the cluster lock. Stored in the
// lock record (values are part of its format): acquirers move none/lost ->
// requested, colod requested -> held -> yielding -> none, or held -> lost
// (docs/cluster-locks.md).
enum class LeaseState : std::uint32_t {
  none = 0,       // this host neither holds nor wants it
  requested = 1,  // a local acquirer asked colod for it
  held = 2,       // this host holds it: local grants pass it on
  yielding = 3,   // colod is handing it back; acquirers step aside
  lost = 4,       // the backend session or lease ended while held
  invalid = 0xff, // stats only: the record holds none of the above (corrupt)
};
// "none", "requested", "held", "yielding", "lost", "invalid" (a static string).
const char* to_string(LeaseState state) noexcept;

// Cluster scope: this host's side of the cluster lock (the record's cluster
// line), read without taking the lock.
struct ClusterLockStats {
  LeaseState lease_state = LeaseState::none;
  std::uint64_t epoch = 0;          // backend grant epoch while held (0: not held by this host)
  std::uint64_t local_grants = 0;   // grants under that epoch
  double valid_for_ms = 0;          // the lease is ours for at least this long (negative: expired)
  std::uint32_t keeper_pid = 0;     // the colod serving it (0: none yet)
  bool keeper_alive = false;
  std::uint64_t lease_losses = 0;   // holds lost since creation
};

struct LockStats {
  Scope scope = Scope::host;
  std::uint64_t fencing_epoch = 0;     // token of the latest grant
  std::uint64_t grants = 0;
  std::uint64_t contended_grants = 0;  // grants that had to wait
  std::uint64_t recoveries = 0;        // grants that found the previous owner dead
  std::uint64_t timeouts = 0;          // timed acquires that gave up
  double hold_ns_mean = 0;             // mean hold time, from 1 grant in 16 (and every contended one)
  std::uint64_t hold_samples = 0;
  std::uint32_t waiters = 0;          // threads blocked in acquire now (dead ones not counted)
  LockHolder holder;
  std::optional<ClusterLockStats> cluster;  // cluster scope only
};

class Lock {
 public:
  // Blocks until granted. Fails if the lock record is corrupt or the
  // calling thread already holds the lock; for cluster scope also if no
  // live colod serves the namespace's cluster locks for 5 s (Errc::not_ready).
  Result<LockGuard> acquire() noexcept;
  // Grants at once or returns nullopt (held elsewhere, held by this very
  // thread, or record corrupt: acquire() says which). Cluster scope: grants
  // only if this host holds the cluster lock already; otherwise asks colod
  // for it (a later try may then succeed) and returns nullopt.
  std::optional<LockGuard> try_acquire() noexcept;
  // Grants within `timeout` or returns nullopt (and counts a timeout).
  std::optional<LockGuard> try_acquire_for(std::chrono::nanoseconds timeout) noexcept;

  // Reads the counters without taking the lock. May record, in the lock,
  // when it first saw the current holder (see LockHolder::held_for_exact).
  LockStats stats() const noexcept;
  const std::string& name() const noexcept { return name_; }
  Scope scope() const noexcept;

  Lock(Lock&&) noexcept;
  Lock& operator=(Lock&&) noexcept;
  Lock(const Lock&) = delete;
  Lock& operator=(const Lock&) = delete;
  ~Lock();

 private:
  friend class Node;
  friend class internal::ClusterLockKeeper;
  friend class internal::LockWait;
  // `registry`: cluster scope, to ring the namespace's doorbell for colod.
  Lock(std::string name, std::unique_ptr<detail::MappedObject> mapping, detail::LockRecord* record,
       std::shared_ptr<detail::Registry> registry = nullptr) noexcept;
  enum class Wait { none, until, forever };
  enum class Admission { granted, timed_out, yield_first, no_keeper };
  // What one acquire carries from slice to slice when internal::LockWait
  // cuts it into several calls.
  struct Progress {
    bool contended = false;                  // some slice had to wait
    std::uint64_t keeper_missing_since = 0;  // cluster scope: no live colod seen since (0: seen)
  };
  // The shared path of every acquire form. With `sliced`, the deadline ends
  // one slice of a longer acquire: reaching it counts no timeout, and
  // `sliced` carries the acquire's progress across slices.
  Result<std::optional<LockGuard>> acquire_until(Wait wait, std::uint64_t deadline_ns,
                                                 Progress* sliced = nullptr) noexcept;
  // Under the local mutex, cluster scope: waits until this host holds the
  // cluster lock; returns its epoch in `epoch`.
  Admission admit_cluster(Wait wait, std::uint64_t deadline_ns, std::uint64_t& epoch,
                          std::uint64_t& keeper_missing_since) noexcept;
  LockGuard grant(bool contended, bool owner_died, bool make_consistent, std::uint64_t cluster_epoch) noexcept;

  std::string name_;
  std::unique_ptr<detail::MappedObject> mapping_;
  detail::LockRecord* record_;
  std::shared_ptr<detail::Registry> registry_;  // cluster scope only
};

}  // namespace colo
