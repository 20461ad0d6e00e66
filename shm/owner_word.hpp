// shm/owner_word.hpp — lock words that name their owner thread, for locks in
// shared memory that must survive their holder's death and scribbles.
//
// A pthread robust mutex keeps the robust-list pointers of its owner inside
// the mutex, in shared memory: a process scribbling over them makes the
// holder crash in pthread_mutex_unlock. An owner word holds no pointer, only
// who owns it, so any value is safe to read and act on:
//
//   63                           32 31                           1   0
//   +------------------------------+------------------------------+---+
//   | owner thread's start time    | owner thread id (tid)        | F |
//   | (low 32 bits, clock ticks)   | (Linux tids are < 2^22)      |   |
//   +------------------------------+------------------------------+---+
//
//   0                 free
//   tid field != 0    owned by that thread, if it still runs and started
//                     then (a tid reused by a later thread has another
//                     start time); otherwise its owner died
//   tid field == 0    no thread: a marker of the lock's own (free, damaged)
//   F                 a flag of the lock's own (the lock table's "waiters")
//
// The low half holds the tid and the flag, so a futex on it changes whenever
// the owner or the flag does (the lock table sleeps on it).
//
// OwnerLock is the plain form: a spin lock for critical sections of
// nanoseconds (a hash bucket's insert), whose waiters take it over when its
// owner died. It does not repair what the dead owner left half done: the
// caller is told (acquired_from_dead) and repairs.
#pragma once

#include <atomic>
#include <cstdint>

#include "process.hpp"

namespace colo::shm {

inline constexpr std::uint64_t kOwnerFlag = 1;
inline constexpr std::uint64_t kOwnerTidMask = 0xffff'fffe;

inline std::uint32_t owner_tid(std::uint64_t word) noexcept {
  return static_cast<std::uint32_t>((word & kOwnerTidMask) >> 1);
}
// The word without its flag: who owns it.
inline std::uint64_t owner_of(std::uint64_t word) noexcept { return word & ~kOwnerFlag; }
inline bool names_a_thread(std::uint64_t word) noexcept { return (word & kOwnerTidMask) != 0; }

namespace detail {
std::uint64_t self_owner_word_slow() noexcept;
}  // namespace detail

// The calling thread's owner word (flag clear), cached per thread
// (detail::t_owner_word, process.hpp); a child after fork() computes its own.
inline std::uint64_t self_owner_word() noexcept {
  const std::uint64_t word = detail::t_owner_word;
  if (word != 0) [[likely]] return word;
  return detail::self_owner_word_slow();
}

// False once the thread the word names has exited (or never existed): no
// such tid, a zombie, or a tid reused by a thread that started at another
// time. Reads /proc (microseconds): slow paths only. A word naming no thread
// is not alive.
bool owner_alive(std::uint64_t word) noexcept;

// The thread's start time in clock ticks (/proc/<tid>/stat field 22), low 32 bits.
std::uint32_t thread_start_low(std::uint32_t tid) noexcept;

enum class OwnerLockResult : std::uint8_t {
  acquired,
  acquired_from_dead,  // its owner died holding it: what it protects may be half-updated
  timed_out,
};

// Takes `word` (0 -> self_owner_word()). Spins, then yields, then sleeps in
// 50 us steps; every millisecond of waiting it checks that the owner lives
// and takes the word over from a dead one. A word that already names the
// caller (only a scribble can do that) counts as taken. `deadline_ns`:
// CLOCK_MONOTONIC; 0 waits for ever.
OwnerLockResult lock_owner_word_slow(std::atomic<std::uint64_t>& word, std::uint64_t deadline_ns) noexcept;
inline OwnerLockResult lock_owner_word(std::atomic<std::uint64_t>& word, std::uint64_t deadline_ns) noexcept {
  std::uint64_t free = 0;  // the uncontended case inline: one CAS
  if (word.compare_exchange_strong(free, self_owner_word(), std::memory_order_acquire, std::memory_order_relaxed))
    [[likely]] return OwnerLockResult::acquired;
  return lock_owner_word_slow(word, deadline_ns);
}

// Frees `word`; the caller owns it. A plain store, not a CAS: nobody else
// writes a word whose owner lives (waiters take over only from the dead),
// and a scribble over a held word is as well cleared as kept.
inline void unlock_owner_word(std::atomic<std::uint64_t>& word) noexcept { word.store(0, std::memory_order_release); }

}  // namespace colo::shm
