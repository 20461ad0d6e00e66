// The ring's protocol, step by step: batches published in parts, claims
// shortened at the ring's end, the exclusive writer, and the crash paths
// (a writer or a consumer killed halfway through a batch) with forked
// children that die at chosen points. Exact sequences and counters.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <vector>

#include "clock.hpp"
#include "futex.hpp"
#include "ring.hpp"

namespace colo::shm {
namespace {

constexpr std::uint64_t kSecond = 1'000'000'000ull;

class RingProtocol : public ::testing::Test {
 protected:
  Ring make(RingKind kind, std::uint64_t capacity = 1 << 14, bool exclusive = false, bool acks = false,
            std::uint32_t max_deliveries = 5) {
    RingConfig config;
    config.kind = kind;
    config.capacity = capacity;
    config.max_message = 1000;
    config.exclusive = exclusive;
    config.acks = acks;
    config.max_deliveries = max_deliveries;
    size_ = Ring::bytes_for(config.capacity);
    memory_ = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return Ring::create(memory_, size_, config).value();
  }
  void TearDown() override { ::munmap(memory_, size_); }

  // Publishes one message whose 8 payload bytes are `value`.
  static void publish(Ring& ring, PublisherHandle& handle, std::uint64_t value) {
    Claim claim;
    ASSERT_EQ(ring.try_claim(handle, 1, 8, claim), ClaimStatus::ok);
    std::memcpy(ring.next_record(claim, 8), &value, 8);
    ring.commit(handle, claim);
    ring.finish(handle, claim);
  }
  static std::uint64_t value_of(const View& view) {
    std::uint64_t v = 0;
    std::memcpy(&v, view.data, std::min<std::size_t>(8, view.size));
    return v;
  }
  // Runs `body` in a forked child that then dies with SIGKILL (no cleanup).
  static void in_child_then_die(const std::function<void()>& body) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      body();
      ::kill(::getpid(), SIGKILL);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status));
  }

  void* memory_ = nullptr;
  std::size_t size_ = 0;
};

TEST_F(RingProtocol, batchPublishedInPartsIsReadInOrderWithConsecutiveSequences) {
  Ring sut = make(RingKind::topic);
  auto reader = sut.open_reader(ReaderMode::block).value();
  auto writer = sut.open_publisher().value();
  Claim claim;
  ASSERT_EQ(sut.try_claim(writer, 10, 8, claim), ClaimStatus::ok);
  ASSERT_EQ(claim.count, 10u);
  View views[16];
  ReadStatus status;
  for (std::uint64_t i = 0; i < 4; ++i) std::memcpy(sut.next_record(claim, 8), &i, 8);
  EXPECT_EQ(sut.try_read(reader, views, 16, status), 0u);  // begun, not published
  sut.commit(writer, claim);
  ASSERT_EQ(sut.try_read(reader, views, 16, status), 4u);
  for (std::uint64_t i = 0; i < 4; ++i) {
    EXPECT_EQ(views[i].seq, i);
    EXPECT_EQ(value_of(views[i]), i);
  }
  sut.release(reader);
  for (std::uint64_t i = 4; i < 10; ++i) std::memcpy(sut.next_record(claim, 8), &i, 8);
  EXPECT_EQ(sut.next_record(claim, 8), nullptr);  // all ten begun
  sut.commit(writer, claim);
  sut.finish(writer, claim);
  ASSERT_EQ(sut.try_read(reader, views, 3, status), 3u);  // at most `max`
  EXPECT_EQ(views[0].seq, 4u);
  sut.release(reader);
  ASSERT_EQ(sut.try_read(reader, views, 16, status), 3u);
  EXPECT_EQ(views[2].seq, 9u);
  EXPECT_EQ(value_of(views[2]), 9u);
  sut.release(reader);
  EXPECT_EQ(sut.control().publishers[writer.slot].published.load(), 10u);
  EXPECT_EQ(sut.control().publishers[writer.slot].batches.load(), 2u);
  EXPECT_EQ(sut.control().readers[reader.slot].delivered.load(), 10u);
  EXPECT_EQ(sut.control().readers[reader.slot].bytes.load(), 80u);
  EXPECT_EQ(sut.control().readers[reader.slot].batches.load(), 3u);
}

TEST_F(RingProtocol, recordsGivenUpBecomeOneSkipThatReadersStepOverCountingTheirSequences) {
  Ring sut = make(RingKind::topic);
  auto reader = sut.open_reader(ReaderMode::block).value();
  auto writer = sut.open_publisher().value();
  Claim claim;
  ASSERT_EQ(sut.try_claim(writer, 5, 8, claim), ClaimStatus::ok);
  for (std::uint64_t i = 0; i < 2; ++i) std::memcpy(sut.next_record(claim, 8), &i, 8);
  sut.commit(writer, claim);
  std::memcpy(sut.next_record(claim, 8), "unsent..", 8);  // begun, never published
  sut.finish(writer, claim);                              // gives up 3
  publish(sut, writer, 42);
  View views[8];
  ReadStatus status;
  ASSERT_EQ(sut.try_read(reader, views, 8, status), 3u);
  EXPECT_EQ(views[1].seq, 1u);
  EXPECT_EQ(views[2].seq, 5u);  // 2, 3, 4 were given up
  EXPECT_EQ(value_of(views[2]), 42u);
  sut.release(reader);
  EXPECT_EQ(sut.control().publishers[writer.slot].abandoned.load(), 3u);
}

// A waiter that sleeps pays a membarrier; after kBarrierSleepsBeforeFences
// of them the ring turns to fenced commits for good, and sleeps stop
// counting (they pay no barrier any more).
TEST_F(RingProtocol, sleepsTurnTheRingToFencedCommitsAtTheThresholdAndNotBefore) {
  Ring sut = make(RingKind::topic);
  auto reader = sut.open_reader(ReaderMode::block).value();
  auto writer = sut.open_publisher().value();
  auto& control = sut.control();
  if (!register_asymmetric_barrier()) {  // no membarrier here: fenced from the first open
    EXPECT_EQ(control.fenced_commits.load(), kFencesPending);
    return;
  }
  ASSERT_EQ(control.fenced_commits.load(), 0u);
  View views[4];
  ReadStatus status;
  const auto sleep_once = [&] {  // an empty ring: a 1 ms wait ends asleep in the futex
    const std::uint32_t before = control.barrier_sleeps.load();
    while (control.barrier_sleeps.load() == before) ASSERT_EQ(sut.read_until(reader, monotonic_ns() + 1'000'000, views, 4, status), 0u);
  };
  for (std::uint32_t i = 1; i < kBarrierSleepsBeforeFences; ++i) sleep_once();
  EXPECT_EQ(control.barrier_sleeps.load(), kBarrierSleepsBeforeFences - 1);
  EXPECT_EQ(control.fenced_commits.load(), 0u) << "one sleep short of the threshold";
  sleep_once();
  EXPECT_EQ(control.fenced_commits.load(), kFencesEstablished);
  // Sleeps from now on pay no barrier and are not counted; they still sleep.
  const std::uint64_t waits = control.readers[reader.slot].waits.load();
  for (int i = 0; i < 5; ++i) EXPECT_EQ(sut.read_until(reader, monotonic_ns() + 1'000'000, views, 4, status), 0u);
  EXPECT_EQ(control.barrier_sleeps.load(), kBarrierSleepsBeforeFences);
  EXPECT_GE(control.readers[reader.slot].waits.load(), waits + 5);
  // And a message still reaches the reader.
  publish(sut, writer, 77);
  ASSERT_EQ(sut.read_until(reader, monotonic_ns() + 5 * kSecond, views, 4, status), 1u);
  EXPECT_EQ(value_of(views[0]), 77u);
  sut.release(reader);
}

// Fenced commits set by a process without membarrier (pending) are
// established all the same by the sleepers that have it.
TEST_F(RingProtocol, pendingFencesAreEstablishedBySleepersThatHaveMembarrier) {
  Ring sut = make(RingKind::topic);
  auto reader = sut.open_reader(ReaderMode::block).value();
  if (!register_asymmetric_barrier()) GTEST_SKIP() << "membarrier(2) global expedited is not available here";
  auto& control = sut.control();
  control.fenced_commits.store(kFencesPending);
  View views[4];
  ReadStatus status;
  while (control.barrier_sleeps.load() < kBarrierSleepsBeforeFences) {
    EXPECT_EQ(control.fenced_commits.load(), kFencesPending);
    ASSERT_EQ(sut.read_until(reader, monotonic_ns() + 1'000'000, views, 4, status), 0u);
  }
  EXPECT_EQ(control.fenced_commits.load(), kFencesEstablished);
}

// The two halves of wait_published that colod's loop sleeps with: armed,
// the reader counts as a sleeping waiter (so a commit bumps the futex word)
// until end_publish_wait; asked for a count already published, nothing is
// registered.
TEST_F(RingProtocol, anArmedPublishWaitIsWokenByTheNextCommitAndEndsItsRegistration) {
  Ring sut = make(RingKind::topic);
  auto reader = sut.open_reader(ReaderMode::lossy).value();
  auto writer = sut.open_publisher().value();
  auto& control = sut.control();
  publish(sut, writer, 1);  // one message: count 1 is there, count 2 is not
  EXPECT_FALSE(sut.arm_publish_wait(reader, 1).has_value());
  EXPECT_EQ(control.data_waiters.load(), 0u);
  EXPECT_EQ(control.readers[reader.slot].sleeping.load(), 0u);
  const auto sleep = sut.arm_publish_wait(reader, 2);
  ASSERT_TRUE(sleep.has_value());
  EXPECT_EQ(sleep->word, &control.data_signal);
  EXPECT_EQ(sleep->value, control.data_signal.load()) << "nothing committed since";
  EXPECT_EQ(control.data_waiters.load(), 1u);
  EXPECT_EQ(control.readers[reader.slot].sleeping.load(), 1u);
  publish(sut, writer, 2);
  EXPECT_NE(control.data_signal.load(), sleep->value) << "a commit with a sleeper bumps the word the sleep is on";
  sut.end_publish_wait(reader);
  EXPECT_EQ(control.data_waiters.load(), 0u);
  EXPECT_EQ(control.readers[reader.slot].sleeping.load(), 0u);
  sut.end_publish_wait(reader);  // a second end is harmless
  EXPECT_EQ(control.data_waiters.load(), 0u);
  // Unregistered, a commit leaves the word alone (no wake cost).
  const std::uint32_t word = control.data_signal.load();
  publish(sut, writer, 3);
  EXPECT_EQ(control.data_signal.load(), word);
}

// A writer held back by a reader that reads nothing sleeps in the futex
// until its deadline. Its own last check before sleeping reclaims (and
// wakes other waiting writers): it must not count itself among them, or its
// futex wait returns at once and it loops through system calls instead.
TEST_F(RingProtocol, aWriterHeldBackSleepsUntilItsDeadlineWithoutWakingItself) {
  Ring sut = make(RingKind::topic);
  auto reader = sut.open_reader(ReaderMode::block).value();
  auto writer = sut.open_publisher().value();
  auto& control = sut.control();
  std::uint64_t published = 0;
  Claim claim;
  while (sut.try_claim(writer, 1, 8, claim) == ClaimStatus::ok) {
    std::memcpy(sut.next_record(claim, 8), &published, 8);
    sut.commit(writer, claim);
    sut.finish(writer, claim);
    ++published;
  }
  ASSERT_EQ(published, (1u << 14) / kUnit) << "a shared claim takes at least a 64-byte unit";
  const std::uint32_t word = control.space_signal.load();
  const std::uint64_t started = monotonic_ns();
  EXPECT_EQ(sut.claim_until(writer, 1, 8, started + 100'000'000, claim), ClaimStatus::full);
  EXPECT_GE(monotonic_ns() - started, 100'000'000u);
  EXPECT_EQ(control.space_signal.load(), word) << "no one woke anyone";
  // Sleeps of at most 20 ms each (liveness is re-checked between them) in
  // 100 ms: five, six if the last one ended just short of the deadline.
  const std::uint64_t sleeps = control.publishers[writer.slot].waits.load();
  EXPECT_GE(sleeps, 5u);
  EXPECT_LE(sleeps, 6u);
  EXPECT_EQ(control.space_waiters.load(), 0u);
  (void)reader;
}

// A reader's release wakes a writer waiting for space only for room worth
// waking for: every reader at tail, or the slowest an eighth of the ring
// past head. (The waiting writer is the registration it leaves: counted in
// space_waiters, space_woken cleared.)
TEST_F(RingProtocol, aReleaseWakesAWaitingWriterOnlyAtTailOrAnEighthOfTheRingPastHead) {
  Ring sut = make(RingKind::topic);
  auto reader = sut.open_reader(ReaderMode::block).value();
  auto writer = sut.open_publisher().value();
  auto& control = sut.control();
  // 48-byte payloads: a record is one 64-byte unit, no filler after it.
  ASSERT_EQ(Ring::footprint(48, false), kUnit);
  std::uint64_t value = 0;
  const auto publish_unit = [&] {
    Claim claim;
    if (sut.try_claim(writer, 1, 48, claim) != ClaimStatus::ok) return false;
    std::memcpy(sut.next_record(claim, 48), &value, 8);
    sut.commit(writer, claim);
    sut.finish(writer, claim);
    ++value;
    return true;
  };
  View views[1];
  ReadStatus status;
  const auto read_one = [&] {
    ASSERT_EQ(sut.try_read(reader, views, 1, status), 1u);
    sut.release(reader);
  };
  const auto cursor = [&] { return control.readers[reader.slot].cursor_pos.load(); };
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(publish_unit());
  control.space_waiters.store(1);
  control.space_woken.store(0);
  std::uint32_t word = control.space_signal.load();
  read_one();
  read_one();
  EXPECT_EQ(cursor(), 128u);
  EXPECT_EQ(control.space_signal.load(), word) << "a record short of tail, 128 bytes past head";
  read_one();
  EXPECT_EQ(control.space_signal.load(), word + 1) << "at tail";
  EXPECT_EQ(control.space_woken.load(), 1u);

  // Fill the ring, then read record by record: the release that puts the
  // reader an eighth of the ring (2 KiB) past head is the first to wake.
  while (publish_unit()) {
  }
  ASSERT_EQ(value, 3u + (1u << 14) / kUnit) << "the ring full of unread records";
  const std::uint64_t head = sut.head().first;
  EXPECT_EQ(head, 192u) << "the records read were reclaimed";
  control.space_woken.store(0);
  word = control.space_signal.load();
  while (cursor() + kUnit < head + (1u << 14) / 8) {
    read_one();
    ASSERT_EQ(control.space_signal.load(), word) << "cursor " << cursor();
  }
  read_one();
  EXPECT_EQ(cursor(), head + (1u << 14) / 8);
  EXPECT_EQ(control.space_signal.load(), word + 1);
  control.space_waiters.store(0);
}

TEST_F(RingProtocol, claimIsShortenedToFitBeforeTheRingsEndAndThenWraps) {
  Ring sut = make(RingKind::topic, 4096);
  auto reader = sut.open_reader(ReaderMode::block).value();
  auto writer = sut.open_publisher().value();
  View views[64];
  ReadStatus status;
  std::uint64_t next = 0;
  // 100-byte records take 128 bytes: 4096 / 128 = 32 fit in one lap.
  for (int round = 0; round < 40; ++round) {
    Claim claim;
    ASSERT_EQ(sut.claim_until(writer, 7, 100, monotonic_ns() + kSecond, claim), ClaimStatus::ok);
    ASSERT_GE(claim.count, 1u);
    ASSERT_LE(claim.count, 7u);
    EXPECT_LE((claim.pos & 4095) + (claim.end - claim.pos), 4096u) << "a claim never crosses the ring's end";
    for (std::uint32_t k = 0; k < claim.count; ++k) {
      std::byte* data = sut.next_record(claim, 100);
      const std::uint64_t v = next + k;
      std::memcpy(data, &v, 8);
    }
    sut.commit(writer, claim);
    const std::uint32_t published = claim.count;
    sut.finish(writer, claim);
    std::uint32_t got = 0;
    while (got < published) {
      const std::uint32_t n = sut.try_read(reader, views, 64, status);
      ASSERT_GT(n, 0u);
      for (std::uint32_t k = 0; k < n; ++k) {
        EXPECT_EQ(views[k].seq, next + got + k);
        EXPECT_EQ(value_of(views[k]), next + got + k);
      }
      got += n;
      sut.release(reader);
    }
    next += published;
  }
  EXPECT_GE(sut.tail().first, 4096u * 4) << "the test went around the ring";
  EXPECT_EQ(sut.tail().second, next);
  EXPECT_EQ(sut.control().bad_records.load(), 0u);
}

TEST_F(RingProtocol, exclusiveRingRefusesASecondLivePublisher) {
  Ring sut = make(RingKind::topic, 1 << 14, true);
  auto first = sut.open_publisher().value();
  auto second = sut.open_publisher();
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, Errc::busy);
  EXPECT_NE(second.error().message.find("exclusive publisher, process " + std::to_string(::getpid())), std::string::npos)
      << second.error().message;
  sut.close_publisher(first);
  EXPECT_TRUE(sut.open_publisher());
}

TEST_F(RingProtocol, exclusiveWriterKilledMidBatchLeavesItsPublishedPartAndTheNextWriterContinues) {
  Ring sut = make(RingKind::topic, 1 << 14, true);
  auto reader = sut.open_reader(ReaderMode::block).value();
  in_child_then_die([&] {
    auto writer = sut.open_publisher().value();
    publish(sut, writer, 100);
    Claim claim;
    if (sut.try_claim(writer, 6, 8, claim) != ClaimStatus::ok) _exit(3);
    for (std::uint64_t i = 0; i < 3; ++i) {
      const std::uint64_t v = 101 + i;
      std::memcpy(sut.next_record(claim, 8), &v, 8);
    }
    sut.commit(writer, claim);                            // 101..103 published
    std::memcpy(sut.next_record(claim, 8), "halfway.", 8);  // then killed
  });
  auto writer = sut.open_publisher().value();  // the dead writer's slot is free again
  publish(sut, writer, 200);
  View views[16];
  ReadStatus status;
  ASSERT_EQ(sut.try_read(reader, views, 16, status), 5u);
  const std::uint64_t expect[] = {100, 101, 102, 103, 200};
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(views[i].seq, static_cast<std::uint64_t>(i));
    EXPECT_EQ(value_of(views[i]), expect[i]);
  }
  sut.release(reader);
  EXPECT_EQ(sut.control().dead_claims.load(), 3u) << "three claimed records were never published";
}

TEST_F(RingProtocol, sharedWriterKilledMidBatchIsSkippedAfterTheStuckCheckAndCounted) {
  Ring sut = make(RingKind::topic);
  auto reader = sut.open_reader(ReaderMode::block).value();
  in_child_then_die([&] {
    auto writer = sut.open_publisher().value();
    Claim claim;
    if (sut.try_claim(writer, 10, 8, claim) != ClaimStatus::ok) _exit(3);
    for (std::uint64_t i = 0; i < 10; ++i) std::memcpy(sut.next_record(claim, 8), &i, 8);
    // Publish the first four only, by hand: commit() publishes all begun.
    Claim part = claim;
    part.filled = 4;
    part.fill_pos = claim.pos + 4 * Ring::footprint(8, false);
    sut.commit(writer, part);
  });
  auto writer = sut.open_publisher().value();
  publish(sut, writer, 77);
  View views[16];
  ReadStatus status;
  ASSERT_EQ(sut.try_read(reader, views, 16, status), 4u);
  EXPECT_EQ(views[3].seq, 3u);
  sut.release(reader);
  const std::uint64_t started = monotonic_ns();
  const std::uint32_t n = sut.read_until(reader, monotonic_ns() + 5 * kSecond, views, 16, status);
  const std::uint64_t took = monotonic_ns() - started;
  ASSERT_EQ(n, 1u);
  EXPECT_EQ(views[0].seq, 10u);
  EXPECT_EQ(value_of(views[0]), 77u);
  EXPECT_GE(took, 20'000'000u) << "skipped only once the claim was stuck for the check interval";
  EXPECT_LT(took, kSecond);
  sut.release(reader);
  EXPECT_EQ(sut.control().dead_claims.load(), 6u);
}

TEST_F(RingProtocol, claimOfAWriterKilledBeforePublishingAnythingIsSkipped) {
  Ring sut = make(RingKind::queue);
  auto consumer = sut.open_reader(ReaderMode::consumer).value();
  in_child_then_die([&] {
    auto writer = sut.open_publisher().value();
    Claim claim;
    if (sut.try_claim(writer, 1, 8, claim) != ClaimStatus::ok) _exit(3);
  });
  auto writer = sut.open_publisher().value();
  publish(sut, writer, 5);
  View views[4];
  ReadStatus status;
  ASSERT_EQ(sut.read_until(consumer, monotonic_ns() + 5 * kSecond, views, 4, status), 1u);
  EXPECT_EQ(value_of(views[0]), 5u);
  EXPECT_EQ(views[0].seq, 1u);
  sut.release(consumer);
  EXPECT_EQ(sut.control().dead_claims.load(), 1u);
}

TEST_F(RingProtocol, deadWritersSlotIsTakenOverOnlyAfterItsClaimIsResolved) {
  Ring sut = make(RingKind::topic);
  in_child_then_die([&] {
    for (int i = 0; i < static_cast<int>(kRingSlots); ++i) (void)sut.open_publisher().value();  // every slot
    Claim claim;
    PublisherHandle h;
    h.slot = 0;
    h.known_reclaimed = 0;
    if (sut.try_claim(h, 3, 8, claim) != ClaimStatus::ok) _exit(3);
  });
  auto writer = sut.open_publisher();  // takes a dead slot: slot 0's claim gets skipped first
  ASSERT_TRUE(writer);
  publish(sut, *writer, 9);
  auto reader = sut.open_reader(ReaderMode::block, 10).value();
  View views[8];
  ReadStatus status;
  ASSERT_EQ(sut.try_read(reader, views, 8, status), 1u);
  EXPECT_EQ(views[0].seq, 3u);
  EXPECT_EQ(sut.control().dead_claims.load(), 3u);
}

TEST_F(RingProtocol, queueBatchOfAKilledConsumerIsDeliveredAgainWithItsDeliveryCount) {
  Ring sut = make(RingKind::queue, 1 << 14, false, true, 5);
  auto writer = sut.open_publisher().value();
  for (std::uint64_t i = 0; i < 8; ++i) publish(sut, writer, i);
  in_child_then_die([&] {
    auto consumer = sut.open_reader(ReaderMode::consumer).value();
    View views[5];
    ReadStatus status;
    if (sut.try_read(consumer, views, 5, status) != 5) _exit(3);  // takes 0..4, dies holding them
  });
  auto consumer = sut.open_reader(ReaderMode::consumer).value();
  View views[16];
  ReadStatus status;
  std::vector<std::uint64_t> got;
  std::vector<std::uint32_t> deliveries;
  const std::uint64_t deadline = monotonic_ns() + 5 * kSecond;
  while (got.size() < 8 && monotonic_ns() < deadline) {
    const std::uint32_t n = sut.read_until(consumer, monotonic_ns() + 100'000'000, views, 16, status);
    for (std::uint32_t k = 0; k < n; ++k) {
      got.push_back(value_of(views[k]));
      deliveries.push_back(views[k].deliveries);
    }
    if (n > 0) sut.release(consumer);
  }
  ASSERT_EQ(got.size(), 8u);
  std::vector<std::uint64_t> sorted = got;
  std::sort(sorted.begin(), sorted.end());
  for (std::uint64_t i = 0; i < 8; ++i) EXPECT_EQ(sorted[i], i);
  for (std::size_t k = 0; k < got.size(); ++k) EXPECT_EQ(deliveries[k], got[k] < 5 ? 2u : 1u) << "message " << got[k];
  EXPECT_EQ(sut.control().readers[consumer.slot].redelivered.load(), 5u);
  EXPECT_EQ(sut.control().dead_readers.load(), 1u);
}

TEST_F(RingProtocol, queueBatchOfAKilledConsumerWithoutAcksIsDroppedAndCounted) {
  Ring sut = make(RingKind::queue, 4096);
  auto writer = sut.open_publisher().value();
  for (std::uint64_t i = 0; i < 6; ++i) publish(sut, writer, i);
  in_child_then_die([&] {
    auto consumer = sut.open_reader(ReaderMode::consumer).value();
    View views[4];
    ReadStatus status;
    if (sut.try_read(consumer, views, 4, status) != 4) _exit(3);
  });
  // Fill the ring: the writer then evicts the dead consumer holding space.
  Claim claim;
  for (int i = 0; i < 200; ++i) {
    ASSERT_EQ(sut.claim_until(writer, 1, 100, monotonic_ns() + kSecond, claim), ClaimStatus::ok);
    sut.next_record(claim, 100);
    sut.commit(writer, claim);
    sut.finish(writer, claim);
    auto consumer = sut.open_reader(ReaderMode::consumer).value();
    View views[64];
    ReadStatus status;
    while (sut.try_read(consumer, views, 64, status) > 0) sut.release(consumer);
    sut.close_reader(consumer);
  }
  EXPECT_EQ(sut.control().dropped_unacked.load(), 4u);
}

TEST_F(RingProtocol, untaggedWritersLeaveAQuarterToTaggedOnesWhileABlockUntaggedReaderReads) {
  Ring sut = make(RingKind::topic, 4096);
  auto forwarder = sut.open_reader(ReaderMode::block_untagged).value();
  auto writer = sut.open_publisher().value();
  // 100-byte messages take 128 bytes: untagged ones may fill 3/4 of the
  // ring (24) while the forwarder reads nothing.
  int untagged = 0;
  for (; untagged < 40; ++untagged) {
    Claim claim;
    if (sut.try_claim(writer, 1, 100, claim) != ClaimStatus::ok) break;
    sut.next_record(claim, 100);
    sut.commit(writer, claim);
    sut.finish(writer, claim);
  }
  EXPECT_EQ(untagged, 24);
  Claim tagged;
  ASSERT_EQ(sut.try_claim(writer, 1, 100, tagged, nullptr, true), ClaimStatus::ok) << "the last quarter is theirs";
  const OriginRef origin{7, 1};
  sut.next_record(tagged, 100, &origin);
  sut.commit(writer, tagged);
  sut.finish(writer, tagged);
  // As the forwarder reads, untagged writers go on: 200 more in all.
  View views[8];
  ReadStatus status;
  for (int i = 0; i < 200; ++i) {
    Claim claim;
    while (sut.try_claim(writer, 1, 100, claim) != ClaimStatus::ok) {
      ASSERT_GT(sut.try_read(forwarder, views, 8, status), 0u) << "message " << i;
      sut.release(forwarder);
    }
    sut.next_record(claim, 100);
    sut.commit(writer, claim);
    sut.finish(writer, claim);
  }
}

// Publishes one message of `text` with `metadata` (M), tagged if `origin`.
void publish_annotated(Ring& ring, PublisherHandle& handle, const std::string& text, const std::string& metadata,
                       const OriginRef* origin = nullptr) {
  const auto block = metadata_block_size(static_cast<std::uint32_t>(metadata.size()));
  const auto size = static_cast<std::uint32_t>(block + text.size());
  Claim claim;
  ASSERT_EQ(ring.try_claim(handle, 1, size, claim, nullptr, origin != nullptr), ClaimStatus::ok);
  std::byte* payload = ring.next_record(claim, size, origin, std::as_bytes(std::span(metadata.data(), metadata.size())));
  ASSERT_NE(payload, nullptr);
  std::memcpy(payload, text.data(), text.size());
  ring.commit(handle, claim);
  ring.finish(handle, claim);
}
std::string text(const std::byte* p, std::size_t n) { return {reinterpret_cast<const char*>(p), n}; }

TEST_F(RingProtocol, metadataBlockFollowsTheOriginTagAndReadersStripBoth) {
  Ring sut = make(RingKind::topic);
  auto reader = sut.open_reader(ReaderMode::block).value();
  auto writer = sut.open_publisher().value();
  const OriginRef origin{9, 77};
  publish_annotated(sut, writer, "tagged body", "meta-1", &origin);
  publish_annotated(sut, writer, "plain body", "m");
  publish(sut, writer, 5);  // neither
  publish_annotated(sut, writer, "", std::string(300, 'x'));  // no bytes of its own
  View views[8];
  ReadStatus status;
  ASSERT_EQ(sut.try_read(reader, views, 8, status), 4u);
  EXPECT_EQ(text(views[0].data, views[0].size), "tagged body");
  EXPECT_EQ(views[0].origin, 9u);
  EXPECT_EQ(views[0].origin_seq, 77u);
  EXPECT_EQ(text(views[0].metadata, views[0].metadata_size), "meta-1");
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(views[0].data) % 16, 0u) << "the message's bytes stay 16-byte aligned";
  EXPECT_EQ(text(views[1].data, views[1].size), "plain body");
  EXPECT_EQ(views[1].origin, 0u);
  EXPECT_EQ(text(views[1].metadata, views[1].metadata_size), "m");
  EXPECT_EQ(value_of(views[2]), 5u);
  EXPECT_EQ(views[2].metadata_size, 0u);
  EXPECT_EQ(views[2].metadata, nullptr);
  EXPECT_EQ(views[3].size, 0u);
  EXPECT_EQ(text(views[3].metadata, views[3].metadata_size), std::string(300, 'x'));
  EXPECT_EQ(views[3].seq, 3u);
  sut.release(reader);
}

TEST_F(RingProtocol, metadataCountsAgainstTheMaximumMessage) {
  Ring sut = make(RingKind::topic);  // max_message 1000
  auto writer = sut.open_publisher().value();
  Claim claim;
  // 984 bytes and 8 of metadata take 16 + 984 = 1000: fits; one more byte does not.
  EXPECT_EQ(sut.try_claim(writer, 1, metadata_block_size(8) + 984, claim), ClaimStatus::ok);
  sut.finish(writer, claim);
  EXPECT_EQ(sut.try_claim(writer, 1, metadata_block_size(8) + 985, claim), ClaimStatus::too_large);
  // A claimed size too small for the metadata block is refused by next_record.
  ASSERT_EQ(sut.try_claim(writer, 1, 10, claim), ClaimStatus::ok);
  const std::string meta = "abc";
  EXPECT_EQ(sut.next_record(claim, 10, nullptr, std::as_bytes(std::span(meta.data(), meta.size()))), nullptr);
  sut.finish(writer, claim);
}

TEST_F(RingProtocol, damagedMetadataBlockIsSkippedAndCountedAndReadingGoesOn) {
  Ring sut = make(RingKind::topic);
  auto reader = sut.open_reader(ReaderMode::block).value();
  auto writer = sut.open_publisher().value();
  publish_annotated(sut, writer, "one", "meta");
  publish_annotated(sut, writer, "two", "meta");
  publish_annotated(sut, writer, "three", "meta");
  publish(sut, writer, 4);
  // Scribble: record 0's reserved word, record 1's length past its record.
  const std::uint64_t first = sut.head().first;
  std::byte* data = reinterpret_cast<std::byte*>(&sut.control()) + sizeof(RingControl);
  const std::uint64_t record = kUnit;  // each publication is a shared claim of one 64-byte unit here
  const std::uint32_t reserved = 1, too_long = 1000;
  std::memcpy(data + first + kRecordHeaderSize + 4, &reserved, 4);
  std::memcpy(data + first + record + kRecordHeaderSize, &too_long, 4);
  View views[8];
  ReadStatus status;
  ASSERT_EQ(sut.try_read(reader, views, 8, status), 2u);
  EXPECT_EQ(text(views[0].data, views[0].size), "three");
  EXPECT_EQ(views[0].seq, 2u);
  EXPECT_EQ(value_of(views[1]), 4u);
  EXPECT_EQ(sut.control().readers[reader.slot].skipped_bad.load(), 2u);
  sut.release(reader);
}

TEST_F(RingProtocol, forEachMetadataVisitsRetainedAnnotatedRecordsOldestFirst) {
  Ring sut = make(RingKind::topic);
  auto writer = sut.open_publisher().value();
  const OriginRef origin{3, 1000};
  publish_annotated(sut, writer, "a", "first", &origin);
  publish(sut, writer, 1);
  publish_annotated(sut, writer, "b", "second");
  std::vector<std::string> seen;
  sut.for_each_metadata([&](std::uint32_t o, std::uint64_t o_seq, std::span<const std::byte> m) {
    seen.push_back(std::to_string(o) + "/" + std::to_string(o_seq) + "/" + text(m.data(), m.size()));
  });
  EXPECT_EQ(seen, (std::vector<std::string>{"3/1000/first", "0/0/second"}));
}

TEST_F(RingProtocol, queueTapSeesEveryMessageTakesNoneAndHoldsWritersBack) {
  Ring sut = make(RingKind::queue, 4096);
  EXPECT_EQ(sut.open_reader(ReaderMode::lossy).error().code, Errc::invalid_argument);
  EXPECT_EQ(sut.open_reader(ReaderMode::block_untagged).error().code, Errc::invalid_argument);
  auto tap = sut.open_reader(ReaderMode::block).value();
  auto consumer = sut.open_reader(ReaderMode::consumer).value();
  auto writer = sut.open_publisher().value();
  for (std::uint64_t i = 0; i < 10; ++i) publish(sut, writer, i);
  View views[16];
  ReadStatus status;
  ASSERT_EQ(sut.try_read(consumer, views, 16, status), 10u);  // the consumer gets all of them...
  for (std::uint64_t i = 0; i < 10; ++i) EXPECT_EQ(value_of(views[i]), i);
  sut.release(consumer);
  ASSERT_EQ(sut.try_read(tap, views, 16, status), 10u);  // ...and the tap sees all of them too
  for (std::uint64_t i = 0; i < 10; ++i) EXPECT_EQ(value_of(views[i]), i);
  sut.release(tap);
  // Consumed, but unread by the tap: writers wait for it (64-byte records, 4 KiB).
  int published = 0;
  for (; published < 100; ++published) {
    Claim claim;
    if (sut.try_claim(writer, 1, 8, claim) != ClaimStatus::ok) break;
    sut.next_record(claim, 8);
    sut.commit(writer, claim);
    sut.finish(writer, claim);
    while (sut.try_read(consumer, views, 16, status) > 0) sut.release(consumer);
  }
  EXPECT_EQ(published, 4096 / 64);
  EXPECT_GT(sut.try_read(tap, views, 16, status), 0u);
  sut.release(tap);
  Claim claim;
  EXPECT_EQ(sut.try_claim(writer, 1, 8, claim), ClaimStatus::ok) << "the tap moved: room again";
  sut.finish(writer, claim);
}

TEST_F(RingProtocol, queueTapNeverTakesOverADeadConsumersMessages) {
  Ring sut = make(RingKind::queue, 1 << 14, false, true, 5);
  auto writer = sut.open_publisher().value();
  for (std::uint64_t i = 0; i < 4; ++i) publish(sut, writer, i);
  auto tap = sut.open_reader(ReaderMode::block).value();
  in_child_then_die([&] {
    auto consumer = sut.open_reader(ReaderMode::consumer).value();
    View views[4];
    ReadStatus status;
    if (sut.try_read(consumer, views, 4, status) != 4) _exit(3);
  });
  View views[8];
  ReadStatus status;
  // Long enough for a rescue (every 10 ms) had the tap been a consumer.
  EXPECT_EQ(sut.read_until(tap, monotonic_ns() + 100'000'000, views, 8, status), 0u)
      << "the tap started after these messages";
  EXPECT_EQ(sut.control().readers[tap.slot].hold_pos.load(), kNoPosition);
  EXPECT_EQ(sut.control().readers[tap.slot].redelivered.load(), 0u);
  auto consumer = sut.open_reader(ReaderMode::consumer).value();
  std::uint32_t n = 0;
  const std::uint64_t deadline = monotonic_ns() + 5 * kSecond;
  while (n == 0 && monotonic_ns() < deadline) n = sut.read_until(consumer, monotonic_ns() + 100'000'000, views, 8, status);
  ASSERT_EQ(n, 4u);
  for (std::uint32_t i = 0; i < n; ++i) EXPECT_EQ(views[i].deliveries, 2u);
  sut.release(consumer);
}

TEST_F(RingProtocol, scribbledRingNeverCrashesOrHangsAndCountsDamage) {
  Ring sut = make(RingKind::topic, 1 << 14);
  auto reader = sut.open_reader(ReaderMode::lossy).value();
  auto writer = sut.open_publisher().value();
  std::uint64_t seed = 12345;
  View views[32];
  ReadStatus status;
  for (int round = 0; round < 2000; ++round) {
    publish(sut, writer, static_cast<std::uint64_t>(round));
    // Garbage over a random 64-byte stretch of the record space.
    auto* data = reinterpret_cast<std::byte*>(&sut.control()) + sizeof(RingControl);
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    const std::size_t at = (seed >> 20) % ((1 << 14) - 64);
    for (int b = 0; b < 64; ++b) data[at + static_cast<std::size_t>(b)] = static_cast<std::byte>(seed >> (b % 56));
    const std::uint32_t n = sut.try_read(reader, views, 32, status);
    for (std::uint32_t k = 0; k < n; ++k) EXPECT_LE(views[k].size, 1000u);
    if (n > 0) sut.release(reader);
  }
  // Still usable: what is published now is read.
  const std::uint64_t skipped = sut.control().readers[reader.slot].skipped_bad.load();
  EXPECT_GT(skipped + sut.control().bad_records.load(), 0u);
}

}  // namespace
}  // namespace colo::shm
