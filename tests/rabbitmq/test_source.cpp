// Source links (suite `rabbitmq`): messages published into a real RabbitMQ
// queue with pika reach local subscribers and queue consumers through
// colod, with their RabbitMQ metadata; a delivery is acknowledged only once
// the object has it for good, so killed consumers and a killed colod lose
// nothing.
//
//   intoATopic...  3,000 messages: each once, in order, with queue, exchange,
//                  routing key, message id, content type and headers;
//                  acknowledged once in the ring (the queue ends empty)
//   aLinkConfiguredPaused...  `paused = true`: connected, nothing published
//                  until `colo links resume`, then every message in order
//   intoAQueue...  100,000 messages, consumer processes SIGKILLed 20 times at
//                  random and colod once: every message consumed; one
//                  consumed twice only if a copy is marked (deliveries > 1,
//                  or RabbitMQ's redelivered flag)
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <random>
#include <set>

#include "colo/metadata.hpp"
#include "colo/node.hpp"
#include "rabbitmq_support.hpp"

namespace colo {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using test::RabbitmqLinks;

std::string text(std::span<const std::byte> b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

class Source : public RabbitmqLinks {};

TEST_F(Source, intoATopicInOrderWithItsMetadataAcknowledgedOnceInTheRing) {
  auto& h = add_host("alpha");
  write_configs({}, false);
  const std::string queue = queue_name("orders");
  append_config(h, rabbitmq_toml() + "[[link]]\nobject = \"orders\"\nkind = \"topic\"\nmode = \"source\"\n"
                                     "capacity = 8388608\nrabbitmq = { server = \"local\", queue = \"" + queue +
                                     "\", prefetch = 500 }\n");
  start(h);
  ASSERT_TRUE(wait_link(h, "source:orders", [](const json& l) { return l["state"] == "running"; }, 60s))
      << h.colod->err();
  auto node = Node::open(test::node_options(h.ns)).value();
  auto subscriber = node.topic("orders", OpenMode::open).value().subscribe().value();
  constexpr int kMessages = 3000;
  amqp({"publish", queue, std::to_string(kMessages)});
  for (int seen = 0; seen < kMessages;) {
    auto batch = subscriber.receive_batch_for(512, 10s);
    ASSERT_FALSE(batch.empty()) << "after " << seen << " messages; colod:\n" << h.colod->err();
    for (const auto& m : batch) {
      const auto meta = rabbitmq_metadata(m.metadata());
      ASSERT_TRUE(meta.has_value()) << "message " << m.sequence() << " has no RabbitMQ metadata";
      EXPECT_EQ(text(m.data()), "m" + std::to_string(seen) + " ");
      EXPECT_EQ(meta->queue, queue);
      EXPECT_EQ(meta->exchange, "");
      EXPECT_EQ(meta->routing_key, queue);
      EXPECT_EQ(meta->message_id, "id-" + std::to_string(seen));
      EXPECT_EQ(meta->content_type, "text/plain");
      ASSERT_EQ(meta->headers.size(), 1u);
      EXPECT_EQ(meta->headers[0].name, "run");
      EXPECT_EQ(text(*meta->headers[0].value), queue);
      EXPECT_FALSE(meta->redelivered);
      EXPECT_FALSE(kafka_metadata(m.metadata()).has_value());
      EXPECT_NE(m.origin(), 0u) << "tagged: a mirror never sends it back, federation never forwards it";
      ++seen;
    }
  }
  json l;
  ASSERT_TRUE(wait_link(h, "source:orders", [](const json& j) { return j["acknowledged"] == kMessages; }, 30s, &l))
      << l.dump();
  EXPECT_EQ(l["produced"], kMessages);
  EXPECT_EQ(l["redelivered"], 0);
  EXPECT_EQ(amqp({"count", queue}).out, "0\n") << "every delivery acknowledged";
  // A restart of colod publishes nothing again: RabbitMQ has no unacknowledged delivery.
  kill_and_restart(h);
  ASSERT_TRUE(wait_link(h, "source:orders", [](const json& j) { return j["state"] == "running"; }, 60s));
  std::this_thread::sleep_for(1s);
  EXPECT_TRUE(subscriber.receive_batch_for(16, 100ms).empty());
  EXPECT_EQ(link(h, "source:orders")["produced"], 0);
}

TEST_F(Source, aLinkConfiguredPausedPublishesNothingUntilResumed) {
  auto& h = add_host("alpha");
  write_configs({}, false);
  const std::string queue = queue_name("held");
  append_config(h, rabbitmq_toml() + "[[link]]\nobject = \"held\"\nkind = \"topic\"\nmode = \"source\"\n"
                                     "paused = true\nrabbitmq = { server = \"local\", queue = \"" + queue +
                                     "\", prefetch = 100 }\n");
  start(h);
  ASSERT_TRUE(wait_link(h, "source:held", [](const json& l) { return l["state"] == "paused"; }, 60s))
      << h.colod->err();
  auto node = Node::open(test::node_options(h.ns)).value();
  auto subscriber = node.topic("held", OpenMode::open).value().subscribe().value();
  constexpr int kMessages = 500;
  amqp({"publish", queue, std::to_string(kMessages)});
  std::this_thread::sleep_for(1s);
  EXPECT_TRUE(subscriber.receive_batch_for(16, 100ms).empty()) << "a paused source publishes nothing";
  json l = link(h, "source:held");
  EXPECT_EQ(l["state"], "paused");
  EXPECT_EQ(l["produced"], 0);
  EXPECT_EQ(l["acknowledged"], 0);
  const auto resumed = test::run({test::colo_path(), "--ns", h.ns, "links", "resume", "source:held", "--socket",
                                  h.control, "--timeout", "5"});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.out << resumed.err;
  EXPECT_EQ(resumed.out, "link source:held resumed\n");
  for (int seen = 0; seen < kMessages;) {
    auto batch = subscriber.receive_batch_for(512, 10s);
    ASSERT_FALSE(batch.empty()) << "after " << seen << " messages; colod:\n" << h.colod->err();
    for (const auto& m : batch) EXPECT_EQ(text(m.data()), "m" + std::to_string(seen++) + " ");
  }
  ASSERT_TRUE(wait_link(h, "source:held", [](const json& j) { return j["acknowledged"] == kMessages; }, 30s, &l))
      << l.dump();
  EXPECT_EQ(l["state"], "running");
  EXPECT_EQ(amqp({"count", queue}).out, "0\n") << "every delivery acknowledged";
}

// One line of a consumer's file (tests/kafka/queue_consumer.cpp).
struct Consumed {
  std::uint32_t deliveries = 0, redelivery = 0;
  std::string body;
};

std::vector<Consumed> read_consumed(const std::string& path) {
  std::vector<Consumed> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    int partition = 0;
    long offset = 0;
    Consumed c;
    int used = 0;
    if (std::sscanf(line.c_str(), "%d %ld %u %u %n", &partition, &offset, &c.deliveries, &c.redelivery, &used) == 4) {
      c.body = line.substr(static_cast<std::size_t>(used));
      out.push_back(std::move(c));
    }
  }
  return out;
}

TEST_F(Source, intoAQueueLosesNothingThroughTwentyConsumerKillsAndAColodKill) {
  auto& h = add_host("alpha");
  write_configs({}, false);
  const std::string queue = queue_name("jobs");
  append_config(h, rabbitmq_toml() + "[[link]]\nobject = \"jobs\"\nkind = \"queue\"\nmode = \"source\"\n"
                                     "acks = true\nmax_deliveries = 255\ncapacity = 1048576\n"
                                     "rabbitmq = { server = \"local\", queue = \"" + queue + "\" }\n");
  start(h);
  ASSERT_TRUE(wait_link(h, "source:jobs", [](const json& l) { return l["state"] == "running"; }, 60s)) << h.colod->err();
  constexpr int kMessages = 100'000;
  // pika publishes while the consumers run (and die).
  const char* tool = std::getenv("COLO_AMQP_TOOL");
  ASSERT_NE(tool, nullptr);
  auto publisher = test::Process::spawn({"/usr/bin/python3", tool, address_, "publish", queue, std::to_string(kMessages)});
  // Three consumer processes, 100 us of work each per message.
  const char* worker = std::getenv("COLO_QUEUE_CONSUMER");
  ASSERT_NE(worker, nullptr);
  std::vector<std::string> files;
  std::vector<std::optional<test::Process>> consumers(3);
  auto start_consumer = [&](std::size_t i) {
    files.push_back(dir_ + "/consumer-" + std::to_string(files.size()) + ".txt");
    consumers[i].emplace(test::Process::spawn({worker, h.ns, "jobs", files.back(), "100"}));
  };
  for (std::size_t i = 0; i < consumers.size(); ++i) start_consumer(i);
  auto consumed_distinct = [&] {
    std::set<std::string> distinct;
    for (const auto& f : files)
      for (const auto& c : read_consumed(f)) distinct.insert(c.body);
    return distinct.size();
  };
  std::mt19937 rng(20);
  for (int kill = 0; kill < 20; ++kill) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200 + rng() % 400));
    const std::size_t victim = rng() % consumers.size();
    consumers[victim]->kill(SIGKILL);
    consumers[victim]->wait_for(5s);
    start_consumer(victim);
    if (kill == 10) kill_and_restart(h);  // colod too, mid-run
  }
  const auto published = publisher.wait_for(300s);
  ASSERT_TRUE(published.has_value() && WIFEXITED(*published) && WEXITSTATUS(*published) == 0) << publisher.err();
  const bool all = test::wait_until([&] { return consumed_distinct() >= static_cast<std::size_t>(kMessages); }, 180s, 500ms);
  for (auto& c : consumers) {
    c->kill(SIGTERM);
    c->wait_for(5s);
  }
  ASSERT_TRUE(all) << consumed_distinct() << " of " << kMessages << " consumed; colod:\n" << h.colod->err();
  // Every message, and duplicates only when a copy is marked.
  std::map<std::string, std::vector<Consumed>> copies;
  for (const auto& f : files)
    for (auto& c : read_consumed(f)) copies[c.body].push_back(c);
  std::uint64_t duplicates = 0, unmarked_duplicates = 0, redelivered = 0;
  for (int i = 0; i < kMessages; ++i) {
    const auto it = copies.find("m" + std::to_string(i) + " ");
    ASSERT_NE(it, copies.end()) << "m" << i << " never consumed";
    int first_deliveries = 0;
    for (const auto& c : it->second) {
      first_deliveries += c.deliveries == 1 && c.redelivery == 0 ? 1 : 0;
      redelivered += c.redelivery;
    }
    duplicates += it->second.size() - 1;
    if (first_deliveries > 1) ++unmarked_duplicates;
  }
  EXPECT_EQ(copies.size(), static_cast<std::size_t>(kMessages)) << "nothing but the published messages";
  EXPECT_EQ(unmarked_duplicates, 0u) << "a message consumed twice, neither copy marked as delivered again";
  json l;
  ASSERT_TRUE(wait_link(h, "source:jobs", [](const json& j) { return j["in_flight"] == 0; }, 60s, &l)) << l.dump();
  EXPECT_EQ(amqp({"count", queue}).out, "0\n") << "every delivery acknowledged once consumed";
  std::cerr << "[ note ] " << duplicates << " duplicate deliveries, each marked; " << redelivered
            << " copies flagged redelivered by RabbitMQ\n";
}

}  // namespace
}  // namespace colo
