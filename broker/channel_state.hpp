// broker/channel_state.hpp — what a Topic or Queue shares with its handles (private).
#pragma once

#include <memory>
#include <string>

#include "colo/channel.hpp"  // ChannelStats
#include "mapped_object.hpp"
#include "ring.hpp"

namespace colo::detail {

// Creation parameters in a registry entry's params[4]:
//   [0] capacity  [1] max_message  [2] flags (bit 0: acks, bit 1: exclusive
//   publisher)  [3] max_deliveries (queue) or history (topic)
inline constexpr std::uint64_t kAcksFlag = 1;
inline constexpr std::uint64_t kExclusiveFlag = 2;

struct ChannelState {
  std::string name;
  std::unique_ptr<MappedObject> mapping;  // keeps the ring mapped
  shm::Ring ring;
  std::shared_ptr<ChannelState> dead_letters;  // queue with acks: NAME.dlq
};

// The ring's counters and slots, read without taking anything (Topic::stats,
// Queue::stats, and Node's listing of objects it has not opened).
ChannelStats channel_stats(const ChannelState& state);

}  // namespace colo::detail
