#include "owner_word.hpp"

#include <sched.h>  // sched_yield
#include <time.h>   // nanosleep

#include "clock.hpp"

namespace colo::shm {

namespace detail {
std::uint64_t self_owner_word_slow() noexcept {
  const std::uint32_t tid = self_tid();
  t_owner_word = std::uint64_t{thread_start_low(tid)} << 32 | std::uint64_t{tid} << 1;
  return t_owner_word;
}
}  // namespace detail

std::uint32_t thread_start_low(std::uint32_t tid) noexcept {
  return static_cast<std::uint32_t>(start_time_of(static_cast<pid_t>(tid)).value_or(0));
}

bool owner_alive(std::uint64_t word) noexcept {
  if (!names_a_thread(word)) return false;
  const auto start = start_time_of(static_cast<pid_t>(owner_tid(word)));
  return start && static_cast<std::uint32_t>(*start) == static_cast<std::uint32_t>(word >> 32);
}

OwnerLockResult lock_owner_word_slow(std::atomic<std::uint64_t>& word, std::uint64_t deadline_ns) noexcept {
  const std::uint64_t me = self_owner_word();
  std::uint64_t next_check = 0;
  for (int round = 0;; ++round) {
    std::uint64_t seen = 0;
    if (word.compare_exchange_strong(seen, me, std::memory_order_acquire, std::memory_order_relaxed)) [[likely]]
      return OwnerLockResult::acquired;
    if (seen == me) return OwnerLockResult::acquired;  // only a scribble can say we hold it: we do now
    if (round < 64) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
      continue;
    }
    const std::uint64_t now = monotonic_ns();
    if (deadline_ns != 0 && now >= deadline_ns) return OwnerLockResult::timed_out;
    if (next_check == 0) {
      next_check = now + 1'000'000;
    } else if (now >= next_check) {
      next_check = now + 1'000'000;
      if (!owner_alive(seen) &&
          word.compare_exchange_strong(seen, me, std::memory_order_acquire, std::memory_order_relaxed))
        return OwnerLockResult::acquired_from_dead;
    }
    if (round < 256) {
      ::sched_yield();
    } else {
      timespec pause{0, 50'000};
      ::nanosleep(&pause, nullptr);
    }
  }
}

}  // namespace colo::shm
