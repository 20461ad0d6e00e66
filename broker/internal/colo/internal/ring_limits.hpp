// colo/internal/ring_limits.hpp — the ring's rules for a topic's or a
// queue's capacity and max_message, for checkers outside libcolo (internal
// to colo: not installed).
//
// The rules live in one place, the ring's own check (shm::Ring::validate),
// which Node::topic and Node::queue apply when they create a ring. colod's
// config checker asks the same check through these functions, so that a
// config that loads can also be created, and says which key is wrong in
// words of its own.
#pragma once

#include <cstdint>
#include <optional>

namespace colo::internal {

struct RingCapacityRange {
  std::uint64_t min = 0;  // bytes
  std::uint64_t max = 0;
};
// Capacities are powers of two within this range.
RingCapacityRange ring_capacity_range() noexcept;

// The largest max_message a ring of `capacity` bytes accepts (one record of
// it must fit twice, with the record header and the tag colod may add);
// nullopt if the capacity itself is not accepted.
std::optional<std::uint32_t> largest_max_message(std::uint64_t capacity);

}  // namespace colo::internal
