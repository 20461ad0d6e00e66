// Lock seen from one test process, with a helper
// process where "another process" is the point: busy/timeout while held
// elsewhere, fencing tokens, relocking, owner death, and every counter.
#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "colo/node.hpp"
#include "support.hpp"

namespace colo {
namespace {

using namespace std::chrono_literals;
using test::Process;

class LockTest : public test::NamespaceTest {
 protected:
  void SetUp() override {
    NamespaceTest::SetUp();
    auto node = Node::open(test::node_options(ns));
    ASSERT_TRUE(node) << node.error().message;
    node_.emplace(std::move(node).value());
    auto lock = node_->lock("L", OpenMode::create);
    ASSERT_TRUE(lock) << lock.error().message;
    sut.emplace(std::move(lock).value());
    state = std::make_unique<test::SharedStateFile>(ns);
  }
  void TearDown() override {
    children.clear();
    sut.reset();
    node_.reset();
    state.reset();
    NamespaceTest::TearDown();
  }

  // Starts a worker that acquires L and holds it until `release` is set;
  // returns once it holds.
  Process& start_holder() {
    state->get()->holding_pid.store(0);
    Process& p = adopt(Process::spawn({test::worker_path(), "hold", ns, "L", state->path()}));
    const bool holds = test::wait_until([&] { return state->get()->holding_pid.load() == static_cast<std::uint32_t>(p.pid()); }, 10s);
    EXPECT_TRUE(holds) << "worker did not get the lock within 10 s: " << p.err();
    return p;
  }

  std::optional<Node> node_;
  std::optional<Lock> sut;
  std::unique_ptr<test::SharedStateFile> state;
};

TEST_F(LockTest, tryAcquireIsBusyWhileAnotherProcessHolds) {
  Process& holder = start_holder();

  auto g = sut->try_acquire();

  EXPECT_FALSE(g.has_value());
  state->get()->release.store(1);
  ASSERT_TRUE(holder.wait_for(10s).has_value());
  EXPECT_EQ(*holder.status(), 0) << holder.err();
  auto after = sut->try_acquire();
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(after->fencing_token(), 2u);
  EXPECT_FALSE(after->owner_died());
}

TEST_F(LockTest, tryAcquireForTimesOutWithinBoundsAndCountsTheTimeout) {
  Process& holder = start_holder();
  const auto start = std::chrono::steady_clock::now();

  auto g = sut->try_acquire_for(200ms);

  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_FALSE(g.has_value());
  EXPECT_GE(elapsed, 200ms);
  EXPECT_LT(elapsed, 5s);
  const LockStats s = sut->stats();
  EXPECT_EQ(s.timeouts, 1u);
  EXPECT_EQ(s.grants, 1u);  // the holder's only
  EXPECT_EQ(s.waiters, 0u);  // we stopped waiting
  state->get()->release.store(1);
  ASSERT_TRUE(holder.wait_for(10s).has_value());
}

TEST_F(LockTest, tryAcquireForGrantsWhenReleasedDuringTheWait) {
  Process& holder = start_holder();
  std::thread releaser([&] {
    std::this_thread::sleep_for(100ms);
    state->get()->release.store(1);
  });

  auto g = sut->try_acquire_for(30s);

  releaser.join();
  ASSERT_TRUE(g.has_value());
  EXPECT_EQ(g->fencing_token(), 2u);
  const LockStats s = sut->stats();
  EXPECT_EQ(s.timeouts, 0u);
  EXPECT_EQ(s.contended_grants, 1u);
  ASSERT_TRUE(holder.wait_for(10s).has_value());
}

TEST_F(LockTest, tokensStrictlyIncreaseByOnePerGrant) {
  std::uint64_t last = 0;
  for (int i = 0; i < 1000; ++i) {
    std::optional<LockGuard> g;
    switch (i % 3) {
      case 0: { auto r = sut->acquire(); ASSERT_TRUE(r); g.emplace(std::move(r).value()); break; }
      case 1: g = sut->try_acquire(); break;
      default: g = sut->try_acquire_for(1s); break;
    }
    ASSERT_TRUE(g.has_value()) << i;

    EXPECT_EQ(g->fencing_token(), last + 1) << i;
    last = g->fencing_token();
  }
  EXPECT_EQ(sut->stats().fencing_epoch, 1000u);
  EXPECT_EQ(sut->stats().grants, 1000u);
}

TEST_F(LockTest, tokensKeepIncreasingAcrossOwnerDeath) {
  Process& holder = start_holder();  // token 1
  holder.kill(SIGKILL);
  ASSERT_TRUE(holder.wait_for(10s).has_value());

  auto g = sut->acquire();

  ASSERT_TRUE(g) << g.error().message;
  EXPECT_TRUE(g->owner_died());
  EXPECT_EQ(g->fencing_token(), 2u);
  g->unlock();
  auto next = sut->acquire();
  ASSERT_TRUE(next);
  EXPECT_FALSE(next->owner_died());  // told once
  EXPECT_EQ(next->fencing_token(), 3u);
}

TEST_F(LockTest, relockingFromTheHoldingThreadIsAnErrorNotADeadlock) {
  auto held = sut->acquire();
  ASSERT_TRUE(held);

  auto again = sut->acquire();
  auto try_again = sut->try_acquire();
  auto timed_again = sut->try_acquire_for(100ms);

  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, Errc::invalid_argument);
  EXPECT_NE(again.error().message.find("lock 'L' is already held by this thread"), std::string::npos)
      << again.error().message;
  EXPECT_FALSE(try_again.has_value());
  EXPECT_FALSE(timed_again.has_value());
  EXPECT_TRUE(held->owns_lock());
  EXPECT_EQ(sut->stats().grants, 1u);
  held->unlock();
  EXPECT_TRUE(sut->try_acquire().has_value());  // and the lock still works
}

TEST_F(LockTest, guardReleasesOnDestructionAndOnMove) {
  {
    auto g = sut->acquire();
    ASSERT_TRUE(g);
    LockGuard moved = std::move(g).value();
    EXPECT_TRUE(moved.owns_lock());
  }
  auto g = sut->try_acquire();
  ASSERT_TRUE(g.has_value());
  EXPECT_EQ(sut->stats().holder.pid, static_cast<std::uint32_t>(::getpid()));
  g->unlock();
  EXPECT_FALSE(g->owns_lock());
  EXPECT_EQ(sut->stats().holder.pid, 0u);
}

TEST_F(LockTest, statsCountGrantsAndContendedGrantsAndShowAWaitingChild) {
  auto held = sut->acquire();
  ASSERT_TRUE(held);
  Process& waiter = adopt(Process::spawn({test::worker_path(), "acquire", ns, "L", state->path()}));

  const bool waiting = test::wait_until([&] { return sut->stats().waiters == 1; }, 10s);

  ASSERT_TRUE(waiting) << "the child never showed up as a waiter: " << waiter.err();
  held->unlock();
  ASSERT_TRUE(waiter.wait_for(10s).has_value());
  EXPECT_EQ(*waiter.status(), 0) << waiter.err();
  EXPECT_EQ(waiter.out(), "token=2 owner_died=0\n");
  const LockStats s = sut->stats();
  EXPECT_EQ(s.grants, 2u);
  EXPECT_EQ(s.contended_grants, 1u);
  EXPECT_EQ(s.recoveries, 0u);
  EXPECT_EQ(s.timeouts, 0u);
  EXPECT_EQ(s.waiters, 0u);
  EXPECT_EQ(s.fencing_epoch, 2u);
  EXPECT_EQ(s.holder.pid, 0u);
  EXPECT_EQ(s.scope, Scope::host);
}

TEST_F(LockTest, statsShowTheHoldingProcessAndThread) {
  std::uint32_t holder_tid = 0;
  std::atomic<bool> holding{false}, done{false};
  std::thread t([&] {
    auto g = sut->acquire();
    holder_tid = static_cast<std::uint32_t>(::syscall(SYS_gettid));
    holding = true;
    while (!done) std::this_thread::sleep_for(1ms);
  });
  ASSERT_TRUE(test::wait_until([&] { return holding.load(); }, 10s));

  const LockStats s = sut->stats();

  done = true;
  t.join();
  EXPECT_EQ(s.holder.pid, static_cast<std::uint32_t>(::getpid()));
  EXPECT_EQ(s.holder.tid, holder_tid);
  EXPECT_NE(s.holder.tid, static_cast<std::uint32_t>(::getpid()));  // not the main thread
  EXPECT_TRUE(s.holder.alive);
  EXPECT_GE(s.holder.held_for_ns, 0.0);
}

TEST_F(LockTest, statsShowADeadHolderAndCountTheRecovery) {
  Process& holder = start_holder();
  const auto holder_pid = static_cast<std::uint32_t>(holder.pid());
  const LockStats live = sut->stats();
  holder.kill(SIGKILL);
  ASSERT_TRUE(holder.wait_for(10s).has_value());

  const LockStats dead = sut->stats();
  auto g = sut->try_acquire();

  EXPECT_EQ(live.holder.pid, holder_pid);
  EXPECT_EQ(live.holder.tid, holder_pid);  // its main thread
  EXPECT_TRUE(live.holder.alive);
  EXPECT_EQ(dead.holder.pid, holder_pid);
  EXPECT_FALSE(dead.holder.alive);
  ASSERT_TRUE(g.has_value());
  EXPECT_TRUE(g->owner_died());
  const LockStats after = sut->stats();
  EXPECT_EQ(after.recoveries, 1u);
  EXPECT_EQ(after.grants, 2u);
  EXPECT_EQ(after.holder.pid, static_cast<std::uint32_t>(::getpid()));
  EXPECT_TRUE(after.holder.alive);
}

TEST_F(LockTest, waiterKilledWhileBlockedIsNotCountedAndTheLockStaysUsable) {
  auto held = sut->acquire();
  ASSERT_TRUE(held);
  Process& waiter = adopt(Process::spawn({test::worker_path(), "acquire", ns, "L", state->path()}));
  ASSERT_TRUE(test::wait_until([&] { return sut->stats().waiters == 1; }, 10s)) << waiter.err();

  waiter.kill(SIGKILL);
  ASSERT_TRUE(waiter.wait_for(10s).has_value());

  EXPECT_EQ(sut->stats().waiters, 0u);
  held->unlock();
  auto g = sut->try_acquire();
  ASSERT_TRUE(g.has_value());
  EXPECT_FALSE(g->owner_died());  // a dead waiter is not a dead owner
  EXPECT_EQ(g->fencing_token(), 2u);
}

// LockStats::waiters promises "dead ones not counted". Waiters beyond the 16
// slots of the record are only counted (overflow_waiters), so a killed one
// stays counted forever (see the report: library bug).
TEST_F(LockTest, waitersKilledWhileBlockedAreNotCountedEvenBeyondTheSixteenSlots) {
  constexpr std::uint32_t kWaiters = 20;
  auto held = sut->acquire();
  ASSERT_TRUE(held);
  std::vector<Process*> waiters;
  for (std::uint32_t i = 0; i < kWaiters; ++i)
    waiters.push_back(&adopt(Process::spawn({test::worker_path(), "acquire", ns, "L", state->path()})));
  ASSERT_TRUE(test::wait_until([&] { return sut->stats().waiters == kWaiters; }, 30s))
      << "waiters seen: " << sut->stats().waiters;

  for (Process* w : waiters) w->kill(SIGKILL);
  for (Process* w : waiters) ASSERT_TRUE(w->wait_for(10s).has_value());

  EXPECT_EQ(sut->stats().waiters, 0u);
}

TEST_F(LockTest, holdTimeIsSampledForContendedGrants) {
  auto held = sut->acquire();
  ASSERT_TRUE(held);
  Process& waiter = adopt(Process::spawn({test::worker_path(), "acquire", ns, "L", state->path()}));
  ASSERT_TRUE(test::wait_until([&] { return sut->stats().waiters == 1; }, 10s)) << waiter.err();
  held->unlock();
  ASSERT_TRUE(waiter.wait_for(10s).has_value());

  const LockStats s = sut->stats();

  EXPECT_EQ(s.hold_samples, 1u);  // the contended grant (the first, token 1, is not sampled)
  EXPECT_GT(s.hold_ns_mean, 0.0);
}

}  // namespace
}  // namespace colo
