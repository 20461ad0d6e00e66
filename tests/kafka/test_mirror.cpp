// Mirror links (suite `kafka`): colod processes on loopback, each with its
// own namespace standing for a host, mirroring a topic into a real Kafka
// broker; what reached Kafka is read back with kcat.
//
//   threeHosts...        3 federated hosts, 100,000 messages on each of two:
//                        each (origin, sequence) once in Kafka, in order per origin
//   ...killedThreeTimes  the same with one colod SIGKILLed 3 times mid-run
//   brokerStopped...     the broker stopped for 10 s mid-run: block loses
//                        nothing and holds writers; lossy counts exactly what
//                        Kafka lacks
//   recordsCarry...      kcat sees the configured key, colo's header and the timestamp
#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include "colo/node.hpp"
#include "kafka_support.hpp"

namespace colo {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using test::KafkaLinks;
using test::KafkaRecord;

// The records of `origin`, in Kafka's order (one partition: key = origin).
std::vector<const KafkaRecord*> of_origin(const std::vector<KafkaRecord>& records, const std::string& origin) {
  std::vector<const KafkaRecord*> out;
  for (const auto& r : records)
    if (const auto id = test::colo_id(r); id && id->origin == origin) out.push_back(&r);
  return out;
}

// Each of publisher `id`'s `n` messages exactly once, in publish order, and
// colo.id's sequence strictly increasing (each (origin, sequence) once, in
// order).
::testing::AssertionResult exactly_once_in_order(const std::vector<const KafkaRecord*>& records, std::uint32_t id,
                                                 std::uint32_t n) {
  if (records.size() != n) return ::testing::AssertionFailure() << records.size() << " records, expected " << n;
  std::uint64_t last_seq = 0;
  for (std::uint32_t i = 0; i < n; ++i) {
    std::uint32_t publisher = 0, index = 0;
    if (!test::parse_text_message(records[i]->value, publisher, index))
      return ::testing::AssertionFailure() << "record " << i << " holds '" << records[i]->value << "'";
    if (publisher != id || index != i)
      return ::testing::AssertionFailure() << "record " << i << " (offset " << records[i]->offset << ") holds p"
                                           << publisher << " i" << index;
    const std::uint64_t seq = test::colo_id(*records[i])->seq;
    if (i > 0 && seq <= last_seq)
      return ::testing::AssertionFailure() << "sequence " << seq << " after " << last_seq << " at record " << i;
    last_seq = seq;
  }
  return ::testing::AssertionSuccess();
}

class Mirror : public KafkaLinks {
 protected:
  // Three federated hosts, "prices" a cluster topic whose ring holds the
  // whole run, each mirroring it into `topic` (3 partitions, keyed by origin).
  void three_hosts(const std::string& topic) {
    for (const char* name : {"alpha", "beta", "gamma"}) add_host(name);
    write_configs({"prices"}, false, "capacity = 33554432\n");
    create_topic(topic, 3);
    for (auto& h : hosts_)
      append_config(h, kafka_toml() + "[[link]]\nobject = \"prices\"\nkind = \"topic\"\nmode = \"mirror\"\n"
                                      "kafka = { cluster = \"local\", topic = \"" + topic + "\", key = \"origin\" }\n");
    for (auto& h : hosts_) start(h);
    ASSERT_TRUE(all_hosts_connected());
    for (auto& h : hosts_)
      ASSERT_TRUE(wait_link(h, "mirror:prices", [](const json& l) { return l["state"] == "running"; }, 60s))
          << h.name << ": " << link(h, "mirror:prices").dump() << "\n" << h.colod->err();
  }

  // Publishes 100,000 on alpha (1) and beta (2), pausing `pause` every 100
  // messages, with `during` run meanwhile (it sees alpha's progress); then
  // checks Kafka.
  void publish_and_check(const std::string& topic, std::chrono::microseconds pause,
                         const std::function<void(const std::atomic<std::uint32_t>&)>& during) {
    constexpr std::uint32_t kPerHost = 100'000;
    std::atomic<std::uint64_t> timeouts{0};
    std::atomic<bool> stop{false};
    std::atomic<std::uint32_t> alpha_progress{0};
    auto p1 = test::text_publisher(hosts_[0].ns, "prices", 1, kPerHost, 120, pause, 100, 100ms, timeouts, stop,
                                   &alpha_progress);
    auto p2 = test::text_publisher(hosts_[1].ns, "prices", 2, kPerHost, 120, pause, 100, 100ms, timeouts, stop);
    during(alpha_progress);
    p1.join();
    p2.join();
    const auto records = read_topic(topic, 2 * kPerHost, 120s);
    EXPECT_EQ(records.size(), 2 * kPerHost);
    const auto alpha = of_origin(records, "alpha");
    const auto beta = of_origin(records, "beta");
    EXPECT_TRUE(exactly_once_in_order(alpha, 1, kPerHost)) << "alpha";
    EXPECT_TRUE(exactly_once_in_order(beta, 2, kPerHost)) << "beta";
    EXPECT_TRUE(of_origin(records, "gamma").empty()) << "gamma published nothing; relayed messages are not mirrored";
    for (const auto* r : alpha) ASSERT_EQ(r->key, "alpha");
    std::set<int> alpha_partitions;
    for (const auto* r : alpha) alpha_partitions.insert(r->partition);
    EXPECT_EQ(alpha_partitions.size(), 1u) << "one key, one partition";
    for (auto& h : hosts_) {
      json l;
      EXPECT_TRUE(wait_link(h, "mirror:prices", [](const json& j) { return j["in_flight"] == 0; }, 30s, &l)) << l.dump();
      EXPECT_EQ(l["lost"], 0) << h.name;
      EXPECT_EQ(l["skipped"], 0) << h.name;
    }
  }
};

TEST_F(Mirror, threeHostsPutEachLocalMessageInKafkaOnceInOrderPerOrigin) {
  const std::string topic = topic_name("prices");
  three_hosts(topic);
  if (HasFatalFailure()) return;
  publish_and_check(topic, 200us, [](const std::atomic<std::uint32_t>&) {});
  // Every message published here was produced once, none twice.
  EXPECT_EQ(link(hosts_[0], "mirror:prices")["produced"], 100'000);
  EXPECT_EQ(link(hosts_[1], "mirror:prices")["produced"], 100'000);
  EXPECT_EQ(link(hosts_[2], "mirror:prices")["produced"], 0);
}

TEST_F(Mirror, threeHostsStillExactlyOnceWithAColodKilledThreeTimesMidRun) {
  const std::string topic = topic_name("prices");
  three_hosts(topic);
  if (HasFatalFailure()) return;
  // At least 8 s of publishing (8 ms every 100 messages): the kills, at a
  // quarter, half and three quarters of alpha's messages, are mid-run.
  publish_and_check(topic, 8ms, [&](const std::atomic<std::uint32_t>& alpha_progress) {
    for (std::uint32_t kill = 1; kill <= 3; ++kill) {
      ASSERT_TRUE(test::wait_until([&] { return alpha_progress.load() >= kill * 25'000; }, 120s, 10ms));
      ASSERT_LT(alpha_progress.load(), 100'000u) << "the publisher ended before kill " << kill;
      kill_and_restart(hosts_[0]);
      json l;
      ASSERT_TRUE(wait_link(hosts_[0], "mirror:prices", [](const json& j) { return j["state"] == "running"; }, 60s, &l))
          << l.dump() << "\n" << hosts_[0].colod->err();
    }
  });
  // Each restart resumed after the last of alpha's messages in Kafka.
  std::ifstream killed(dir_ + "/alpha.killed.log");
  const std::string before((std::istreambuf_iterator<char>(killed)), std::istreambuf_iterator<char>());
  EXPECT_NE(before.find("(after the last of ours in Kafka)"), std::string::npos) << before;
}

// Two objects on one host: "held" mirrored in block mode, "dropped" in
// lossy mode; librdkafka may buffer 2,000 messages; the broker is stopped
// for 10 s while both publish.
TEST_F(Mirror, brokerStoppedTenSecondsBlockLosesNothingLossyCountsExactlyWhatKafkaLacks) {
  auto& h = add_host("alpha");
  write_configs({}, false);
  const std::string held = topic_name("held"), dropped = topic_name("dropped");
  append_config(h, kafka_toml("\"queue.buffering.max.messages\" = 2000\n") +
                       "[[link]]\nobject = \"held\"\nkind = \"topic\"\nmode = \"mirror\"\ncapacity = 262144\n"
                       "kafka = { cluster = \"local\", topic = \"" + held + "\" }\n"
                       "[[link]]\nobject = \"dropped\"\nkind = \"topic\"\nmode = \"mirror\"\nbackpressure = \"lossy\"\n"
                       "capacity = 262144\nkafka = { cluster = \"local\", topic = \"" + dropped + "\" }\n");
  start(h);
  for (const char* name : {"mirror:held", "mirror:dropped"})
    ASSERT_TRUE(wait_link(h, name, [](const json& l) { return l["state"] == "running"; }, 60s)) << h.colod->err();
  constexpr std::uint32_t kCount = 40'000;  // 2,000 a second: 20 s
  std::atomic<std::uint64_t> held_timeouts{0}, dropped_timeouts{0};
  std::atomic<bool> stop{false};
  auto p1 = test::text_publisher(h.ns, "held", 1, kCount, 100, 10ms, 20, 100ms, held_timeouts, stop);
  auto p2 = test::text_publisher(h.ns, "dropped", 2, kCount, 100, 10ms, 20, 100ms, dropped_timeouts, stop);
  std::this_thread::sleep_for(2s);
  const auto outage = services({"restart", "kafka", "10"});  // stop, 10 s, start keeping the data
  EXPECT_TRUE(outage.exited && outage.exit_code == 0) << test::describe(outage);
  p1.join();
  p2.join();
  // block: every message, once, in order; the writer was held back.
  const auto held_records = read_topic(held, kCount, 120s);
  std::vector<const KafkaRecord*> all;
  for (const auto& r : held_records) all.push_back(&r);
  EXPECT_TRUE(exactly_once_in_order(all, 1, kCount));
  EXPECT_GT(held_timeouts.load(), 0u) << "the block mirror held the writer back while Kafka was away";
  // lossy: the writer never waited; Kafka lacks exactly what was counted lost.
  EXPECT_EQ(dropped_timeouts.load(), 0u);
  json l;
  ASSERT_TRUE(wait_link(h, "mirror:dropped", [](const json& j) { return j["in_flight"] == 0; }, 60s, &l));
  const auto dropped_records = read_topic(dropped, kCount - l["lost"].get<std::size_t>(), 60s);
  std::set<std::uint32_t> indexes;
  for (const auto& r : dropped_records) {
    std::uint32_t publisher = 0, index = 0;
    ASSERT_TRUE(test::parse_text_message(r.value, publisher, index));
    EXPECT_TRUE(indexes.insert(index).second) << "index " << index << " twice";
  }
  EXPECT_GT(l["lost"].get<std::uint64_t>(), 0u) << "2,000 buffered messages cannot cover a 10 s outage";
  EXPECT_EQ(dropped_records.size() + l["lost"].get<std::uint64_t>(), kCount);
  EXPECT_NE(h.colod->err().find("lost: librdkafka's queue was full"), std::string::npos)
      << "losses are logged with their sequences";
  std::cerr << "[ note ] block: " << held_timeouts.load() << " publish timeout(s) of 100 ms; lossy: "
            << l["lost"].get<std::uint64_t>() << " lost of " << kCount << "\n";
}

TEST_F(Mirror, recordsCarryTheConfiguredKeyAndColosHeadersAsKcatReadsThem) {
  auto& h = add_host("alpha");
  write_configs({}, false);
  const std::string topic = topic_name("keyed");
  create_topic(topic, 4);
  append_config(h, kafka_toml() + "[[link]]\nobject = \"orders\"\nkind = \"queue\"\nmode = \"mirror\"\n"
                                  "kafka = { cluster = \"local\", topic = \"" + topic + "\", key = \"payload:0:4\" }\n");
  start(h);
  ASSERT_TRUE(wait_link(h, "mirror:orders", [](const json& l) { return l["state"] == "running"; }, 60s));
  auto node = Node::open(test::node_options(h.ns)).value();
  auto queue = node.queue("orders", OpenMode::open).value();
  auto consumer = queue.consumer().value();
  auto producer = queue.producer().value();
  for (int i = 0; i < 100; ++i) {
    const std::string m = "k" + std::to_string(i % 10) + "xx body " + std::to_string(i);  // key: the first 4 bytes
    ASSERT_EQ(producer.publish(std::as_bytes(std::span(m.data(), m.size())), 1s), SendStatus::ok);
  }
  // The queue's consumer takes them all; the mirror (a tap) saw them anyway.
  int consumed = 0;
  while (consumed < 100) {
    auto batch = consumer.receive_batch_for(100, 2s);
    ASSERT_FALSE(batch.empty());
    consumed += static_cast<int>(batch.size());
  }
  const auto records = read_topic(topic, 100, 60s);
  ASSERT_EQ(records.size(), 100u);
  const auto created = node.info("orders").value().created_realtime_ns;
  std::map<std::string, std::set<int>> partitions_of_key;
  std::set<std::uint64_t> seqs;
  for (const auto& r : records) {
    const auto space = r.value.find(" body ");
    ASSERT_NE(space, std::string::npos) << r.value;
    EXPECT_EQ(r.key, r.value.substr(0, 4));
    EXPECT_EQ(r.headers.size(), 1u) << "colo.id only";
    const auto id = test::colo_id(r);
    ASSERT_TRUE(id.has_value()) << (r.headers.count("colo.id") != 0 ? r.headers.at("colo.id") : "no colo.id");
    EXPECT_EQ(r.headers.at("colo.id"), "alpha:orders:" + std::to_string(created) + ":" + r.value.substr(space + 6))
        << "origin, object, epoch, and the sequence in the queue";
    EXPECT_GE(r.timestamp_ms, static_cast<std::int64_t>(created / 1'000'000)) << "when colod read it";
    partitions_of_key[r.key].insert(r.partition);
    seqs.insert(id->seq);
  }
  EXPECT_EQ(seqs.size(), 100u);
  for (const auto& [key, partitions] : partitions_of_key) EXPECT_EQ(partitions.size(), 1u) << "key " << key;
  // The tap shows in the queue's readers, and colo stat shows the link.
  const auto stat = test::run_colo(h.ns, {"stat", "orders", "--socket", h.control});
  EXPECT_NE(stat.out.find("tap"), std::string::npos) << stat.out;
  EXPECT_NE(stat.out.find("link:             mirror:orders, kafka mirror"), std::string::npos) << stat.out;
}

}  // namespace
}  // namespace colo
