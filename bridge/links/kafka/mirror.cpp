#include "mirror.hpp"

#include <algorithm>
#include <charconv>

#include "colo/internal/clock.hpp"
#include "colo/internal/links.hpp"

namespace colo::bridge::kafka {
namespace {

using internal::monotonic_ns;
constexpr std::size_t kReadBatch = 1024;        // messages read from the ring at once
constexpr std::size_t kRetainBatch = 4096;
constexpr auto kReadBackTimeout = std::chrono::seconds(60);  // per partition, at open
constexpr std::uint64_t kProbeEveryNs = 1'000'000'000;  // while down: is a broker back?
constexpr std::uint32_t kBusyPolls = 200;  // empty polls 1 ms apart before they go 5 ms apart
constexpr std::uint32_t kPollEvery = 16;   // messages produced between two servings of delivery reports

// colo.* header names: what tells our records from others' when reading back.
constexpr const char* kOriginHeader = "colo.origin";
constexpr const char* kObjectHeader = "colo.object";
constexpr const char* kSeqHeader = "colo.seq";
constexpr const char* kEpochHeader = "colo.epoch";
constexpr const char* kTimeHeader = "colo.time";

std::span<const std::byte> bytes_of(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

}  // namespace

Mirror::Mirror(const Config& config, const KafkaClusterConfig& cluster, const LinkConfig& link, const Log& log)
    : KafkaLink(config, cluster, link, log), lossy_(link.lossy) {}

// ------------------------------------------------------------------ open

Result<void> Mirror::open() {
  if (!object_.node) {
    auto object = open_object(ns_);
    if (!object) return std::move(object).error();
    object_ = std::move(object).value();
    epoch_text_ = std::to_string(object_.epoch);
  }
  // Block mode: hold everything the ring has from now on, before Kafka is
  // even reached (a restart keeps the retain reader of the last open).
  if (!lossy_ && !retain_) {
    auto retain = object_.topic ? object_.topic->subscribe(SubscribeOptions{Backpressure::block, std::nullopt, 0})
                                : internal::subscribe_tap(*object_.queue, 0);
    if (!retain) return std::move(retain).error();
    retain_.emplace(std::move(retain).value());
    retain_next_ = 0;
  }
  if (auto ok = open_kafka(); !ok) return ok;
  if (auto ok = find_resume_points(); !ok) return ok;
  return open_ahead();
}

Result<void> Mirror::open_kafka() {
  auto producer = open_producer(5, config_.kafka.partitions);
  if (!producer) return std::move(producer).error();
  producer_ = std::move(producer->client);
  topic_ = std::move(producer->topic);
  partitions_ = producer->partitions;
  own_partition_ = partition_of(bytes_of(node_name_));
  return Ok{};
}

// Reads back the newest record of ours in each partition we write to.
Result<void> Mirror::find_resume_points() {
  in_kafka_.assign(static_cast<std::size_t>(partitions_), std::nullopt);
  auto conf = make_conf(cluster_, {{"group.id", "colo.readback." + node_name_},  // assign only: never joins
                                   {"enable.auto.commit", "false"},
                                   {"enable.partition.eof", "true"}});
  if (!conf) return std::move(conf).error();
  watch_errors(conf->get());
  auto reader = make_client(RD_KAFKA_CONSUMER, std::move(conf).value());
  if (!reader) return std::move(reader).error();
  auto ours = [&](const rd_kafka_message_t& m) {
    rd_kafka_headers_t* headers = nullptr;
    if (rd_kafka_message_headers(&m, &headers) != RD_KAFKA_RESP_ERR_NO_ERROR) return false;
    return header_text(headers, kOriginHeader) == node_name_ && header_text(headers, kObjectHeader) == config_.object;
  };
  for (std::int32_t p = 0; p < partitions_; ++p) {
    if (config_.kafka.key.kind != KafkaKey::Kind::payload && p != own_partition_) continue;
    auto newest = newest_matching(reader->get(), config_.kafka.topic, p, ours,
                                  std::chrono::steady_clock::now() + kReadBackTimeout);
    if (!newest) return std::move(newest).error();
    if (!*newest) continue;
    rd_kafka_headers_t* headers = nullptr;
    (void)rd_kafka_message_headers(newest->get(), &headers);
    if (header_text(headers, kEpochHeader) != epoch_text_) continue;  // an earlier object of this name: none of this one
    const std::string seq = header_text(headers, kSeqHeader);
    std::uint64_t value = 0;
    const auto [end, ec] = std::from_chars(seq.data(), seq.data() + seq.size(), value);
    if (ec != std::errc() || end != seq.data() + seq.size())
      return Error{Errc::corrupt, "kafka: record " + std::to_string((*newest)->offset) + " of " + config_.kafka.topic +
                                      "[" + std::to_string(p) + "] has a colo.seq header that is not a number"};
    in_kafka_[static_cast<std::size_t>(p)] = value;
  }
  return Ok{};
}

// `ahead` starts after the last message of ours in Kafka: after the
// smallest partition's last, when every partition we write to has one.
Result<void> Mirror::open_ahead() {
  std::optional<std::uint64_t> from;
  bool all = true, any = false;
  for (std::int32_t p = 0; p < partitions_; ++p) {
    if (config_.kafka.key.kind != KafkaKey::Kind::payload && p != own_partition_) continue;
    const auto& last = in_kafka_[static_cast<std::size_t>(p)];
    if (!last) {
      all = false;
      continue;
    }
    any = true;
    from = std::min(from.value_or(*last + 1), *last + 1);
  }
  const std::uint64_t start = all && from ? *from : 0;  // 0: the oldest message the ring retains
  auto ahead = object_.queue ? internal::subscribe_tap(*object_.queue, start)
                             : object_.topic->subscribe(SubscribeOptions{
                                   lossy_ ? Backpressure::lossy : Backpressure::block, std::nullopt, start});
  if (!ahead) return std::move(ahead).error();
  ahead_.emplace(std::move(ahead).value());
  handled_through_ = start;
  missed_seen_ = ahead_->missed();
  // Ours that Kafka lacks and the ring no longer has (overwritten while no
  // colod read it). On a first start (nothing of ours in Kafka yet) what
  // came before is history, not a loss.
  if (any && missed_seen_ > 0) note_lost(start, missed_seen_, "overwritten in the ring before colod read them");
  log_.write(LogLevel::info, "link %s: %s; producing from sequence %llu%s", config_.name.c_str(), describe().c_str(),
             static_cast<unsigned long long>(start + missed_seen_),
             any ? " (after the last of ours in Kafka)" : " (nothing of this object's in Kafka yet)");
  return Ok{};
}

// ------------------------------------------------------------------ steps

void Mirror::step() {
  rd_kafka_poll(producer_.get(), 0);  // delivery reports
  if (ahead_batch_.empty()) {
    // Polled, never waited for: a reader asleep on the ring would make
    // every local publish pay a futex wake (about a microsecond, ten times
    // the publish itself). Idle, the link looks every millisecond, then
    // every 5 (Kafka's linger is 5 ms anyway).
    ahead_batch_ = ahead_->try_receive_batch(kReadBatch);
    next_in_batch_ = 0;
    if (ahead_batch_.empty()) {
      idle_polls_ = std::min<std::uint32_t>(idle_polls_ + 1, kBusyPolls + 1);
      rd_kafka_poll(producer_.get(), idle_polls_ > kBusyPolls ? 5 : 1);  // delivery reports, or a nap
    } else {
      idle_polls_ = 0;
    }
    const std::uint64_t missed = ahead_->missed();
    if (missed != missed_seen_ && !ahead_batch_.empty()) {
      // Lossy: lapped; the messages just before this batch are gone.
      const std::uint64_t gone = missed - missed_seen_;
      const std::uint64_t first = ahead_batch_[0].sequence();
      note_lost(first - std::min(gone, first), gone, "overwritten in the ring before colod read them");
      missed_seen_ = missed;
    }
  }
  if (!ahead_batch_.empty()) {
    if (produce_batch()) ahead_batch_.release();
    else rd_kafka_poll(producer_.get(), 5);  // librdkafka's queue is full: wait for acknowledgements
  }
  advance_retain();
  update_gauges();
  if (state() == LinkState::down && monotonic_ns() >= next_metadata_check_ns_) {
    next_metadata_check_ns_ = monotonic_ns() + kProbeEveryNs;
    const rd_kafka_metadata_t* metadata = nullptr;
    if (rd_kafka_metadata(producer_.get(), 0, topic_.get(), &metadata, 200) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      rd_kafka_metadata_destroy(metadata);
      report_up();
    }
  }
}

void Mirror::idle() {
  rd_kafka_poll(producer_.get(), 50);
  advance_retain();
  update_gauges();
}

bool Mirror::produce_batch() {
  for (; next_in_batch_ < ahead_batch_.size(); ++next_in_batch_) {
    const MessageView& m = ahead_batch_[next_in_batch_];
    if (m.origin() == 0) {
      const std::int32_t p = partition_of(key_of(m));
      const auto& last = in_kafka_[static_cast<std::size_t>(p)];
      if (last && m.sequence() <= *last) {
        add(counters_.duplicates);  // in Kafka already (a restart): not again
      } else {
        switch (produce(m)) {
          case Produced::ok:
            // Delivery reports often, not once per batch: librdkafka frees
            // each message and its headers there, and frees interleaved
            // with the allocations stay in malloc's per-thread cache (in
            // bursts of a thousand they cost a third of the throughput).
            if (++produced_since_poll_ % kPollEvery == 0) rd_kafka_poll(producer_.get(), 0);
            break;
          case Produced::queue_full:
            if (!lossy_) return false;  // block: this message waits (and the ring holds writers when full)
            note_lost(m.sequence(), 1, "librdkafka's queue was full (Kafka slow or down)");
            break;
          case Produced::refused: break;  // counted and logged by produce()
        }
      }
    }
    handled_through_ = m.sequence() + 1;
  }
  return true;
}

std::span<const std::byte> Mirror::key_of(const MessageView& m) const {
  switch (config_.kafka.key.kind) {
    case KafkaKey::Kind::none: return {};
    case KafkaKey::Kind::origin: return bytes_of(node_name_);
    case KafkaKey::Kind::payload: {
      const auto data = m.data();
      const std::size_t offset = std::min<std::size_t>(config_.kafka.key.offset, data.size());
      return data.subspan(offset, std::min<std::size_t>(config_.kafka.key.length, data.size() - offset));
    }
  }
  return {};
}

std::int32_t Mirror::partition_of(std::span<const std::byte> key) const {
  if (config_.kafka.key.kind != KafkaKey::Kind::payload) return own_partition_;
  return partition_for_key(key, partitions_);
}

Mirror::Produced Mirror::produce(const MessageView& m) {
  const auto key = key_of(m);
  const std::int32_t partition = config_.kafka.key.kind == KafkaKey::Kind::payload ? partition_of(key) : own_partition_;
  char seq[24], time[24];
  const auto seq_end = std::to_chars(seq, seq + sizeof seq, m.sequence()).ptr;
  const std::uint64_t now = internal::realtime_ns();
  const auto time_end = std::to_chars(time, time + sizeof time, now).ptr;
  const auto data = m.data();
  const bool keyed = config_.kafka.key.kind != KafkaKey::Kind::none;
  const rd_kafka_resp_err_t err = rd_kafka_producev(
      producer_.get(), RD_KAFKA_V_RKT(topic_.get()), RD_KAFKA_V_PARTITION(partition),
      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_VALUE(const_cast<std::byte*>(data.data()), data.size()),
      RD_KAFKA_V_KEY(keyed ? key.data() : nullptr, keyed ? key.size() : 0),
      RD_KAFKA_V_HEADER(kOriginHeader, node_name_.data(), static_cast<ssize_t>(node_name_.size())),
      RD_KAFKA_V_HEADER(kObjectHeader, config_.object.data(), static_cast<ssize_t>(config_.object.size())),
      RD_KAFKA_V_HEADER(kSeqHeader, seq, (seq_end - seq)),
      RD_KAFKA_V_HEADER(kEpochHeader, epoch_text_.data(), static_cast<ssize_t>(epoch_text_.size())),
      RD_KAFKA_V_HEADER(kTimeHeader, time, (time_end - time)),
      RD_KAFKA_V_TIMESTAMP(static_cast<std::int64_t>(now / 1'000'000)),
      RD_KAFKA_V_OPAQUE(reinterpret_cast<void*>(static_cast<std::uintptr_t>(m.sequence()))), RD_KAFKA_V_END);
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
    in_flight_.push_back({m.sequence(), static_cast<std::uint32_t>(data.size()), false});
    in_flight_bytes_ += data.size();
    ++pending_;
    add(counters_.produced);
    return Produced::ok;
  }
  if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) return Produced::queue_full;
  if (err == RD_KAFKA_RESP_ERR__FATAL) {
    report_failed("kafka: the producer has failed (fatal error); it is made again");
    return Produced::queue_full;  // the message is produced again by the next producer
  }
  // Refused for good (MSG_SIZE_TOO_LARGE: larger than the broker's or the
  // client's limit): the message cannot reach Kafka, whatever we do.
  add(lossy_ ? counters_.lost : counters_.skipped);
  report_error("kafka: message " + std::to_string(m.sequence()) + " (" + std::to_string(data.size()) +
               " bytes) refused: " + error_text(err) + ": skipped");
  return Produced::refused;
}

void Mirror::on_delivery(const rd_kafka_message_t& m) {
  const auto seq = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(m._private));
  const auto it = std::lower_bound(in_flight_.begin(), in_flight_.end(), seq,
                                   [](const InFlight& f, std::uint64_t s) { return f.seq < s; });
  if (it == in_flight_.end() || it->seq != seq || it->done) return;  // a report of a producer closed since
  if (m.err == RD_KAFKA_RESP_ERR__PURGE_QUEUE || m.err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT) return;  // close()
  if (m.err == RD_KAFKA_RESP_ERR_NO_ERROR) {
    add(counters_.acknowledged);
    report_up();
  } else if (m.err == RD_KAFKA_RESP_ERR__FATAL) {
    report_failed("kafka: the producer has failed: " + error_text(m.err) + "; it is made again");
    return;  // not done: produced again after the read-back
  } else {
    add(lossy_ ? counters_.lost : counters_.skipped);
    report_error("kafka: message " + std::to_string(seq) + " (" + std::to_string(m.len) +
                 " bytes) not stored: " + error_text(m.err) + (lossy_ ? ": lost" : ": skipped"));
  }
  it->done = true;
  --pending_;
  while (!in_flight_.empty() && in_flight_.front().done) {
    in_flight_bytes_ -= in_flight_.front().bytes;
    in_flight_.pop_front();
  }
}

// Moves `retain` up to the oldest message not yet acknowledged (everything
// before it is in Kafka, was skipped, or is not ours to send).
void Mirror::advance_retain() {
  if (!retain_) return;
  const std::uint64_t target = in_flight_.empty() ? handled_through_ : in_flight_.front().seq;
  for (int budget = 0; budget < 64; ++budget) {
    if (!retain_batch_.empty()) {
      if (retain_batch_[retain_batch_.size() - 1].sequence() >= target) return;  // still needed
      retain_batch_.release();
    }
    if (retain_next_ >= target) return;
    retain_batch_ = retain_->try_receive_batch(std::min<std::uint64_t>(kRetainBatch, target - retain_next_));
    if (retain_batch_.empty()) return;
    retain_next_ = retain_batch_[retain_batch_.size() - 1].sequence() + 1;
  }
}

void Mirror::note_lost(std::uint64_t from, std::uint64_t count, const char* why) {
  add(counters_.lost, count);
  // One line per run of consecutive losses would need a timer; one line
  // per loss is a flood: the first 10, then one per 1000 (report_error).
  report_error("kafka: " + std::to_string(count) + " message(s), sequences " + std::to_string(from) + ".." +
               std::to_string(from + count - 1) + ", lost: " + why);
}

void Mirror::update_gauges() {
  set(counters_.in_flight, pending_);
  // Block: everything retain holds (unread, in flight, or acknowledged but
  // held in its last batch); lossy: unread, and in flight.
  internal::Backlog lag = retain_ ? internal::backlog(*retain_) : internal::backlog(*ahead_);
  if (!retain_) {
    lag.messages += pending_;
    lag.bytes += in_flight_bytes_;
  }
  set(counters_.lag_messages, lag.messages);
  set(counters_.lag_bytes, lag.bytes);
}

// ------------------------------------------------------------------ close

void Mirror::close() {
  if (producer_) {
    // What is in flight gets its answer, or is left for the read-back of
    // the next open (a producer's in-flight requests finish before a new
    // one reads the partitions back).
    rd_kafka_flush(producer_.get(), stopping() ? 5000 : 10000);
    rd_kafka_purge(producer_.get(), RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(producer_.get(), 0);
    advance_retain();
  }
  ahead_batch_.release();
  ahead_.reset();
  in_flight_.clear();
  in_flight_bytes_ = 0;
  pending_ = 0;
  topic_.reset();
  producer_.reset();
  if (stopping()) {
    // The ring no longer holds writers for Kafka; what is published while
    // colod is away stays as long as the ring retains it (open_ahead
    // counts what it did not).
    retain_batch_.release();
    retain_.reset();
    object_ = LinkObject{};
  }
}

}  // namespace colo::bridge::kafka
