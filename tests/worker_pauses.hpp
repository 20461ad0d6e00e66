// tests/worker_pauses.hpp — how the worker processes of the multi-process
// tests pause and wait: a sleep, a busy spin with no system call (so that a
// kill can land between two plain stores), a bounded wait for a flag.
#pragma once

#include <time.h>

#include <atomic>
#include <chrono>
#include <cstdint>

namespace colo::test {

inline void pause_us(std::uint64_t us) {
  if (us == 0) return;
  timespec ts{static_cast<time_t>(us / 1'000'000), static_cast<long>(us % 1'000'000) * 1000};
  ::nanosleep(&ts, nullptr);
}

// Busy for about `n` loop iterations.
inline void spin(std::uint32_t n) {
  for (std::uint32_t i = 0; i < n; ++i) asm volatile("" ::: "memory");
}

// Waits (bounded) for a control flag to be set.
inline bool wait_flag(const std::atomic<std::uint32_t>& flag, std::chrono::seconds max) {
  const auto deadline = std::chrono::steady_clock::now() + max;
  while (flag.load(std::memory_order_acquire) == 0) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    pause_us(100);
  }
  return true;
}

}  // namespace colo::test
