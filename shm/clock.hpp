// shm/clock.hpp — cheap timestamps for hot paths, and wall/monotonic clocks.
//
// A lock grant stamps its acquire time and adds its hold time to a counter.
// clock_gettime costs ~40 ns on this class of VM, more than the whole robust
// mutex fast path (~27 ns), so hot paths read the invariant TSC instead
// (~3 ns) and tools convert ticks to nanoseconds with a calibration of their
// own. On other architectures `ticks()` is CLOCK_MONOTONIC in nanoseconds.
#pragma once

#include <cstdint>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>  // __rdtsc
#endif

namespace colo::shm {

// Monotonic tick counter shared by all processes of the host.
inline std::uint64_t ticks() noexcept;

// Ticks per second, calibrated once per process against CLOCK_MONOTONIC
// (takes ~10 ms on first call; tools call it, hot paths never do).
double ticks_per_second() noexcept;

inline double ticks_to_ns(std::uint64_t t) noexcept { return static_cast<double>(t) * 1e9 / ticks_per_second(); }

std::uint64_t monotonic_ns() noexcept;
std::uint64_t realtime_ns() noexcept;

#if defined(__x86_64__) || defined(__i386__)
inline std::uint64_t ticks() noexcept { return __rdtsc(); }
#else
inline std::uint64_t ticks() noexcept { return monotonic_ns(); }
#endif

}  // namespace colo::shm
