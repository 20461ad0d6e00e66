#include "mirror.hpp"

#include <algorithm>

#include "colo/internal/clock.hpp"

namespace colo::bridge::kafka {
namespace {

using internal::monotonic_ns;
constexpr auto kReadBackTimeout = std::chrono::seconds(60);  // per partition, at open
constexpr std::uint64_t kProbeEveryNs = 1'000'000'000;  // while down: is a broker back?
constexpr std::uint32_t kPollEvery = 16;   // messages produced between two servings of delivery reports

// The one header of our records (MessageId): what tells ours from others'
// when reading back.
constexpr const char* kIdHeader = "colo.id";

std::span<const std::byte> bytes_of(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

}  // namespace

Mirror::Mirror(const Config& config, const KafkaClusterConfig& cluster, const LinkConfig& link, const Log& log)
    : KafkaLink(config, cluster, link, log), lossy_(link.lossy), ring_(link.lossy) {}

// ------------------------------------------------------------------ open

Result<void> Mirror::open() {
  if (auto opened = open_object(ns_, object_); !opened) return opened;
  id_ = MessageId(node_name_, config_.object, object_.epoch);
  // Block mode: hold everything the ring has from now on, before Kafka is
  // even reached (a restart keeps the retain reader of the last open).
  if (auto held = ring_.hold(object_); !held) return held;
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
  // Ours: a colo.id of our origin and object (of any epoch).
  auto id_of = [](const rd_kafka_message_t& m) -> std::optional<MessageId::Parts> {
    rd_kafka_headers_t* headers = nullptr;
    const void* value = nullptr;
    size_t size = 0;
    if (rd_kafka_message_headers(&m, &headers) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_header_get_last(headers, kIdHeader, &value, &size) != RD_KAFKA_RESP_ERR_NO_ERROR || value == nullptr)
      return std::nullopt;
    return MessageId::parse({static_cast<const char*>(value), size});
  };
  auto ours = [&](const rd_kafka_message_t& m) {
    const auto id = id_of(m);
    return id && id->origin == node_name_ && id->object == config_.object;
  };
  for (std::int32_t p = 0; p < partitions_; ++p) {
    if (config_.kafka.key.kind != KafkaKey::Kind::payload && p != own_partition_) continue;
    auto newest = newest_matching(reader->get(), config_.kafka.topic, p, ours,
                                  std::chrono::steady_clock::now() + kReadBackTimeout);
    if (!newest) return std::move(newest).error();
    if (!*newest) continue;
    const auto id = id_of(**newest);
    if (id->epoch != object_.epoch) continue;  // an earlier object of this name: none of this one
    const std::uint64_t value = id->seq;
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
  auto missed = ring_.open_ahead(object_, start);
  if (!missed) return std::move(missed).error();
  const std::uint64_t gone = *missed;
  // Ours that Kafka lacks and the ring no longer has (overwritten while no
  // colod read it). On a first start (nothing of ours in Kafka yet) what
  // came before is history, not a loss.
  if (any && gone > 0) note_lost(start, gone, "overwritten in the ring before colod read them");
  log_.write(LogLevel::info, "link %s: %s; producing from sequence %llu%s", config_.name.c_str(), describe().c_str(),
             static_cast<unsigned long long>(start + gone),
             any ? " (after the last of ours in Kafka)" : " (nothing of this object's in Kafka yet)");
  return Ok{};
}

// ------------------------------------------------------------------ steps

void Mirror::step() {
  rd_kafka_poll(producer_.get(), 0);  // delivery reports
  MirrorRing::Lapped lapped;
  if (ring_.read(lapped)) {
    if (lapped.count > 0) note_lost(lapped.first, lapped.count, "overwritten in the ring before colod read them");
    // The clock once per batch read: "when colod read it", for a thousand
    // records at a time.
    if (read_at_ms_ == 0) read_at_ms_ = internal::realtime_ns() / 1'000'000;
    if (produce_batch()) read_at_ms_ = 0;
    else rd_kafka_poll(producer_.get(), 5);  // librdkafka's queue is full: wait for acknowledgements
  } else {
    // Idle: delivery reports, or a nap (Kafka's linger is 5 ms anyway).
    rd_kafka_poll(producer_.get(), static_cast<int>(ring_.idle_wait().count()));
  }
  ring_.advance_retain();
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
  ring_.advance_retain();
  update_gauges();
}

bool Mirror::produce_batch() {
  for (const MessageView* m; (m = ring_.current()) != nullptr; ring_.advance()) {
    if (m->origin() != 0) continue;  // relayed: its origin host mirrors it
    const std::int32_t p = partition_of(key_of(*m));
    const auto& last = in_kafka_[static_cast<std::size_t>(p)];
    if (last && m->sequence() <= *last) {
      add(counters_.duplicates);  // in Kafka already (a restart): not again
      continue;
    }
    switch (produce(*m)) {
      case Produced::ok:
        // Delivery reports often, not once per batch: librdkafka frees
        // each message and its header there, and frees interleaved with
        // the allocations stay in malloc's per-thread cache (in bursts of
        // a thousand they cost a third of the throughput).
        if (++produced_since_poll_ % kPollEvery == 0) rd_kafka_poll(producer_.get(), 0);
        break;
      case Produced::queue_full:
        if (!lossy_) return false;  // block: this message waits (and the ring holds writers when full)
        note_lost(m->sequence(), 1, "librdkafka's queue was full (Kafka slow or down)");
        break;
      case Produced::refused: break;  // counted and logged by produce()
    }
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
  const std::string_view id = id_.of(m.sequence());
  const auto data = m.data();
  const bool keyed = config_.kafka.key.kind != KafkaKey::Kind::none;
  const rd_kafka_resp_err_t err = rd_kafka_producev(
      producer_.get(), RD_KAFKA_V_RKT(topic_.get()), RD_KAFKA_V_PARTITION(partition),
      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_VALUE(const_cast<std::byte*>(data.data()), data.size()),
      RD_KAFKA_V_KEY(keyed ? key.data() : nullptr, keyed ? key.size() : 0),
      RD_KAFKA_V_HEADER(kIdHeader, id.data(), static_cast<ssize_t>(id.size())),
      RD_KAFKA_V_TIMESTAMP(static_cast<std::int64_t>(read_at_ms_)),
      RD_KAFKA_V_OPAQUE(reinterpret_cast<void*>(static_cast<std::uintptr_t>(m.sequence()))), RD_KAFKA_V_END);
  if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
    ring_.sent(m.sequence(), static_cast<std::uint32_t>(data.size()));
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
  const auto index = ring_.find(seq);
  if (!index || ring_.in_flight(*index).done) return;  // a report of a producer closed since
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
  ring_.done(*index);
}

void Mirror::note_lost(std::uint64_t from, std::uint64_t count, const char* why) {
  report_lost(from, from + count - 1, count, why);
}

void Mirror::update_gauges() {
  const internal::Backlog lag = ring_.lag();
  set_gauges(ring_.pending(), lag.messages, lag.bytes);
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
    ring_.advance_retain();
  }
  ring_.close_ahead();
  read_at_ms_ = 0;
  topic_.reset();
  producer_.reset();
  if (stopping()) {
    // The ring no longer holds writers for Kafka; what is published while
    // colod is away stays as long as the ring retains it (open_ahead
    // counts what it did not).
    ring_.close();
    object_ = LinkObject{};
  }
}

}  // namespace colo::bridge::kafka
