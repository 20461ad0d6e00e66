// bridge/links/kafka/spill.hpp — a queue's bursts out to a Kafka topic and
// back (docs/kafka.md, "Spill").
//
//   queued bytes  > high_watermark x capacity: colod takes messages from the
//                   front of the queue (as a consumer with acks), down to
//                   halfway between the watermarks, produces
//                   them to the spill topic (idempotent producer, one
//                   partition unless configured), and acknowledges them in
//                   the ring only once Kafka has them.
//   queued bytes  < low_watermark x capacity: colod reads the spill topic
//                   (every partition, assigned: the topic is this link's own;
//                   its group [link.kafka] group keeps the commits) and
//                   publishes the records back
//                   into the queue, tagged (origin: the id of
//                   "spill/<node>/<object>", origin sequence: the offset) with
//                   their Kafka metadata, committing an offset once its record
//                   is in the ring.
//
// So producers wait only when the ring is full, which it is not while Kafka
// takes messages as fast as they come. ORDER: spilled messages come back in
// the order they went out; they come back after messages that stayed in the
// ring and were published later (the front of the queue goes out first):
// FIFO holds within each of the two, not between them.
//
// CRASHES: a message is in the ring until Kafka acknowledged it, and in
// Kafka until the ring has it back: a colod killed at any point loses
// nothing. Killed between Kafka's acknowledgement and the ring's, a batch
// is both in Kafka and (taken, not acknowledged) in the ring, which gives
// it to a consumer again (deliveries() > 1): those messages are consumed
// twice, once marked. Killed after a record came back and before its
// offset was committed: the ring's metadata tells, at the restart, which
// records it already has (not brought back twice).
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "colo/channel.hpp"
#include "colo/internal/links.hpp"
#include "kafka_link.hpp"

namespace colo::bridge::kafka {

class Spill final : public KafkaLink {
 public:
  // Consumers of the queue colod spills with: each holds one batch while
  // Kafka acknowledges it, so this many batches are in flight at once.
  static constexpr int kTakers = 4;

  Spill(const Config& config, const KafkaClusterConfig& cluster, const LinkConfig& link, const Log& log);
  ~Spill() override { stop(); }

 private:
  Result<void> open() override;
  void step() override;
  void idle() override;
  void close() override;

  // One of colod's consumers of the queue and the batch it holds.
  struct Taker {
    std::optional<Consumer> consumer;
    MessageBatch batch;
    std::size_t acknowledged = 0;  // by Kafka, of the batch
    std::vector<std::size_t> refused;  // indexes Kafka will never take: put back into the queue
    std::uint64_t generation = 0;  // which batch the delivery reports are about
  };

  Result<void> open_kafka();
  Result<void> open_refill();
  void spill_out();
  void produce_batch(int taker);
  void finish_batches();
  void put_back(Taker& taker);
  void on_delivery(const rd_kafka_message_t& m) override;
  void refill();
  void commit(bool sync);
  void update_gauges();
  std::uint64_t queued() const;

  const std::uint64_t high_bytes_, low_bytes_;
  LinkObject object_;
  std::uint32_t origin_ = 0;
  std::optional<Publisher> publisher_;
  // Heap-held: close() may have to leave one taken until colod exits.
  std::unique_ptr<Taker> takers_[kTakers];
  std::uint64_t generations_ = 0;
  Client producer_;
  TopicHandle topic_;
  std::int32_t partitions_ = 1;

  Client consumer_;
  rd_kafka_queue_t* queue_ = nullptr;
  struct PartitionState {
    std::optional<std::int64_t> in_ring;  // newest offset the ring has (at assignment, or brought back since)
    std::int64_t committable = -1, committed = -1, position = -1;
    std::uint64_t ready = 0;
  };
  std::map<std::int32_t, PartitionState> refill_partitions_;
  std::deque<MessagePtr> pending_;  // consumed, not yet back in the ring
  bool refilling_ = false;  // below the low watermark, not yet back to halfway
  std::uint64_t next_commit_ns_ = 0;
};

}  // namespace colo::bridge::kafka
