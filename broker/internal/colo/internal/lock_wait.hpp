// colo/internal/lock_wait.hpp — a blocking acquire cut into slices (internal
// to colo: not installed).
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

#include <cstdint>
#include <optional>

#include "colo/lock.hpp"

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

}  // namespace colo::internal
