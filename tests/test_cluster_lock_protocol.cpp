// The cluster line of a lock record (broker/lock_record.hpp,
// colo/internal/cluster_keeper.hpp)
// without colod or a backend: this test plays colod through
// ClusterLockKeeper, so every step of the protocol is checked exactly and
// fast. tests/services/ runs the real thing against real servers.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "clock.hpp"
#include "colo/internal/cluster_keeper.hpp"
#include "colo/node.hpp"
#include "support.hpp"

namespace colo {
namespace {

using namespace std::chrono_literals;
using internal::ClusterLockKeeper;

class ClusterLockProtocol : public test::NamespaceTest {
 protected:
  void SetUp() override {
    NamespaceTest::SetUp();
    auto node = Node::open(test::node_options(ns));
    ASSERT_TRUE(node) << node.error().message;
    node_.emplace(std::move(node).value());
    auto lock = node_->lock("orders/pool", OpenMode::create, {.scope = Scope::cluster});
    ASSERT_TRUE(lock) << lock.error().message;
    lock_.emplace(std::move(lock).value());
  }
  void TearDown() override {
    lock_.reset();
    node_.reset();
    NamespaceTest::TearDown();
  }
  ClusterLockKeeper keeper() {
    auto k = ClusterLockKeeper::adopt(*node_, "orders/pool");
    EXPECT_TRUE(k) << k.error().message;
    return std::move(k).value();
  }
  // Waits (bounded) until the record is in `state`.
  static bool reaches(const ClusterLockKeeper& k, LeaseState state) {
    return test::wait_until([&] { return k.state() == state; }, 5s);
  }
  static std::uint64_t in(std::chrono::milliseconds d) {
    return shm::monotonic_ns() + static_cast<std::uint64_t>(std::chrono::nanoseconds(d).count());
  }
  std::optional<Node> node_;
  std::optional<Lock> lock_;
};

TEST_F(ClusterLockProtocol, ScopeIsRecordedAndAHostLockOfTheSameNameIsRefused) {
  EXPECT_EQ(lock_->scope(), Scope::cluster);
  auto host = node_->lock("orders/pool", OpenMode::create_or_open);
  ASSERT_FALSE(host);
  EXPECT_EQ(host.error().code, Errc::parameter_mismatch);
}

TEST_F(ClusterLockProtocol, WithoutColodAnAcquireFailsWithNotReady) {
  const auto start = std::chrono::steady_clock::now();
  auto got = lock_->acquire();
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, Errc::not_ready);
  EXPECT_NE(got.error().message.find("no colod"), std::string::npos) << got.error().message;
  EXPECT_GE(std::chrono::steady_clock::now() - start, 4900ms);
  // And the lock is free again for others (the mutex was let go).
  EXPECT_EQ(lock_->stats().holder.pid, 0u);
}

TEST_F(ClusterLockProtocol, GrantsCarryTheClusterEpochAndCountLocallyUntilReleased) {
  auto k = keeper();
  EXPECT_EQ(k.state(), LeaseState::none);
  // A try does not wait, but asks colod for the lock.
  EXPECT_FALSE(lock_->try_acquire());
  EXPECT_EQ(k.state(), LeaseState::requested);
  k.grant_cluster(7, in(10s));
  {
    auto g = lock_->acquire();
    ASSERT_TRUE(g) << g.error().message;
    EXPECT_EQ(g->fencing_token(), (std::uint64_t{7} << 20) | 1);
    EXPECT_FALSE(g->lease_lost());
    EXPECT_FALSE(g->owner_died());
  }
  auto again = lock_->try_acquire();  // held by this host: granted at once, no colod involved
  ASSERT_TRUE(again);
  EXPECT_EQ(again->fencing_token(), (std::uint64_t{7} << 20) | 2);
  EXPECT_EQ(k.local_grants(), 2u);
  EXPECT_TRUE(k.has_local_holder());
  EXPECT_FALSE(k.try_take_local_mutex());  // colod cannot take it from a holder
  again->unlock();
  // Idle: colod takes the mutex and releases the cluster lock.
  ASSERT_TRUE(k.try_take_local_mutex());
  k.finish_release();
  EXPECT_EQ(k.state(), LeaseState::none);
  const auto stats = lock_->stats();
  ASSERT_TRUE(stats.cluster);
  EXPECT_EQ(stats.cluster->lease_state, LeaseState::none);
  EXPECT_EQ(stats.cluster->epoch, 0u);
  EXPECT_TRUE(stats.cluster->keeper_alive);
  EXPECT_EQ(stats.fencing_epoch, (std::uint64_t{7} << 20) | 2);
}

TEST_F(ClusterLockProtocol, NoGrantBeyondTheHandOffBudget) {
  auto k = keeper();
  k.grant_cluster(4, in(10s), 2);
  for (std::uint64_t n = 1; n <= 2; ++n) {
    auto g = lock_->try_acquire();
    ASSERT_TRUE(g);
    EXPECT_EQ(g->fencing_token(), (std::uint64_t{4} << 20) | n);
  }
  EXPECT_FALSE(lock_->try_acquire_for(50ms)) << "the third grant must wait for colod to yield";
  EXPECT_EQ(k.local_grants(), 2u);
}

TEST_F(ClusterLockProtocol, TheLeaseRunningOutIsSeenWithoutColodAndTheCallbackFires) {
  auto k = keeper();
  std::thread colod([&] {
    ASSERT_TRUE(reaches(k, LeaseState::requested));
    k.grant_cluster(3, in(300ms));
  });
  auto g = lock_->acquire();
  colod.join();
  ASSERT_TRUE(g) << g.error().message;
  std::atomic<int> calls{0};
  g->on_lease_lost([&] { ++calls; });
  EXPECT_FALSE(g->lease_lost());
  // colod says nothing (paused, killed): the clock alone ends the lease.
  ASSERT_TRUE(test::wait_until([&] { return g->lease_lost(); }, 2s));
  ASSERT_TRUE(test::wait_until([&] { return calls.load() == 1; }, 2s));
  // Not granted again on the expired hold: a timed acquire in another
  // thread waits (the mutex is held here anyway), and after release too.
  g->unlock();
  EXPECT_FALSE(lock_->try_acquire_for(100ms));
  EXPECT_EQ(calls.load(), 1);
}

TEST_F(ClusterLockProtocol, MarkLostTellsTheHolderAtOnceAndTheNextAcquirerWaitsForANewHold) {
  auto k = keeper();
  k.grant_cluster(1, in(10s));  // as if requested earlier
  auto g = lock_->acquire();
  ASSERT_TRUE(g);
  std::atomic<bool> told{false};
  g->on_lease_lost([&] { told = true; });
  k.mark_lost();
  ASSERT_TRUE(test::wait_until([&] { return told.load(); }, 1s));
  EXPECT_TRUE(g->lease_lost());
  g->unlock();
  std::thread colod([&] {
    ASSERT_TRUE(reaches(k, LeaseState::requested));  // the next acquirer asked again
    k.grant_cluster(2, in(10s));
  });
  auto next = lock_->acquire();
  colod.join();
  ASSERT_TRUE(next);
  EXPECT_EQ(next->fencing_token(), (std::uint64_t{2} << 20) | 1);
  EXPECT_FALSE(next->lease_lost());
  EXPECT_EQ(lock_->stats().cluster->lease_losses, 1u);
}

TEST_F(ClusterLockProtocol, YieldWaitsForTheHolderAndMakesLocalAcquirersQueueAgain) {
  auto k = keeper();
  k.grant_cluster(5, in(10s));
  auto holder = lock_->acquire();
  ASSERT_TRUE(holder);
  k.begin_yield();
  EXPECT_FALSE(holder->lease_lost()) << "yielding: the current holder keeps its hold until it releases";
  EXPECT_FALSE(k.take_local_mutex(in(50ms)));
  std::atomic<std::uint64_t> next_token{0};
  std::thread acquirer([&] {
    auto g = lock_->acquire();
    if (g) next_token = g->fencing_token();
  });
  std::this_thread::sleep_for(50ms);
  holder->unlock();
  ASSERT_TRUE(k.take_local_mutex(in(5s)));  // the acquirer stepped aside for colod
  k.finish_release();
  ASSERT_TRUE(reaches(k, LeaseState::requested));
  k.grant_cluster(6, in(10s));
  acquirer.join();
  EXPECT_EQ(next_token.load(), (std::uint64_t{6} << 20) | 1);
}

TEST_F(ClusterLockProtocol, AKeeperThatTakesOverMarksAHoldOfThePreviousOneLost) {
  {
    auto first = keeper();
    first.grant_cluster(9, in(10s));
  }
  auto second = keeper();  // a restarted colod: the old session is gone
  EXPECT_EQ(second.state(), LeaseState::lost);
  EXPECT_EQ(lock_->stats().cluster->lease_losses, 1u);
}

}  // namespace
}  // namespace colo
