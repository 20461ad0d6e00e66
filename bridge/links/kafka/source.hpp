// bridge/links/kafka/source.hpp — a Kafka topic's records into a topic or
// queue (docs/kafka.md, "Source").
//
// A consumer of group [link.kafka] group reads the topic (the partitions
// the group gives this colod) and publishes each record into the object,
// tagged as relayed (origin: the id of "kafka/<cluster>/<topic>", origin
// sequence: the offset; so a mirror never sends it back and federation
// never forwards it) with its metadata: topic, partition, offset,
// timestamp, key and headers (colo/metadata.hpp). Order per partition is
// the ring's order, so every subscriber sees each partition in order.
//
// OFFSETS are committed only for records the object has taken for good:
//   topic: once the record is in the ring;
//   queue: once a consumer released (acknowledged, with acks) it and every
//          record before it of its partition (internal::released_below).
// So neither a colod crash nor a consumer crash loses a record. At a
// (re)start, the ring itself says what it already holds: per partition,
// the newest offset among its retained records' metadata; records up to it
// are not published again (counted as duplicates). Only records the ring
// no longer holds and Kafka has no commit for (consumed and reclaimed in
// the moments before a crash) are published twice; those are marked
// (MetadataType::redelivery): the first kRedeliveryWindow records of a
// partition after a start, when the ring has none of it, which bounds the
// uncommitted window (the link stops consuming a partition that has more
// published and uncommitted).
//
// BACK-PRESSURE: when the ring is full (slow subscribers, unacknowledged
// queue messages), records wait in memory (a few batches); full for longer
// than a second, the link pauses its partitions (librdkafka stops
// fetching) and keeps polling, so the group keeps it. Nothing is dropped.
#pragma once

#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "colo/channel.hpp"
#include "colo/internal/links.hpp"
#include "kafka_link.hpp"

namespace colo::bridge::kafka {

class Source final : public KafkaLink {
 public:
  // Records per partition published and not committed, at most; also how
  // many records after a start are marked as possibly delivered before.
  static constexpr std::uint64_t kRedeliveryWindow = 65536;

  Source(const Config& config, const KafkaClusterConfig& cluster, const LinkConfig& link, const Log& log);
  ~Source() override { stop(); }

 private:
  Result<void> open() override;
  void step() override;
  void idle() override;
  void close() override;

  // What the link knows of one partition it was assigned.
  struct PartitionState {
    std::optional<std::int64_t> in_ring;   // newest offset the ring held at assignment or we published since
    std::optional<std::int64_t> mark_below;  // records below this offset are marked as redelivered
    // Published, not yet committed: (ring sequence, offset), in order.
    std::deque<std::pair<std::uint64_t, std::int64_t>> uncommitted;
    std::int64_t committable = -1;  // offset to commit (the next record to read); -1: nothing new
    std::uint64_t ready = 0;        // records that became committable since the last commit
    std::int64_t committed = -1;    // last offset committed
    std::int64_t position = -1;     // next offset to read
  };

  void on_rebalance(rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* partitions);
  void scan_ring();  // PartitionState::in_ring of every partition, from the ring's metadata
  void poll_records(int timeout_ms);
  bool publish_pending();  // false while the ring has no room
  void advance_commits();
  void commit(bool sync);
  void pause_consuming(bool pause);
  void update_gauges();
  std::size_t uncommitted_total() const;

  LinkObject object_;
  std::optional<Publisher> publisher_;
  std::uint32_t origin_ = 0;
  Client consumer_;
  rd_kafka_queue_t* queue_ = nullptr;  // the consumer's queue (not owned by us: rd_kafka_queue_destroy at close)
  std::map<std::int32_t, PartitionState> partitions_;
  std::map<std::int32_t, std::int64_t> ring_offsets_;  // newest offset per partition in the ring (scan_ring)

  // Polled and not yet published (the ring was full), in order.
  struct Pending {
    MessagePtr record;
    std::vector<std::byte> metadata;
  };
  std::deque<Pending> pending_;
  bool consuming_paused_ = false;
  std::uint64_t blocked_since_ns_ = 0;  // the ring has had no room for pending_ since then; 0: it has
  std::uint64_t next_commit_ns_ = 0;
};

}  // namespace colo::bridge::kafka
