#include "kafka_link.hpp"

#include "mirror.hpp"
#include "source.hpp"
#include "spill.hpp"

namespace colo::bridge::kafka {

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
