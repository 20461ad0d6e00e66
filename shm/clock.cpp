#include "clock.hpp"

#include <time.h>  // clock_gettime, nanosleep

namespace colo::shm {

std::uint64_t monotonic_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

std::uint64_t realtime_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

double ticks_per_second() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  static const double rate = [] {
    const std::uint64_t ns0 = monotonic_ns();
    const std::uint64_t t0 = ticks();
    timespec pause{0, 10'000'000};
    ::nanosleep(&pause, nullptr);
    const std::uint64_t ns1 = monotonic_ns();
    const std::uint64_t t1 = ticks();
    return static_cast<double>(t1 - t0) * 1e9 / static_cast<double>(ns1 - ns0);
  }();
  return rate;
#else
  return 1e9;
#endif
}

}  // namespace colo::shm
