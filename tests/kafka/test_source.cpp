// Source links (suite `kafka`): records produced into a real Kafka broker
// with kcat reach local subscribers and queue consumers through colod, with
// their Kafka metadata; offsets are committed only for what the object has
// taken for good, so killed consumers and a killed colod lose nothing.
//
//   intoATopic...   3 partitions, 3,000 records: each once, in order per
//                   partition, key, headers, partition and offset as Kafka has them
//   aRebalance...   a member joins and leaves while the partitions are paused
//                   (the ring full): nothing stalls, every record once
//   intoAQueue...   100,000 records, consumer processes SIGKILLed 20 times at
//                   random and colod once: every record consumed; a record
//                   consumed twice only if marked (deliveries, redelivery)
#include <gtest/gtest.h>

#include <fstream>
#include <random>
#include <set>

#include "colo/metadata.hpp"
#include "colo/node.hpp"
#include "kafka_support.hpp"

namespace colo {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using test::KafkaLinks;
using test::KafkaRecord;

std::string text(std::span<const std::byte> b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

class Source : public KafkaLinks {};

TEST_F(Source, intoATopicKeepsEachPartitionsOrderWithKeysHeadersPartitionsAndOffsets) {
  auto& h = add_host("alpha");
  write_configs({}, false);
  const std::string topic = topic_name("orders");
  create_topic(topic, 3);
  append_config(h, kafka_toml() + "[[link]]\nobject = \"orders\"\nkind = \"topic\"\nmode = \"source\"\n"
                                  "capacity = 8388608\nkafka = { cluster = \"local\", topic = \"" + topic +
                                  "\", group = \"g-" + topic + "\" }\n");
  start(h);
  ASSERT_TRUE(wait_link(h, "source:orders", [](const json& l) { return l["state"] == "running"; }, 60s))
      << h.colod->err();
  auto node = Node::open(test::node_options(h.ns)).value();
  auto subscriber = node.topic("orders", OpenMode::open).value().subscribe().value();
  constexpr int kRecords = 3000;
  std::vector<std::string> lines;
  for (int i = 0; i < kRecords; ++i) lines.push_back("k" + std::to_string(i % 37) + "\tvalue " + std::to_string(i));
  produce(topic, lines, "run=source-test");
  // What Kafka holds, by (partition, offset).
  const auto records = read_topic(topic, kRecords);
  ASSERT_EQ(records.size(), static_cast<std::size_t>(kRecords));
  std::map<std::pair<int, std::int64_t>, const KafkaRecord*> in_kafka;
  for (const auto& r : records) in_kafka[{r.partition, r.offset}] = &r;
  std::map<int, std::int64_t> next_offset;  // per partition: what the subscriber must see next
  int seen = 0;
  while (seen < kRecords) {
    auto batch = subscriber.receive_batch_for(512, 10s);
    ASSERT_FALSE(batch.empty()) << "after " << seen << " records; colod:\n" << h.colod->err();
    for (const auto& m : batch) {
      const auto kafka = kafka_metadata(m.metadata());
      ASSERT_TRUE(kafka.has_value()) << "message " << m.sequence() << " has no Kafka metadata";
      EXPECT_EQ(kafka->topic, topic);
      EXPECT_EQ(kafka->offset, next_offset[kafka->partition]) << "partition " << kafka->partition << " in order";
      next_offset[kafka->partition] = kafka->offset + 1;
      const auto it = in_kafka.find({kafka->partition, kafka->offset});
      ASSERT_NE(it, in_kafka.end());
      EXPECT_EQ(text(m.data()), it->second->value);
      ASSERT_TRUE(kafka->key.has_value());
      EXPECT_EQ(text(*kafka->key), it->second->key);
      ASSERT_EQ(kafka->headers.size(), 1u);
      EXPECT_EQ(kafka->headers[0].name, "run");
      EXPECT_EQ(text(*kafka->headers[0].value), "source-test");
      EXPECT_GT(kafka->timestamp_ms, 0);
      EXPECT_EQ(kafka->redelivery, 0u);
      EXPECT_NE(m.origin(), 0u) << "tagged: a mirror never sends it back, federation never forwards it";
      ++seen;
    }
  }
  EXPECT_EQ(next_offset.size(), 3u);
  // Offsets are committed once the ring has the records.
  json l;
  ASSERT_TRUE(wait_link(h, "source:orders", [](const json& j) { return j["acknowledged"] == kRecords; }, 30s, &l))
      << l.dump();
  EXPECT_EQ(l["produced"], kRecords);
  EXPECT_EQ(l["duplicates"], 0);
  EXPECT_EQ(l["lag_messages"], 0);
  std::int64_t committed_total = 0;
  for (const auto& [p, offset] : committed("g-" + topic, topic)) committed_total += offset;
  EXPECT_EQ(committed_total, kRecords);
  // A restart of colod publishes nothing again: the ring has it all.
  kill_and_restart(h);
  ASSERT_TRUE(wait_link(h, "source:orders", [](const json& j) { return j["state"] == "running"; }, 60s));
  std::this_thread::sleep_for(2s);
  EXPECT_TRUE(subscriber.receive_batch_for(16, 100ms).empty());
  EXPECT_EQ(link(h, "source:orders")["produced"], 0);
}

// The ring full (a subscriber that does not read) pauses the link's
// partitions; a member joins the group and leaves while they are paused
// (two rebalances). Once the subscriber reads, every record arrives, once
// and in order per partition: librdkafka keeps a partition's pause across
// a rebalance, and a link that forgot it would read nothing more.
TEST_F(Source, aRebalanceWhileThePartitionsArePausedDoesNotStallTheLink) {
  auto& h = add_host("alpha");
  write_configs({}, false);
  const std::string topic = topic_name("paused");
  const std::string group = "g-" + topic;
  create_topic(topic, 2);
  append_config(h, kafka_toml() + "[[link]]\nobject = \"paused\"\nkind = \"topic\"\nmode = \"source\"\n"
                                  "capacity = 65536\nmax_message = 1024\nkafka = { cluster = \"local\", topic = \"" + topic +
                                  "\", group = \"" + group + "\" }\n");
  start(h);
  ASSERT_TRUE(wait_link(h, "source:paused", [](const json& l) { return l["state"] == "running"; }, 60s))
      << h.colod->err();
  auto node = Node::open(test::node_options(h.ns)).value();
  auto subscriber = node.topic("paused", OpenMode::open).value().subscribe().value();  // block: holds the ring
  constexpr int kRecords = 5000;
  std::vector<std::string> lines;
  for (int i = 0; i < kRecords; ++i) lines.push_back("k" + std::to_string(i) + "\trecord " + std::to_string(i));
  produce(topic, lines);
  // The ring (64 KiB) holds a few hundred: full for more than a second, the link pauses.
  ASSERT_TRUE(wait_link(h, "source:paused", [](const json& l) { return l["lag_messages"] > 0; }, 30s));
  std::this_thread::sleep_for(3s);
  const std::vector<int> visitor = visit_group(group, topic, 8);
  ASSERT_EQ(visitor, std::vector<int>{1}) << "the visitor should have shared the two partitions with colod";

  std::map<int, std::int64_t> next_offset;
  int seen = 0;
  while (seen < kRecords) {
    auto batch = subscriber.receive_batch_for(512, 20s);
    ASSERT_FALSE(batch.empty()) << "stalled after " << seen << " of " << kRecords << " records; colod:\n"
                                << h.colod->err();
    for (const auto& m : batch) {
      const auto kafka = kafka_metadata(m.metadata());
      ASSERT_TRUE(kafka.has_value());
      ASSERT_EQ(kafka->offset, next_offset[kafka->partition]) << "partition " << kafka->partition;
      next_offset[kafka->partition] = kafka->offset + 1;
      ++seen;
    }
  }
  EXPECT_EQ(next_offset[0] + next_offset[1], kRecords);
  EXPECT_TRUE(subscriber.receive_batch_for(16, 500ms).empty()) << "more than the topic holds";
}

// One line of a consumer's file.
struct Consumed {
  int partition;
  std::int64_t offset;
  std::uint32_t deliveries, redelivery;
};

std::vector<Consumed> read_consumed(const std::string& path) {
  std::vector<Consumed> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    Consumed c{};
    if (std::sscanf(line.c_str(), "%d %ld %u %u", &c.partition, &c.offset, &c.deliveries, &c.redelivery) == 4)
      out.push_back(c);
  }
  return out;
}

TEST_F(Source, intoAQueueLosesNothingThroughTwentyConsumerKillsAndAColodKill) {
  auto& h = add_host("alpha");
  write_configs({}, false);
  const std::string topic = topic_name("jobs");
  create_topic(topic, 3);
  append_config(h, kafka_toml() + "[[link]]\nobject = \"jobs\"\nkind = \"queue\"\nmode = \"source\"\n"
                                  "acks = true\nmax_deliveries = 255\ncapacity = 1048576\n"
                                  "kafka = { cluster = \"local\", topic = \"" + topic + "\" }\n");
  start(h);
  ASSERT_TRUE(wait_link(h, "source:jobs", [](const json& l) { return l["state"] == "running"; }, 60s)) << h.colod->err();
  constexpr int kRecords = 100'000;
  std::vector<std::string> lines;
  for (int i = 0; i < kRecords; ++i) lines.push_back("k" + std::to_string(i % 1000) + "\tjob " + std::to_string(i));
  produce(topic, lines);
  // Three consumer processes, 100 us of work each per message.
  const char* worker = std::getenv("COLO_KAFKA_CONSUMER");
  ASSERT_NE(worker, nullptr);
  std::vector<std::string> files;
  std::vector<std::optional<test::Process>> consumers(3);
  auto start_consumer = [&](std::size_t i) {
    files.push_back(dir_ + "/consumer-" + std::to_string(files.size()) + ".txt");
    consumers[i].emplace(test::Process::spawn({worker, h.ns, "jobs", files.back(), "100"}));
  };
  for (std::size_t i = 0; i < consumers.size(); ++i) start_consumer(i);
  auto consumed_distinct = [&] {
    std::set<std::pair<int, std::int64_t>> distinct;
    for (const auto& f : files)
      for (const auto& c : read_consumed(f)) distinct.insert({c.partition, c.offset});
    return distinct.size();
  };
  std::mt19937 rng(20);
  for (int kill = 0; kill < 20; ++kill) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50 + rng() % 150));
    const std::size_t victim = rng() % consumers.size();
    consumers[victim]->kill(SIGKILL);
    consumers[victim]->wait_for(5s);
    start_consumer(victim);
    if (kill == 10) kill_and_restart(h);  // colod too, mid-run
  }
  const bool all = test::wait_until([&] { return consumed_distinct() >= static_cast<std::size_t>(kRecords); }, 180s, 500ms);
  for (auto& c : consumers) {
    c->kill(SIGTERM);
    c->wait_for(5s);
  }
  ASSERT_TRUE(all) << consumed_distinct() << " of " << kRecords << " consumed; colod:\n" << h.colod->err();
  // Every record of each partition, and duplicates only when marked.
  const auto records = read_topic(topic, kRecords);
  ASSERT_EQ(records.size(), static_cast<std::size_t>(kRecords));
  std::map<std::pair<int, std::int64_t>, std::vector<Consumed>> copies;
  for (const auto& f : files)
    for (const auto& c : read_consumed(f)) copies[{c.partition, c.offset}].push_back(c);
  std::uint64_t duplicates = 0, unmarked_duplicates = 0;
  for (const auto& r : records) {
    const auto it = copies.find({r.partition, r.offset});
    ASSERT_NE(it, copies.end()) << "partition " << r.partition << " offset " << r.offset << " never consumed";
    int first_deliveries = 0;
    for (const auto& c : it->second) first_deliveries += c.deliveries == 1 && c.redelivery == 0 ? 1 : 0;
    duplicates += it->second.size() - 1;
    if (first_deliveries > 1) ++unmarked_duplicates;
  }
  EXPECT_EQ(unmarked_duplicates, 0u) << "a record consumed twice, neither copy marked as delivered again";
  std::cerr << "[ note ] " << duplicates << " duplicate deliveries, each marked (deliveries > 1 or redelivery)\n";
}

}  // namespace
}  // namespace colo
