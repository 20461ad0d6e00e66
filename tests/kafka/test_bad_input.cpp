// Bad input for Kafka links (suite `kafka`): a broker that does not answer,
// configurations Kafka or colod refuse, and a record larger than the object
// takes. Clear errors, counted and logged; never a crash or a stall.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <fstream>

#include "colo/metadata.hpp"
#include "colo/node.hpp"
#include "kafka_support.hpp"

namespace colo {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using test::KafkaLinks;

class BadInput : public KafkaLinks {};

TEST_F(BadInput, unreachableBrokerLeavesTheLinkFailedWithItsReasonAndColodServing) {
  auto& h = add_host("alpha");
  write_configs({}, false);
  const int closed = test::free_port();  // nothing listens there
  append_config(h, "[[kafka]]\nname = \"nowhere\"\nbootstrap = \"127.0.0.1:" + std::to_string(closed) +
                       "\"\n[[link]]\nobject = \"prices\"\nkind = \"topic\"\nmode = \"mirror\"\n"
                       "kafka = { cluster = \"nowhere\" }\n");
  start(h);
  json l;
  ASSERT_TRUE(wait_link(h, "mirror:prices", [](const json& j) { return j["state"] == "failed"; }, 60s, &l)) << l.dump();
  EXPECT_NE(l["last_error"].get<std::string>().find("kafka: metadata of topic prices"), std::string::npos) << l.dump();
  EXPECT_GT(l["errors"].get<int>(), 0);
  // The object works locally meanwhile (block mode holds what it can).
  auto node = Node::open(test::node_options(h.ns)).value();
  auto topic = node.topic("prices", OpenMode::open).value();
  auto sub = topic.subscribe().value();
  auto pub = topic.publisher().value();
  ASSERT_EQ(pub.publish(std::as_bytes(std::span("local", 5)), 1s), SendStatus::ok);
  auto m = sub.receive_for(1s);
  ASSERT_TRUE(m.has_value());
  m->release();
  // And colod is alive, answering, still trying.
  EXPECT_TRUE(all_connected(h));
  EXPECT_FALSE(h.colod->wait_for(100ms).has_value()) << "colod ended:\n" << h.colod->err();
}

TEST_F(BadInput, checkConfigNamesFileLineAndKeyOfWhatKafkaOrColodRefuses) {
  auto check = [&](const std::string& body) {
    const std::string path = dir_ + "/bad.toml";
    std::ofstream(path) << "[node]\nname = \"alpha\"\nlisten = \"tcp://127.0.0.1:1\"\n" << body;
    return test::run({test::colod_path(), "--check-config", path});
  };
  const std::string path = dir_ + "/bad.toml";
  auto r = check("[[kafka]]\nname = \"dc1\"\nbootstrap = \"k:1\"\n[[link]]\nobject = \"t\"\nkind = \"topic\"\n"
                 "mode = \"mirror\"\nkafka = { cluster = \"dc9\" }\n");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "colod: " + path + ":11: link[0].kafka.cluster: 'dc9' is not the name of a [[kafka]] table "
                                      "(known: 'dc1')\n");
  r = check("[[kafka]]\nname = \"dc1\"\nbootstrap = \"k:1\"\n[kafka.properties]\n\"compression.codec\" = \"zip\"\n");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "colod: " + path + ":8: kafka[0].properties.compression.codec: librdkafka: Invalid value \"zip\" for "
                                      "configuration property \"compression.codec\"\n");
}

TEST_F(BadInput, recordLargerThanMaxMessageIsSkippedCountedLoggedAndThePartitionGoesOn) {
  auto& h = add_host("alpha");
  write_configs({}, false);
  const std::string topic = topic_name("big");
  create_topic(topic, 1);
  append_config(h, kafka_toml() + "[[link]]\nobject = \"small\"\nkind = \"topic\"\nmode = \"source\"\n"
                                  "max_message = 1024\nkafka = { cluster = \"local\", topic = \"" + topic +
                                  "\", group = \"g-" + topic + "\" }\n");
  start(h);
  ASSERT_TRUE(wait_link(h, "source:small", [](const json& l) { return l["state"] == "running"; }, 60s));
  auto node = Node::open(test::node_options(h.ns)).value();
  auto sub = node.topic("small", OpenMode::open).value().subscribe().value();
  produce(topic, {"a\tfirst", "b\t" + std::string(3000, 'x'), "c\tthird"});
  std::vector<std::pair<std::int64_t, std::string>> got;
  while (got.size() < 2) {
    auto m = sub.receive_for(20s);
    ASSERT_TRUE(m.has_value()) << h.colod->err();
    got.emplace_back(kafka_metadata(m->metadata())->offset,
                     std::string(reinterpret_cast<const char*>(m->data().data()), m->data().size()));
  }
  EXPECT_EQ(got, (std::vector<std::pair<std::int64_t, std::string>>{{0, "first"}, {2, "third"}}));
  json l;
  ASSERT_TRUE(wait_link(h, "source:small", [](const json& j) { return j["acknowledged"] == 3; }, 30s, &l)) << l.dump();
  EXPECT_EQ(l["skipped"], 1);
  EXPECT_EQ(l["produced"], 2);
  EXPECT_NE(h.colod->err().find("offset 1 (3000 bytes and"), std::string::npos) << h.colod->err();
  EXPECT_EQ(committed("g-" + topic, topic).at(0), 3) << "its offset committed with its neighbours: no stall";
}

// A clean stop with a link of each mode busy: colod ends by itself, exit 0,
// each link closed (a client's last references released before it is
// destroyed: rd_kafka_destroy waits for them, forever if one is kept).
TEST_F(BadInput, sigtermStopsColodCleanlyWithALinkOfEveryModeBusy) {
  auto& h = add_host("alpha");
  write_configs({}, false);
  const std::string source_topic = topic_name("in");
  create_topic(source_topic, 2);
  append_config(h, kafka_toml() + "[[link]]\nobject = \"out\"\nkind = \"queue\"\nmode = \"mirror\"\n"
                                  "kafka = { cluster = \"local\", topic = \"" + topic_name("out") + "\" }\n"
                                  "[[link]]\nobject = \"in\"\nkind = \"topic\"\nmode = \"source\"\n"
                                  "kafka = { cluster = \"local\", topic = \"" + source_topic + "\" }\n"
                                  "[[link]]\nobject = \"work\"\nkind = \"queue\"\nmode = \"spill\"\nacks = true\n"
                                  "capacity = 65536\nmax_message = 1024\n"
                                  "kafka = { cluster = \"local\", topic = \"" + topic_name("work") + "\" }\n");
  start(h);
  for (const char* name : {"mirror:out", "source:in", "spill:work"})
    ASSERT_TRUE(wait_link(h, name, [](const json& l) { return l["state"] == "running"; }, 60s)) << name;
  auto node = Node::open(test::node_options(h.ns)).value();
  auto out = node.queue("out", OpenMode::open).value().producer().value();
  auto work = node.queue("work", OpenMode::open).value().producer().value();
  for (int i = 0; i < 3000; ++i) {
    const std::string m = "message " + std::to_string(i);
    const auto bytes = std::as_bytes(std::span(m.data(), m.size()));
    ASSERT_EQ(out.publish(bytes, 1s), SendStatus::ok);
    ASSERT_EQ(work.publish(bytes, 5s), SendStatus::ok);
  }
  std::vector<std::string> records;
  for (int i = 0; i < 500; ++i) records.push_back("k\tr" + std::to_string(i));
  produce(source_topic, records);
  ASSERT_TRUE(wait_link(h, "spill:work", [](const json& l) { return l["acknowledged"] > 0; }, 30s));
  h.colod->kill(SIGTERM);
  const auto status = h.colod->wait_for(30s);
  ASSERT_TRUE(status.has_value()) << "colod still running 30 s after SIGTERM:\n" << h.colod->err();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << h.colod->err();
  for (const char* name : {"mirror:out", "source:in", "spill:work"})
    EXPECT_NE(h.colod->err().find(std::string("link ") + name + ": stopped"), std::string::npos) << name;
}

}  // namespace
}  // namespace colo
