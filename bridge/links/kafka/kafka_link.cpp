#include "kafka_link.hpp"

#include "colo/internal/links.hpp"
#include "colo/metadata.hpp"
#include "mirror.hpp"
#include "source.hpp"
#include "spill.hpp"

namespace colo::bridge::kafka {
namespace {
constexpr std::chrono::milliseconds kMetadataTimeout{15'000};  // finding the topic at open
}  // namespace

KafkaLink::KafkaLink(const Config& config, KafkaClusterConfig cluster, LinkConfig link, const Log& log)
    : Link(std::move(link), log),
      cluster_(std::move(cluster)),
      node_name_(config.node_name),
      ns_(config.ns),
      description_("kafka cluster " + cluster_.name + ", topic " + config_.kafka.topic) {}

void KafkaLink::watch_errors(rd_kafka_conf_t* conf) {
  rd_kafka_conf_set_opaque(conf, this);
  rd_kafka_conf_set_error_cb(conf, [](rd_kafka_t* rk, int err, const char* reason, void* opaque) {
    static_cast<KafkaLink*>(opaque)->on_client_error(rk, err, reason);
  });
  // librdkafka's own log lines (from its threads) into colod's log.
  rd_kafka_conf_set_log_cb(conf, [](const rd_kafka_t* rk, int level, const char* facility, const char* text) {
    const auto* self = static_cast<const KafkaLink*>(rd_kafka_opaque(rk));
    // Its errors (a broker unreachable ...) reach the link through the error
    // callback too, which counts and rate-limits them: here they are warnings.
    const LogLevel ours = level <= 4 ? LogLevel::warn : level <= 6 ? LogLevel::info : LogLevel::debug;
    if (self->log_.enabled(ours))
      self->log_.write(ours, "link %s: librdkafka %s: %s", self->config_.name.c_str(), facility, text);
  });
}

void KafkaLink::on_client_error(rd_kafka_t* rk, int err, const char* reason) {
  const std::string what = "kafka: " + std::string(reason != nullptr ? reason : error_text(static_cast<rd_kafka_resp_err_t>(err)));
  if (err == RD_KAFKA_RESP_ERR__FATAL) {
    char detail[512] = {};
    const auto cause = rd_kafka_fatal_error(rk, detail, sizeof detail);
    report_failed("kafka: fatal error (" + error_text(cause) + "): " + detail + "; the client is made again");
    return;
  }
  if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
    report_down(what);
    return;
  }
  report_error(what);
}

Result<KafkaLink::Producer> KafkaLink::open_producer(int linger_ms, std::int32_t create_partitions) {
  auto conf = make_conf(cluster_, {{"enable.idempotence", "true"},
                                   {"acks", "all"},
                                   {"message.timeout.ms", "0"},
                                   {"linger.ms", std::to_string(linger_ms)},
                                   {"batch.num.messages", "10000"},
                                   {"allow.auto.create.topics", "false"}});
  if (!conf) return std::move(conf).error();
  watch_errors(conf->get());
  rd_kafka_conf_set_dr_msg_cb(conf->get(), [](rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
    static_cast<KafkaLink*>(opaque)->on_delivery(*m);
  });
  auto client = make_client(RD_KAFKA_PRODUCER, std::move(conf).value());
  if (!client) return std::move(client).error();
  Producer p;
  p.client = std::move(client).value();
  auto partitions = topic_partitions(p.client.get(), config_.kafka.topic, create_partitions, kMetadataTimeout);
  if (!partitions) return std::move(partitions).error();
  p.partitions = *partitions;
  p.topic.reset(rd_kafka_topic_new(p.client.get(), config_.kafka.topic.c_str(), nullptr));
  return p;
}

std::map<std::int32_t, std::int64_t> KafkaLink::offsets_in_ring(const LinkObject& object, std::uint32_t origin,
                                                                 const std::string& topic) {
  std::map<std::int32_t, std::int64_t> newest;
  auto visit = [&](std::uint32_t tag, std::uint64_t, std::span<const std::byte> metadata) {
    if (tag != origin) return;
    const auto kafka = kafka_metadata(metadata);
    if (!kafka || kafka->topic != topic) return;
    auto [it, fresh] = newest.emplace(kafka->partition, kafka->offset);
    if (!fresh) it->second = std::max(it->second, kafka->offset);
  };
  if (object.topic) internal::for_each_metadata(*object.topic, visit);
  else internal::for_each_metadata(*object.queue, visit);
  return newest;
}

Result<std::unique_ptr<Link>> make_link(const Config& config, const KafkaClusterConfig& cluster,
                                        const LinkConfig& link, const Log& log) {
  switch (link.mode) {
    case LinkMode::mirror: return std::unique_ptr<Link>(new Mirror(config, cluster, link, log));
    case LinkMode::source: return std::unique_ptr<Link>(new Source(config, cluster, link, log));
    case LinkMode::spill: return std::unique_ptr<Link>(new Spill(config, cluster, link, log));
  }
  return Error{Errc::invalid_argument, "link " + link.name + ": unknown mode"};
}

}  // namespace colo::bridge::kafka
