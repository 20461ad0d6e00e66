// shm/process.hpp — who is this process, and is that one still alive?
//
// Liveness in colo is pid + process start time, never pid alone:
// pids are reused, the pair (pid, start time in clock ticks since boot, field
// 22 of /proc/<pid>/stat) is not. Segments also record the boot id, so that a
// segment that outlived a reboot (a tmpfs kept across it) is never mistaken
// for one whose creator is alive.
#pragma once

#include <sys/types.h>  // pid_t

#include <array>    // BootId
#include <atomic>   // cached identity
#include <cstdint>  // fixed-width fields
#include <optional> // start_time_of

namespace colo::shm {

// A process as it is stored in shared memory.
struct ProcessRef {
  std::uint32_t pid = 0;
  std::uint64_t start_time = 0;  // clock ticks since boot, /proc/<pid>/stat field 22
};

using BootId = std::array<std::uint8_t, 16>;

namespace detail {
// Cached identity; reset in the child after fork(). Initial-exec TLS: the
// lock's fast path reads the tid on every grant, and the default model would
// call __tls_get_addr from a shared library.
extern std::atomic<std::uint32_t> g_self_pid;
extern std::atomic<std::uint64_t> g_self_start;
// constinit: no dynamic initialisation, so no TLS wrapper call on each use.
extern thread_local constinit std::uint32_t t_tid __attribute__((tls_model("initial-exec")));
// The thread's owner word (owner_word.hpp), 0 until computed.
extern thread_local constinit std::uint64_t t_owner_word __attribute__((tls_model("initial-exec")));
ProcessRef self_slow() noexcept;
std::uint32_t self_tid_slow() noexcept;
}  // namespace detail

// The calling process, computed once and refreshed after fork(). Cheap.
inline ProcessRef self() noexcept {
  const std::uint32_t pid = detail::g_self_pid.load(std::memory_order_relaxed);
  if (pid == 0) [[unlikely]] return detail::self_slow();
  return {pid, detail::g_self_start.load(std::memory_order_relaxed)};
}

// The calling thread's kernel tid, cached per thread and refreshed after fork().
inline std::uint32_t self_tid() noexcept {
  const std::uint32_t tid = detail::t_tid;
  return tid != 0 ? tid : detail::self_tid_slow();
}

// This boot's id (/proc/sys/kernel/random/boot_id), read once.
const BootId& boot_id() noexcept;

// Start time of a live pid, or nullopt if no such process (or unreadable).
std::optional<std::uint64_t> start_time_of(pid_t pid) noexcept;

enum class Liveness { alive, dead };

// Alive only if the pid exists and started at `ref.start_time`. A zero pid is
// dead. A zombie counts as dead: it will never release anything again.
Liveness liveness(ProcessRef ref) noexcept;

// liveness() for retry loops that ask again and again (a writer held back
// by a reader, spinning). /proc/<pid>/stat costs 6.5 us a read on the
// development VM, kill(pid, 0) 0.47 us: a pid that is gone is seen at once
// by kill; the start time (a reused pid) and the zombie state (killed, not
// yet reaped) are read from /proc again once this thread's last reading for
// that process is kRecheckLivenessNs old. So a dead process is dead here at
// once if reaped, within kRecheckLivenessNs if it is a zombie.
inline constexpr std::uint64_t kRecheckLivenessNs = 1'000'000;
Liveness liveness_recent(ProcessRef ref) noexcept;

}  // namespace colo::shm
