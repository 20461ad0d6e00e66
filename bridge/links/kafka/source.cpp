#include "source.hpp"

#include <algorithm>

#include "colo/internal/clock.hpp"
#include "colo/internal/federation.hpp"  // origin_id

namespace colo::bridge::kafka {
namespace {

using internal::monotonic_ns;
constexpr std::size_t kPollBatch = 512;         // records taken from the consumer at once
constexpr std::size_t kPublishBatch = 256;      // records published into the ring at once
constexpr std::uint64_t kCommitEveryNs = 50'000'000;
constexpr int kCommittedTimeoutMs = 10'000;     // at assignment: the group's committed offsets
constexpr std::uint64_t kPauseAfterNs = 1'000'000'000;  // the ring full this long: stop fetching
constexpr std::size_t kMaxPending = 4 * kPollBatch;     // records polled ahead of the ring, at most (not paused)

std::span<const std::byte> bytes_of(const void* p, std::size_t n) { return {static_cast<const std::byte*>(p), n}; }

}  // namespace

Source::Source(const Config& config, const KafkaClusterConfig& cluster, const LinkConfig& link, const Log& log)
    : KafkaLink(config, cluster, link, log),
      origin_(internal::origin_id("kafka/" + cluster.name + "/" + link.kafka.topic)) {}

// ------------------------------------------------------------------ open

Result<void> Source::open() {
  if (auto opened = open_object(ns_, object_); !opened) return opened;
  auto publisher = publisher_of(object_);
  if (!publisher) return std::move(publisher).error();
  publisher_.emplace(std::move(publisher).value());
  const Properties own = {
      {"group.id", config_.kafka.group},
      // Static membership: a colod that restarts (after a crash too) takes
      // its partitions back at once, without waiting for the group to
      // notice the old process is gone (session.timeout.ms).
      {"group.instance.id", config_.kafka.group + "." + node_name_ + "." + config_.name},
      {"enable.auto.commit", "false"},
      {"enable.auto.offset.store", "false"},
      {"auto.offset.reset", config_.kafka.from_earliest ? "earliest" : "latest"},
      // What librdkafka fetches ahead of us is memory colod holds while
      // the ring is full: a bound on it.
      {"queued.max.messages.kbytes", "16384"},
      // librdkafka also stops fetching a partition whose local queue holds
      // queued.min.messages records (100,000 by default), and then takes up
      // to half a second to fetch again: with small records we drained
      // 100,000 long before that and waited (the `produced` counter stood
      // still for 0.35-0.7 s at a time; 64-byte records came in at
      // 0.38-0.49 M/s in 4 runs of 5, 1.56-1.82 M/s in 7 of 7 with
      // 300,000). At 300,000 the bytes bound above comes first for records
      // of 56 bytes and more; librdkafka keeps a few hundred bytes per
      // queued record besides its bytes.
      {"queued.min.messages", "300000"},
      // A resumed partition (after a pause) fetches again after this back-off;
      // librdkafka's default of 500 ms would idle every resume that long.
      {"fetch.error.backoff.ms", "10"},
  };
  auto conf = make_conf(cluster_, own);
  if (!conf) return std::move(conf).error();
  watch_errors(conf->get());
  rd_kafka_conf_set_rebalance_cb(conf->get(), [](rd_kafka_t*, rd_kafka_resp_err_t err,
                                                 rd_kafka_topic_partition_list_t* partitions, void* opaque) {
    static_cast<Source*>(static_cast<KafkaLink*>(opaque))->on_rebalance(err, partitions);
  });
  rd_kafka_conf_set_offset_commit_cb(conf->get(), [](rd_kafka_t*, rd_kafka_resp_err_t err,
                                                     rd_kafka_topic_partition_list_t*, void* opaque) {
    auto* self = static_cast<Source*>(static_cast<KafkaLink*>(opaque));
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) self->report_up();
    else if (err != RD_KAFKA_RESP_ERR__NO_OFFSET) self->report_error("kafka: commit failed: " + error_text(err));
  });
  auto client = make_client(RD_KAFKA_CONSUMER, std::move(conf).value());
  if (!client) return std::move(client).error();
  consumer_ = std::move(client).value();
  rd_kafka_poll_set_consumer(consumer_.get());  // every event through the consumer queue
  queue_ = rd_kafka_queue_get_consumer(consumer_.get());
  Partitions topics(rd_kafka_topic_partition_list_new(1));
  rd_kafka_topic_partition_list_add(topics.get(), config_.kafka.topic.c_str(), RD_KAFKA_PARTITION_UA);
  if (const auto err = rd_kafka_subscribe(consumer_.get(), topics.get()); err != RD_KAFKA_RESP_ERR_NO_ERROR)
    return Error{Errc::system, "kafka: subscribing to " + config_.kafka.topic + ": " + error_text(err)};
  log_.write(LogLevel::info, "link %s: %s, group %s", config_.name.c_str(), describe().c_str(),
             config_.kafka.group.c_str());
  return Ok{};
}

// What the ring holds of the topic: the newest offset per partition.
void Source::scan_ring() { ring_offsets_ = offsets_in_ring(object_, origin_, config_.kafka.topic); }

// The group gives us partitions (or takes them). A partition starts after
// the newest of its records the ring holds, else at the group's commit.
void Source::on_rebalance(rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t* list) {
  report_up();
  if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
    scan_ring();
    // The group's commits tell a first start (none: nothing was published
    // before) from a restart (records after the commit may have been).
    (void)rd_kafka_committed(consumer_.get(), list, kCommittedTimeoutMs);
    for (int i = 0; i < list->cnt; ++i) {
      auto& tp = list->elems[i];
      PartitionState st;
      const std::int64_t committed = tp.err == RD_KAFKA_RESP_ERR_NO_ERROR ? tp.offset : RD_KAFKA_OFFSET_INVALID;
      if (auto it = ring_offsets_.find(tp.partition); it != ring_offsets_.end()) st.in_ring = it->second;
      if (st.in_ring && (committed < 0 || *st.in_ring + 1 > committed)) {
        tp.offset = *st.in_ring + 1;  // the ring has everything before: start there
        if (object_.topic) st.committable = tp.offset;
      } else {
        tp.offset = committed >= 0 ? committed : RD_KAFKA_OFFSET_INVALID;  // invalid: auto.offset.reset
        // Records from the commit on may have been published, consumed and
        // reclaimed before the restart: mark those the window can hold.
        if (committed >= 0) st.mark_below = committed + static_cast<std::int64_t>(kRedeliveryWindow);
      }
      st.committed = committed;
      partitions_[tp.partition] = std::move(st);
      log_.write(LogLevel::info, "link %s: partition %d assigned, from offset %s", config_.name.c_str(), tp.partition,
                 tp.offset >= 0 ? std::to_string(tp.offset).c_str()
                                : (config_.kafka.from_earliest ? "earliest" : "latest"));
    }
    (void)rd_kafka_assign(consumer_.get(), list);
    consuming_paused_ = false;
    return;
  }
  // Revoked: commit what is committable, forget the rest (the next owner
  // reads on from the commit).
  advance_commits();
  commit(true);
  // librdkafka keeps a partition's pause across an unassign and the next
  // assign: one paused now would come back paused while consuming_paused_
  // (reset at the assignment) says it is not, and never be read again.
  // Resumed while still assigned (a resume right after an assign may lose
  // the assign's start offset); the next step() pauses again if it must.
  pause_consuming(false);
  for (int i = 0; i < list->cnt; ++i) partitions_.erase(list->elems[i].partition);
  std::erase_if(pending_, [&](const Pending& p) { return partitions_.count(p.record->partition) == 0; });
  (void)rd_kafka_assign(consumer_.get(), nullptr);
}

// ------------------------------------------------------------------ steps

void Source::step() {
  if (!pending_.empty()) publish_pending();
  // A full ring for a moment is normal (a slow subscriber catching up):
  // records wait in pending_. Full for longer, the partitions are paused so
  // that librdkafka stops fetching (a resume costs a fetch round trip).
  const std::uint64_t now = monotonic_ns();
  if (pending_.empty()) blocked_since_ns_ = 0;
  else if (blocked_since_ns_ == 0) blocked_since_ns_ = now;
  const bool hold = (blocked_since_ns_ != 0 && now - blocked_since_ns_ > kPauseAfterNs) ||
                    uncommitted_total() >= kRedeliveryWindow;
  pause_consuming(hold);
  if (hold || pending_.size() < kMaxPending) poll_records(pending_.empty() ? 20 : 2);
  publish_pending();
  advance_commits();
  if (monotonic_ns() >= next_commit_ns_) {
    next_commit_ns_ = monotonic_ns() + kCommitEveryNs;
    commit(false);
  }
  update_gauges();
}

void Source::idle() {
  pause_consuming(true);
  poll_records(50);  // keeps the group membership; what comes waits in pending_
  advance_commits();
  commit(false);
  update_gauges();
}

void Source::poll_records(int timeout_ms) {
  rd_kafka_message_t* records[kPollBatch];
  const ssize_t n = rd_kafka_consume_batch_queue(queue_, timeout_ms, records, kPollBatch);
  for (ssize_t i = 0; i < n; ++i) {
    MessagePtr record(records[i]);
    if (record->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (record->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
        report_error("kafka: " + error_text(record->err) + ": " + std::string(rd_kafka_message_errstr(record.get())));
      continue;
    }
    report_up();
    auto it = partitions_.find(record->partition);
    if (it == partitions_.end()) continue;  // no longer ours
    auto& st = it->second;
    st.position = record->offset + 1;
    if (st.in_ring && record->offset <= *st.in_ring) {
      add(counters_.duplicates);  // the ring has it already
      continue;
    }
    // Its metadata (colo/metadata.hpp), in the documented order.
    internal::MetadataWriter meta;
    meta.reserve(128 + record->key_len);  // one allocation for most records (headers may add more)
    meta.add(MetadataType::system, std::string_view("kafka"));
    meta.add(MetadataType::topic, std::string_view(config_.kafka.topic));
    meta.add_i32(MetadataType::partition, record->partition);
    meta.add_i64(MetadataType::offset, record->offset);
    rd_kafka_timestamp_type_t type;
    meta.add_i64(MetadataType::timestamp_ms, rd_kafka_message_timestamp(record.get(), &type));
    if (record->key != nullptr) meta.add(MetadataType::key, bytes_of(record->key, record->key_len));
    rd_kafka_headers_t* headers = nullptr;
    if (rd_kafka_message_headers(record.get(), &headers) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      const char* name = nullptr;
      const void* value = nullptr;
      size_t size = 0;
      for (size_t h = 0; rd_kafka_header_get_all(headers, h, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; ++h) {
        if (value == nullptr) meta.add_header(name, std::nullopt);
        else meta.add_header(name, bytes_of(value, size));
      }
    }
    if (st.mark_below && record->offset < *st.mark_below) meta.add_u32(MetadataType::redelivery, 1);
    pending_.push_back({std::move(record), meta.take()});
  }
}

bool Source::publish_pending() {
  while (!pending_.empty()) {
    const std::size_t n = std::min(kPublishBatch, pending_.size());
    internal::AnnotatedMessage batch[kPublishBatch];
    std::uint64_t sequences[kPublishBatch];
    for (std::size_t i = 0; i < n; ++i) {
      const auto& r = *pending_[i].record;
      batch[i] = {origin_, static_cast<std::uint64_t>(r.offset), pending_[i].metadata,
                  bytes_of(r.payload, r.payload != nullptr ? r.len : 0)};
    }
    const std::size_t published =
        internal::publish_annotated(*publisher_, std::span(batch, n), std::chrono::nanoseconds(0), sequences);
    for (std::size_t i = 0; i < published; ++i) {
      const auto& r = *pending_.front().record;
      auto& st = partitions_[r.partition];
      st.in_ring = r.offset;
      if (object_.topic) {
        st.committable = r.offset + 1;
        ++st.ready;
      } else {
        st.uncommitted.emplace_back(sequences[i] + 1, r.offset);  // committable once released_below passes it
      }
      add(counters_.produced);
      if (st.mark_below && r.offset < *st.mark_below) add(counters_.redelivered);
      pending_.pop_front();
    }
    if (published == n) continue;
    if (publisher_->last_status() != SendStatus::too_large) return false;  // no room: the rest waits
    // Larger than the object's max_message with its metadata: skipped,
    // and its offset committed with its neighbours (no stall).
    const auto& r = *pending_.front().record;
    add(counters_.skipped);
    report_error("kafka: record " + config_.kafka.topic + "[" + std::to_string(r.partition) + "] offset " +
                 std::to_string(r.offset) + " (" + std::to_string(r.len) + " bytes and " +
                 std::to_string(pending_.front().metadata.size()) + " of metadata) is larger than " +
                 config_.object + "'s max_message of " + std::to_string(config_.max_message) + ": skipped");
    auto& st = partitions_[r.partition];
    if (object_.topic) {
      st.committable = r.offset + 1;
      ++st.ready;
    } else {
      st.uncommitted.emplace_back(internal::published(*object_.queue), r.offset);
    }
    pending_.pop_front();
  }
  return true;
}

// Queue: offsets of records every consumer is done with become committable.
void Source::advance_commits() {
  if (!object_.queue) return;
  const std::uint64_t released = internal::released_below(*object_.queue);
  for (auto& [p, st] : partitions_) {
    while (!st.uncommitted.empty() && st.uncommitted.front().first <= released) {
      st.committable = st.uncommitted.front().second + 1;
      st.uncommitted.pop_front();
      ++st.ready;
    }
  }
}

void Source::commit(bool sync) {
  Partitions offsets(rd_kafka_topic_partition_list_new(static_cast<int>(partitions_.size())));
  std::uint64_t records = 0;
  for (auto& [p, st] : partitions_) {
    if (st.committable <= st.committed) continue;
    rd_kafka_topic_partition_list_add(offsets.get(), config_.kafka.topic.c_str(), p)->offset = st.committable;
    records += st.ready;
    st.ready = 0;
    st.committed = st.committable;
  }
  if (offsets->cnt == 0) return;
  const auto err = rd_kafka_commit(consumer_.get(), offsets.get(), sync ? 0 : 1);
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR) report_error("kafka: commit failed: " + error_text(err));
  add(counters_.acknowledged, records);
}

void Source::pause_consuming(bool pause) {
  if (pause == consuming_paused_ || !consumer_) return;
  Partitions assignment(nullptr);
  rd_kafka_topic_partition_list_t* list = nullptr;
  if (rd_kafka_assignment(consumer_.get(), &list) != RD_KAFKA_RESP_ERR_NO_ERROR) return;
  assignment.reset(list);
  if (pause) rd_kafka_pause_partitions(consumer_.get(), list);
  else rd_kafka_resume_partitions(consumer_.get(), list);
  consuming_paused_ = pause;
}

std::size_t Source::uncommitted_total() const {
  std::size_t n = 0;
  for (const auto& [p, st] : partitions_) n = std::max(n, st.uncommitted.size());
  return n;
}

void Source::update_gauges() {
  std::uint64_t in_flight = 0, lag = pending_.size();
  for (const auto& [p, st] : partitions_) {
    in_flight += st.uncommitted.size();
    std::int64_t low = 0, high = 0;
    if (st.position >= 0 &&
        rd_kafka_get_watermark_offsets(consumer_.get(), config_.kafka.topic.c_str(), p, &low, &high) ==
            RD_KAFKA_RESP_ERR_NO_ERROR &&
        high > st.position)
      lag += static_cast<std::uint64_t>(high - st.position);
  }
  set(counters_.in_flight, in_flight);
  set(counters_.lag_messages, lag);
}

// ------------------------------------------------------------------ close

void Source::close() {
  if (consumer_) {
    advance_commits();
    commit(true);
    // Leaves the group (its revoke commits once more, and forgets).
    (void)rd_kafka_consumer_close(consumer_.get());
  }
  // Its records and its queue first: rd_kafka_destroy waits for every
  // reference to the client to go.
  pending_.clear();
  if (queue_ != nullptr) rd_kafka_queue_destroy(queue_);
  queue_ = nullptr;
  partitions_.clear();
  consumer_.reset();
  consuming_paused_ = false;
  publisher_.reset();
  if (stopping()) object_ = LinkObject{};
}

}  // namespace colo::bridge::kafka
