// bridge/links/kafka/mirror.hpp — a topic's or queue's messages into a
// Kafka topic (docs/kafka.md, "Mirror").
//
// WHAT GOES OUT: every message published on this host (origin() == 0), in
// sequence order; relayed ones (from other hosts, or from Kafka) are
// skipped, so in a federation each message reaches Kafka once, from the
// host where it was published. Each record: the message's bytes; the key
// as configured (none, the node name, or a byte range of the message);
// headers colo.origin (node name), colo.object, colo.seq (the message's
// sequence in the object), colo.epoch (the object's creation time, ns)
// and colo.time (when colod read it, ns since the epoch; also the record's
// timestamp, in ms). The partition is Kafka's default one for the key (for
// no key: for the node name), so all of a host's messages of one key keep
// their order in one partition.
//
// READERS (in the object's ring):
//   ahead   reads what to produce: a block subscriber (topic, block), a
//           lossy subscriber (topic, lossy), or a tap (queue).
//   retain  block mode only: a block reader (subscriber or tap) held at the
//           oldest message Kafka has not acknowledged. The ring keeps every
//           message from there on, and holds local writers back when it is
//           full: nothing is lost while colod runs, whatever Kafka does.
//
//   ring:  ... [acknowledged][produced, in flight][read, not produced][unread] ...
//                           ^retain              ^                   ^ahead
//
// EXACTLY ONCE IN KAFKA. The producer is idempotent (enable.idempotence,
// acks=all, no message timeout): within one producer, retries never
// duplicate and each partition's records are a gapless prefix of what was
// sent to it, in order. Across a restart of colod (or of the producer after
// a fatal error), open() reads each partition this mirror writes to
// backwards to the newest record with our colo.origin and colo.object: if
// its colo.epoch is the object's, its colo.seq is the last of our messages
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

#include <deque>
#include <optional>
#include <string>
#include <vector>

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

  // A message handed to librdkafka and not yet acknowledged or refused.
  struct InFlight {
    std::uint64_t seq;
    std::uint32_t bytes;
    bool done;
  };
  Result<void> open_kafka();
  Result<void> find_resume_points();
  Result<void> open_ahead();
  // Produces the held batch's messages from `next_in_batch_` on; false
  // when librdkafka's queue is full (block mode: try again later).
  bool produce_batch();
  enum class Produced { ok, queue_full, refused };
  Produced produce(const MessageView& m);
  void on_delivery(const rd_kafka_message_t& m) override;
  void advance_retain();
  void update_gauges();
  void note_lost(std::uint64_t from, std::uint64_t count, const char* why);
  std::int32_t partition_of(std::span<const std::byte> key) const;
  std::span<const std::byte> key_of(const MessageView& m) const;

  const bool lossy_;
  LinkObject object_;
  std::string epoch_text_;
  Client producer_;
  TopicHandle topic_;
  std::int32_t partitions_ = 0;
  std::int32_t own_partition_ = 0;  // key none or origin: where all our messages go
  // Per partition: our last sequence already in Kafka (this epoch), or none.
  std::vector<std::optional<std::uint64_t>> in_kafka_;

  std::optional<Reader> ahead_;
  MessageBatch ahead_batch_;         // read, being produced
  std::size_t next_in_batch_ = 0;
  std::uint64_t handled_through_ = 0;  // every message below this sequence is produced, skipped or not ours
  std::uint64_t missed_seen_ = 0;    // ahead_->missed() already counted lost

  std::optional<Reader> retain_;     // block mode
  MessageBatch retain_batch_;        // what retain holds
  std::uint64_t retain_next_ = 0;    // sequence retain reads next

  std::deque<InFlight> in_flight_;
  std::uint64_t in_flight_bytes_ = 0;  // of those in in_flight_
  std::uint64_t pending_ = 0;          // in in_flight_ and not done
  std::uint64_t next_metadata_check_ns_ = 0;
  std::uint32_t idle_polls_ = 0;  // empty reads in a row
  std::uint32_t produced_since_poll_ = 0;
};

}  // namespace colo::bridge::kafka
