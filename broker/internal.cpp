// The small parts of libcolo's internal API: colo/internal/clock.hpp,
// text.hpp and ring_limits.hpp. What comes from shm/ is passed on, so that
// colod and the tools need no shm/ header.
#include <cerrno>
#include <cstdio>   // snprintf
#include <cstring>  // strerror_r
#include <limits>

#include "clock.hpp"
#include "colo/internal/clock.hpp"
#include "colo/internal/ring_limits.hpp"
#include "colo/internal/text.hpp"
#include "ring.hpp"

namespace colo::internal {

std::uint64_t monotonic_ns() noexcept { return shm::monotonic_ns(); }
std::uint64_t realtime_ns() noexcept { return shm::realtime_ns(); }

std::string escaped(std::string_view value, std::size_t max_bytes) {
  std::string out;
  for (unsigned char c : value.substr(0, max_bytes)) {
    if (c >= 0x20 && c < 0x7f && c != '\'') {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  if (value.size() > max_bytes) out += "...";
  return out;
}

std::string errno_text(std::string_view what) {
  const int error = errno;
  char buf[256];
  // GNU strerror_r (thread-safe): returns the message, in buf or static.
  const char* message = ::strerror_r(error, buf, sizeof buf);
  return std::string(what) + ": " + message;
}

RingCapacityRange ring_capacity_range() noexcept { return {shm::kMinRingCapacity, shm::kMaxRingCapacity}; }

std::optional<std::uint32_t> largest_max_message(std::uint64_t capacity) {
  // Asks Ring::validate itself rather than restating its arithmetic here:
  // its answer is monotonic in max_message (what fits twice, smaller fits
  // too), so a binary search finds the bound in 32 questions.
  auto accepts = [capacity](std::uint64_t max_message) {
    shm::RingConfig config;
    config.capacity = capacity;
    config.max_message = static_cast<std::uint32_t>(max_message);
    return shm::Ring::validate(config).has_value();
  };
  if (!accepts(1)) return std::nullopt;  // a max_message of 1 byte fits any capacity the ring accepts
  std::uint64_t fits = 1;                                                   // accepted
  std::uint64_t too_large = std::uint64_t{std::numeric_limits<std::uint32_t>::max()} + 1;  // beyond any max_message
  while (too_large - fits > 1) {
    const std::uint64_t middle = fits + (too_large - fits) / 2;
    (accepts(middle) ? fits : too_large) = middle;
  }
  return static_cast<std::uint32_t>(fits);
}

}  // namespace colo::internal
