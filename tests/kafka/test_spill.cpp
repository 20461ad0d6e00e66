// Spill links (suite `kafka`): a burst ten times a queue's ring, with one
// slow consumer, goes through a real Kafka broker and comes back.
//
//   burst...   every message consumed exactly once; no publish waits longer
//              than kMaxPublishWait (docs/kafka.md states the bound)
//   killed...  colod SIGKILLed while it spills and while it brings back:
//              every message consumed, none lost
#include <gtest/gtest.h>

#include <set>

#include "colo/node.hpp"
#include "kafka_support.hpp"

namespace colo {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using test::KafkaLinks;

// The bound docs/kafka.md states for a producer's wait while the spill
// keeps up: the time Kafka takes to acknowledge a few batches, far below
// this on a healthy broker.
constexpr auto kMaxPublishWait = 2s;
constexpr std::uint64_t kCapacity = 256 * 1024;
constexpr std::uint32_t kMessage = 100;                        // bytes: 128 of ring each
constexpr std::uint32_t kBurst = 10 * kCapacity / 128;         // ten rings' worth: 20,480

class Spill : public KafkaLinks {
 protected:
  void start_host(const std::string& topic) {
    auto& h = add_host("alpha");
    write_configs({}, false);
    append_config(h, kafka_toml() + "[[link]]\nobject = \"burst\"\nkind = \"queue\"\nmode = \"spill\"\nacks = true\n"
                                    "max_deliveries = 255\ncapacity = " + std::to_string(kCapacity) +
                                    "\nmax_message = 1024\nhigh_watermark = 0.5\nlow_watermark = 0.25\n"
                                    "kafka = { cluster = \"local\", topic = \"" + topic + "\" }\n");
    start(h);
    ASSERT_TRUE(wait_link(h, "spill:burst", [](const json& l) { return l["state"] == "running"; }, 60s))
        << h.colod->err();
  }

  // The burst from one producer thread, as fast as the queue takes it;
  // the longest single publish.
  std::thread producer(std::chrono::nanoseconds& longest) {
    return std::thread([this, &longest] {
      auto node = Node::open(test::node_options(hosts_[0].ns)).value();
      auto queue = node.queue("burst", OpenMode::open).value();
      auto pub = queue.producer().value();
      for (std::uint32_t i = 0; i < kBurst && !stop_.load(); ++i) {
        const std::string m = test::text_message(1, i, kMessage);
        const auto t0 = std::chrono::steady_clock::now();
        while (pub.publish(std::as_bytes(std::span(m.data(), m.size())), 30s) != SendStatus::ok)
          if (stop_.load()) return;
        longest = std::max<std::chrono::nanoseconds>(longest, std::chrono::steady_clock::now() - t0);
      }
    });
  }

  // One slow consumer (`work` per message): how many times it got each index.
  std::thread consumer(std::vector<std::uint32_t>& times, std::atomic<std::uint64_t>& total,
                       std::chrono::microseconds work) {
    times.assign(kBurst, 0);
    return std::thread([this, &times, &total, work] {
      auto node = Node::open(test::node_options(hosts_[0].ns)).value();
      auto queue = node.queue("burst", OpenMode::open).value();
      auto c = queue.consumer().value();
      while (!stop_.load()) {
        auto m = c.receive_for(50ms);
        if (!m) continue;
        std::uint32_t publisher = 0, index = 0;
        const std::string text(reinterpret_cast<const char*>(m->data().data()), m->data().size());
        if (test::parse_text_message(text, publisher, index) && index < kBurst) ++times[index];
        ++total;
        std::this_thread::sleep_for(work);
        m->release();
      }
    });
  }
};

TEST_F(Spill, burstOfTenRingsWithOneSlowConsumerIsConsumedExactlyOnceAndProducersWaitBoundedly) {
  const std::string topic = topic_name("burst.spill");
  start_host(topic);
  if (HasFatalFailure()) return;
  std::vector<std::uint32_t> times;
  std::atomic<std::uint64_t> total{0};
  std::chrono::nanoseconds longest{0};
  auto c = consumer(times, total, 100us);
  auto p = producer(longest);
  p.join();
  const bool all = test::wait_until([&] { return total.load() >= kBurst; }, 120s, 50ms);
  std::this_thread::sleep_for(500ms);  // anything more would be a duplicate
  stop_ = true;
  c.join();
  ASSERT_TRUE(all) << total.load() << " of " << kBurst << "; colod:\n" << hosts_[0].colod->err();
  EXPECT_EQ(total.load(), kBurst);
  for (std::uint32_t i = 0; i < kBurst; ++i) ASSERT_EQ(times[i], 1u) << "message " << i;
  EXPECT_LT(longest, kMaxPublishWait);
  json l;
  ASSERT_TRUE(wait_link(hosts_[0], "spill:burst", [](const json& j) { return j["lag_messages"] == 0; }, 30s, &l));
  EXPECT_GT(l["produced"].get<std::uint64_t>(), kBurst / 2) << "the burst went through Kafka";
  EXPECT_EQ(l["returned"], l["acknowledged"]) << "everything spilled came back";
  EXPECT_EQ(l["skipped"], 0);
  std::cerr << "[ note ] " << l["produced"] << " of " << kBurst << " messages spilled; longest publish "
            << std::chrono::duration<double, std::milli>(longest).count() << " ms\n";
}

TEST_F(Spill, colodKilledWhileSpillingAndWhileBringingBackLosesNothing) {
  const std::string topic = topic_name("burst.spill");
  start_host(topic);
  if (HasFatalFailure()) return;
  std::vector<std::uint32_t> times;
  std::atomic<std::uint64_t> total{0};
  std::chrono::nanoseconds longest{0};
  auto c = consumer(times, total, 300us);
  auto p = producer(longest);
  // While it spills: messages go out, none came back yet.
  EXPECT_TRUE(wait_link(hosts_[0], "spill:burst", [](const json& l) { return l["acknowledged"] >= 2000; }, 60s));
  kill_and_restart(hosts_[0]);
  p.join();
  ASSERT_TRUE(wait_link(hosts_[0], "spill:burst", [](const json& l) { return l["state"] == "running"; }, 60s));
  // While it brings back.
  EXPECT_TRUE(wait_link(hosts_[0], "spill:burst", [](const json& l) { return l["returned"] >= 500; }, 120s))
      << hosts_[0].colod->err();
  kill_and_restart(hosts_[0]);
  const bool all = test::wait_until(
      [&] {
        for (std::uint32_t i = 0; i < kBurst; ++i)
          if (times[i] == 0) return false;
        return true;
      },
      180s, 200ms);
  stop_ = true;
  c.join();
  std::uint32_t missing = 0, twice = 0;
  for (std::uint32_t i = 0; i < kBurst; ++i) {
    missing += times[i] == 0 ? 1 : 0;
    twice += times[i] > 1 ? 1 : 0;
  }
  EXPECT_TRUE(all);
  EXPECT_EQ(missing, 0u) << "colod:\n" << hosts_[0].colod->err();
  std::cerr << "[ note ] " << twice << " message(s) consumed twice (a batch in Kafka and still taken when colod died)\n";
}

}  // namespace
}  // namespace colo
