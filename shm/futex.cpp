#include "futex.hpp"

#include <linux/futex.h>
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <bit>
#include <climits>
#include <ctime>

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
