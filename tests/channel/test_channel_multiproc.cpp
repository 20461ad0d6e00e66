// Multi-process tests of topics and queues: real processes (fork/exec of
// colo-channel-worker), real SIGKILLs, exact counts.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "colo/node.hpp"
#include "proc.hpp"

namespace colo {
namespace {

using namespace std::chrono_literals;
using test::Process;
using test::worker_path;

std::string unique_ns(const char* tag) {
  static int counter = 0;
  return std::string(tag) + std::to_string(::getpid()) + "_" + std::to_string(counter++);
}

void remove_namespace(const std::string& ns) {
  const std::string cmd = "rm -f /dev/shm/colo." + ns + ".*";
  (void)std::system(cmd.c_str());
}

class ChannelMultiproc : public ::testing::Test {
 public:
  void SetUp() override {
    ns_ = unique_ns("cm");
    NodeOptions options;
    options.ns = ns_;
    node_.emplace(Node::open(options).value());
  }
  void TearDown() override {
    node_.reset();
    remove_namespace(ns_);
  }
  // {COMMAND, NAME, ARGS...} -> worker COMMAND NS NAME ARGS...
  std::vector<std::string> worker(std::vector<std::string> args) {
    args.insert(args.begin() + 1, ns_);
    args.insert(args.begin(), worker_path());
    return args;
  }
  std::string ns_;
  std::optional<Node> node_;
};

std::map<std::string, std::uint64_t> parse_summary(const std::string& line) {
  std::map<std::string, std::uint64_t> out;
  std::istringstream in(line);
  std::string field;
  while (in >> field) {
    const auto eq = field.find('=');
    if (eq != std::string::npos) out[field.substr(0, eq)] = std::stoull(field.substr(eq + 1));
  }
  return out;
}

TEST_F(ChannelMultiproc, everySubscriberGetsEveryMessageOnceInOrderWithChecksums) {
  // 2 publishers x 3 subscribers, 1,000,000 messages of random sizes.
  constexpr std::uint64_t kPerPublisher = 500'000;
  ASSERT_TRUE(node_->topic("t", OpenMode::create, {1 << 20, 512}));
  std::vector<std::unique_ptr<Process>> subs;
  for (int i = 0; i < 3; ++i) {
    subs.push_back(std::make_unique<Process>(worker({"subscribe", "t", std::to_string(2 * kPerPublisher), "20000"})));
    ASSERT_EQ(subs.back()->read_line(10s), "ready");
  }
  Process p0(worker({"publish", "t", "0", std::to_string(kPerPublisher), "11", "512"}));
  Process p1(worker({"publish", "t", "1", std::to_string(kPerPublisher), "22", "512"}));
  EXPECT_EQ(p0.wait(120s), 0);
  EXPECT_EQ(p1.wait(120s), 0);
  for (auto& sub : subs) {
    auto line = sub->read_line(60s);
    ASSERT_TRUE(line.has_value());
    const auto s = parse_summary(*line);
    EXPECT_EQ(s.at("received"), 2 * kPerPublisher) << *line;
    EXPECT_EQ(s.at("bad"), 0u) << *line;
    EXPECT_EQ(s.at("order"), 0u) << *line;
    EXPECT_EQ(s.at("missed"), 0u) << *line;
    EXPECT_EQ(sub->wait(10s), 0);
  }
}

// Reads a consumer log: ids received (G) and acknowledged (A).
struct ConsumerLog {
  std::multiset<std::uint64_t> got;
  std::set<std::uint64_t> acked;
  std::map<std::uint64_t, std::uint32_t> max_deliveries;
};
ConsumerLog read_log(const std::string& path) {
  ConsumerLog log;
  std::ifstream in(path);
  std::string kind;
  unsigned long long id = 0;
  while (in >> kind >> id) {
    if (kind == "G") {
      unsigned deliveries = 0;
      in >> deliveries;
      log.got.insert(id);
      auto& d = log.max_deliveries[id];
      d = std::max<std::uint32_t>(d, deliveries);
    } else {
      log.acked.insert(id);
    }
  }
  return log;
}

std::uint64_t id_of(std::uint32_t publisher, std::uint32_t index) { return std::uint64_t{publisher} << 32 | index; }

TEST_F(ChannelMultiproc, eachQueueMessageGoesToExactlyOneConsumer) {
  // 3 producers x 4 consumers, 1,000,000 messages.
  constexpr std::uint64_t kPerProducer = 333'334;
  ASSERT_TRUE(node_->queue("q", OpenMode::create, {1 << 20, 256, false, 5}));
  std::vector<std::string> logs;
  std::vector<std::unique_ptr<Process>> consumers;
  for (int i = 0; i < 4; ++i) {
    logs.push_back("/tmp/colo-test-" + ns_ + "-c" + std::to_string(i));
    ::unlink(logs.back().c_str());
    consumers.push_back(std::make_unique<Process>(worker({"consume", "q", logs.back(), "3000"})));
    ASSERT_EQ(consumers.back()->read_line(10s), "ready");
  }
  std::vector<std::unique_ptr<Process>> producers;
  for (int i = 0; i < 3; ++i)
    producers.push_back(std::make_unique<Process>(
        worker({"publish", "q", std::to_string(i), std::to_string(kPerProducer), std::to_string(100 + i), "256"})));
  for (auto& p : producers) EXPECT_EQ(p->wait(120s), 0);
  for (auto& c : consumers) EXPECT_EQ(c->wait(60s), 0);
  std::map<std::uint64_t, int> seen;
  for (const auto& path : logs) {
    for (auto id : read_log(path).got) ++seen[id];
    ::unlink(path.c_str());
  }
  std::uint64_t missing = 0, duplicated = 0;
  for (std::uint32_t p = 0; p < 3; ++p)
    for (std::uint32_t i = 0; i < kPerProducer; ++i) {
      const auto it = seen.find(id_of(p, i));
      if (it == seen.end()) ++missing;
      else if (it->second != 1) ++duplicated;
    }
  EXPECT_EQ(missing, 0u);
  EXPECT_EQ(duplicated, 0u);
  EXPECT_EQ(seen.size(), 3 * kPerProducer);  // nothing else (no corrupt id) was received
}

// Consumers SIGKILLed at random 100 times while 3 producers publish: with
// `batches`, producers use the batch API and consumers take up to 64
// messages at once and acknowledge them together.
void acked_queue_survives_kills(ChannelMultiproc& t, bool batches) {
  constexpr std::uint64_t kPerProducer = 20'000;
  constexpr int kKills = 100;
  ASSERT_TRUE(t.node_->queue("q", OpenMode::create, {1 << 18, 128, true, 255}));
  std::vector<std::string> logs;
  std::vector<std::unique_ptr<Process>> consumers;
  auto start_consumer = [&] {
    logs.push_back("/tmp/colo-test-" + t.ns_ + "-c" + std::to_string(logs.size()));
    ::unlink(logs.back().c_str());
    consumers.push_back(std::make_unique<Process>(batches ? t.worker({"consume", "q", logs.back(), "3000", "ack", "batch"}) : t.worker({"consume", "q", logs.back(), "3000", "ack"})));
    return consumers.back()->read_line(10s) == std::optional<std::string>("ready");
  };
  std::vector<std::size_t> live;
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(start_consumer());
    live.push_back(consumers.size() - 1);
  }
  std::vector<std::unique_ptr<Process>> producers;
  for (int i = 0; i < 3; ++i)
    producers.push_back(std::make_unique<Process>(
        batches ? t.worker({"publish-batch", "q", std::to_string(i), std::to_string(kPerProducer), std::to_string(7 + i),
                            "128", "32"})
                : t.worker({"publish", "q", std::to_string(i), std::to_string(kPerProducer), std::to_string(7 + i),
                            "128"})));
  std::mt19937 rng(12345);
  std::set<std::size_t> killed;
  for (int k = 0; k < kKills; ++k) {
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 20'000));
    const std::size_t victim_at = rng() % live.size();
    consumers[live[victim_at]]->kill();
    consumers[live[victim_at]]->wait(5s);
    killed.insert(live[victim_at]);
    ASSERT_TRUE(start_consumer());
    live[victim_at] = consumers.size() - 1;
  }
  for (auto& p : producers) EXPECT_EQ(p->wait(120s), 0);
  for (auto i : live) EXPECT_EQ(consumers[i]->wait(60s), 0);

  std::map<std::uint64_t, int> received;
  std::set<std::uint64_t> acked, taken_unacked_by_killed;
  for (std::size_t i = 0; i < logs.size(); ++i) {
    const auto log = read_log(logs[i]);
    ::unlink(logs[i].c_str());
    for (auto id : log.got) ++received[id];
    acked.insert(log.acked.begin(), log.acked.end());
    for (auto id : log.got)
      if (killed.count(i) != 0 && log.acked.count(id) == 0) taken_unacked_by_killed.insert(id);
  }
  std::uint64_t lost = 0, bad_duplicates = 0;
  for (std::uint32_t p = 0; p < 3; ++p)
    for (std::uint32_t i = 0; i < kPerProducer; ++i) {
      const auto id = id_of(p, i);
      const auto it = received.find(id);
      if (it == received.end()) ++lost;
      else if (it->second > 1 && taken_unacked_by_killed.count(id) == 0) ++bad_duplicates;
    }
  EXPECT_EQ(lost, 0u);              // no message lost at all (acked or not)
  EXPECT_EQ(bad_duplicates, 0u);    // duplicates only where a consumer died before acking
  EXPECT_EQ(received.size(), 3 * kPerProducer);
  auto q = t.node_->queue("q", OpenMode::open).value();
  EXPECT_EQ(q.stats().depth, 0u);
}

TEST_F(ChannelMultiproc, ackedQueueLosesNothingWhenConsumersAreKilled) { acked_queue_survives_kills(*this, false); }

TEST_F(ChannelMultiproc, ackedQueueLosesNothingWhenBatchConsumersAreKilled) { acked_queue_survives_kills(*this, true); }

TEST_F(ChannelMultiproc, messageGoesToDeadLetterQueueAfterMaxDeliveries) {
  ASSERT_TRUE(node_->queue("jobs", OpenMode::create, {1 << 16, 128, true, 3}));
  {
    auto q = node_->queue("jobs", OpenMode::open).value();
    auto producer = q.producer().value();
    const char text[] = "poison";
    ASSERT_EQ(producer.publish(std::as_bytes(std::span(text, 6)), 1s), SendStatus::ok);
  }
  // Three consumers in turn take it and die without acknowledging.
  for (std::uint32_t attempt = 1; attempt <= 3; ++attempt) {
    Process c(worker({"consume-forever-noack", "jobs"}));
    ASSERT_EQ(c.read_line(10s), "took " + std::to_string(attempt));
    c.kill();
    c.wait(5s);
  }
  // The fourth delivery would exceed the limit: it goes to jobs.dlq.
  auto q = node_->queue("jobs", OpenMode::open).value();
  auto consumer = q.consumer().value();
  EXPECT_FALSE(consumer.receive_for(300ms).has_value());
  auto dlq = node_->queue("jobs.dlq", OpenMode::open).value();
  auto dlq_consumer = dlq.consumer().value();
  auto dead = dlq_consumer.receive_for(1s);
  ASSERT_TRUE(dead.has_value());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(dead->data().data()), dead->data().size()), "poison");
  EXPECT_EQ(dead->deliveries(), 1u);  // a new message in the dead-letter queue
}

TEST_F(ChannelMultiproc, writerKilledBetweenClaimAndCommitIsSkippedWithinBound) {
  // 100 times: a writer claims, writes half, and is SIGKILLed; the next
  // message must reach the subscriber within the bound, the torn one never.
  ASSERT_TRUE(node_->topic("t", OpenMode::create, {1 << 16, 256}));
  auto topic = node_->topic("t", OpenMode::open).value();
  auto sub = topic.subscribe().value();
  auto pub = topic.publisher().value();
  for (int i = 0; i < 100; ++i) {
    Process hanger(worker({"claim-and-hang", "t", "200"}));
    ASSERT_EQ(hanger.read_line(10s), "claimed");
    hanger.kill();
    hanger.wait(5s);
    const std::uint32_t value = static_cast<std::uint32_t>(i);
    ASSERT_EQ(pub.publish(std::as_bytes(std::span(&value, 1)), 1s), SendStatus::ok);
    const auto start = std::chrono::steady_clock::now();
    auto m = sub.receive_for(2s);
    ASSERT_TRUE(m.has_value()) << "iteration " << i;
    EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
    ASSERT_EQ(m->data().size(), 4u) << "a torn message was delivered";
    std::uint32_t got = 0;
    std::memcpy(&got, m->data().data(), 4);
    EXPECT_EQ(got, value);
  }
  EXPECT_EQ(topic.stats().dead_claims, 100u);
}

TEST_F(ChannelMultiproc, batchPublishersAndBatchSubscribersDeliverEveryMessageOnceInOrder) {
  // 2 batch publishers (publish_batch and LoanBatch in turn) x 3 subscribers
  // (two taking batches, one a message at a time), 400,000 messages.
  constexpr std::uint64_t kPerPublisher = 200'000;
  ASSERT_TRUE(node_->topic("t", OpenMode::create, {1 << 20, 512}));
  std::vector<std::unique_ptr<Process>> subs;
  for (int i = 0; i < 3; ++i) {
    std::vector<std::string> args{"subscribe", "t", std::to_string(2 * kPerPublisher), "20000"};
    if (i < 2) args.push_back("batch");
    subs.push_back(std::make_unique<Process>(worker(args)));
    ASSERT_EQ(subs.back()->read_line(10s), "ready");
  }
  Process p0(worker({"publish-batch", "t", "0", std::to_string(kPerPublisher), "11", "512", "64"}));
  Process p1(worker({"publish-batch", "t", "1", std::to_string(kPerPublisher), "22", "512", "7"}));
  EXPECT_EQ(p0.wait(120s), 0);
  EXPECT_EQ(p1.wait(120s), 0);
  for (auto& sub : subs) {
    auto line = sub->read_line(60s);
    ASSERT_TRUE(line.has_value());
    const auto s = parse_summary(*line);
    EXPECT_EQ(s.at("received"), 2 * kPerPublisher) << *line;
    EXPECT_EQ(s.at("bad"), 0u) << *line;
    EXPECT_EQ(s.at("order"), 0u) << *line;
    EXPECT_EQ(s.at("missed"), 0u) << *line;
    EXPECT_EQ(sub->wait(10s), 0);
  }
  auto topic = node_->topic("t", OpenMode::open).value();
  EXPECT_EQ(topic.stats().published, 2 * kPerPublisher);
}

// A writer killed halfway through a batch: the published part is delivered,
// the rest skipped and counted; the next message follows.
void writer_killed_mid_batch(ChannelMultiproc& t, bool exclusive) {
  ASSERT_TRUE(t.node_->topic("t", OpenMode::create, {.capacity = 1 << 16, .max_message = 256,
                                                     .exclusive_publisher = exclusive}));
  auto topic = t.node_->topic("t", OpenMode::open).value();
  auto sub = topic.subscribe().value();
  for (int round = 0; round < 20; ++round) {
    Process hanger(t.worker({"batch-and-hang", "t", "10", "64", "4"}));
    ASSERT_EQ(hanger.read_line(10s), "claimed");
    auto got = sub.receive_batch_for(64, 2s);
    std::size_t taken = got.size();
    got.release();
    while (taken < 4) {  // the four may come in more than one batch
      auto more = sub.receive_batch_for(64, 2s);
      ASSERT_FALSE(more.empty()) << "round " << round << ": " << taken << " of 4";
      taken += more.size();
    }
    ASSERT_EQ(taken, 4u) << "round " << round;
    if (exclusive) {
      auto refused = topic.publisher();
      ASSERT_FALSE(refused) << "a second live publisher of an exclusive topic";
      EXPECT_EQ(refused.error().code, Errc::busy);
      EXPECT_NE(refused.error().message.find("exclusive publisher"), std::string::npos) << refused.error().message;
    }
    hanger.kill();
    hanger.wait(5s);
    auto pub = topic.publisher().value();  // exclusive: free again once its holder died
    const std::uint32_t value = static_cast<std::uint32_t>(round);
    ASSERT_EQ(pub.publish(std::as_bytes(std::span(&value, 1)), 1s), SendStatus::ok);
    auto m = sub.receive_for(2s);
    ASSERT_TRUE(m.has_value()) << "round " << round;
    ASSERT_EQ(m->data().size(), 4u) << "an unpublished message was delivered";
    std::uint32_t v = 0;
    std::memcpy(&v, m->data().data(), 4);
    EXPECT_EQ(v, value);
    EXPECT_FALSE(sub.try_receive().has_value());
  }
  EXPECT_EQ(topic.stats().dead_claims, 20u * 6);
}

TEST_F(ChannelMultiproc, sharedWriterKilledHalfwayThroughABatchDeliversThePublishedPart) {
  writer_killed_mid_batch(*this, false);
}

TEST_F(ChannelMultiproc, exclusiveWriterKilledHalfwayThroughABatchDeliversThePublishedPart) {
  writer_killed_mid_batch(*this, true);
}

TEST_F(ChannelMultiproc, hostileWritesNeverCrashReaders) {
  // A hostile process writes random bytes over the ring while a publisher
  // and a subscriber work: they must not crash or hang (and under ASan,
  // never touch memory out of bounds); bad records are counted.
  ASSERT_TRUE(node_->topic("t", OpenMode::create, {1 << 16, 256}));
  Process sub(worker({"subscribe", "t", "1000000000", "1500"}));
  ASSERT_EQ(sub.read_line(10s), "ready");
  Process pub(worker({"publish", "t", "0", "200000", "5", "256"}));
  Process hostile({worker_path(), "hostile", ns_, "t", "1.0", "99"});
  EXPECT_EQ(hostile.wait(20s), 0);
  // Publisher and subscriber end by themselves (the publisher may give up
  // with a clear error when the ring's state is garbage): no crash, no hang.
  auto pub_status = pub.wait(60s);
  ASSERT_TRUE(pub_status.has_value()) << "publisher hung";
  EXPECT_TRUE(*pub_status == 0 || *pub_status == 2) << "publisher crashed: status " << *pub_status;
  auto line = sub.read_line(60s);
  ASSERT_TRUE(line.has_value()) << "subscriber hung";
  EXPECT_EQ(sub.wait(10s), 0) << "subscriber crashed";
  auto topic = node_->topic("t", OpenMode::open);
  ASSERT_TRUE(topic.has_value()) << topic.error().message;
  const auto s = parse_summary(*line);
  const auto stats = topic->stats();
  std::uint64_t skipped = 0;
  for (const auto& r : stats.readers) skipped += r.skipped_bad;
  // The damage shows somewhere: bad checksums seen by the subscriber, or
  // invalid records counted by the ring.
  EXPECT_GT(s.at("bad") + s.at("order") + stats.bad_records + skipped + stats.dead_claims, 0u) << *line;
}

}  // namespace
}  // namespace colo
