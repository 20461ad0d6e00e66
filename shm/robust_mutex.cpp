#include "robust_mutex.hpp"

#include <cerrno>
#include <ctime>

namespace colo::shm {

int RobustMutex::init() noexcept {
  pthread_mutexattr_t attr;
  int rc = ::pthread_mutexattr_init(&attr);
  if (rc != 0) return rc;
  rc = ::pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  if (rc == 0) rc = ::pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  // Error-checking type: a relock by the holder or an unlock by a non-holder
  // returns an error instead of deadlocking or corrupting the state.
  if (rc == 0) rc = ::pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
  if (rc == 0) rc = ::pthread_mutex_init(&mutex_, &attr);
  ::pthread_mutexattr_destroy(&attr);
  return rc;
}

MutexResult RobustMutex::from_errno(int rc) noexcept {
  switch (rc) {
    case 0: return MutexResult::acquired;
    case EOWNERDEAD: return MutexResult::acquired_owner_died;
    case EBUSY: return MutexResult::busy;
    case ETIMEDOUT: return MutexResult::timed_out;
    case ENOTRECOVERABLE: return MutexResult::unrecoverable;
    case EDEADLK: return MutexResult::deadlock;
    default: return MutexResult::error;
  }
}

MutexResult RobustMutex::lock() noexcept { return from_errno(::pthread_mutex_lock(&mutex_)); }

MutexResult RobustMutex::try_lock() noexcept { return from_errno(::pthread_mutex_trylock(&mutex_)); }

MutexResult RobustMutex::lock_until(std::uint64_t deadline_monotonic_ns) noexcept {
  timespec deadline{static_cast<time_t>(deadline_monotonic_ns / 1'000'000'000u),
                    static_cast<long>(deadline_monotonic_ns % 1'000'000'000u)};
  return from_errno(::pthread_mutex_clocklock(&mutex_, CLOCK_MONOTONIC, &deadline));
}

void RobustMutex::make_consistent() noexcept { ::pthread_mutex_consistent(&mutex_); }

void RobustMutex::unlock() noexcept { ::pthread_mutex_unlock(&mutex_); }

}  // namespace colo::shm
