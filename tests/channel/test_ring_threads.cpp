// The ring with threads in one process: the same protocol as between
// processes, but visible to ThreadSanitizer (.ci/run builds this file with
// -fsanitize=thread too). Exact counts, checksums, per-writer order.
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

std::uint32_t fnv1a(const std::byte* p, std::size_t n) {
  std::uint32_t h = 2166136261u;
  for (std::size_t i = 0; i < n; ++i) h = (h ^ static_cast<std::uint8_t>(p[i])) * 16777619u;
  return h;
}

class RingThreads : public ::testing::Test {
 protected:
  Ring make(RingKind kind, bool acks = false) {
    RingConfig config;
    config.kind = kind;
    config.capacity = 1 << 15;
    config.max_message = 600;
    config.acks = acks;
    size_ = Ring::bytes_for(config.capacity);
    memory_ = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return Ring::create(memory_, size_, config).value();
  }
  void TearDown() override { ::munmap(memory_, size_); }

  // Writers publish `per_writer` self-checking messages of random sizes.
  static void write_all(Ring ring, std::uint32_t id, std::uint32_t per_writer) {
    auto handle = ring.open_publisher().value();
    std::uint64_t seed = id * 7919 + 1;
    for (std::uint32_t i = 0; i < per_writer; ++i) {
      seed = seed * 6364136223846793005ull + 1442695040888963407ull;
      const std::uint32_t size = 12 + static_cast<std::uint32_t>((seed >> 33) % 580);
      Loan loan;
      ASSERT_EQ(ring.claim_until(handle, size, monotonic_ns() + 20'000'000'000ull, loan), ClaimStatus::ok);
      for (std::uint32_t b = 12; b < size; ++b) loan.data[b] = static_cast<std::byte>(seed >> (b % 56));
      const std::uint32_t sum = fnv1a(loan.data + 12, size - 12);
      std::memcpy(loan.data, &id, 4);
      std::memcpy(loan.data + 4, &i, 4);
      std::memcpy(loan.data + 8, &sum, 4);
      ring.commit(handle, loan);
    }
    ring.close_publisher(handle);
  }

  void* memory_ = nullptr;
  std::size_t size_ = 0;
};

TEST_F(RingThreads, topicDeliversEverythingToEveryBlockingReaderInWriterOrder) {
  constexpr std::uint32_t kWriters = 2, kReaders = 3, kPerWriter = 30'000;
  Ring sut = make(RingKind::topic);
  std::vector<ReaderHandle> handles;
  for (std::uint32_t r = 0; r < kReaders; ++r) handles.push_back(sut.open_reader(ReaderMode::block).value());
  std::vector<std::uint64_t> received(kReaders), bad(kReaders);
  std::vector<std::thread> threads;
  for (std::uint32_t r = 0; r < kReaders; ++r)
    threads.emplace_back([&, r] {
      std::vector<std::uint32_t> next(kWriters, 0);
      View view;
      while (received[r] < kWriters * kPerWriter &&
             sut.read_until(handles[r], monotonic_ns() + 20'000'000'000ull, view) == ReadStatus::ok) {
        std::uint32_t id = 0, index = 0, sum = 0;
        std::memcpy(&id, view.data, 4);
        std::memcpy(&index, view.data + 4, 4);
        std::memcpy(&sum, view.data + 8, 4);
        if (id >= kWriters || index != next[id] || fnv1a(view.data + 12, view.size - 12) != sum) ++bad[r];
        else next[id] = index + 1;
        sut.release(handles[r], view);
        ++received[r];
      }
    });
  for (std::uint32_t w = 0; w < kWriters; ++w) threads.emplace_back(&RingThreads::write_all, sut, w, kPerWriter);
  for (auto& t : threads) t.join();
  for (std::uint32_t r = 0; r < kReaders; ++r) {
    EXPECT_EQ(received[r], kWriters * kPerWriter);
    EXPECT_EQ(bad[r], 0u);
  }
}

TEST_F(RingThreads, queueDeliversEachMessageExactlyOnce) {
  constexpr std::uint32_t kWriters = 2, kConsumers = 3, kPerWriter = 30'000;
  Ring sut = make(RingKind::queue, true);
  std::vector<std::vector<std::uint8_t>> seen(kWriters, std::vector<std::uint8_t>(kPerWriter, 0));
  std::atomic<std::uint64_t> total{0}, bad{0};
  std::vector<std::thread> threads;
  for (std::uint32_t c = 0; c < kConsumers; ++c)
    threads.emplace_back([&] {
      auto handle = sut.open_reader(ReaderMode::consumer).value();
      View view;
      while (total.load() < kWriters * kPerWriter) {
        if (sut.read_until(handle, monotonic_ns() + 50'000'000, view) != ReadStatus::ok) continue;
        std::uint32_t id = 0, index = 0, sum = 0;
        std::memcpy(&id, view.data, 4);
        std::memcpy(&index, view.data + 4, 4);
        std::memcpy(&sum, view.data + 8, 4);
        if (id >= kWriters || index >= kPerWriter || fnv1a(view.data + 12, view.size - 12) != sum) ++bad;
        else reinterpret_cast<std::atomic<std::uint8_t>&>(seen[id][index]).fetch_add(1);
        sut.release(handle, view);
        ++total;
      }
      sut.close_reader(handle);
    });
  for (std::uint32_t w = 0; w < kWriters; ++w) threads.emplace_back(&RingThreads::write_all, sut, w, kPerWriter);
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0u);
  std::uint64_t wrong = 0;
  for (const auto& writer : seen)
    for (auto count : writer) wrong += count != 1;
  EXPECT_EQ(wrong, 0u);
}

TEST_F(RingThreads, lossyReaderNeverSeesATornMessage) {
  Ring sut = make(RingKind::topic);
  auto handle = sut.open_reader(ReaderMode::lossy).value();
  std::atomic<bool> done{false};
  std::uint64_t received = 0, bad = 0;
  std::thread reader([&] {
    View view;
    for (;;) {
      const bool writers_done = done.load();  // before the read: after it, nothing new can come
      if (sut.read_until(handle, monotonic_ns() + 10'000'000, view) != ReadStatus::ok) {
        if (writers_done) break;
        continue;
      }
      std::uint32_t sum = 0;
      std::memcpy(&sum, view.data + 8, 4);
      if (fnv1a(view.data + 12, view.size - 12) != sum) ++bad;
      sut.release(handle, view);
      ++received;
    }
  });
  std::thread w0(&RingThreads::write_all, sut, 0, 40'000);
  std::thread w1(&RingThreads::write_all, sut, 1, 40'000);
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
