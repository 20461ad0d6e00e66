// colo/internal/lock_wait.hpp — a blocking acquire cut into slices, of a
// named Lock (LockWait) or of a lock table's key (KeyLockWait); internal to
// colo: not installed.
//
// For callers that must get control back every few tens of milliseconds
// while they wait: the Python binding (broker/python/) runs the signal
// handlers between slices, so that Ctrl-C interrupts a blocked acquire. The
// lock records the slices as one acquire: a contended grant if any slice
// waited, one timeout only when the caller gives up (timed_out()), and for
// cluster scope the 5 s grace for a missing colod measured across slices.
//
//   internal::LockWait wait(lock);
//   for (;;) {
//     auto got = wait.slice(internal::monotonic_ns() + 50'000'000);   // 50 ms
//     if (!got) return got.error();           // as Lock::acquire() fails
//     if (*got) return std::move(**got);      // granted
//     if (past_my_deadline) { wait.timed_out(); return timeout; }
//     if (interrupted()) return interrupted;  // nothing held, nothing counted
//   }
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

#include "colo/lock.hpp"
#include "colo/lock_table.hpp"

namespace colo::internal {

class LockWait {
 public:
  // One acquire of `lock` (which must outlive this), by the calling thread.
  explicit LockWait(Lock& lock) noexcept : lock_(lock) {}

  // Waits for the lock until `slice_end_ns` (monotonic_ns()): the guard,
  // nullopt when the slice ended first (nothing is held or counted then),
  // or an error, as Lock::acquire() reports them.
  Result<std::optional<LockGuard>> slice(std::uint64_t slice_end_ns) noexcept;
  // The caller stops waiting because its own timeout passed: counted as
  // Lock::try_acquire_for() counts a timeout.
  void timed_out() noexcept;

 private:
  Lock& lock_;
  Lock::Progress progress_;
};

// What one acquire of a table key carries from slice to slice (written by
// lock_table.cpp's acquire path, nowhere else).
struct KeyWaitProgress {
  static constexpr std::size_t kNoWaiterSlot = ~std::size_t{0};
  bool contended = false;                  // some slice had to wait (counted once, at the grant)
  bool check_owner = false;                // the last sleep ran out: look whether the holder died
  std::uint64_t sleep_ns = 0;              // the next futex sleep (0: the first, 1 ms)
  std::size_t waiter_slot = kNoWaiterSlot; // the table's waiter record of this acquire, while it waits
  std::uint64_t keeper_missing_since = 0;  // cluster scope: no live colod seen since (0: seen)
};

// The same for one key of a LockTable: KeyLock::acquire() in slices. The
// table's counters see one acquire: one contended grant if any slice
// waited, one entry in the most-contended sketch, one waiter record for the
// whole wait (`colo stat` shows the waiter between slices too), one timeout
// only from timed_out(). The fast path of KeyLock::acquire() is untouched:
// slices take the general path, which they need anyway once they wait.
//
//   internal::KeyLockWait wait(key);           // key: a KeyLock, outliving `wait`
//   auto got = wait.slice(now + 50 ms);        // as LockWait::slice
class KeyLockWait {
 public:
  explicit KeyLockWait(const KeyLock& key) noexcept : key_(key) {}
  // Drops the waiter record if the acquire ends without a grant.
  ~KeyLockWait();
  KeyLockWait(const KeyLockWait&) = delete;
  KeyLockWait& operator=(const KeyLockWait&) = delete;

  // Waits for the key until `slice_end_ns`: the guard, nullopt when the
  // slice ended first (nothing held; the waiter record stays), or an error
  // as KeyLock::acquire() reports them (a full table: Errc::capacity).
  Result<std::optional<LockGuard>> slice(std::uint64_t slice_end_ns) noexcept;
  // The caller gives up at its own deadline: counts one timeout.
  void timed_out() noexcept;

 private:
  const KeyLock& key_;
  KeyWaitProgress progress_;
};

}  // namespace colo::internal
