// Mirror links (suite `rabbitmq`): a colod mirroring a topic or queue into
// a real RabbitMQ node; what reached RabbitMQ is read back with pika.
//
//   twoPublishers...  100,000 messages from two local publishers into a
//                     durable queue, colod SIGKILLed 3 times mid-run: each
//                     (origin, sequence) present, first copies in order,
//                     every later copy marked colo.redelivery and no more
//                     of them than the confirm window per kill
//   serverRestarted.. the node restarted mid-run: block mode loses nothing
//                     and held the writer back; the outage is counted
//   aNewConnection..  while another connection holds the link's fence
//                     queue (as a killed colod's connection does until
//                     RabbitMQ closed it) the mirror publishes nothing;
//                     once it is gone, everything, unmarked and in order
//   headersAnd...     pika sees colo's message id and timestamp, and no
//                     header table; a queue object mirrored through an
//                     exchange and a binding; `colo stat`
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <set>

#include "colo/node.hpp"
#include "rabbitmq_support.hpp"

namespace colo {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using test::Drained;
using test::RabbitmqLinks;

// What a drained queue holds of one origin, checked: every sequence of
// `expected` distinct messages, each one's first copy in sequence order
// (so in publish order per publisher), every later copy marked. Returns
// the number of duplicates.
::testing::AssertionResult at_least_once_in_order(const std::vector<Drained>& got, const std::string& origin,
                                                  std::size_t expected, std::uint64_t& duplicates) {
  std::set<std::uint64_t> seen;
  std::map<std::uint32_t, std::uint32_t> next_index;  // per publisher, first copies
  std::uint64_t last_seq = 0;
  duplicates = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const auto& d = got[i];
    if (d.origin != origin) return ::testing::AssertionFailure() << "message " << i << " has origin '" << d.origin << "'";
    const std::uint64_t seq = std::stoull(d.seq);
    if (!seen.insert(seq).second) {
      ++duplicates;
      if (d.redelivery != "1")
        return ::testing::AssertionFailure() << "sequence " << seq << " again at " << i << " without colo.redelivery";
      continue;
    }
    if (!seen.empty() && seen.size() > 1 && seq <= last_seq)
      return ::testing::AssertionFailure() << "first copy of sequence " << seq << " after " << last_seq;
    last_seq = seq;
    std::uint32_t publisher = 0, index = 0;
    if (!test::parse_text_message(d.body, publisher, index))
      return ::testing::AssertionFailure() << "message " << i << " holds '" << d.body << "'";
    if (index != next_index[publisher])
      return ::testing::AssertionFailure() << "publisher " << publisher << ": index " << index << ", expected "
                                           << next_index[publisher];
    ++next_index[publisher];
  }
  if (seen.size() != expected)
    return ::testing::AssertionFailure() << seen.size() << " distinct sequences, expected " << expected;
  return ::testing::AssertionSuccess();
}

class Mirror : public RabbitmqLinks {};

TEST_F(Mirror, twoPublishersHundredThousandThroughThreeColodKillsEachPresentInOrderDuplicatesMarked) {
  auto& h = add_host("alpha");
  write_configs({}, false);
  const std::string queue = queue_name("prices");
  append_config(h, rabbitmq_toml() + "[[link]]\nobject = \"prices\"\nkind = \"topic\"\nmode = \"mirror\"\n"
                                     "capacity = 33554432\nrabbitmq = { server = \"local\", queue = \"" + queue + "\" }\n");
  start(h);
  ASSERT_TRUE(wait_link(h, "mirror:prices", [](const json& l) { return l["state"] == "running"; }, 60s))
      << link(h, "mirror:prices").dump() << "\n" << h.colod->err();
  constexpr std::uint32_t kPerPublisher = 50'000;
  std::atomic<std::uint64_t> timeouts{0};
  std::atomic<bool> stop{false};
  std::atomic<std::uint32_t> progress{0};
  // At least 5 s of publishing (10 ms every 100 messages): the kills, at a
  // quarter, half and three quarters of publisher 1's messages, are mid-run.
  auto p1 = test::text_publisher(h.ns, "prices", 1, kPerPublisher, 120, 10ms, 100, 100ms, timeouts, stop, &progress);
  auto p2 = test::text_publisher(h.ns, "prices", 2, kPerPublisher, 120, 10ms, 100, 100ms, timeouts, stop);
  for (std::uint32_t kill = 1; kill <= 3; ++kill) {
    ASSERT_TRUE(test::wait_until([&] { return progress.load() >= kill * kPerPublisher / 4; }, 120s, 10ms));
    ASSERT_LT(progress.load(), kPerPublisher) << "the publisher ended before kill " << kill;
    kill_and_restart(h);
    json l;
    ASSERT_TRUE(wait_link(h, "mirror:prices", [](const json& j) { return j["state"] == "running"; }, 60s, &l))
        << l.dump() << "\n" << h.colod->err();
  }
  p1.join();
  p2.join();
  json l;
  ASSERT_TRUE(wait_link(h, "mirror:prices", [](const json& j) { return j["lag_messages"] == 0; }, 120s, &l)) << l.dump();
  EXPECT_EQ(l["lost"], 0);
  EXPECT_EQ(l["skipped"], 0);
  const auto got = drain(queue, 2 * kPerPublisher + 3000, 5s);
  std::uint64_t duplicates = 0;
  EXPECT_TRUE(at_least_once_in_order(got, "alpha", 2 * kPerPublisher, duplicates));
  // Only what was published and unconfirmed at a kill comes again: at most
  // the confirm window (1000) per kill.
  EXPECT_LE(duplicates, 3u * 1000u);
  std::ifstream killed(dir_ + "/alpha.killed.log");
  const std::string before((std::istreambuf_iterator<char>(killed)), std::istreambuf_iterator<char>());
  EXPECT_NE(before.find("(after the last confirmed, by its checkpoint)"), std::string::npos) << before;
  std::cerr << "[ note ] " << got.size() << " messages drained, " << duplicates << " duplicates (marked)\n";
}

TEST_F(Mirror, serverRestartedMidRunBlockLosesNothingAndCountsTheOutage) {
  auto& h = add_host("alpha");
  write_configs({}, false);
  const std::string queue = queue_name("held");
  append_config(h, rabbitmq_toml() + "[[link]]\nobject = \"held\"\nkind = \"topic\"\nmode = \"mirror\"\n"
                                     "capacity = 262144\nrabbitmq = { server = \"local\", queue = \"" + queue + "\" }\n");
  start(h);
  ASSERT_TRUE(wait_link(h, "mirror:held", [](const json& l) { return l["state"] == "running"; }, 60s)) << h.colod->err();
  constexpr std::uint32_t kCount = 40'000;  // 2,000 a second: 20 s
  std::atomic<std::uint64_t> timeouts{0};
  std::atomic<bool> stop{false};
  auto publisher = test::text_publisher(h.ns, "held", 1, kCount, 100, 10ms, 20, 100ms, timeouts, stop);
  std::this_thread::sleep_for(2s);
  const auto outage = services({"restart", "rabbitmq", "2"});  // stop, 2 s, start keeping the data
  EXPECT_TRUE(outage.exited && outage.exit_code == 0) << test::describe(outage);
  publisher.join();
  json l;
  ASSERT_TRUE(wait_link(h, "mirror:held", [](const json& j) { return j["lag_messages"] == 0; }, 120s, &l)) << l.dump();
  EXPECT_EQ(l["lost"], 0);
  EXPECT_EQ(l["outages"], 1);
  EXPECT_GT(timeouts.load(), 0u) << "the block mirror held the writer back while RabbitMQ was away";
  const auto got = drain(queue, kCount + 1000, 5s);
  std::uint64_t duplicates = 0;
  EXPECT_TRUE(at_least_once_in_order(got, "alpha", kCount, duplicates));
  EXPECT_NE(h.colod->err().find("connected again after"), std::string::npos) << h.colod->err();
  std::cerr << "[ note ] " << timeouts.load() << " publish timeout(s) of 100 ms; " << duplicates
            << " duplicates (marked)\n";
}

TEST_F(Mirror, aNewConnectionPublishesNothingUntilRabbitmqClosedTheLinksPreviousOne) {
  auto& h = add_host("alpha");
  write_configs({}, false);
  const std::string queue = queue_name("fenced");
  append_config(h, rabbitmq_toml() + "[[link]]\nobject = \"fenced\"\nkind = \"topic\"\nmode = \"mirror\"\n"
                                     "rabbitmq = { server = \"local\", queue = \"" + queue + "\" }\n");
  const std::string fence = "colo.fence.alpha." + h.ns + ".mirror:fenced";
  const char* tool = std::getenv("COLO_AMQP_TOOL");
  auto holder = test::Process::spawn({"/usr/bin/python3", tool != nullptr ? tool : "amqp_tool.py", address_, "hold", fence, "4"});
  ASSERT_TRUE(test::wait_until(
      [&] { return holder.out().find("held") != std::string::npos || holder.wait_for(0ms).has_value(); }, 30s, 10ms));
  ASSERT_EQ(holder.out(), "held\n") << holder.err();
  start(h);
  auto node = Node::open(test::node_options(h.ns)).value();
  auto topic = node.topic("fenced", OpenMode::create_or_open).value();
  auto publisher = topic.publisher().value();
  for (std::uint32_t i = 0; i < 100; ++i) {
    const std::string m = test::text_message(1, i, 40);
    ASSERT_EQ(publisher.publish(std::as_bytes(std::span(m.data(), m.size())), 1s), SendStatus::ok);
  }
  ASSERT_TRUE(test::wait_until([&] { return h.colod->err().find("previous connection (it holds") != std::string::npos; },
                               30s, 10ms))
      << h.colod->err();
  EXPECT_NE(h.colod->err().find("waiting for RabbitMQ to close this link's previous connection (it holds queue '" +
                                fence + "')"),
            std::string::npos)
      << h.colod->err();
  // The holder still has a second or more: nothing reached RabbitMQ.
  std::this_thread::sleep_for(1s);
  ASSERT_FALSE(holder.wait_for(0ms).has_value()) << "the holder ended too soon to tell";
  EXPECT_EQ(amqp({"count", queue}).out, "0\n");
  EXPECT_NE(link(h, "mirror:fenced")["state"], "running");
  const auto held = holder.wait_for(30s);
  ASSERT_TRUE(held.has_value() && WIFEXITED(*held) && WEXITSTATUS(*held) == 0) << holder.err();
  json l;
  ASSERT_TRUE(wait_link(h, "mirror:fenced", [](const json& j) { return j["acknowledged"] == 100; }, 30s, &l))
      << l.dump() << "\n" << h.colod->err();
  EXPECT_NE(h.colod->err().find("RabbitMQ closed the previous connection after"), std::string::npos) << h.colod->err();
  const auto got = drain(queue, 100, 5s);
  ASSERT_EQ(got.size(), 100u);
  for (std::uint32_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].seq, std::to_string(i));
    EXPECT_EQ(got[i].redelivery, "-");
    EXPECT_EQ(got[i].body, test::text_message(1, i, 40));
  }
}

TEST_F(Mirror, headersAsPikaReadsThemThroughAnExchangeAndABinding) {
  auto& h = add_host("alpha");
  write_configs({}, false);
  const std::string queue = queue_name("orders"), exchange = queue_name("x");
  append_config(h, rabbitmq_toml() + "[[link]]\nobject = \"orders\"\nkind = \"queue\"\nmode = \"mirror\"\n"
                                     "rabbitmq = { server = \"local\", exchange = \"" + exchange +
                                     "\", exchange_type = \"topic\", routing_key = \"orders.#\", queue = \"" + queue +
                                     "\" }\n");
  start(h);
  ASSERT_TRUE(wait_link(h, "mirror:orders", [](const json& l) { return l["state"] == "running"; }, 60s))
      << h.colod->err();
  auto node = Node::open(test::node_options(h.ns)).value();
  auto q = node.queue("orders", OpenMode::open).value();
  auto consumer = q.consumer().value();
  auto producer = q.producer().value();
  for (int i = 0; i < 100; ++i) {
    const std::string m = "body " + std::to_string(i);
    ASSERT_EQ(producer.publish(std::as_bytes(std::span(m.data(), m.size())), 1s), SendStatus::ok);
  }
  // The queue's consumer takes them all; the mirror (a tap) saw them anyway.
  for (int consumed = 0; consumed < 100;) {
    auto batch = consumer.receive_batch_for(100, 2s);
    ASSERT_FALSE(batch.empty());
    consumed += static_cast<int>(batch.size());
  }
  json l;
  ASSERT_TRUE(wait_link(h, "mirror:orders", [](const json& j) { return j["acknowledged"] == 100; }, 30s, &l)) << l.dump();
  // The routing key "orders.#" as a key is routed by the binding "orders.#".
  const auto got = drain(queue, 100, 5s);
  ASSERT_EQ(got.size(), 100u);
  const auto created = node.info("orders").value().created_realtime_ns;
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].message_id, "alpha:orders:" + std::to_string(created) + ":" + std::to_string(i));
    EXPECT_EQ(got[i].body, "body " + std::to_string(i));
    EXPECT_EQ(got[i].redelivery, "-");
    EXPECT_EQ(got[i].header_names, "-") << "no header table on a first copy";
    ASSERT_NE(got[i].timestamp, "-");
    EXPECT_GE(std::stoull(got[i].timestamp), created / 1'000'000'000) << "when colod read it, in seconds";
  }
  const auto stat = test::run_colo(h.ns, {"stat", "orders", "--socket", h.control});
  EXPECT_NE(stat.out.find("tap"), std::string::npos) << stat.out;
  EXPECT_NE(stat.out.find("link:             mirror:orders, rabbitmq mirror"), std::string::npos) << stat.out;
}

}  // namespace
}  // namespace colo
