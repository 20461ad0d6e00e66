// colo/lock_table.hpp — keyed locks at scale: one object holding a hash table
// of locks keyed by byte strings (an order id, an account, a cache key).
//
//   auto node = colo::Node::open().value();
//   auto orders = node.lock_table("orders", colo::OpenMode::create_or_open, {.capacity = 1'000'000}).value();
//   if (auto guard = orders.acquire("order:42")) {        // Result<LockGuard>
//     if (guard->owner_died()) repair(42);                // its previous holder crashed
//     store.write(guard->fencing_token(), order_42);      // store rejects older tokens
//   }                                                     // released (and the key freed) here
//
// The same semantics as a named Lock (colo/lock.hpp), per key: blocking, try
// and timed acquire; owner-death recovery with owner_died(); a fencing token
// strictly increasing per key across releases, owner deaths and the key
// leaving the table and coming back; holder and waiter information.
//
// Only held keys occupy the table: a key is inserted by its first acquire
// and freed by its release (waiters then insert it again). A process killed
// at any step leaves the table consistent; a key whose holder died stays
// until its next acquirer is told owner_died(). Distinct keys never wait for
// each other: each key's lookup-and-insert locks only its hash bucket, for
// nanoseconds, and a release is one compare-and-swap on the key's entry.
// broker/lock_table_layout.hpp in colo's source draws the layout and argues
// these properties; docs/lock-tables.md has the figures.
//
// Capacity: a table holds at least `capacity` held keys at once (it is sized
// for 3/4 load then); an acquire that finds no free entry near the key's
// hash is refused (Errc::capacity), never waits for room. Memory: about
// (64 + max_key_bytes rounded up to 64) x 4/3 + 11 bytes per unit of
// capacity: 182 MB for a million keys of up to 64 bytes.
//
// Fairness: a release wakes every waiter of the key and the first back takes
// it (no queue order), as a futex-based mutex does.
//
// Threads: a LockTable may be shared by the threads of a process. A LockGuard
// belongs to the thread that acquired it (it must release it); the table
// must outlive its guards. A thread that already holds a key and acquires it
// again gets an error, not a deadlock.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "colo/error.hpp"
#include "colo/lock.hpp"    // LockGuard, LockHolder
#include "colo/object.hpp"  // Scope

namespace colo {

namespace internal {
class ClusterTableKeeper;  // colod's side of a cluster-scope table (not installed)
class KeyLockWait;         // a blocking acquire of a key in slices, for bindings (not installed)
}
namespace detail {
struct TableView;
// A checked key and where it lives (lock_table.cpp).
struct Key {
  const char* data;
  std::uint32_t len;
  std::uint64_t hash;
  std::uint64_t home;
};
}

struct LockTableOptions {
  Scope scope = Scope::host;
  std::uint64_t capacity = 65'536;    // held keys at once, 1 .. 2^26
  std::uint32_t max_key_bytes = 64;   // longest key, 1 .. 256 (sets the entry size)
};

// One key, read under its bucket's lock (a consistent snapshot).
struct KeyStats {
  bool held = false;                  // in the table: held now (perhaps by a dead holder)
  std::uint64_t fencing_token = 0;    // of the current grant (0: not held)
  LockHolder holder;                  // pid 0 if not held; start_time 0 (the entry names its thread)
  std::uint32_t waiters = 0;          // blocked acquirers of this key now (recorded ones)
};

// A key the table's acquirers waited for often (approximate counts: a
// space-saving sketch of the blocking acquires).
struct ContendedKey {
  std::string key;
  std::uint64_t waits = 0;
};

struct LockTableStats {
  Scope scope = Scope::host;
  std::uint64_t capacity = 0;          // as created
  std::uint64_t entries = 0;           // slots in all (capacity x 4/3, rounded up to buckets)
  std::uint32_t max_key_bytes = 0;
  std::uint32_t bytes_per_entry = 0;
  std::uint64_t live_keys = 0;         // in the table: held now (dead holders included), or kept
  std::uint64_t kept_keys = 0;         // cluster scope: kept for this host's cluster hold, no local holder
  std::uint64_t dead_holders = 0;      // live keys whose holder died: their next acquirer is told
  std::uint64_t overflowed_keys = 0;   // live keys outside their home bucket
  std::uint32_t waiters = 0;           // threads blocked in acquire now (dead ones not counted)
  std::uint64_t grants = 0;            // since creation
  std::uint64_t contended_grants = 0;  // grants that had to wait
  std::uint64_t recoveries = 0;        // grants that found the holder dead (owner_died)
  std::uint64_t timeouts = 0;          // timed acquires that gave up
  std::uint64_t full_refusals = 0;     // acquires refused for want of a free entry
  std::uint64_t damaged_entries = 0;   // entries found corrupt and isolated
  std::uint64_t bucket_recoveries = 0; // bucket locks taken over from a dead process
  std::vector<ContendedKey> most_contended;  // most waits first, at most 16
  double occupancy() const noexcept { return capacity == 0 ? 0.0 : static_cast<double>(live_keys) / capacity; }
};

class LockTable;

// One key of a table: a handle that keeps the key and its hash. Cheap to
// make (`table.lock(key)`), copyable; the table must outlive it.
class KeyLock {
 public:
  // Blocks until granted. Errors: Errc::capacity if the table has no free
  // entry for the key (message names the table and its capacity),
  // Errc::invalid_argument if this thread holds the key already.
  Result<LockGuard> acquire() const noexcept;
  // Grants at once, or nullopt if another thread holds the key (a holder
  // found dead is taken over: owner_died()). Errors as acquire().
  Result<std::optional<LockGuard>> try_acquire() const noexcept;
  // Grants within `timeout` or nullopt (and counts a timeout).
  Result<std::optional<LockGuard>> try_acquire_for(std::chrono::nanoseconds timeout) const noexcept;
  KeyStats stats() const noexcept;
  const std::string& key() const noexcept { return key_; }

 private:
  friend class LockTable;
  friend class internal::KeyLockWait;
  KeyLock(detail::TableView* table, std::string key, std::uint64_t hash) noexcept
      : table_(table), key_(std::move(key)), hash_(hash) {}
  detail::Key checked() const noexcept;
  detail::TableView* table_;
  std::string key_;
  std::uint64_t hash_;
};

class LockTable {
 public:
  // A handle on `key` (1 .. max_key_bytes bytes, any bytes). Fails only on
  // the key's length. Cluster scope also requires printable keys of
  // A-Z a-z 0-9 . _ - : (they become part of the backend lock's name).
  Result<KeyLock> lock(std::string_view key) const;
  // The same as lock(key) and the call on it.
  Result<LockGuard> acquire(std::string_view key) const noexcept;
  Result<std::optional<LockGuard>> try_acquire(std::string_view key) const noexcept;
  Result<std::optional<LockGuard>> try_acquire_for(std::string_view key, std::chrono::nanoseconds timeout) const noexcept;

  // Scans every entry (about 1 ms per 100,000 entries): racy by design, a
  // snapshot of counters read at slightly different times.
  LockTableStats stats() const noexcept;
  const std::string& name() const noexcept;
  Scope scope() const noexcept;

  LockTable(LockTable&&) noexcept;
  LockTable& operator=(LockTable&&) noexcept;
  LockTable(const LockTable&) = delete;
  LockTable& operator=(const LockTable&) = delete;
  ~LockTable();

 private:
  friend class Node;
  friend class internal::ClusterTableKeeper;
  explicit LockTable(std::unique_ptr<detail::TableView> view) noexcept;
  std::unique_ptr<detail::TableView> view_;
};

}  // namespace colo
