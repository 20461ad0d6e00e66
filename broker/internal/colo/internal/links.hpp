// colo/internal/links.hpp — what colod's links to other messaging systems
// (Kafka: bridge/links/) do to topics and queues, beyond federation.hpp
// (internal to colo: not installed).
//
// A link reads an object to carry its messages out (a mirror: a subscriber
// of a topic, a tap of a queue), or publishes into it what came from
// outside, with an origin tag (so that it is never carried out again) and
// metadata (what the outside system said about the message: for Kafka its
// topic, partition, offset, key and headers; colo/metadata.hpp).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "colo/channel.hpp"
#include "colo/metadata.hpp"

namespace colo::internal {

// A queue's tap: a reader that sees every message enqueued, in order, and
// takes none from the queue's consumers. Writers wait for it like for a
// `block` subscriber of a topic (so a tap that stops reading holds the
// queue's producers back). `from_sequence` as in SubscribeOptions (the
// oldest retained message if it is gone; missed() counts what was).
Result<Reader> subscribe_tap(Queue& queue, std::optional<std::uint64_t> from_sequence);

// A message to publish with an origin tag and/or metadata.
struct AnnotatedMessage {
  std::uint32_t origin = 0;              // nonzero: tagged with it (Message::origin()); 0: untagged
  std::uint64_t origin_seq = 0;          // tagged: Message::origin_sequence()
  std::span<const std::byte> metadata;   // empty: none (Message::metadata())
  std::span<const std::byte> payload;
};
// Bytes of the object's max_message such a message takes (its payload and
// its metadata block): it fits if this is at most max_message.
std::uint64_t annotated_size(std::size_t metadata_bytes, std::size_t payload_bytes) noexcept;

// Publishes `messages` in order, in as few claims as fit, waiting for space
// up to `timeout` in all. Returns how many were published: all, or
// publisher.last_status() tells why not messages[n] (too_large: larger
// than max_message with its metadata; timed_out: no room in time).
// `sequences`, if given (messages.size() entries), receives each published
// message's sequence in the object.
std::size_t publish_annotated(Publisher& publisher, std::span<const AnnotatedMessage> messages,
                              std::chrono::nanoseconds timeout, std::uint64_t* sequences = nullptr) noexcept;

// Calls fn(origin, origin_seq, metadata) for each message with metadata the
// object still retains, oldest first (a queue: consumed ones too, until
// they are reclaimed). The metadata is a copy valid during the call. A
// link's restart: what it already published, and from where.
using MetadataVisitor = std::function<void(std::uint32_t, std::uint64_t, std::span<const std::byte>)>;
void for_each_metadata(const Topic& topic, const MetadataVisitor& fn);
void for_each_metadata(const Queue& queue, const MetadataVisitor& fn);

// Queue: every message of a sequence below this one has been taken and
// released (acknowledged, with acks) by a consumer; the ones from here on
// are not taken yet, or taken and held. A consumer that died holding
// messages holds them until they are delivered again and released.
std::uint64_t released_below(const Queue& queue) noexcept;
// Queue: messages enqueued so far (the next message's sequence), as
// Topic::published(); one atomic load.
std::uint64_t published(const Queue& queue) noexcept;

// Messages (sequences) and bytes of ring still to go.
struct Backlog {
  std::uint64_t messages = 0, bytes = 0;
};
// What a subscriber or tap has not read yet (a batch it holds included).
Backlog backlog(const Reader& reader) noexcept;
// Queue: what is enqueued and not taken yet.
Backlog queued(const Queue& queue) noexcept;

// Builds metadata in the encoding colo/metadata.hpp reads.
class MetadataWriter {
 public:
  void add(MetadataType type, std::span<const std::byte> value);
  void add(MetadataType type, std::string_view text);
  void add_i32(MetadataType type, std::int32_t value);
  void add_i64(MetadataType type, std::int64_t value);
  void add_u32(MetadataType type, std::uint32_t value);
  // A Kafka header: name and value (nullopt: a header whose value is null).
  void add_header(std::string_view name, std::optional<std::span<const std::byte>> value);
  void reserve(std::size_t bytes) { bytes_.reserve(bytes); }
  void clear() noexcept { bytes_.clear(); }
  std::span<const std::byte> bytes() const noexcept { return bytes_; }
  std::vector<std::byte> take() noexcept { return std::move(bytes_); }  // the encoding; the writer is empty after

 private:
  std::vector<std::byte> bytes_;
};

}  // namespace colo::internal
