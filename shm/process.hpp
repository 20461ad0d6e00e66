// shm/process.hpp — who is this process, and is that one still alive?
//
// Liveness in colo is pid + process start time (DESIGN.md section 3, point 6):
// pids are reused, the pair (pid, start time in clock ticks since boot, field
// 22 of /proc/<pid>/stat) is not. Segments also record the boot id, so that a
// segment that outlived a reboot (a tmpfs kept across it) is never mistaken
// for one whose creator is alive.
#pragma once

#include <sys/types.h>  // pid_t

#include <array>    // BootId
#include <cstdint>  // fixed-width fields
#include <optional> // start_time_of

namespace colo::shm {

// A process as it is stored in shared memory.
struct ProcessRef {
  std::uint32_t pid = 0;
  std::uint64_t start_time = 0;  // clock ticks since boot, /proc/<pid>/stat field 22
};

using BootId = std::array<std::uint8_t, 16>;

// The calling process, computed once and refreshed after fork(). Cheap.
ProcessRef self() noexcept;

// The calling thread's kernel tid, cached per thread and refreshed after fork().
std::uint32_t self_tid() noexcept;

// This boot's id (/proc/sys/kernel/random/boot_id), read once.
const BootId& boot_id() noexcept;

// Start time of a live pid, or nullopt if no such process (or unreadable).
std::optional<std::uint64_t> start_time_of(pid_t pid) noexcept;

enum class Liveness { alive, dead };

// Alive only if the pid exists and started at `ref.start_time`. A zero pid is
// dead. A zombie counts as dead: it will never release anything again.
Liveness liveness(ProcessRef ref) noexcept;

}  // namespace colo::shm
