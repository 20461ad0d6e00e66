// shm/futex.hpp — wait on a 32-bit word in shared memory (Linux futex).
//
// The futexes are process-shared (no FUTEX_PRIVATE_FLAG): waiters and wakers
// are in different processes mapping the same segment.
#pragma once

#include <atomic>
#include <cstdint>

namespace colo::shm {

// Sleeps while `word` holds `expected`, at most `timeout_ns` (negative: no
// limit). Returns on a wake, a value change, a signal or the timeout; the
// caller re-checks its condition in every case.
void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected, std::int64_t timeout_ns) noexcept;

// Wakes every process sleeping on `word`.
void futex_wake_all(std::atomic<std::uint32_t>& word) noexcept;

}  // namespace colo::shm
