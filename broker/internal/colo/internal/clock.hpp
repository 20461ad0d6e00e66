// colo/internal/clock.hpp — the clocks colo's programs share (internal to
// colo: not installed).
//
// One implementation (shm/clock.cpp, which libcolo's own waits use), so that
// colod, the tools and the tests measure deadlines on the clock the library
// compares them with.
#pragma once

#include <cstdint>

namespace colo::internal {

// CLOCK_MONOTONIC in nanoseconds: every deadline in colo (lock and ring
// waits, lease ends in lock records, backend deadlines in colod).
std::uint64_t monotonic_ns() noexcept;
// CLOCK_REALTIME in nanoseconds: wall-clock times shown to people.
std::uint64_t realtime_ns() noexcept;

}  // namespace colo::internal
