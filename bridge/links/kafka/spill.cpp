#include "spill.hpp"

#include <algorithm>
#include <charconv>

#include "colo/internal/clock.hpp"
#include "colo/internal/federation.hpp"  // origin_id

namespace colo::bridge::kafka {
namespace {

using internal::monotonic_ns;
constexpr std::size_t kTakeBatch = 1024;
constexpr std::size_t kPollBatch = 512;
constexpr std::uint64_t kCommitEveryNs = 50'000'000;
constexpr int kCommittedTimeoutMs = 10'000;

// A delivery report's opaque: which taker, which of its batches, which message.
std::uint64_t pack(int taker, std::uint64_t generation, std::size_t index) {
  return static_cast<std::uint64_t>(taker) << 60 | (generation & 0x0fff'ffff) << 32 | index;
}

std::span<const std::byte> bytes_of(const void* p, std::size_t n) { return {static_cast<const std::byte*>(p), n}; }

}  // namespace

Spill::Spill(const Config& config, const KafkaClusterConfig& cluster, const LinkConfig& link, const Log& log)
    : KafkaLink(config, cluster, link, log),
      high_bytes_(static_cast<std::uint64_t>(link.high_watermark * static_cast<double>(link.capacity))),
      low_bytes_(static_cast<std::uint64_t>(link.low_watermark * static_cast<double>(link.capacity))),
      origin_(internal::origin_id("spill/" + config.node_name + "/" + link.object)) {}

std::uint64_t Spill::queued() const { return internal::queued(*object_.queue).bytes; }

// ------------------------------------------------------------------ open

Result<void> Spill::open() {
  if (auto opened = open_object(ns_, object_); !opened) return opened;
  if (!publisher_) {
    auto publisher = object_.queue->producer();
    if (!publisher) return std::move(publisher).error();
    publisher_.emplace(std::move(publisher).value());
  }
  for (auto& taker : takers_) {
    if (!taker) taker = std::make_unique<Taker>();
    if (taker->consumer) continue;
    auto consumer = object_.queue->consumer();
    if (!consumer) return std::move(consumer).error();
    taker->consumer.emplace(std::move(consumer).value());
  }
  if (auto ok = open_kafka(); !ok) return ok;
  if (auto ok = open_refill(); !ok) return ok;
  // Batches still taken from before a failure: into Kafka again.
  for (int t = 0; t < kTakers; ++t)
    if (!takers_[t]->batch.empty()) produce_batch(t);
  log_.write(LogLevel::info, "link %s: %s; out above %llu queued bytes, back below %llu", config_.name.c_str(),
             describe().c_str(), static_cast<unsigned long long>(high_bytes_),
             static_cast<unsigned long long>(low_bytes_));
  return Ok{};
}

Result<void> Spill::open_kafka() {
  auto producer = open_producer(2, 1);  // one partition: the spilled order
  if (!producer) return std::move(producer).error();
  producer_ = std::move(producer->client);
  topic_ = std::move(producer->topic);
  partitions_ = producer->partitions;
  return Ok{};
}

// The spill topic is this link's own (its group is per node and object):
// the refill consumer assigns itself every partition, with the group only
// for its commits (no membership, no rebalances). Each partition starts
// after the newest of its records the ring already has back (a restart),
// else at the group's commit, else at the beginning.
Result<void> Spill::open_refill() {
  auto conf = make_conf(cluster_, {{"group.id", config_.kafka.group},
                                   {"enable.auto.commit", "false"},
                                   {"enable.auto.offset.store", "false"},
                                   {"queued.max.messages.kbytes", "16384"}});
  if (!conf) return std::move(conf).error();
  watch_errors(conf->get());
  auto client = make_client(RD_KAFKA_CONSUMER, std::move(conf).value());
  if (!client) return std::move(client).error();
  consumer_ = std::move(client).value();
  rd_kafka_poll_set_consumer(consumer_.get());
  queue_ = rd_kafka_queue_get_consumer(consumer_.get());

  const auto in_ring = offsets_in_ring(object_, origin_, config_.kafka.topic);
  Partitions list(rd_kafka_topic_partition_list_new(partitions_));
  for (std::int32_t p = 0; p < partitions_; ++p) rd_kafka_topic_partition_list_add(list.get(), config_.kafka.topic.c_str(), p);
  if (const auto err = rd_kafka_committed(consumer_.get(), list.get(), kCommittedTimeoutMs); err != RD_KAFKA_RESP_ERR_NO_ERROR)
    return Error{Errc::timed_out, "kafka: committed offsets of group " + config_.kafka.group + ": " + error_text(err)};
  for (int i = 0; i < list->cnt; ++i) {
    auto& tp = list->elems[i];
    PartitionState st;
    st.committed = tp.err == RD_KAFKA_RESP_ERR_NO_ERROR && tp.offset >= 0 ? tp.offset : -1;
    if (auto it = in_ring.find(tp.partition); it != in_ring.end() && it->second + 1 > st.committed) {
      st.in_ring = it->second;
      tp.offset = it->second + 1;
      st.committable = tp.offset;
    } else {
      tp.offset = st.committed >= 0 ? st.committed : RD_KAFKA_OFFSET_BEGINNING;
    }
    refill_partitions_[tp.partition] = st;
  }
  if (const auto err = rd_kafka_assign(consumer_.get(), list.get()); err != RD_KAFKA_RESP_ERR_NO_ERROR)
    return Error{Errc::system, "kafka: reading " + config_.kafka.topic + ": " + error_text(err)};
  return Ok{};
}

// ------------------------------------------------------------------ steps

void Spill::step() {
  rd_kafka_poll(producer_.get(), 0);
  finish_batches();
  spill_out();
  refill();
  if (monotonic_ns() >= next_commit_ns_) {
    next_commit_ns_ = monotonic_ns() + kCommitEveryNs;
    commit(false);
    update_gauges();
  }
  bool busy = !pending_.empty();
  for (const auto& t : takers_) busy |= t && !t->batch.empty();
  if (!busy) std::this_thread::sleep_for(std::chrono::microseconds(500));
}

void Spill::idle() {
  rd_kafka_poll(producer_.get(), 20);
  finish_batches();
  commit(false);
  update_gauges();
}

// Takes from the front of the queue into Kafka while the queue is above
// its high watermark, down to halfway between the watermarks (so that what
// comes back never sends the queue above the high one again); each taker
// holds its batch until Kafka acknowledged it.
void Spill::spill_out() {
  for (int t = 0; t < kTakers; ++t) {
    auto& taker = *takers_[t];
    const auto q = internal::queued(*object_.queue);
    if (!taker.batch.empty() || q.bytes <= high_bytes_ || q.messages == 0) continue;
    const std::uint64_t mid = (low_bytes_ + high_bytes_) / 2;
    const std::uint64_t per_message = std::max<std::uint64_t>(1, q.bytes / q.messages);
    const std::uint64_t want = std::clamp<std::uint64_t>((q.bytes - mid + per_message - 1) / per_message, 1, kTakeBatch);
    taker.batch = taker.consumer->try_receive_batch(want);
    if (taker.batch.empty()) return;
    produce_batch(t);
  }
}

// Produces taker t's whole batch (again, after a reopen) as a new generation.
void Spill::produce_batch(int t) {
  auto& taker = *takers_[t];
  taker.acknowledged = 0;
  taker.refused.clear();
  taker.generation = ++generations_;
  for (std::size_t i = 0; i < taker.batch.size(); ++i) {
    const MessageView& m = taker.batch[i];
    char seq[24], deliveries[12];
    const auto seq_end = std::to_chars(seq, seq + sizeof seq, m.sequence()).ptr;
    const auto deliveries_end = std::to_chars(deliveries, deliveries + sizeof deliveries, m.deliveries()).ptr;
    const auto data = m.data();
    rd_kafka_resp_err_t err;
    // librdkafka's queue full: wait for it (the batch stays taken).
    while ((err = rd_kafka_producev(
                producer_.get(), RD_KAFKA_V_RKT(topic_.get()), RD_KAFKA_V_PARTITION(0),  // one partition: order
                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                RD_KAFKA_V_VALUE(const_cast<std::byte*>(data.data()), data.size()),
                RD_KAFKA_V_HEADER("colo.origin", node_name_.data(), static_cast<ssize_t>(node_name_.size())),
                RD_KAFKA_V_HEADER("colo.object", config_.object.data(), static_cast<ssize_t>(config_.object.size())),
                RD_KAFKA_V_HEADER("colo.seq", seq, (seq_end - seq)),
                RD_KAFKA_V_HEADER("colo.deliveries", deliveries, (deliveries_end - deliveries)),
                RD_KAFKA_V_OPAQUE(reinterpret_cast<void*>(static_cast<std::uintptr_t>(pack(t, taker.generation, i)))),
                RD_KAFKA_V_END)) == RD_KAFKA_RESP_ERR__QUEUE_FULL &&
           !stopping())
      rd_kafka_poll(producer_.get(), 10);
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      add(counters_.produced);
    } else {
      report_error("kafka: message " + std::to_string(m.sequence()) + " (" + std::to_string(data.size()) +
                   " bytes) cannot be spilled: " + error_text(err) + ": it stays in the queue");
      taker.refused.push_back(i);
    }
  }
}

void Spill::on_delivery(const rd_kafka_message_t& m) {
  const auto opaque = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(m._private));
  const int t = static_cast<int>(opaque >> 60);
  const std::uint64_t generation = (opaque >> 32) & 0x0fff'ffff;
  const std::size_t index = opaque & 0xffff'ffff;
  if (t >= kTakers || !takers_[t]) return;
  auto& taker = *takers_[t];
  if (taker.batch.empty() || (taker.generation & 0x0fff'ffff) != generation || index >= taker.batch.size()) return;
  if (m.err == RD_KAFKA_RESP_ERR__PURGE_QUEUE || m.err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT) return;
  if (m.err == RD_KAFKA_RESP_ERR_NO_ERROR) {
    ++taker.acknowledged;
    add(counters_.acknowledged);
    report_up();
    return;
  }
  if (m.err == RD_KAFKA_RESP_ERR__FATAL) {
    report_failed("kafka: the spill producer has failed: " + error_text(m.err) + "; it is made again");
    return;
  }
  report_error("kafka: message " + std::to_string(taker.batch[index].sequence()) +
               " not spilled: " + error_text(m.err) + ": it stays in the queue");
  taker.refused.push_back(index);
}

// A batch Kafka has whole is acknowledged in the ring; messages it refused
// are published back into the queue first.
void Spill::finish_batches() {
  for (auto& held : takers_) {
    if (!held) continue;
    auto& taker = *held;
    if (taker.batch.empty() || taker.acknowledged + taker.refused.size() < taker.batch.size()) continue;
    put_back(taker);
  }
}

void Spill::put_back(Taker& taker) {
  std::vector<internal::AnnotatedMessage> back;
  for (std::size_t i : taker.refused)
    back.push_back({origin_, taker.batch[i].sequence(), {}, taker.batch[i].data()});
  const std::size_t published = internal::publish_annotated(*publisher_, back, std::chrono::milliseconds(100));
  if (published < back.size()) {
    report_error("kafka: " + std::to_string(back.size() - published) +
                 " message(s) Kafka did not take wait for room in the queue");
    taker.refused.erase(taker.refused.begin(), taker.refused.begin() + static_cast<std::ptrdiff_t>(published));
    taker.acknowledged += published;
    return;  // the batch stays taken (so it is redelivered if colod dies)
  }
  taker.batch.release();  // acknowledged in the ring: Kafka (or the queue again) has every message
  taker.refused.clear();
}

// Brings spilled records back once the queue is below its low watermark,
// until it is halfway to the high one. The consumer is never paused (a
// resumed partition costs a fetch round trip, per refill): librdkafka
// prefetches at most queued.max.messages.kbytes, and we take at most
// kPollBatch records beyond what we publish.
void Spill::refill() {
  const std::uint64_t target = (low_bytes_ + high_bytes_) / 2;
  refilling_ = queued() < low_bytes_ || (refilling_ && queued() < target);
  if (pending_.size() < kPollBatch) {
    rd_kafka_message_t* records[kPollBatch];
    const ssize_t n = rd_kafka_consume_batch_queue(queue_, 0, records, kPollBatch - pending_.size());
    for (ssize_t i = 0; i < n; ++i) {
      MessagePtr record(records[i]);
      if (record->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (record->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
          report_error("kafka: " + error_text(record->err) + ": " + std::string(rd_kafka_message_errstr(record.get())));
        continue;
      }
      auto it = refill_partitions_.find(record->partition);
      if (it == refill_partitions_.end()) continue;
      it->second.position = record->offset + 1;
      if (it->second.in_ring && record->offset <= *it->second.in_ring) {
        add(counters_.duplicates);
        continue;
      }
      pending_.push_back(std::move(record));
    }
  }
  while (refilling_ && !pending_.empty() && queued() < target) {
    const auto& r = *pending_.front();
    internal::MetadataWriter meta;
    meta.add(MetadataType::system, std::string_view("kafka"));
    meta.add(MetadataType::topic, std::string_view(config_.kafka.topic));
    meta.add_i32(MetadataType::partition, r.partition);
    meta.add_i64(MetadataType::offset, r.offset);
    const internal::AnnotatedMessage back{origin_, static_cast<std::uint64_t>(r.offset), meta.bytes(),
                                          bytes_of(r.payload, r.payload != nullptr ? r.len : 0)};
    if (internal::publish_annotated(*publisher_, std::span(&back, 1), std::chrono::nanoseconds(0)) != 1) {
      if (publisher_->last_status() != SendStatus::too_large) break;  // no room after all: later
      add(counters_.skipped);  // cannot happen for what came out of this queue, unless max_message shrank
      report_error("kafka: spilled record at offset " + std::to_string(r.offset) + " no longer fits the queue: skipped");
    } else {
      add(counters_.returned);
    }
    auto& st = refill_partitions_[r.partition];
    st.in_ring = r.offset;
    st.committable = r.offset + 1;
    ++st.ready;
    pending_.pop_front();
  }
}

void Spill::commit(bool sync) {
  if (!consumer_) return;
  Partitions offsets(rd_kafka_topic_partition_list_new(static_cast<int>(refill_partitions_.size())));
  for (auto& [p, st] : refill_partitions_) {
    if (st.committable <= st.committed) continue;
    rd_kafka_topic_partition_list_add(offsets.get(), config_.kafka.topic.c_str(), p)->offset = st.committable;
    st.committed = st.committable;
    st.ready = 0;
  }
  if (offsets->cnt == 0) return;
  if (const auto err = rd_kafka_commit(consumer_.get(), offsets.get(), sync ? 0 : 1); err != RD_KAFKA_RESP_ERR_NO_ERROR)
    report_error("kafka: commit failed: " + error_text(err));
}

void Spill::update_gauges() {
  std::uint64_t in_flight = 0;
  for (const auto& t : takers_)
    if (t && !t->batch.empty()) in_flight += t->batch.size() - t->acknowledged - t->refused.size();
  set(counters_.in_flight, in_flight);
  // Spilled and not back yet: what the spill topic has beyond our position
  // (the cached high watermarks; a query now and then while paused).
  std::uint64_t lag = pending_.size();
  for (const auto& [p, st] : refill_partitions_) {
    std::int64_t low = 0, high = 0;
    const std::int64_t at = st.position >= 0 ? st.position : st.committed;
    if (at >= 0 &&
        rd_kafka_get_watermark_offsets(consumer_.get(), config_.kafka.topic.c_str(), p, &low, &high) ==
            RD_KAFKA_RESP_ERR_NO_ERROR &&
        high > at)
      lag += static_cast<std::uint64_t>(high - at);
  }
  set(counters_.lag_messages, lag);
  set(counters_.lag_bytes, queued());
}

// ------------------------------------------------------------------ close

void Spill::close() {
  if (producer_) {
    rd_kafka_flush(producer_.get(), 5000);
    rd_kafka_purge(producer_.get(), RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(producer_.get(), 0);
    finish_batches();
  }
  if (stopping()) {
    // A batch Kafka did not acknowledge whole goes back into the queue
    // (what Kafka did take of it comes back twice: at least once).
    for (auto& held : takers_) {
      if (!held || held->batch.empty()) continue;
      auto& taker = *held;
      taker.refused.clear();
      taker.acknowledged = 0;
      for (std::size_t i = 0; i < taker.batch.size(); ++i) taker.refused.push_back(i);
      if (publisher_) put_back(taker);
      if (!taker.batch.empty()) {
        // No room in the queue: releasing the batch would acknowledge it,
        // closing the consumer would drop it. Keep it taken until colod
        // exits: the ring then gives it to the next consumer (a dead
        // consumer's messages are delivered again). Deliberately not freed.
        (void)held.release();
        log_.write(LogLevel::warn, "link %s: a batch not in Kafka stays taken until colod exits, then is redelivered",
                   config_.name.c_str());
      }
    }
  }
  // Else (opened again after a failure): the takers keep their batches,
  // which open() produces again.
  if (consumer_) {
    commit(true);
    (void)rd_kafka_consumer_close(consumer_.get());  // assigned, not a member: it only stops fetching
  }
  // Its records and its queue first: rd_kafka_destroy waits for every
  // reference to the client to go.
  pending_.clear();
  if (queue_ != nullptr) rd_kafka_queue_destroy(queue_);
  queue_ = nullptr;
  consumer_.reset();
  refill_partitions_.clear();
  topic_.reset();
  producer_.reset();
  if (stopping()) {
    for (auto& taker : takers_) taker.reset();
    publisher_.reset();
    object_ = LinkObject{};
  }
}

}  // namespace colo::bridge::kafka
