// The ring with threads in one process: the same protocol as between
// processes, but visible to ThreadSanitizer (.ci/run builds this file with
// -fsanitize=thread too). Exact counts, checksums, per-writer order; single
// messages and batches, shared and exclusive writers.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "clock.hpp"
#include "ring.hpp"

namespace colo::shm {
namespace {

constexpr std::uint64_t kLongWait = 20'000'000'000ull;

std::uint32_t fnv1a(const std::byte* p, std::size_t n) {
  std::uint32_t h = 2166136261u;
  for (std::size_t i = 0; i < n; ++i) h = (h ^ static_cast<std::uint8_t>(p[i])) * 16777619u;
  return h;
}

// A message: {writer id, index, checksum of the rest}, then pseudo-random bytes.
void fill(std::byte* data, std::uint32_t size, std::uint32_t id, std::uint32_t index, std::uint64_t seed) {
  for (std::uint32_t b = 12; b < size; ++b) data[b] = static_cast<std::byte>(seed >> (b % 56));
  const std::uint32_t sum = fnv1a(data + 12, size - 12);
  std::memcpy(data, &id, 4);
  std::memcpy(data + 4, &index, 4);
  std::memcpy(data + 8, &sum, 4);
}

struct Parsed {
  std::uint32_t id = 0, index = 0;
  bool intact = false;
};
Parsed parse(const View& view) {
  Parsed p;
  if (view.size < 12) return p;
  std::uint32_t sum = 0;
  std::memcpy(&p.id, view.data, 4);
  std::memcpy(&p.index, view.data + 4, 4);
  std::memcpy(&sum, view.data + 8, 4);
  p.intact = fnv1a(view.data + 12, view.size - 12) == sum;
  return p;
}

class RingThreads : public ::testing::Test {
 public:
  Ring make(RingKind kind, bool acks = false, bool exclusive = false) {
    RingConfig config;
    config.kind = kind;
    config.capacity = 1 << 15;
    config.max_message = 600;
    config.acks = acks;
    config.exclusive = exclusive;
    size_ = Ring::bytes_for(config.capacity);
    memory_ = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return Ring::create(memory_, size_, config).value();
  }
  void TearDown() override { ::munmap(memory_, size_); }

  // Publishes `per_writer` self-checking messages of random sizes, in
  // batches of 1..max_batch (1: one message per claim), publishing a batch
  // in one or two parts.
  static void write_all(Ring ring, std::uint32_t id, std::uint32_t per_writer, std::uint32_t max_batch) {
    auto handle = ring.open_publisher().value();
    std::uint64_t seed = id * 7919 + 1;
    std::uint32_t i = 0;
    while (i < per_writer) {
      seed = seed * 6364136223846793005ull + 1442695040888963407ull;
      const std::uint32_t want = std::min<std::uint32_t>(per_writer - i, 1 + static_cast<std::uint32_t>((seed >> 20) % max_batch));
      std::uint32_t sizes[64];
      for (std::uint32_t k = 0; k < want; ++k) sizes[k] = 12 + static_cast<std::uint32_t>((seed >> (k % 30)) % 580);
      Claim claim;
      ASSERT_EQ(ring.claim_until(handle, want, 0, monotonic_ns() + kLongWait, claim, sizes), ClaimStatus::ok);
      ASSERT_GE(claim.count, 1u);
      for (std::uint32_t k = 0; k < claim.count; ++k) {
        std::byte* data = ring.next_record(claim, sizes[k]);
        ASSERT_NE(data, nullptr);
        fill(data, sizes[k], id, i + k, seed + k);
        if (k == claim.count / 2 && (seed & 1) != 0) ring.commit(handle, claim);  // publish in two parts
      }
      ring.commit(handle, claim);
      i += claim.count;
      ring.finish(handle, claim);
    }
    ring.close_publisher(handle);
  }

  void* memory_ = nullptr;
  std::size_t size_ = 0;
};

// Blocking readers (batches of up to `max_read`) each get every message of
// every writer, intact and in each writer's order.
void expect_every_reader_gets_everything(Ring& sut, std::uint32_t writers, std::uint32_t per_writer,
                                         std::uint32_t max_batch, std::uint32_t max_read) {
  constexpr std::uint32_t kReaders = 3;
  std::vector<ReaderHandle> handles;
  for (std::uint32_t r = 0; r < kReaders; ++r) handles.push_back(sut.open_reader(ReaderMode::block).value());
  std::vector<std::uint64_t> received(kReaders), bad(kReaders);
  std::vector<std::thread> threads;
  for (std::uint32_t r = 0; r < kReaders; ++r)
    threads.emplace_back([&, r] {
      std::vector<std::uint32_t> next(writers, 0);
      std::vector<View> views(max_read);
      ReadStatus status;
      while (received[r] < writers * per_writer) {
        const std::uint32_t n = sut.read_until(handles[r], monotonic_ns() + kLongWait, views.data(), max_read, status);
        if (n == 0) break;
        for (std::uint32_t k = 0; k < n; ++k) {
          const Parsed p = parse(views[k]);
          if (!p.intact || p.id >= writers || p.index != next[p.id]) ++bad[r];
          else next[p.id] = p.index + 1;
        }
        sut.release(handles[r]);
        received[r] += n;
      }
    });
  for (std::uint32_t w = 0; w < writers; ++w) threads.emplace_back(&RingThreads::write_all, sut, w, per_writer, max_batch);
  for (auto& t : threads) t.join();
  for (std::uint32_t r = 0; r < kReaders; ++r) {
    EXPECT_EQ(received[r], writers * per_writer) << "reader " << r;
    EXPECT_EQ(bad[r], 0u) << "reader " << r;
  }
}

TEST_F(RingThreads, topicDeliversEverythingToEveryBlockingReaderInWriterOrder) {
  Ring sut = make(RingKind::topic);
  expect_every_reader_gets_everything(sut, 2, 30'000, 1, 1);
}

TEST_F(RingThreads, topicDeliversBatchesFromSharedWritersToBatchReaders) {
  Ring sut = make(RingKind::topic);
  expect_every_reader_gets_everything(sut, 2, 30'000, 16, 32);
}

TEST_F(RingThreads, exclusiveWriterTopicDeliversEverythingInOrder) {
  Ring sut = make(RingKind::topic, false, true);
  expect_every_reader_gets_everything(sut, 1, 60'000, 16, 7);
}

// The same with the ring already turned to fenced commits (sleepers skip
// their membarrier, writers and releasing readers fence): what a ring
// whose waiters keep sleeping runs on.
TEST_F(RingThreads, topicWithFencedCommitsDeliversEverythingToEveryBlockingReader) {
  Ring sut = make(RingKind::topic);
  sut.control().fenced_commits.store(kFencesEstablished);
  expect_every_reader_gets_everything(sut, 2, 30'000, 1, 1);
  EXPECT_EQ(sut.control().fenced_commits.load(), kFencesEstablished);
}

void expect_each_message_consumed_once(Ring& sut, std::uint32_t per_writer, std::uint32_t max_batch,
                                       std::uint32_t max_read) {
  constexpr std::uint32_t kWriters = 2, kConsumers = 3;
  std::vector<std::vector<std::uint8_t>> seen(kWriters, std::vector<std::uint8_t>(per_writer, 0));
  std::atomic<std::uint64_t> total{0}, bad{0};
  std::atomic<std::uint32_t> writers_done{0};
  std::vector<std::thread> threads;
  for (std::uint32_t c = 0; c < kConsumers; ++c)
    threads.emplace_back([&] {
      auto handle = sut.open_reader(ReaderMode::consumer).value();
      std::vector<View> views(max_read);
      ReadStatus status;
      while (total.load() < kWriters * per_writer) {
        // Loaded before the read: a writer that failed early ends the test
        // (with its expectations failing) instead of hanging it.
        const bool all_written = writers_done.load() == kWriters;
        const std::uint32_t n = sut.read_until(handle, monotonic_ns() + 50'000'000, views.data(), max_read, status);
        if (n == 0 && all_written) break;
        for (std::uint32_t k = 0; k < n; ++k) {
          const Parsed p = parse(views[k]);
          if (!p.intact || p.id >= kWriters || p.index >= per_writer) ++bad;
          else reinterpret_cast<std::atomic<std::uint8_t>&>(seen[p.id][p.index]).fetch_add(1);
        }
        if (n > 0) sut.release(handle);
        total += n;
      }
      sut.close_reader(handle);
    });
  for (std::uint32_t w = 0; w < kWriters; ++w)
    threads.emplace_back([&, w] {
      RingThreads::write_all(sut, w, per_writer, max_batch);
      ++writers_done;
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(total.load(), kWriters * per_writer);
  EXPECT_EQ(bad.load(), 0u);
  std::uint64_t wrong = 0;
  for (const auto& writer : seen)
    for (auto count : writer) wrong += count != 1;
  EXPECT_EQ(wrong, 0u);
}

TEST_F(RingThreads, queueDeliversEachMessageExactlyOnce) {
  Ring sut = make(RingKind::queue, true);
  expect_each_message_consumed_once(sut, 30'000, 1, 1);
}

TEST_F(RingThreads, queueTakesBatchesAndDeliversEachMessageExactlyOnce) {
  Ring sut = make(RingKind::queue, true);
  expect_each_message_consumed_once(sut, 30'000, 16, 32);
}

TEST_F(RingThreads, queueWithFencedCommitsDeliversEachMessageExactlyOnce) {
  Ring sut = make(RingKind::queue, true);
  sut.control().fenced_commits.store(kFencesEstablished);
  expect_each_message_consumed_once(sut, 30'000, 16, 32);
}

TEST_F(RingThreads, lossyReaderNeverSeesATornMessage) {
  Ring sut = make(RingKind::topic);
  auto handle = sut.open_reader(ReaderMode::lossy).value();
  std::atomic<bool> done{false};
  std::uint64_t received = 0, bad = 0;
  std::thread reader([&] {
    View views[8];
    ReadStatus status;
    for (;;) {
      const bool writers_done = done.load();  // before the read: after it, nothing new can come
      const std::uint32_t n = sut.read_until(handle, monotonic_ns() + 10'000'000, views, 8, status);
      if (n == 0) {
        if (writers_done) break;
        continue;
      }
      for (std::uint32_t k = 0; k < n; ++k) bad += !parse(views[k]).intact;
      sut.release(handle);
      received += n;
    }
  });
  std::thread w0(&RingThreads::write_all, sut, 0, 40'000, 4);
  std::thread w1(&RingThreads::write_all, sut, 1, 40'000, 1);
  w0.join();
  w1.join();
  done = true;
  reader.join();
  const std::uint64_t missed = sut.control().readers[handle.slot].missed.load();
  EXPECT_EQ(bad, 0u);
  EXPECT_EQ(sut.control().readers[handle.slot].skipped_bad.load(), 0u);
  EXPECT_EQ(received + missed, 80'000u);  // every message either read whole or counted as missed
}

}  // namespace
}  // namespace colo::shm
