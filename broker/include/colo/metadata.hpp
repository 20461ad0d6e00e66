// colo/metadata.hpp — what Message::metadata() holds, and how to read it.
//
// A message that colod published into a topic or queue from another system
// carries metadata beside its bytes: for a record from Kafka, the Kafka
// topic, partition, offset, timestamp, key and headers; for a delivery from
// RabbitMQ, its queue, exchange, routing key, properties, headers and
// redelivered flag.
//
//   auto msg = sub.receive_for(100ms);
//   if (auto kafka = colo::kafka_metadata(msg->metadata())) {
//     use(kafka->partition, kafka->offset, kafka->key, kafka->headers);
//   }
//
// ENCODING (little-endian): a sequence of fields, each
//
//    0          2                  6
//   +----------+------------------+---------------------+
//   | type u16 | length u32 = n   | n bytes of value    |
//   +----------+------------------+---------------------+
//
// in this order for a Kafka record: system ("kafka"), topic, partition,
// offset, timestamp_ms, key (absent if the key is null), one header or
// null_header field per header in the record's order, redelivery (absent
// if 0). For a RabbitMQ delivery: system ("rabbitmq"), queue, exchange,
// routing_key, message_id and content_type (each absent if the message has
// none), timestamp_ms (absent if none), one header or null_header field per
// header (header values as text, see RabbitmqMetadata), redelivery (1 if
// RabbitMQ's redelivered flag was set, else absent).
// Readers skip types they do not know (a later colod may add some).
// The metadata counts against the object's max_message.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

namespace colo {

enum class MetadataType : std::uint16_t {
  system = 1,        // text: what the message came from ("kafka")
  topic = 2,         // text: its topic there
  partition = 3,     // i32
  offset = 4,        // i64
  key = 5,           // bytes (a null key has no field; an empty one has an empty field)
  header = 6,        // u16 name length, the name, then the value's bytes
  null_header = 7,   // the name of a header whose value is null
  timestamp_ms = 8,  // i64: the record's timestamp, ms since the Unix epoch
  // u32: this message may have been published before (colod restarted
  // after publishing it and before Kafka recorded that it had): one more
  // delivery of it, as Message::deliveries() counts for a queue.
  redelivery = 9,
  queue = 10,         // text: the RabbitMQ queue it was consumed from
  exchange = 11,      // text: the exchange it was published to ("" = the default exchange)
  routing_key = 12,   // text
  message_id = 13,    // text: the message-id property
  content_type = 14,  // text: the content-type property
};

struct MetadataField {
  MetadataType type;
  std::span<const std::byte> value;
};

// Walks the fields in order. Views point into the metadata (valid while
// the message is held).
class MetadataReader {
 public:
  explicit MetadataReader(std::span<const std::byte> bytes) noexcept : rest_(bytes) {}
  // The next field; nullopt at the end, or on a field that runs past the
  // end (then ok() is false).
  std::optional<MetadataField> next() noexcept;
  bool ok() const noexcept { return ok_; }

 private:
  std::span<const std::byte> rest_;
  bool ok_ = true;
};

struct KafkaHeader {
  std::string_view name;
  std::optional<std::span<const std::byte>> value;  // nullopt: a null value
};

struct KafkaMetadata {
  std::string_view topic;
  std::int32_t partition = -1;
  std::int64_t offset = -1;
  std::int64_t timestamp_ms = -1;
  std::optional<std::span<const std::byte>> key;  // nullopt: the record had no key
  std::vector<KafkaHeader> headers;               // in the record's order
  std::uint32_t redelivery = 0;                   // see MetadataType::redelivery
};

// The Kafka fields of a message's metadata; nullopt if it is not a Kafka
// record's or is malformed. Views point into the metadata.
std::optional<KafkaMetadata> kafka_metadata(std::span<const std::byte> metadata);

// A RabbitMQ header, as colod writes it: AMQP field values become bytes:
// a string or byte array as it is, an integer, float, decimal or timestamp
// as decimal text, a boolean as "true" or "false", void as a null value
// (nullopt). Nested tables and arrays are left out.
using RabbitmqHeader = KafkaHeader;  // name and value, the same shape

struct RabbitmqMetadata {
  std::string_view queue, exchange, routing_key;
  std::optional<std::string_view> message_id, content_type;  // nullopt: the property was not set
  std::int64_t timestamp_ms = -1;        // the timestamp property (seconds) in ms; -1: not set
  std::vector<RabbitmqHeader> headers;   // in the message's order
  bool redelivered = false;              // RabbitMQ's flag: it delivered this message before (to colod or another consumer)
};

// The RabbitMQ fields of a message's metadata; nullopt if it is not a
// RabbitMQ delivery's or is malformed. Views point into the metadata.
std::optional<RabbitmqMetadata> rabbitmq_metadata(std::span<const std::byte> metadata);

}  // namespace colo
