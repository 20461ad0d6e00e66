// bridge/links/kafka/kafka_client.hpp — what colod's Kafka links need of
// librdkafka (Debian's librdkafka-dev, its C API), made safe to hold:
// configurations from a [[kafka]] table, handles that free themselves,
// topics found or created, Kafka's own partitioner, and reading a
// partition backwards to find the newest record of a kind.
#pragma once

#include <librdkafka/rdkafka.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../../config.hpp"
#include "colo/error.hpp"

namespace colo::bridge::kafka {

// What librdkafka says of the property `name` set to `value`; nullopt if it
// takes it. For --check-config: a misspelt property fails there.
std::optional<std::string> property_problem(const std::string& name, const std::string& value);
// Why colod sets `name` itself (a link's guarantees rest on it); nullopt if
// a [[kafka]] table may set it.
std::optional<std::string> reserved_property(const std::string& name);

std::string error_text(rd_kafka_resp_err_t err);

using Properties = std::vector<std::pair<std::string, std::string>>;

struct ClientDeleter {
  void operator()(rd_kafka_t* rk) const noexcept;
};
using Client = std::unique_ptr<rd_kafka_t, ClientDeleter>;
struct ConfDeleter {
  void operator()(rd_kafka_conf_t* conf) const noexcept { rd_kafka_conf_destroy(conf); }
};
using Conf = std::unique_ptr<rd_kafka_conf_t, ConfDeleter>;
struct TopicDeleter {
  void operator()(rd_kafka_topic_t* rkt) const noexcept { rd_kafka_topic_destroy(rkt); }
};
using TopicHandle = std::unique_ptr<rd_kafka_topic_t, TopicDeleter>;
struct PartitionsDeleter {
  void operator()(rd_kafka_topic_partition_list_t* list) const noexcept { rd_kafka_topic_partition_list_destroy(list); }
};
using Partitions = std::unique_ptr<rd_kafka_topic_partition_list_t, PartitionsDeleter>;
struct MessageDeleter {
  void operator()(rd_kafka_message_t* m) const noexcept { rd_kafka_message_destroy(m); }
};
using MessagePtr = std::unique_ptr<rd_kafka_message_t, MessageDeleter>;

// The cluster's bootstrap and properties, then `own` (colod's settings for
// the link, which win). Callbacks are set on the result by the caller.
Result<Conf> make_conf(const KafkaClusterConfig& cluster, const Properties& own);
// A producer or consumer from `conf` (taken over, whatever happens).
Result<Client> make_client(rd_kafka_type_t type, Conf conf);

// The number of partitions of `topic`. If it does not exist and
// `create_partitions` > 0, creates it with that many (the broker's default
// replication) first.
Result<std::int32_t> topic_partitions(rd_kafka_t* rk, const std::string& topic, std::int32_t create_partitions,
                                      std::chrono::milliseconds timeout);

// Kafka's default partitioner (murmur2 of the key, as the Java client's):
// records of one key land where other clients would put them.
std::int32_t partition_for_key(std::span<const std::byte> key, std::int32_t partition_count) noexcept;

// A header's value as text ("" if absent or null).
std::string header_text(rd_kafka_headers_t* headers, const char* name);

// Reads partition `partition` of `topic` backwards from its end, in growing
// windows, until `match` accepts a record; returns that record (the newest
// one it accepts), or nullptr if no record of the partition does. `reader`
// is a consumer without a group (assign only). Errc::timed_out past the
// deadline.
Result<MessagePtr> newest_matching(rd_kafka_t* reader, const std::string& topic, std::int32_t partition,
                                   const std::function<bool(const rd_kafka_message_t&)>& match,
                                   std::chrono::steady_clock::time_point deadline);

}  // namespace colo::bridge::kafka
