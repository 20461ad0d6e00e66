// shm/robust_mutex.hpp — a process-shared, robust pthread mutex in shared memory.
//
// The mutex of colo's locks and of each namespace's registry: when a holder
// dies, the kernel's robust-futex list hands the mutex to the next acquirer
// with EOWNERDEAD instead of leaving it locked forever. The result
// names that case ("acquired, but the previous owner died") and the caller
// must call make_consistent() before unlocking, after repairing what the
// mutex protects; otherwise the mutex becomes unrecoverable.
#pragma once

#include <pthread.h>

#include <cstdint>

namespace colo::shm {

enum class MutexResult : std::uint8_t {
  acquired,             // normal grant
  acquired_owner_died,  // granted; previous owner died holding it: repair, then make_consistent()
  busy,                 // try_lock: held by someone else
  timed_out,            // timed lock: deadline passed
  unrecoverable,        // a holder unlocked without making it consistent; reinitialise
  deadlock,             // the calling thread already holds it (error-checking mutex)
  error,                // unexpected errno (EINVAL: not a mutex, i.e. corrupt memory)
};

inline bool granted(MutexResult r) noexcept {
  return r == MutexResult::acquired || r == MutexResult::acquired_owner_died;
}

// Lives in shared memory; trivially relocatable (no pointers), 40 bytes on
// x86-64 glibc. Not copyable: the mutex's identity is its address.
class RobustMutex {
 public:
  // Initialises in place; called once by the segment creator before publish.
  // Returns 0 or an errno.
  int init() noexcept;

  MutexResult lock() noexcept { return from_errno(::pthread_mutex_lock(&mutex_)); }
  MutexResult try_lock() noexcept { return from_errno(::pthread_mutex_trylock(&mutex_)); }
  // Absolute CLOCK_MONOTONIC deadline in nanoseconds.
  MutexResult lock_until(std::uint64_t deadline_monotonic_ns) noexcept;
  void make_consistent() noexcept { ::pthread_mutex_consistent(&mutex_); }
  // The thread id in the lock word (glibc keeps the owner's tid there for a
  // robust mutex; 0: free), for error messages only: read without the lock.
  std::uint32_t owner_tid() const noexcept {
    return static_cast<std::uint32_t>(__atomic_load_n(&mutex_.__data.__lock, __ATOMIC_RELAXED)) & 0x3fffffffu;
  }
  void unlock() noexcept { ::pthread_mutex_unlock(&mutex_); }

  RobustMutex() = default;
  RobustMutex(const RobustMutex&) = delete;
  RobustMutex& operator=(const RobustMutex&) = delete;

 private:
  static MutexResult from_errno(int rc) noexcept {
    if (rc == 0) [[likely]] return MutexResult::acquired;
    return from_errno_slow(rc);
  }
  static MutexResult from_errno_slow(int rc) noexcept;
  pthread_mutex_t mutex_;
};

}  // namespace colo::shm
