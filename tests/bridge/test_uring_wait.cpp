// UringWait (bridge/uring_wait.hpp): colod's loop sleeps on descriptors and
// futex words at once. Suite `unit`; on a kernel without io_uring's
// FUTEX_WAIT (before Linux 6.7) the tests check that open() says so and skip.
#include <gtest/gtest.h>
#include <linux/futex.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <cstdio>
#include <thread>
#include <vector>

#include "uring_wait.hpp"

namespace colo::bridge {
namespace {

using namespace std::chrono_literals;
using Woken = UringWait::Woken;

bool kernel_has_futex_wait() {  // 6.7 or later
  utsname u{};
  if (::uname(&u) != 0) return false;
  int major = 0, minor = 0;
  if (std::sscanf(u.release, "%d.%d", &major, &minor) != 2) return false;
  return major > 6 || (major == 6 && minor >= 7);
}

bool io_uring_allowed() {  // kernel.io_uring_disabled: 0 (or absent) lets everyone use it
  std::FILE* f = std::fopen("/proc/sys/kernel/io_uring_disabled", "r");
  if (!f) return true;
  int disabled = 0;
  const bool read = std::fscanf(f, "%d", &disabled) == 1;
  std::fclose(f);
  return !read || disabled == 0;
}

class UringWaitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto opened = UringWait::open();
    if (!opened) {
      // Only a kernel without the request, or with io_uring disabled, may refuse.
      if (kernel_has_futex_wait() && io_uring_allowed())
        FAIL() << "Linux 6.7 or later, io_uring allowed, but UringWait::open failed: " << opened.error().message;
      GTEST_SKIP() << "no io_uring FUTEX_WAIT here: " << opened.error().message;
    }
    sut_ = std::move(opened).value();
  }
  void TearDown() override {
    for (int fd : fds_) ::close(fd);
  }
  int eventfd() {
    const int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    EXPECT_GE(fd, 0);
    fds_.push_back(fd);
    return fd;
  }
  static void wake(std::atomic<std::uint32_t>& word) {
    ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
  }
  std::unique_ptr<UringWait> sut_;
  std::vector<int> fds_;
};

TEST_F(UringWaitTest, aFutexWakeFromAnotherThreadEndsTheSleep) {
  std::atomic<std::uint32_t> word{7};
  const int idle = eventfd();
  std::thread waker([&] {
    std::this_thread::sleep_for(50ms);
    word.store(8);
    wake(word);
  });
  const auto started = std::chrono::steady_clock::now();
  const UringWait::FutexWord words[] = {{&word, 7}};
  const int fds[] = {idle};
  EXPECT_EQ(sut_->wait(fds, words, 20'000), Woken::futex);
  waker.join();
  EXPECT_LT(std::chrono::steady_clock::now() - started, 10s) << "ended by the wake, not the 20 s timeout";
}

TEST_F(UringWaitTest, aWordThatNoLongerHoldsTheValueEndsTheSleepAtOnce) {
  std::atomic<std::uint32_t> word{3};
  const UringWait::FutexWord words[] = {{&word, 2}};
  const auto started = std::chrono::steady_clock::now();
  EXPECT_EQ(sut_->wait({}, words, 20'000), Woken::futex);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 10s);
}

TEST_F(UringWaitTest, aReadableDescriptorEndsTheSleepAmongMany) {
  // More requests than the ring's 64 entries: submitted in several goes.
  std::vector<int> fds;
  for (int i = 0; i < 100; ++i) fds.push_back(eventfd());
  std::atomic<std::uint32_t> word{0};
  const UringWait::FutexWord words[] = {{&word, 0}};
  std::thread writer([&] {
    std::this_thread::sleep_for(50ms);
    const std::uint64_t one = 1;
    EXPECT_EQ(::write(fds[77], &one, sizeof one), 8);
  });
  std::vector<std::size_t> readable;
  EXPECT_EQ(sut_->wait(fds, words, 20'000, &readable), Woken::descriptor);
  writer.join();
  EXPECT_EQ(readable, std::vector<std::size_t>{77}) << "the index of the one written, in fds";
  // Every other request was cancelled and taken: the next sleep, with
  // nothing happening, lasts its timeout (a stray completion would end it).
  std::uint64_t drained = 0;
  ASSERT_EQ(::read(fds[77], &drained, sizeof drained), 8);
  const auto started = std::chrono::steady_clock::now();
  EXPECT_EQ(sut_->wait(fds, words, 200), Woken::timeout);
  EXPECT_GE(std::chrono::steady_clock::now() - started, 190ms);
}

TEST_F(UringWaitTest, nothingHappeningSleepsUntilTheTimeoutAndAgain) {
  std::atomic<std::uint32_t> word{5};
  const int idle = eventfd();
  const UringWait::FutexWord words[] = {{&word, 5}};
  const int fds[] = {idle};
  for (int round = 0; round < 3; ++round) {
    const auto started = std::chrono::steady_clock::now();
    EXPECT_EQ(sut_->wait(fds, words, 100), Woken::timeout) << "round " << round;
    EXPECT_GE(std::chrono::steady_clock::now() - started, 95ms) << "round " << round;
  }
}

}  // namespace
}  // namespace colo::bridge
