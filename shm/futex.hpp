// shm/futex.hpp — wait on a 32-bit word in shared memory (Linux futex), and
// the asymmetric memory barrier that lets wakers skip their own fence.
//
// The futexes are process-shared (no FUTEX_PRIVATE_FLAG): waiters and wakers
// are in different processes mapping the same segment.
//
// Asymmetric barrier (membarrier(2), MEMBARRIER_CMD_GLOBAL_EXPEDITED): a
// sleeper registers itself as a waiter, calls asymmetric_barrier(), then
// checks its condition once more; a waker publishes with a plain store and
// then reads the waiter count with no fence. The barrier runs a full memory
// barrier on every CPU that runs a thread of a registered process, so either
// the waker sees the registration or the sleeper sees the publication —
// the Dekker handshake, with its whole cost on the rare side (the sleeper).
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

// Sleeps while `a` holds `a_seen` and `b` holds `b_seen` (FUTEX_WAITV,
// Linux 5.16), at most `timeout_ns`; returns on a change of either, a wake,
// a signal or the timeout. On an older kernel it sleeps on `a` alone, in
// 1 ms slices, looking at `b` between them.
void futex_wait_either(std::atomic<std::uint32_t>& a, std::uint32_t a_seen, std::atomic<std::uint32_t>& b,
                       std::uint32_t b_seen, std::int64_t timeout_ns) noexcept;

// The same on the low 32 bits of a 64-bit word (its first 4 bytes: x86-64
// is little-endian), for locks whose word holds more than a futex does.
void futex_wait_low_half(std::atomic<std::uint64_t>& word, std::uint32_t expected, std::int64_t timeout_ns) noexcept;
void futex_wake_all_low_half(std::atomic<std::uint64_t>& word) noexcept;

// Registers this process for asymmetric barriers (once; later calls are
// free). False if the kernel refuses (old kernel, seccomp): the caller then
// fences on its fast path instead.
bool register_asymmetric_barrier() noexcept;
// The heavy side: a full barrier on every CPU running a registered process.
// False if unavailable.
bool asymmetric_barrier() noexcept;

}  // namespace colo::shm
