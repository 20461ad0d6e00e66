// tests/kafka/kafka_support.hpp — what the `kafka` suite's tests share:
// the broker (COLO_KAFKA, started by tests/services/services.sh), topics
// made for one test, reading them back with kcat, producing with kcat,
// colod hosts with Kafka links (on top of LinkHosts, tests/bridge/link_support.hpp).
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "link_support.hpp"

namespace colo::test {

// One record of a Kafka topic as kcat prints it.
struct KafkaRecord {
  int partition = -1;
  std::int64_t offset = -1;
  std::string key;                              // "" for a null key
  std::int64_t timestamp_ms = -1;               // the record's timestamp
  std::map<std::string, std::string> headers;   // by name (our headers are unique per record)
  std::string value;                            // text
};

// A mirror's record identity, its colo.id header "ORIGIN:OBJECT:EPOCH:SEQ"
// split (parsed here on its own, as a consumer of the topic would).
struct ColoId {
  std::string origin, object;
  std::uint64_t epoch = 0, seq = 0;
};
// nullopt if the record has no colo.id or it is not of that form.
std::optional<ColoId> colo_id(const KafkaRecord& record);

class KafkaLinks : public LinkHosts {
 protected:
  // Skips when no broker is given (COLO_KAFKA), unless COLO_REQUIRE_SERVICES=1.
  void SetUp() override;

  std::string bootstrap_;

  // A Kafka topic name no other test or run uses ("colo.test.<pid>.<n>.<stem>").
  std::string topic_name(const std::string& stem);
  // Creates `topic` with `partitions` (python3-confluent-kafka's AdminClient).
  void create_topic(const std::string& topic, int partitions);
  // The group's committed offset per partition (-1: none).
  std::map<int, std::int64_t> committed(const std::string& group, const std::string& topic);
  // A member that joins `group` on `topic`, reads nothing, stays `seconds`
  // and leaves: two rebalances for the group's other members. Returns how
  // many partitions it was assigned (each assignment, in order).
  std::vector<int> visit_group(const std::string& group, const std::string& topic, int seconds);
  // Every record of `topic`, read with kcat until there are at least
  // `expected` (or `timeout`), in partition then offset order.
  std::vector<KafkaRecord> read_topic(const std::string& topic, std::size_t expected,
                                      std::chrono::seconds timeout = std::chrono::seconds(60));
  // Produces each line of `lines` as one record with kcat: "KEY\tVALUE"
  // (-K'\t'), with the header `header` ("name=value") on each if not "".
  void produce(const std::string& topic, const std::vector<std::string>& lines, const std::string& header = "");

  // [[kafka]] named "local" for the broker, with `properties` (TOML lines).
  std::string kafka_toml(const std::string& properties = "") const;
};

}  // namespace colo::test
