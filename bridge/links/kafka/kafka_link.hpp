// bridge/links/kafka/kafka_link.hpp — colod's Kafka links (docs/kafka.md):
// what the three modes share, and make_link(), which LinkService calls for
// a [[link]] whose other side is a [[kafka]] cluster.
//
//   mirror.cpp  object -> Kafka topic: each message published on this host,
//               once (idempotent producer; exactly once across colod
//               restarts by reading back its partitions' newest records)
//   source.cpp  Kafka topic -> object: a consumer group; offsets committed
//               once the object has the record (a queue: once a consumer
//               acknowledged it)
//   spill.cpp   a queue's bursts out to a Kafka topic and back
#pragma once

#include <map>
#include <memory>
#include <string>

#include "../link.hpp"
#include "kafka_client.hpp"

namespace colo::bridge::kafka {

Result<std::unique_ptr<Link>> make_link(const Config& config, const KafkaClusterConfig& cluster,
                                        const LinkConfig& link, const Log& log);

// The part of every Kafka link: its cluster, its name for logs and status,
// and librdkafka's error callback turned into the link's states.
class KafkaLink : public Link {
 public:
  KafkaLink(const Config& config, KafkaClusterConfig cluster, LinkConfig link, const Log& log);

 protected:
  std::string describe() const override { return description_; }
  const char* system() const noexcept override { return "kafka"; }

  // Sets the error callback (and this link as the opaque of every callback).
  void watch_errors(rd_kafka_conf_t* conf);

  // The producer of a mirror or a spill: idempotent, acks=all, no message
  // timeout (a Kafka down for an hour is a backlog, not a loss), lingering
  // `linger_ms`; its delivery reports go to on_delivery(). The link's topic
  // is found, or created with `create_partitions` (never by the broker's
  // auto-creation, with its default).
  struct Producer {
    Client client;
    TopicHandle topic;
    std::int32_t partitions = 0;
  };
  Result<Producer> open_producer(int linger_ms, std::int32_t create_partitions);
  // A delivery report of open_producer()'s producer (served by rd_kafka_poll
  // in the link's thread).
  virtual void on_delivery(const rd_kafka_message_t&) {}

  // Per partition of `topic`, the newest offset among the records tagged
  // `origin` the object still holds (from their metadata): where a restart
  // resumes without publishing any of them twice.
  static std::map<std::int32_t, std::int64_t> offsets_in_ring(const LinkObject& object, std::uint32_t origin,
                                                                const std::string& topic);
  // librdkafka's error callback: the link is down while no broker answers;
  // a fatal error fails it (it is opened again).
  void on_client_error(rd_kafka_t* rk, int err, const char* reason);

  const KafkaClusterConfig cluster_;
  const std::string node_name_;  // our [node].name: the origin of what we mirror
  const std::string ns_;
  const std::string description_;
};

}  // namespace colo::bridge::kafka
