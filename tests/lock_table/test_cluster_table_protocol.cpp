// A cluster-scope lock table's per-key protocol (the entry's cluster line,
// broker/lock_table_layout.hpp) without colod or a backend: this test plays
// colod through ClusterTableKeeper and the ClusterHold of each key, so every
// step is checked exactly and fast. tests/services/ runs the real thing.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "clock.hpp"
#include "colo/internal/cluster_keeper.hpp"
#include "colo/node.hpp"
#include "support.hpp"
#include "table_state_file.hpp"

namespace colo {
namespace {

using namespace std::chrono_literals;
using internal::ClusterHold;
using internal::ClusterTableKeeper;

std::uint64_t in(std::chrono::milliseconds d) {
  return shm::monotonic_ns() + static_cast<std::uint64_t>(std::chrono::nanoseconds(d).count());
}
constexpr std::uint64_t token(std::uint64_t epoch, std::uint64_t local) { return epoch << 20 | local; }

class ClusterTableProtocol : public test::NamespaceTest {
 protected:
  void SetUp() override {
    NamespaceTest::SetUp();
    auto node = Node::open(test::node_options(ns));
    ASSERT_TRUE(node) << node.error().message;
    node_.emplace(std::move(node).value());
    auto table = node_->lock_table("orders", OpenMode::create, {.scope = Scope::cluster, .capacity = 100});
    ASSERT_TRUE(table) << table.error().message;
    table_.emplace(std::move(table).value());
  }
  void TearDown() override {
    table_.reset();
    node_.reset();
    NamespaceTest::TearDown();
  }
  ClusterTableKeeper keeper() {
    auto k = ClusterTableKeeper::adopt(*node_, "orders");
    EXPECT_TRUE(k) << k.error().message;
    return std::move(k).value();
  }
  // Asks for `key` (a try: it posts the request and returns at once), then
  // takes the request as colod does: the key's hold.
  std::unique_ptr<ClusterHold> requested(ClusterTableKeeper& k, const std::string& key) {
    auto asked = table_->try_acquire(key);
    EXPECT_TRUE(asked && !asked->has_value()) << "a try while colod has not granted must not grant";
    auto requests = k.take_requests();
    EXPECT_EQ(requests.size(), 1u);
    if (requests.empty()) return nullptr;
    return k.key_at(requests[0]);
  }
  // Holds `key` in a thread of its own (this thread plays colod, whose own
  // word must not be the holder's) until release() or destruction.
  class Holder {
   public:
    Holder(LockTable& table, const std::string& key) {
      thread_ = std::thread([&table, key, this] {
        auto g = table.acquire(key);
        token_ = g ? g->fencing_token() : 0;
        held_ = true;
        while (!release_) std::this_thread::sleep_for(1ms);
      });
      test::wait_until([&] { return held_.load(); }, 5s);
    }
    std::uint64_t token() const { return token_; }
    void release() {
      release_ = true;
      if (thread_.joinable()) thread_.join();
    }
    ~Holder() { release(); }

   private:
    std::thread thread_;
    std::atomic<bool> held_{false}, release_{false};
    std::atomic<std::uint64_t> token_{0};
  };

  std::optional<Node> node_;
  std::optional<LockTable> table_;
};

TEST_F(ClusterTableProtocol, KeysOfAClusterTableMustFitABackendLockName) {
  auto slash = table_->acquire("order/42");
  ASSERT_FALSE(slash);
  EXPECT_EQ(slash.error().code, Errc::invalid_argument);
  EXPECT_EQ(slash.error().message,
            "lock table 'orders': invalid cluster key 'order/42': byte 0x2f at offset 5 is not allowed (cluster keys "
            "are 1-200 bytes of A-Z a-z 0-9 . _ - :)");
}

TEST_F(ClusterTableProtocol, WithoutColodAnAcquireFailsWithNotReadyAndTheKeyLeavesTheTable) {
  const auto start = std::chrono::steady_clock::now();
  auto got = table_->acquire("order:1");
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, Errc::not_ready);
  EXPECT_EQ(got.error().message,
            "lock table 'orders': no colod serves this namespace's cluster locks (start colod with a "
            "[[lock_backend]] for it, or check that it runs)");
  EXPECT_GE(std::chrono::steady_clock::now() - start, 4900ms);
  EXPECT_EQ(table_->stats().live_keys, 0u);
}

TEST_F(ClusterTableProtocol, AKeyAsksColodThenGrantsCarryTheEpochAndTheKeyStaysWhileTheHostHoldsIt) {
  auto k = keeper();
  auto hold = requested(k, "order:42");
  ASSERT_TRUE(hold);
  EXPECT_EQ(hold->backend_name(), "orders/order:42");
  EXPECT_EQ(hold->state(), LeaseState::requested);
  ASSERT_TRUE(hold->grant_cluster(7, in(10s), 1000));
  {
    Holder holder(*table_, "order:42");
    EXPECT_EQ(holder.token(), token(7, 1));
    EXPECT_TRUE(hold->has_local_holder());
    EXPECT_FALSE(hold->try_take_local_mutex());  // colod cannot take it from a holder
  }
  const LockTableStats kept = table_->stats();
  EXPECT_EQ(kept.live_keys, 1u);
  EXPECT_EQ(kept.kept_keys, 1u);
  auto again = table_->try_acquire("order:42");  // held by this host: granted at once, no colod involved
  ASSERT_TRUE(again && again->has_value());
  EXPECT_EQ((*again)->fencing_token(), token(7, 2));
  again->reset();
  EXPECT_EQ(hold->local_grants(), 2u);
  // Idle: colod takes the entry, releases the cluster lock, the key leaves.
  ASSERT_TRUE(hold->try_take_local_mutex());
  hold->finish_release();
  EXPECT_EQ(hold->state(), LeaseState::none);
  EXPECT_EQ(table_->stats().live_keys, 0u);
}

TEST_F(ClusterTableProtocol, NoGrantBeyondTheHandOffBudget) {
  auto k = keeper();
  auto hold = requested(k, "k");
  ASSERT_TRUE(hold);
  ASSERT_TRUE(hold->grant_cluster(4, in(10s), 2));
  for (std::uint64_t n = 1; n <= 2; ++n) {
    auto g = table_->try_acquire("k");
    ASSERT_TRUE(g && g->has_value());
    EXPECT_EQ((*g)->fencing_token(), token(4, n));
  }
  auto third = table_->try_acquire_for("k", 50ms);
  ASSERT_TRUE(third);
  EXPECT_FALSE(third->has_value()) << "the third grant must wait for colod to yield";
  EXPECT_EQ(hold->local_grants(), 2u);
}

TEST_F(ClusterTableProtocol, ALostHoldIsSeenByItsHolderAndTheKeyLeavesAtItsRelease) {
  auto k = keeper();
  auto hold = requested(k, "k");
  ASSERT_TRUE(hold);
  ASSERT_TRUE(hold->grant_cluster(9, in(10s), 1000));
  auto g = table_->acquire("k");
  ASSERT_TRUE(g);
  std::atomic<int> told{0};
  g->on_lease_lost([&] { told.fetch_add(1); });

  hold->mark_lost();

  EXPECT_TRUE(g->lease_lost());
  EXPECT_TRUE(test::wait_until([&] { return told.load() == 1; }, 5s));
  EXPECT_EQ(hold->state(), LeaseState::lost);
  g->unlock();
  EXPECT_EQ(table_->stats().live_keys, 0u);
}

TEST_F(ClusterTableProtocol, AYieldWaitsForTheHolderThenTheKeyLeavesAndItsWaiterAsksAgain) {
  auto k = keeper();
  auto hold = requested(k, "k");
  ASSERT_TRUE(hold);
  ASSERT_TRUE(hold->grant_cluster(5, in(10s), 1000));
  Holder holder(*table_, "k");
  hold->begin_yield();
  EXPECT_FALSE(hold->take_local_mutex(in(20ms)));  // the holder has it
  holder.release();
  ASSERT_TRUE(hold->take_local_mutex(in(1000ms)));
  hold->finish_release();
  EXPECT_EQ(table_->stats().live_keys, 0u);
  // The next acquirer inserts the key again and asks colod anew.
  auto asked = table_->try_acquire("k");
  ASSERT_TRUE(asked);
  EXPECT_FALSE(asked->has_value());
  EXPECT_EQ(k.take_requests().size(), 1u);
}

TEST_F(ClusterTableProtocol, AHoldOfAKeyThatLeftItsEntryCanNoLongerGrant) {
  auto k = keeper();
  auto old_hold = requested(k, "k");
  ASSERT_TRUE(old_hold);
  ASSERT_TRUE(old_hold->grant_cluster(3, in(10s), 1000));
  ASSERT_TRUE(old_hold->try_take_local_mutex());
  old_hold->finish_release();  // the key leaves its entry
  auto new_hold = requested(k, "k");  // inserted again: a new incarnation
  ASSERT_TRUE(new_hold);

  EXPECT_EQ(old_hold->state(), LeaseState::invalid);
  EXPECT_FALSE(old_hold->grant_cluster(99, in(10s), 1000));
  EXPECT_EQ(new_hold->state(), LeaseState::requested);
  ASSERT_TRUE(new_hold->grant_cluster(4, in(10s), 1000));
  auto g = table_->acquire("k");
  ASSERT_TRUE(g);
  EXPECT_EQ(g->fencing_token(), token(4, 1));
}

TEST_F(ClusterTableProtocol, ANewKeeperMarksWhatAnEarlierOneHeldLostAndFreesItsKeptKeys) {
  {
    auto first = keeper();
    auto hold = requested(first, "k");
    ASSERT_TRUE(hold);
    ASSERT_TRUE(hold->grant_cluster(2, in(10s), 1000));
    auto g = table_->acquire("k");  // then released: kept
    ASSERT_TRUE(g);
  }
  ASSERT_EQ(table_->stats().kept_keys, 1u);

  auto second = keeper();

  const LockTableStats s = table_->stats();
  EXPECT_EQ(s.live_keys, 0u);
  EXPECT_EQ(s.kept_keys, 0u);
  EXPECT_TRUE(second.take_requests().empty());
}

TEST_F(ClusterTableProtocol, AHolderThatDiesIsReportedToTheNextGrantUnderTheSameEpoch) {
  auto k = keeper();
  auto hold = requested(k, "k");
  ASSERT_TRUE(hold);
  ASSERT_TRUE(hold->grant_cluster(6, in(10s), 1000));
  test::TableStateFile state(ns, 1);
  test::Process& holder = adopt(test::Process::spawn({test::table_worker(), "hold", ns, "orders", "k", state.path(), "0"}));
  ASSERT_TRUE(test::wait_until([&] { return state->workers[0].phase.load() == test::kHolding; }, 10s)) << holder.err();
  holder.kill(SIGKILL);
  ASSERT_TRUE(holder.wait_for(10s).has_value());

  auto g = table_->acquire("k");

  ASSERT_TRUE(g) << g.error().message;
  EXPECT_TRUE(g->owner_died());
  EXPECT_EQ(g->fencing_token(), token(6, 2));
}

}  // namespace
}  // namespace colo
