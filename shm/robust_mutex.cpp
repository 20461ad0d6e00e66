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

MutexResult RobustMutex::from_errno_slow(int rc) noexcept {
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

MutexResult RobustMutex::lock_until(std::uint64_t deadline_monotonic_ns) noexcept {
#if defined(__SANITIZE_THREAD__)
  // ThreadSanitizer does not intercept pthread_mutex_clocklock (it would
  // lose the mutex's ordering and report false races); under TSan only, use
  // timedlock with the deadline moved to CLOCK_REALTIME.
  timespec now_mono{}, now_real{};
  ::clock_gettime(CLOCK_MONOTONIC, &now_mono);
  ::clock_gettime(CLOCK_REALTIME, &now_real);
  const std::int64_t mono = static_cast<std::int64_t>(now_mono.tv_sec) * 1'000'000'000 + now_mono.tv_nsec;
  const std::int64_t real = static_cast<std::int64_t>(now_real.tv_sec) * 1'000'000'000 + now_real.tv_nsec;
  const std::int64_t target = real + (static_cast<std::int64_t>(deadline_monotonic_ns) - mono);
  timespec deadline{static_cast<time_t>(target / 1'000'000'000), static_cast<long>(target % 1'000'000'000)};
  return from_errno(::pthread_mutex_timedlock(&mutex_, &deadline));
#else
  timespec deadline{static_cast<time_t>(deadline_monotonic_ns / 1'000'000'000u),
                    static_cast<long>(deadline_monotonic_ns % 1'000'000'000u)};
  return from_errno(::pthread_mutex_clocklock(&mutex_, CLOCK_MONOTONIC, &deadline));
#endif
}


}  // namespace colo::shm
