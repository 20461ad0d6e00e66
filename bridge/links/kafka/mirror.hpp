// bridge/links/kafka/mirror.hpp — a topic's or queue's messages into a
// Kafka topic (docs/kafka.md, "Mirror").
//
// WHAT GOES OUT: every message published on this host (origin() == 0), in
// sequence order; relayed ones (from other hosts, or from Kafka) are
// skipped, so in a federation each message reaches Kafka once, from the
// host where it was published. Each record: the message's bytes; the key
// as configured (none, the node name, or a byte range of the message); one
// header, colo.id = "ORIGIN:OBJECT:EPOCH:SEQ" (MessageId: node name,
// object, the object's creation time in ns, the message's sequence); the
// timestamp (ms) when colod read it. One header, not one per part: each
// header is an allocation in librdkafka and an object in the broker, and
// five of them cost two thirds of the 64-byte throughput. The partition is
// Kafka's default one for the key (for no key: for the node name), so all of a host's messages of one key keep
// their order in one partition.
//
// READERS: ahead and retain (mirror_ring.hpp, as every mirror's).
//
// EXACTLY ONCE IN KAFKA. The producer is idempotent (enable.idempotence,
// acks=all, no message timeout): within one producer, retries never
// duplicate and each partition's records are a gapless prefix of what was
// sent to it, in order. Across a restart of colod (or of the producer after
// a fatal error), open() reads each partition this mirror writes to
// backwards to the newest record whose colo.id has our origin and object:
// if its epoch is the object's, its sequence is the last of our messages
// in that partition, and every earlier one routed there is in Kafka too
// (the prefix property). Reading resumes after the smallest of those, and
// a message is produced only if its sequence is above its partition's
// last: none twice, none missing (as long as the ring still holds them:
// what was overwritten while colod was down is counted lost and logged
// with its sequences). docs/kafka.md argues this against a transactional
// producer.
//
// LOSSY: nothing holds writers back; a message that finds librdkafka's
// queue full (Kafka down or slow for longer than the queue lasts) is
// dropped, and what the ring overwrote before colod read it is gone: both
// are counted lost and logged with their sequence ranges.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "../mirror_ring.hpp"
#include "colo/channel.hpp"
#include "kafka_link.hpp"

namespace colo::bridge::kafka {

class Mirror final : public KafkaLink {
 public:
  Mirror(const Config& config, const KafkaClusterConfig& cluster, const LinkConfig& link, const Log& log);
  ~Mirror() override { stop(); }

 private:
  Result<void> open() override;
  void step() override;
  void idle() override;
  void close() override;

  Result<void> open_kafka();
  Result<void> find_resume_points();
  Result<void> open_ahead();
  // Produces the held batch's messages from the ring's current() on; false
  // when librdkafka's queue is full (block mode: try again later).
  bool produce_batch();
  enum class Produced { ok, queue_full, refused };
  Produced produce(const MessageView& m);
  void on_delivery(const rd_kafka_message_t& m) override;
  void update_gauges();
  void note_lost(std::uint64_t from, std::uint64_t count, const char* why);
  std::int32_t partition_of(std::span<const std::byte> key) const;
  std::span<const std::byte> key_of(const MessageView& m) const;

  const bool lossy_;
  LinkObject object_;
  MessageId id_;
  MirrorRing ring_;
  Client producer_;
  TopicHandle topic_;
  std::int32_t partitions_ = 0;
  std::int32_t own_partition_ = 0;  // key none or origin: where all our messages go
  // Per partition: our last sequence already in Kafka (this epoch), or none.
  std::vector<std::optional<std::uint64_t>> in_kafka_;
  std::uint64_t read_at_ms_ = 0;  // when the held batch was read: its records' timestamp
  std::uint64_t next_metadata_check_ns_ = 0;
  std::uint32_t produced_since_poll_ = 0;
};

}  // namespace colo::bridge::kafka
