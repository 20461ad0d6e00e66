// tests/kafka/kafka_support.hpp — what the `kafka` suite's tests share:
// the broker (COLO_KAFKA, started by tests/services/services.sh), topics
// made for one test, reading them back with kcat, producing with kcat,
// colod hosts with Kafka links (on top of the bridge suite's Federation
// fixture), their `colo links --json`, and text messages that tell their
// publisher and index.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "federation_support.hpp"

namespace colo::test {

// One record of a Kafka topic as kcat prints it.
struct KafkaRecord {
  int partition = -1;
  std::int64_t offset = -1;
  std::string key;                              // "" for a null key
  std::map<std::string, std::string> headers;   // by name (our headers are unique per record)
  std::string value;                            // text
};

// A text message "p<publisher> i<index> " padded with '.' to `size` bytes
// (at least the prefix), and its parse.
std::string text_message(std::uint32_t publisher, std::uint32_t index, std::size_t size);
bool parse_text_message(const std::string& text, std::uint32_t& publisher, std::uint32_t& index);

class KafkaLinks : public Federation {
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
  // Every record of `topic`, read with kcat until there are at least
  // `expected` (or `timeout`), in partition then offset order.
  std::vector<KafkaRecord> read_topic(const std::string& topic, std::size_t expected,
                                      std::chrono::seconds timeout = std::chrono::seconds(60));
  // Produces each line of `lines` as one record with kcat: "KEY\tVALUE"
  // (-K'\t'), with the header `header` ("name=value") on each if not "".
  void produce(const std::string& topic, const std::vector<std::string>& lines, const std::string& header = "");

  // [[kafka]] named "local" for the broker, with `properties` (TOML lines).
  std::string kafka_toml(const std::string& properties = "") const;
  // Appends `toml` to host h's config (after write_configs).
  void append_config(const Host& h, const std::string& toml);
  // `colo links --json` of h, and one link of it (null json if absent).
  nlohmann::json links(const Host& h);
  nlohmann::json link(const Host& h, const std::string& name);
  // Waits until link `name` of h satisfies `ok`; the last json seen.
  bool wait_link(const Host& h, const std::string& name, const std::function<bool(const nlohmann::json&)>& ok,
                 std::chrono::seconds timeout, nlohmann::json* last = nullptr);
  // SIGKILLs h's colod and starts it again.
  void kill_and_restart(Host& h);
  // tests/services/services.sh with these arguments (the broker's own script).
  RunResult services(const std::vector<std::string>& args, std::chrono::seconds timeout = std::chrono::seconds(120));
};

// A thread publishing `count` text messages on h's topic `topic` as
// publisher `id`, sizes 20..`max_size` bytes, pausing `pause` after every
// `every` messages; a publish that times out (`timeout`: writers held back)
// is counted in `timeouts` and tried again. `progress`, if given, counts
// the messages published. Returns the thread.
std::thread text_publisher(const std::string& ns, const std::string& topic, std::uint32_t id, std::uint32_t count,
                           std::size_t max_size, std::chrono::microseconds pause, std::uint32_t every,
                           std::chrono::milliseconds timeout, std::atomic<std::uint64_t>& timeouts,
                           const std::atomic<bool>& stop, std::atomic<std::uint32_t>* progress = nullptr);

}  // namespace colo::test
