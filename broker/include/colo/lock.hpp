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
// (DESIGN.md section 4). Every grant bumps a 64-bit fencing epoch under the
// mutex, so tokens are strictly increasing over all grants of the lock,
// including across holder deaths: a dead holder's grant already bumped it.
// When a holder dies, the next acquirer is granted the lock with
// owner_died() == true; colo has already made the mutex consistent and
// counted the recovery, the caller repairs what the lock protects.
//
// Threads: a Lock may be shared by the threads of a process; a LockGuard
// belongs to the thread that acquired it (it must release it, like any
// mutex). The Lock must outlive its guards. A thread that already holds the
// lock and acquires it again gets an error, not a deadlock.
#pragma once

#include <chrono>    // timed acquire
#include <cstdint>   // tokens and counters
#include <memory>    // the mapping handle
#include <optional>  // try forms
#include <string>

#include "colo/error.hpp"

namespace colo {

namespace detail {
struct LockRecord;
struct MappedObject;
}  // namespace detail

enum class Scope : std::uint32_t {
  host = 1,     // this host only
  cluster = 2,  // escalated through colod (not built yet: refused at creation)
};
const char* scope_name(Scope scope) noexcept;

// Holding the lock. Move-only; releases on destruction.
class [[nodiscard]] LockGuard {
 public:
  // Strictly greater than the token of every earlier grant of this lock.
  std::uint64_t fencing_token() const noexcept { return token_; }
  // True if the previous holder died holding the lock: the protected state
  // may be half-updated.
  bool owner_died() const noexcept { return owner_died_; }
  bool owns_lock() const noexcept { return record_ != nullptr; }
  void unlock() noexcept;

  LockGuard(LockGuard&& other) noexcept;
  LockGuard& operator=(LockGuard&& other) noexcept;
  LockGuard(const LockGuard&) = delete;
  LockGuard& operator=(const LockGuard&) = delete;
  ~LockGuard() { unlock(); }

 private:
  friend class Lock;
  LockGuard(detail::LockRecord* record, std::uint64_t token, bool owner_died, std::uint64_t sampled_ticks) noexcept
      : record_(record), token_(token), sampled_ticks_(sampled_ticks), owner_died_(owner_died) {}
  detail::LockRecord* record_;
  std::uint64_t token_;
  std::uint64_t sampled_ticks_;  // acquire time if this grant is timed, else 0
  bool owner_died_;
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
};

class Lock {
 public:
  // Blocks until granted. Fails only if the lock record is corrupt or the
  // calling thread already holds the lock.
  Result<LockGuard> acquire() noexcept;
  // Grants at once or returns nullopt (held elsewhere, held by this very
  // thread, or record corrupt: acquire() says which).
  std::optional<LockGuard> try_acquire() noexcept;
  // Grants within `timeout` or returns nullopt (and counts a timeout).
  std::optional<LockGuard> try_acquire_for(std::chrono::nanoseconds timeout) noexcept;

  // Reads the counters without taking the lock. May record, in the lock,
  // when it first saw the current holder (see LockHolder::held_for_exact).
  LockStats stats() const noexcept;
  const std::string& name() const noexcept { return name_; }

  Lock(Lock&&) noexcept;
  Lock& operator=(Lock&&) noexcept;
  Lock(const Lock&) = delete;
  Lock& operator=(const Lock&) = delete;
  ~Lock();

 private:
  friend class Node;
  Lock(std::string name, std::unique_ptr<detail::MappedObject> mapping, detail::LockRecord* record) noexcept;
  LockGuard grant(bool contended, bool owner_died) noexcept;

  std::string name_;
  std::unique_ptr<detail::MappedObject> mapping_;
  detail::LockRecord* record_;
};

}  // namespace colo
