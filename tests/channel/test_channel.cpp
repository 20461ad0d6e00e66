// Unit tests of topics and queues in one process: sizes, zero copy,
// backpressure classes, history, acknowledgements, validation.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "colo/internal/federation.hpp"
#include "colo/internal/links.hpp"
#include "colo/metadata.hpp"
#include "colo/node.hpp"

namespace colo {
namespace {

using namespace std::chrono_literals;

std::span<const std::byte> bytes_of(const std::string& s) { return std::as_bytes(std::span(s.data(), s.size())); }
std::string text_of(const Message& m) { return std::string(reinterpret_cast<const char*>(m.data().data()), m.data().size()); }

class ChannelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static int counter = 0;
    ns_ = "cu" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
    NodeOptions options;
    options.ns = ns_;
    node_.emplace(Node::open(options).value());
  }
  void TearDown() override {
    node_.reset();
    (void)std::system(("rm -f /dev/shm/colo." + ns_ + ".*").c_str());
  }
  std::string ns_;
  std::optional<Node> node_;
};

TEST_F(ChannelTest, carriesMessagesFromZeroBytesToTheMaximum) {
  auto sut = node_->topic("t", OpenMode::create, {1 << 16, 1000}).value();
  auto sub = sut.subscribe().value();
  auto pub = sut.publisher().value();
  for (std::uint32_t size : {0u, 1u, 15u, 16u, 17u, 999u, 1000u}) {
    std::string payload(size, static_cast<char>('a' + size % 26));
    ASSERT_EQ(pub.publish(bytes_of(payload), 1s), SendStatus::ok) << size;
    auto m = sub.receive_for(1s);
    ASSERT_TRUE(m.has_value()) << size;
    EXPECT_EQ(text_of(*m), payload);
  }
}

// A subscriber that keeps sleeping turns the topic to fenced commits after
// 64 sleeps (shm/ring.hpp, WAITING), and stats() says so.
TEST_F(ChannelTest, statsShowFencedCommitsOnceSubscribersHaveSleptSixtyFourTimes) {
  auto sut = node_->topic("t", OpenMode::create, {1 << 16, 1000}).value();
  auto sub = sut.subscribe().value();
  if (sut.stats().fenced_commits) GTEST_SKIP() << "no membarrier(2) here: commits are fenced from the start";
  // Its sleeps are the topic's only ones: fenced exactly from the 64th on.
  for (;;) {
    const ChannelStats stats = sut.stats();
    const std::uint64_t waits = stats.readers.at(0).waits;
    ASSERT_EQ(stats.fenced_commits, waits >= 64) << "after " << waits << " sleeps";
    if (waits >= 66) break;
    ASSERT_FALSE(sub.receive_for(1ms).has_value());
  }
  auto pub = sut.publisher().value();
  ASSERT_EQ(pub.publish(bytes_of("after"), 1s), SendStatus::ok);
  auto m = sub.receive_for(5s);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(text_of(*m), "after");
}

TEST_F(ChannelTest, refusesMessageLargerThanTheMaximum) {
  auto sut = node_->topic("t", OpenMode::create, {1 << 16, 1000}).value();
  auto pub = sut.publisher().value();
  EXPECT_EQ(pub.publish(bytes_of(std::string(1001, 'x')), 1s), SendStatus::too_large);
  EXPECT_FALSE(pub.try_loan(1001).has_value());
  EXPECT_EQ(pub.last_status(), SendStatus::too_large);
}

TEST_F(ChannelTest, refusesImpossibleConfigurations) {
  EXPECT_EQ(node_->topic("a", OpenMode::create, {1000, 100}).error().code, Errc::invalid_argument);  // not a power of two
  EXPECT_EQ(node_->topic("b", OpenMode::create, {4096, 4000}).error().code, Errc::invalid_argument);  // does not fit twice
  EXPECT_EQ(node_->queue("c", OpenMode::create, {4096, 100, true, 0}).error().code, Errc::invalid_argument);
}

TEST_F(ChannelTest, reopeningWithOtherParametersIsAClearError) {
  ASSERT_TRUE(node_->topic("t", OpenMode::create, {1 << 16, 1000}));
  auto again = node_->topic("t", OpenMode::create_or_open, {1 << 17, 1000});
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().code, Errc::parameter_mismatch);
  EXPECT_NE(again.error().message.find("capacity 65536"), std::string::npos) << again.error().message;
  EXPECT_EQ(node_->queue("t", OpenMode::create_or_open).error().code, Errc::kind_mismatch);
  EXPECT_EQ(node_->topic("missing", OpenMode::open).error().code, Errc::not_found);
}

TEST_F(ChannelTest, abandonedLoanIsNeverDelivered) {
  auto sut = node_->topic("t", OpenMode::create, {1 << 16, 100}).value();
  auto sub = sut.subscribe().value();
  auto pub = sut.publisher().value();
  {
    auto loan = pub.try_loan(10).value();
    std::memset(loan.data().data(), 'x', 10);
    loan.abandon();
  }
  { auto loan = pub.try_loan(5).value(); }  // dropped: abandoned too
  ASSERT_EQ(pub.publish(bytes_of("kept"), 1s), SendStatus::ok);
  auto m = sub.receive_for(1s);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(text_of(*m), "kept");
  m->release();
  EXPECT_FALSE(sub.try_receive().has_value());
  EXPECT_EQ(sut.stats().publishers.at(0).abandoned, 2u);
}

TEST_F(ChannelTest, blockingSubscriberHoldsWritersBackUntilTimeout) {
  auto sut = node_->topic("t", OpenMode::create, {4096, 100}).value();
  auto sub = sut.subscribe().value();  // never reads
  auto pub = sut.publisher().value();
  const std::string payload(100, 'p');  // 128-byte records: 32 fit in 4 KiB
  int sent = 0;
  while (pub.try_publish(bytes_of(payload)) == SendStatus::ok) ++sent;
  EXPECT_EQ(sent, 32);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(pub.publish(bytes_of(payload), 50ms), SendStatus::timed_out);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 50ms);
  // Reading one frees room for one more.
  sub.receive_for(1s)->release();
  EXPECT_EQ(pub.try_publish(bytes_of(payload)), SendStatus::ok);
}

TEST_F(ChannelTest, lossySubscriberIsLappedAndCountsExactlyWhatItMissed) {
  auto sut = node_->topic("t", OpenMode::create, {4096, 100}).value();
  auto sub = sut.subscribe({Backpressure::lossy, 0, std::nullopt}).value();
  auto pub = sut.publisher().value();
  for (std::uint32_t i = 0; i < 100; ++i) ASSERT_EQ(pub.try_publish(std::as_bytes(std::span(&i, 1))), SendStatus::ok);
  // 100 messages of 4 bytes = 100 records of 32 bytes; the ring keeps the
  // last 128: nothing lost yet. Now 200 more: the oldest go.
  for (std::uint32_t i = 100; i < 300; ++i) ASSERT_EQ(pub.try_publish(std::as_bytes(std::span(&i, 1))), SendStatus::ok);
  auto m = sub.try_receive();
  ASSERT_TRUE(m.has_value());
  std::uint32_t first = 0;
  std::memcpy(&first, m->data().data(), 4);
  EXPECT_EQ(sub.missed(), first);  // everything before the first one it got
  EXPECT_GT(first, 0u);
  std::uint32_t expected = first;
  do {
    std::uint32_t got = 0;
    std::memcpy(&got, m->data().data(), 4);
    EXPECT_EQ(got, expected++);
    m->release();
    m = sub.try_receive();
  } while (m.has_value());
  EXPECT_EQ(expected, 300u);
}

TEST_F(ChannelTest, newSubscriberGetsRequestedHistory) {
  auto sut = node_->topic("t", OpenMode::create, {1 << 16, 100}).value();
  auto pub = sut.publisher().value();
  for (int i = 0; i < 10; ++i) ASSERT_EQ(pub.publish(bytes_of("m" + std::to_string(i)), 1s), SendStatus::ok);
  auto late = sut.subscribe({Backpressure::block, 3, std::nullopt}).value();
  auto fresh = sut.subscribe().value();
  for (const char* want : {"m7", "m8", "m9"}) {
    auto m = late.try_receive();
    ASSERT_TRUE(m.has_value());
    EXPECT_EQ(text_of(*m), want);
  }
  EXPECT_FALSE(late.try_receive().has_value());
  EXPECT_FALSE(fresh.try_receive().has_value());  // only what is published after it subscribed
}

TEST_F(ChannelTest, topicHistoryIsKeptThroughReclaimAndIsTheDefaultStart) {
  // 4 KiB ring of 64-byte records: 64 records; reclaim runs every few messages.
  auto sut = node_->topic("t", OpenMode::create, {4096, 16, 20}).value();
  auto pub = sut.publisher().value();
  for (std::uint32_t i = 0; i < 1000; ++i)
    ASSERT_EQ(pub.publish(std::as_bytes(std::span(&i, 1)), 1s), SendStatus::ok) << i;
  EXPECT_GE(sut.stats().retained, 20u);
  auto late = sut.subscribe().value();  // the topic's history: 20 back
  for (std::uint32_t want = 980; want < 1000; ++want) {
    auto m = late.try_receive();
    ASSERT_TRUE(m.has_value()) << want;
    std::uint32_t got = 0;
    std::memcpy(&got, m->data().data(), 4);
    EXPECT_EQ(got, want);
  }
  EXPECT_FALSE(late.try_receive().has_value());
  auto fresh = sut.subscribe({Backpressure::block, 0, std::nullopt}).value();  // asked for none
  EXPECT_FALSE(fresh.try_receive().has_value());
}

TEST_F(ChannelTest, historyIsAParameterOfTheTopic) {
  ASSERT_TRUE(node_->topic("t", OpenMode::create, {1 << 16, 1000, 5}));
  auto again = node_->topic("t", OpenMode::create_or_open, {1 << 16, 1000, 6});
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().code, Errc::parameter_mismatch);
  EXPECT_NE(again.error().message.find("history 5"), std::string::npos) << again.error().message;
  EXPECT_EQ(node_->topic("t", OpenMode::open).value().stats().history, 5u);
}

TEST_F(ChannelTest, relayedMessageCarriesItsOriginAndLocalOnesDoNot) {
  auto sut = node_->topic("t", OpenMode::create, {1 << 16, 1000, 0}).value();
  auto sub = sut.subscribe().value();
  auto pub = sut.publisher().value();
  ASSERT_EQ(internal::publish_relayed(pub, 7, 42, bytes_of(std::string(1000, 'r')), 1s), SendStatus::ok);  // max size + prefix fits
  ASSERT_EQ(pub.publish(bytes_of("local"), 1s), SendStatus::ok);
  ASSERT_EQ(internal::publish_relayed(pub, 7, 43, bytes_of(""), 1s), SendStatus::ok);
  EXPECT_EQ(internal::publish_relayed(pub, 0, 1, bytes_of("x"), 1s), SendStatus::corrupt);  // origin 0 is "this host"
  auto first = sub.try_receive();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(text_of(*first), std::string(1000, 'r'));
  EXPECT_EQ(first->origin(), 7u);
  EXPECT_EQ(first->origin_sequence(), 42u);
  first->release();
  auto second = sub.try_receive();
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(text_of(*second), "local");
  EXPECT_EQ(second->origin(), 0u);
  second->release();
  auto third = sub.try_receive();
  ASSERT_TRUE(third.has_value());
  EXPECT_EQ(third->data().size(), 0u);
  EXPECT_EQ(third->origin_sequence(), 43u);
  third->release();
  EXPECT_FALSE(sub.try_receive().has_value());
  const auto high = internal::relayed_high_water(sut);
  ASSERT_EQ(high.size(), 1u);
  EXPECT_EQ(high.at(7), 43u);
}

// The metadata of a Kafka record, as colod's source writes it.
std::vector<std::byte> kafka_record_metadata(std::int32_t partition, std::int64_t offset, bool with_key) {
  internal::MetadataWriter w;
  w.add(MetadataType::system, std::string_view("kafka"));
  w.add(MetadataType::topic, std::string_view("orders"));
  w.add_i32(MetadataType::partition, partition);
  w.add_i64(MetadataType::offset, offset);
  w.add_i64(MetadataType::timestamp_ms, 1700000000123);
  if (with_key) w.add(MetadataType::key, bytes_of("k-" + std::to_string(offset)));
  w.add_header("trace", bytes_of("abc"));
  w.add_header("empty", bytes_of(""));
  w.add_header("nothing", std::nullopt);
  w.add(static_cast<MetadataType>(999), std::string_view("a field of a later colod"));
  const auto bytes = w.bytes();
  return {bytes.begin(), bytes.end()};
}

TEST_F(ChannelTest, annotatedMessagesCarryTheirMetadataToSubscribersAndBatches) {
  auto sut = node_->topic("t", OpenMode::create, {1 << 16, 1000, 0}).value();
  auto sub = sut.subscribe().value();
  auto pub = sut.publisher().value();
  const auto m0 = kafka_record_metadata(2, 41, true);
  const auto m1 = kafka_record_metadata(0, 7, false);
  const std::string first = "first", empty, plain = "no metadata";  // the spans below point into these
  const internal::AnnotatedMessage batch[] = {
      {5, 41, m0, bytes_of(first)},
      {5, 7, m1, bytes_of(empty)},
      {0, 0, {}, bytes_of(plain)},
  };
  std::uint64_t sequences[3] = {};
  ASSERT_EQ(internal::publish_annotated(pub, batch, 1s, sequences), 3u);
  EXPECT_EQ(sequences[0], 0u);
  EXPECT_EQ(sequences[2], 2u);
  auto got = sub.receive_batch_for(8, 1s);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].origin(), 5u);
  EXPECT_EQ(got[0].origin_sequence(), 41u);
  auto kafka = kafka_metadata(got[0].metadata());
  ASSERT_TRUE(kafka.has_value());
  EXPECT_EQ(kafka->topic, "orders");
  EXPECT_EQ(kafka->partition, 2);
  EXPECT_EQ(kafka->offset, 41);
  EXPECT_EQ(kafka->timestamp_ms, 1700000000123);
  ASSERT_TRUE(kafka->key.has_value());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(kafka->key->data()), kafka->key->size()), "k-41");
  ASSERT_EQ(kafka->headers.size(), 3u);
  EXPECT_EQ(kafka->headers[0].name, "trace");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(kafka->headers[0].value->data()), kafka->headers[0].value->size()),
            "abc");
  EXPECT_EQ(kafka->headers[1].name, "empty");
  EXPECT_EQ(kafka->headers[1].value->size(), 0u);
  EXPECT_EQ(kafka->headers[2].name, "nothing");
  EXPECT_FALSE(kafka->headers[2].value.has_value());
  EXPECT_EQ(kafka->redelivery, 0u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(got[0].data().data()), got[0].data().size()), "first");
  auto second = kafka_metadata(got[1].metadata());
  ASSERT_TRUE(second.has_value());
  EXPECT_FALSE(second->key.has_value()) << "a null key has no field";
  EXPECT_EQ(got[1].data().size(), 0u);
  EXPECT_TRUE(got[2].metadata().empty());
  EXPECT_EQ(got[2].origin(), 0u);
  got.release();
  // The same through a single Message, and the ring read back for a restart.
  auto pub2 = sut.publisher().value();
  const std::string again = "again";
  const internal::AnnotatedMessage one[] = {{5, 42, m0, bytes_of(again)}};
  ASSERT_EQ(internal::publish_annotated(pub2, one, 1s), 1u);
  auto message = sub.receive_for(1s);
  ASSERT_TRUE(message.has_value());
  EXPECT_EQ(kafka_metadata(message->metadata())->offset, 41);
  message->release();
  std::vector<std::int64_t> offsets;
  internal::for_each_metadata(sut, [&](std::uint32_t origin, std::uint64_t, std::span<const std::byte> m) {
    EXPECT_EQ(origin, 5u);
    offsets.push_back(kafka_metadata(m)->offset);
  });
  EXPECT_EQ(offsets, (std::vector<std::int64_t>{41, 7, 41}));
}

TEST_F(ChannelTest, annotatedMessageLargerThanTheMaximumWithItsMetadataIsRefusedAndTheRestWaits) {
  auto sut = node_->topic("t", OpenMode::create, {1 << 16, 100, 0}).value();
  auto pub = sut.publisher().value();
  const auto meta = kafka_record_metadata(0, 1, true);  // more than 100 bytes by itself
  const std::string fits = "fits", x = "x", after = "after";
  const internal::AnnotatedMessage batch[] = {{5, 1, {}, bytes_of(fits)}, {5, 2, meta, bytes_of(x)},
                                              {5, 3, {}, bytes_of(after)}};
  EXPECT_EQ(internal::publish_annotated(pub, batch, 1s), 1u);
  EXPECT_EQ(pub.last_status(), SendStatus::too_large);
  EXPECT_GT(internal::annotated_size(meta.size(), 1), 100u);
  EXPECT_EQ(internal::annotated_size(0, 100), 100u);
}

TEST_F(ChannelTest, metadataDecoderRefusesWhatIsNotAWellFormedKafkaRecord) {
  EXPECT_FALSE(kafka_metadata({}).has_value());
  internal::MetadataWriter other;
  other.add(MetadataType::system, std::string_view("amqp"));
  EXPECT_FALSE(kafka_metadata(other.bytes()).has_value()) << "another system's metadata";
  auto truncated = kafka_record_metadata(1, 2, true);
  truncated.pop_back();
  EXPECT_FALSE(kafka_metadata(truncated).has_value());
  MetadataReader reader(truncated);
  while (reader.next()) {
  }
  EXPECT_FALSE(reader.ok());
  internal::MetadataWriter bad_width;
  bad_width.add(MetadataType::system, std::string_view("kafka"));
  bad_width.add(MetadataType::partition, std::string_view("xy"));  // not 4 bytes
  EXPECT_FALSE(kafka_metadata(bad_width.bytes()).has_value());
}

TEST_F(ChannelTest, queueTapSeesEveryMessageAndReleasedBelowFollowsTheConsumers) {
  auto sut = node_->queue("q", OpenMode::create, {1 << 16, 100, true, 5}).value();
  auto tap = internal::subscribe_tap(sut, std::nullopt).value();
  auto consumer = sut.consumer().value();
  auto producer = sut.producer().value();
  for (int i = 0; i < 6; ++i) ASSERT_EQ(producer.publish(bytes_of("m" + std::to_string(i)), 1s), SendStatus::ok);
  EXPECT_EQ(internal::published(sut), 6u);
  EXPECT_EQ(internal::released_below(sut), 0u);
  EXPECT_EQ(internal::queued(sut).bytes, 6u * 64);  // 2-byte messages take 32 bytes, in 64-byte claims
  EXPECT_EQ(internal::queued(sut).messages, 6u);
  auto taken = consumer.receive_batch_for(4, 1s);
  ASSERT_EQ(taken.size(), 4u);
  EXPECT_EQ(internal::released_below(sut), 0u) << "taken, not acknowledged";
  EXPECT_EQ(internal::queued(sut).bytes, 2u * 64 + 32) << "two claims, and the filler after the fourth message";
  EXPECT_EQ(internal::queued(sut).messages, 2u);
  taken.release();
  EXPECT_EQ(internal::released_below(sut), 4u);
  auto seen = tap.receive_batch_for(16, 1s);
  ASSERT_EQ(seen.size(), 6u);
  for (std::size_t i = 0; i < 6; ++i) EXPECT_EQ(seen[i].sequence(), i);
  EXPECT_EQ(internal::backlog(tap).messages, 6u) << "a held batch is not read yet";
  seen.release();
  EXPECT_EQ(internal::backlog(tap).messages, 0u);
  const auto stats = sut.stats();
  ASSERT_EQ(stats.readers.size(), 2u);
  int taps = 0;
  for (const auto& r : stats.readers) taps += r.mode == ReaderMode::tap ? 1 : 0;
  EXPECT_EQ(taps, 1);
  EXPECT_STREQ(to_string(ReaderMode::tap), "tap");
  auto rest = consumer.receive_batch_for(16, 1s);
  EXPECT_EQ(rest.size(), 2u) << "the tap took nothing from the consumers";
}

TEST_F(ChannelTest, subscriberFromASequenceStartsThereOrCountsWhatIsGone) {
  auto sut = node_->topic("t", OpenMode::create, {4096, 16, 0}).value();  // 64 records of 64 bytes
  auto pub = sut.publisher().value();
  for (std::uint32_t i = 0; i < 10; ++i) ASSERT_EQ(pub.publish(std::as_bytes(std::span(&i, 1)), 1s), SendStatus::ok);
  auto from5 = sut.subscribe({Backpressure::lossy, std::nullopt, 5}).value();
  for (std::uint32_t want = 5; want < 10; ++want) {
    auto m = from5.try_receive();
    ASSERT_TRUE(m.has_value()) << want;
    EXPECT_EQ(m->sequence(), want);
  }
  EXPECT_FALSE(from5.try_receive().has_value());
  EXPECT_EQ(from5.missed(), 0u);
  for (std::uint32_t i = 10; i < 1000; ++i) ASSERT_EQ(pub.publish(std::as_bytes(std::span(&i, 1)), 1s), SendStatus::ok);
  auto from3 = sut.subscribe({Backpressure::lossy, std::nullopt, 3}).value();
  auto oldest = from3.try_receive();
  ASSERT_TRUE(oldest.has_value());
  EXPECT_GT(oldest->sequence(), 3u);
  EXPECT_EQ(from3.missed(), oldest->sequence() - 3);  // exactly what is no longer retained
  auto future = sut.subscribe({Backpressure::lossy, std::nullopt, 5000}).value();  // past tail: at tail
  EXPECT_FALSE(future.try_receive().has_value());
}

TEST_F(ChannelTest, originIdIsStableAndNeverZero) {
  EXPECT_EQ(internal::origin_id("alpha"), internal::origin_id("alpha"));
  EXPECT_NE(internal::origin_id("alpha"), internal::origin_id("beta"));
  EXPECT_NE(internal::origin_id(""), 0u);
}

TEST_F(ChannelTest, deadBlockingSubscriberStopsHoldingWritersBack) {
  auto sut = node_->topic("t", OpenMode::create, {4096, 100}).value();
  const pid_t child = ::fork();
  if (child == 0) {
    auto sub = sut.subscribe();
    ::_exit(sub ? 0 : 1);  // exits without closing its slot: like a crash
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_EQ(WEXITSTATUS(status), 0);
  ASSERT_EQ(sut.stats().readers.size(), 1u);
  EXPECT_FALSE(sut.stats().readers[0].alive);
  auto pub = sut.publisher().value();
  const std::string payload(100, 'p');
  for (int i = 0; i < 100; ++i) ASSERT_EQ(pub.publish(bytes_of(payload), 1s), SendStatus::ok) << i;
  EXPECT_EQ(sut.stats().dead_readers, 1u);
}

TEST_F(ChannelTest, queueDeliversEachMessageToOneConsumer) {
  auto sut = node_->queue("q", OpenMode::create, {1 << 16, 100}).value();
  auto a = sut.consumer().value();
  auto b = sut.consumer().value();
  auto producer = sut.producer().value();
  for (int i = 0; i < 6; ++i) ASSERT_EQ(producer.publish(bytes_of("j" + std::to_string(i)), 1s), SendStatus::ok);
  std::vector<std::string> got;
  for (int i = 0; i < 3; ++i) {
    for (auto* c : {&a, &b}) {
      auto m = c->try_receive();
      ASSERT_TRUE(m.has_value());
      got.push_back(text_of(*m));
    }
  }
  EXPECT_EQ(got, (std::vector<std::string>{"j0", "j1", "j2", "j3", "j4", "j5"}));
  EXPECT_FALSE(a.try_receive().has_value());
  EXPECT_EQ(sut.stats().depth, 0u);
}

TEST_F(ChannelTest, unackedMessageOfDeadConsumerIsRedeliveredWithItsCount) {
  auto sut = node_->queue("q", OpenMode::create, {1 << 16, 100, true, 5}).value();
  auto producer = sut.producer().value();
  ASSERT_EQ(producer.publish(bytes_of("job"), 1s), SendStatus::ok);
  const pid_t child = ::fork();
  if (child == 0) {
    auto c = sut.consumer().value();
    auto m = c.receive_for(1s);
    if (!m) ::_exit(1);
    ::_exit(0);  // dies holding it, unacknowledged
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_EQ(WEXITSTATUS(status), 0);
  auto c = sut.consumer().value();
  auto m = c.receive_for(2s);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(text_of(*m), "job");
  EXPECT_EQ(m->deliveries(), 2u);
}

TEST_F(ChannelTest, queueWithoutAcksDropsWhatADeadConsumerTook) {
  auto sut = node_->queue("q", OpenMode::create, {4096, 100}).value();
  auto producer = sut.producer().value();
  ASSERT_EQ(producer.publish(bytes_of("once"), 1s), SendStatus::ok);
  const pid_t child = ::fork();
  if (child == 0) {
    auto c = sut.consumer().value();
    auto m = c.receive_for(1s);
    ::_exit(m ? 0 : 1);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_EQ(WEXITSTATUS(status), 0);
  auto c = sut.consumer().value();
  EXPECT_FALSE(c.receive_for(100ms).has_value());  // at most once
}

}  // namespace
}  // namespace colo
