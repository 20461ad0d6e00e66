// colo/internal/federation.hpp — what colod does to topics and queues that
// user processes never do (internal to colo: not installed).
//
// colod carries messages between hosts. A message it publishes for another
// host is tagged with that host's id and the message's sequence there (the
// ring stores the tag in front of the payload, shm/ring.hpp); readers see it
// as Message::origin() / origin_sequence(), and colod never forwards a
// tagged message again, so federated messages cannot loop.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string_view>

#include "colo/channel.hpp"

namespace colo::internal {

// The id of a host in tags: 32-bit FNV-1a of its colod node name, never 0
// (0 means "this host").
std::uint32_t origin_id(std::string_view node_name) noexcept;

// Publishes a message that came from host `origin` (nonzero) with sequence
// `origin_seq` there; waits for space up to `timeout`. `sequence`, if
// given, receives the message's sequence in this ring. origin 0: corrupt.
SendStatus publish_relayed(Publisher& publisher, std::uint32_t origin, std::uint64_t origin_seq,
                           std::span<const std::byte> bytes, std::chrono::nanoseconds timeout,
                           std::uint64_t* sequence = nullptr) noexcept;

// For each origin, the highest origin sequence among the tagged messages the
// ring still holds (a queue: also consumed ones not yet reclaimed). colod's
// restart resumes each peer from there.
std::map<std::uint32_t, std::uint64_t> relayed_high_water(const Topic& topic);
std::map<std::uint32_t, std::uint64_t> relayed_high_water(const Queue& queue);
// The same for one origin, among its sequences up to `at_most` only (0 if
// none): where to resume a peer whose ring holds no more than that.
std::uint64_t relayed_high_water(const Topic& topic, std::uint32_t origin, std::uint64_t at_most);
std::uint64_t relayed_high_water(const Queue& queue, std::uint32_t origin, std::uint64_t at_most);

// colod's cursor for a peer: it holds back local writers like a `block`
// subscriber, but messages from other hosts may lap it like a `lossy` one,
// so that two hosts publishing faster than they exchange cannot deadlock.
// `from_sequence` as in SubscribeOptions.
Result<Subscriber> subscribe_bridge(Topic& topic, std::optional<std::uint64_t> from_sequence);

// Sleeps until `count` messages have been published to the reader's ring
// (Topic::published() >= count) or `timeout` ran out, reading nothing; true
// if they have. Writers wake it on commit like any sleeping reader: colod's
// wake-up threads use it to tell its event loop that something arrived.
bool wait_published(Reader& reader, std::uint64_t count, std::chrono::nanoseconds timeout) noexcept;

// wait_published in two halves, for a loop that sleeps on other things too
// (colod's, in io_uring with its sockets). arm_publish_wait registers the
// reader as a sleeping reader and returns the futex word (in the ring's
// shared memory) and the value to sleep while it holds; nullopt, with
// nothing registered, when `count` messages have been published already.
// After the sleep, whatever ended it, end_publish_wait. The word stays
// valid while the reader lives.
struct PublishWait {
  std::atomic<std::uint32_t>* word;
  std::uint32_t value;
};
std::optional<PublishWait> arm_publish_wait(Reader& reader, std::uint64_t count) noexcept;
void end_publish_wait(Reader& reader) noexcept;

}  // namespace colo::internal
