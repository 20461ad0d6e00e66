#include "futex.hpp"

#include <linux/futex.h>
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <bit>
#include <algorithm>
#include <cerrno>
#include <climits>
#include <ctime>

#if !defined(SYS_futex_waitv) && defined(__NR_futex_waitv)
#define SYS_futex_waitv __NR_futex_waitv
#endif

namespace colo::shm {

static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t), "a futex word is a plain 32-bit word");

namespace {
void wait_at(void* address, std::uint32_t expected, std::int64_t timeout_ns) noexcept {
  timespec relative{};
  timespec* timeout = nullptr;
  if (timeout_ns >= 0) {
    relative.tv_sec = static_cast<time_t>(timeout_ns / 1'000'000'000);
    relative.tv_nsec = static_cast<long>(timeout_ns % 1'000'000'000);
    timeout = &relative;
  }
  ::syscall(SYS_futex, address, FUTEX_WAIT, expected, timeout, nullptr, 0);
}
void wake_all_at(void* address) noexcept { ::syscall(SYS_futex, address, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0); }
static_assert(std::endian::native == std::endian::little, "the low half of a 64-bit word is at its first byte");
}  // namespace

void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected, std::int64_t timeout_ns) noexcept {
  wait_at(&word, expected, timeout_ns);
}
void futex_wake_all(std::atomic<std::uint32_t>& word) noexcept { wake_all_at(&word); }
void futex_wait_low_half(std::atomic<std::uint64_t>& word, std::uint32_t expected, std::int64_t timeout_ns) noexcept {
  wait_at(&word, expected, timeout_ns);
}
void futex_wake_all_low_half(std::atomic<std::uint64_t>& word) noexcept { wake_all_at(&word); }

void futex_wait_either(std::atomic<std::uint32_t>& a, std::uint32_t a_seen, std::atomic<std::uint32_t>& b,
                       std::uint32_t b_seen, std::int64_t timeout_ns) noexcept {
  static std::atomic<bool> no_waitv{false};
  if (!no_waitv.load(std::memory_order_relaxed)) {
    futex_waitv waiters[2] = {};  // shared futexes (no FUTEX_PRIVATE_FLAG), 32-bit words
    waiters[0].val = a_seen;
    waiters[0].uaddr = reinterpret_cast<std::uint64_t>(&a);
    waiters[0].flags = FUTEX_32;
    waiters[1].val = b_seen;
    waiters[1].uaddr = reinterpret_cast<std::uint64_t>(&b);
    waiters[1].flags = FUTEX_32;
    timespec deadline{};
    timespec* until = nullptr;
    if (timeout_ns >= 0) {
      ::clock_gettime(CLOCK_MONOTONIC, &deadline);
      const std::int64_t ns = deadline.tv_nsec + timeout_ns % 1'000'000'000;
      deadline.tv_sec += static_cast<time_t>(timeout_ns / 1'000'000'000 + ns / 1'000'000'000);
      deadline.tv_nsec = static_cast<long>(ns % 1'000'000'000);
      until = &deadline;
    }
    if (::syscall(SYS_futex_waitv, waiters, 2, 0, until, CLOCK_MONOTONIC) == 0 || errno != ENOSYS) return;
    no_waitv.store(true, std::memory_order_relaxed);
  }
  constexpr std::int64_t kSliceNs = 1'000'000;
  for (std::int64_t left = timeout_ns; b.load(std::memory_order_acquire) == b_seen;) {
    if (a.load(std::memory_order_acquire) != a_seen) return;
    const std::int64_t slice = left < 0 ? kSliceNs : std::min(left, kSliceNs);
    wait_at(&a, a_seen, slice);
    if (left >= 0 && (left -= slice) <= 0) return;
  }
}

}  // namespace colo::shm

namespace colo::shm {
namespace {
long membarrier(int command) noexcept { return ::syscall(SYS_membarrier, command, 0, 0); }
// The process that registered (registration belongs to an address space: a
// forked child registers again), and the outcome: 1 registered, 2 refused.
std::atomic<std::uint64_t> g_barrier_state{0};  // pid << 2 | outcome
}  // namespace

bool register_asymmetric_barrier() noexcept {
  const auto pid = static_cast<std::uint64_t>(::getpid());
  std::uint64_t state = g_barrier_state.load(std::memory_order_acquire);
  if ((state >> 2) != pid) {
    const long supported = membarrier(MEMBARRIER_CMD_QUERY);
    const bool ok = supported >= 0 && (supported & MEMBARRIER_CMD_GLOBAL_EXPEDITED) != 0 &&
                    membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) == 0;
    state = pid << 2 | (ok ? 1 : 2);
    g_barrier_state.store(state, std::memory_order_release);
  }
  return (state & 3) == 1;
}

bool asymmetric_barrier() noexcept {
  if (!register_asymmetric_barrier()) return false;
  return membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) == 0;
}

}  // namespace colo::shm
