// LockTable seen from one test process, with worker processes where
// "another process" is the point: grants and tokens per key, keys freed on
// release, busy / timeout / blocking, owner death, the full table, and the
// states a crash or a scribble leaves in the table's memory (made by hand
// here, at every step of an insert, so that each is checked exactly).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include <nlohmann/json.hpp>

#include "colo/internal/clock.hpp"
#include "colo/internal/lock_wait.hpp"
#include "colo/node.hpp"
#include "lock_table_view.hpp"
#include "owner_word.hpp"
#include "support.hpp"
#include "table_state_file.hpp"

namespace colo {
namespace {

using namespace std::chrono_literals;
using test::Process;
using test::TableStateFile;
using test::table_worker;

class LockTableTest : public test::NamespaceTest {
 protected:
  void SetUp() override {
    NamespaceTest::SetUp();
    auto node = Node::open(test::node_options(ns));
    ASSERT_TRUE(node) << node.error().message;
    node_.emplace(std::move(node).value());
    create("T", {.capacity = 1000});
    state = std::make_unique<TableStateFile>(ns, 1);
  }
  void TearDown() override {
    children.clear();
    sut.reset();
    node_.reset();
    state.reset();
    NamespaceTest::TearDown();
  }

  void create(const std::string& name, LockTableOptions options) {
    sut.reset();
    auto table = node_->lock_table(name, OpenMode::create, options);
    ASSERT_TRUE(table) << table.error().message;
    sut.emplace(std::move(table).value());
  }

  // A second view of the table's memory, to look at and damage it.
  std::unique_ptr<detail::TableView> raw_view() {
    auto segment = shm::Segment::open(node_->shm_name_of(sut->name()), shm::SegmentKind::lock_table, 1000ms);
    EXPECT_TRUE(segment) << segment.error().message;
    auto view = detail::open_table(sut->name(), std::make_unique<detail::MappedObject>(
                                                    detail::MappedObject{std::move(segment).value()}));
    EXPECT_TRUE(view) << view.error().message;
    return std::move(view).value();
  }

  // A worker that holds `key` until stop; returns once it holds.
  Process& start_holder(const std::string& key) {
    (*state)->workers[0].phase.store(0);
    Process& p = adopt(Process::spawn({table_worker(), "hold", ns, sut->name(), key, state->path(), "0"}));
    const bool holds = test::wait_until([&] { return (*state)->workers[0].phase.load() == test::kHolding; }, 10s);
    EXPECT_TRUE(holds) << "worker did not get the key within 10 s: " << p.out() << p.err();
    return p;
  }

  // The owner word of a thread that has exited (a dead holder).
  std::uint64_t dead_owner_word() {
    auto r = test::run({table_worker(), "owner-word"});
    EXPECT_TRUE(r.exited && r.exit_code == 0) << test::describe(r);
    return std::stoull(r.out);
  }

  std::optional<Node> node_;
  std::optional<LockTable> sut;
  std::unique_ptr<TableStateFile> state;
};

TEST_F(LockTableTest, aKeyIsInsertedByItsAcquireAndFreedByItsRelease) {
  auto guard = sut->acquire("order:42");
  ASSERT_TRUE(guard) << guard.error().message;

  EXPECT_EQ(guard->fencing_token(), 1u);
  EXPECT_FALSE(guard->owner_died());
  EXPECT_EQ(sut->stats().live_keys, 1u);
  auto key = sut->lock("order:42");
  ASSERT_TRUE(key);
  const KeyStats held = key->stats();
  EXPECT_TRUE(held.held);
  EXPECT_EQ(held.fencing_token, 1u);
  EXPECT_EQ(held.holder.pid, static_cast<std::uint32_t>(::getpid()));
  EXPECT_EQ(held.holder.tid, static_cast<std::uint32_t>(::gettid()));
  EXPECT_TRUE(held.holder.alive);
  guard->unlock();
  EXPECT_EQ(sut->stats().live_keys, 0u);
  EXPECT_FALSE(key->stats().held);
  EXPECT_EQ(sut->stats().grants, 1u);
}

TEST_F(LockTableTest, tokensOfAKeyKeepGrowingAcrossItsEntryBeingFreedAndInsertedAgain) {
  std::vector<std::uint64_t> tokens;
  for (int i = 0; i < 5; ++i) {
    auto guard = sut->acquire("account/7");
    ASSERT_TRUE(guard) << guard.error().message;
    tokens.push_back(guard->fencing_token());
  }  // each release frees the entry

  EXPECT_EQ(tokens, (std::vector<std::uint64_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(sut->stats().live_keys, 0u);
}

TEST_F(LockTableTest, distinctKeysAreHeldAtOnceAndAllFreedAfterwards) {
  std::vector<LockGuard> guards;
  for (int i = 0; i < 600; ++i) {
    auto guard = sut->acquire("key-" + std::to_string(i));
    ASSERT_TRUE(guard) << guard.error().message;
    guards.push_back(std::move(guard).value());
  }

  const LockTableStats during = sut->stats();
  guards.clear();
  const LockTableStats after = sut->stats();

  EXPECT_EQ(during.live_keys, 600u);
  EXPECT_EQ(during.dead_holders, 0u);
  EXPECT_EQ(after.live_keys, 0u);
  EXPECT_EQ(after.grants, 600u);
  EXPECT_EQ(after.damaged_entries, 0u);
}

TEST_F(LockTableTest, theHoldingThreadAcquiringAgainGetsAnErrorNotADeadlock) {
  auto guard = sut->acquire("k");
  ASSERT_TRUE(guard);

  auto again = sut->acquire("k");
  auto try_again = sut->try_acquire("k");

  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, Errc::invalid_argument);
  EXPECT_EQ(again.error().message, "lock table 'T': this thread already holds the key");
  ASSERT_FALSE(try_again);
  EXPECT_EQ(try_again.error().code, Errc::invalid_argument);
}

TEST_F(LockTableTest, keysOutsideOneToMaxKeyBytesAreRefused) {
  create("short", {.capacity = 10, .max_key_bytes = 8});

  auto empty = sut->acquire("");
  auto long_key = sut->lock("123456789");
  auto fits = sut->acquire("12345678");

  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().code, Errc::invalid_argument);
  EXPECT_EQ(empty.error().message, "lock table 'short': a key is 1 to 8 bytes; this one is 0");
  ASSERT_FALSE(long_key);
  EXPECT_EQ(long_key.error().message, "lock table 'short': a key is 1 to 8 bytes; this one is 9");
  EXPECT_TRUE(fits) << fits.error().message;
}

TEST_F(LockTableTest, tryAcquireIsBusyWhileAnotherProcessHoldsTheKeyOnly) {
  Process& holder = start_holder("order:1");

  auto busy = sut->try_acquire("order:1");
  auto other = sut->try_acquire("order:2");
  const KeyStats seen = sut->lock("order:1")->stats();

  ASSERT_TRUE(busy) << busy.error().message;
  EXPECT_FALSE(busy->has_value());
  ASSERT_TRUE(other && other->has_value());
  EXPECT_EQ(seen.holder.pid, static_cast<std::uint32_t>(holder.pid()));
  EXPECT_TRUE(seen.holder.alive);
  (*state)->stop.store(1);
  ASSERT_TRUE(holder.wait_for(10s).has_value());
  EXPECT_EQ(holder.out(), "token=1 owner_died=0\n");
  auto after = sut->try_acquire("order:1");
  ASSERT_TRUE(after && after->has_value());
  EXPECT_FALSE((*after)->owner_died());
}

TEST_F(LockTableTest, tryAcquireForTimesOutWithinBoundsAndCountsTheTimeout) {
  start_holder("k");
  const auto start = std::chrono::steady_clock::now();

  auto got = sut->try_acquire_for("k", 200ms);

  const auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_FALSE(got->has_value());
  EXPECT_GE(elapsed, 200ms);
  EXPECT_LT(elapsed, 5s);
  EXPECT_EQ(sut->stats().timeouts, 1u);
}

TEST_F(LockTableTest, aBlockedAcquirerIsRecordedAndWokenByTheRelease) {
  auto guard = sut->acquire("hot");
  ASSERT_TRUE(guard);
  std::atomic<std::uint64_t> token{0};
  std::thread waiter([&] {
    auto got = sut->acquire("hot");
    if (got) token = got->fencing_token();
  });
  // The waiter registers itself, then counts its wait in the hot-key sketch:
  // wait for both before taking the snapshot.
  ASSERT_TRUE(test::wait_until(
      [&] { return sut->lock("hot")->stats().waiters == 1 && !sut->stats().most_contended.empty(); }, 5s));

  const LockTableStats blocked = sut->stats();
  guard->unlock();
  waiter.join();

  EXPECT_EQ(blocked.waiters, 1u);
  ASSERT_EQ(blocked.most_contended.size(), 1u);
  EXPECT_EQ(blocked.most_contended[0].key, "hot");
  EXPECT_EQ(blocked.most_contended[0].waits, 1u);
  EXPECT_EQ(token.load(), 2u);
  const LockTableStats after = sut->stats();
  EXPECT_EQ(after.contended_grants, 1u);
  EXPECT_EQ(after.waiters, 0u);
  EXPECT_EQ(after.live_keys, 0u);
}

// internal::KeyLockWait, the Python binding's blocking acquire: slices that
// end count nothing and keep one waiter record; the table sees one acquire.
TEST_F(LockTableTest, anAcquireInSlicesCountsAsOneAcquire) {
  // Another thread holds the key until told to release it.
  std::atomic<int> holder_step{0};  // 1: holds, 2: release
  std::thread holder([&] {
    auto held = sut->acquire("hot");
    holder_step = held ? 1 : -1;
    while (holder_step.load() != 2) std::this_thread::sleep_for(1ms);
  });
  ASSERT_TRUE(test::wait_until([&] { return holder_step.load() != 0; }, 5s));
  ASSERT_EQ(holder_step.load(), 1);
  auto key = sut->lock("hot");
  ASSERT_TRUE(key);
  std::optional<internal::KeyLockWait> wait(std::in_place, *key);
  std::vector<bool> slices_granted;
  for (int i = 0; i < 3; ++i) {
    auto got = wait->slice(internal::monotonic_ns() + 20'000'000);
    ASSERT_TRUE(got) << got.error().message;
    slices_granted.push_back(got->has_value());
  }
  const LockTableStats waiting = sut->stats();
  const std::uint32_t key_waiters = key->stats().waiters;
  holder_step = 2;
  holder.join();
  auto granted = wait->slice(internal::monotonic_ns() + 5'000'000'000);
  ASSERT_TRUE(granted) << granted.error().message;
  ASSERT_TRUE(granted->has_value());
  const std::uint64_t token = (*granted)->fencing_token();
  const std::uint32_t waiters_holding = sut->stats().waiters;
  granted->reset();
  wait.reset();

  // A second sliced acquire gives up: one timeout, no waiter left.
  auto held = sut->acquire("hot");
  ASSERT_TRUE(held);
  std::thread other([&] {
    internal::KeyLockWait gives_up(*key);
    for (int i = 0; i < 2; ++i) (void)gives_up.slice(internal::monotonic_ns() + 10'000'000);
    gives_up.timed_out();
  });
  other.join();
  held->unlock();

  EXPECT_EQ(slices_granted, (std::vector<bool>{false, false, false}));
  EXPECT_EQ(waiting.waiters, 1u);
  EXPECT_EQ(key_waiters, 1u);
  EXPECT_EQ(waiting.timeouts, 0u);
  ASSERT_EQ(waiting.most_contended.size(), 1u);
  EXPECT_EQ(waiting.most_contended[0].waits, 1u);  // once, not once per slice
  EXPECT_EQ(token, 2u);
  EXPECT_EQ(waiters_holding, 0u);
  const LockTableStats after = sut->stats();
  EXPECT_EQ(after.contended_grants, 1u);  // the sliced grant; the one that gave up was granted nothing
  EXPECT_EQ(after.timeouts, 1u);
  EXPECT_EQ(after.waiters, 0u);
  EXPECT_EQ(after.live_keys, 0u);
  EXPECT_EQ(after.most_contended[0].waits, 2u);
}

TEST_F(LockTableTest, aKilledHolderIsReportedOnceToTheNextAcquirerOfItsKey) {
  Process& holder = start_holder("order:9");
  holder.kill(SIGKILL);
  ASSERT_TRUE(holder.wait_for(10s).has_value());
  const LockTableStats dead = sut->stats();

  auto first = sut->acquire("order:9");
  ASSERT_TRUE(first) << first.error().message;
  const bool first_died = first->owner_died();
  const std::uint64_t first_token = first->fencing_token();
  first->unlock();
  auto second = sut->acquire("order:9");
  ASSERT_TRUE(second);

  EXPECT_EQ(dead.live_keys, 1u);
  EXPECT_EQ(dead.dead_holders, 1u);
  EXPECT_TRUE(first_died);
  EXPECT_EQ(first_token, 2u);
  EXPECT_FALSE(second->owner_died());
  EXPECT_EQ(second->fencing_token(), 3u);
  EXPECT_EQ(sut->stats().recoveries, 1u);
}

TEST_F(LockTableTest, aFullTableRefusesWithAClearErrorAndTakesKeysAgainOnceOneIsReleased) {
  // Capacity 6: one home bucket and one overflow bucket, 16 entries, and
  // every key's window is both: the 17th held key finds no room.
  create("small", {.capacity = 6});
  std::vector<LockGuard> guards;
  for (int i = 0; i < 16; ++i) {
    auto guard = sut->acquire("k" + std::to_string(i));
    ASSERT_TRUE(guard) << i << ": " << guard.error().message;
    guards.push_back(std::move(guard).value());
  }

  auto blocking = sut->acquire("k16");
  auto trying = sut->try_acquire("k16");
  const LockTableStats full = sut->stats();
  guards.erase(guards.begin());
  auto after = sut->acquire("k16");

  ASSERT_FALSE(blocking);
  EXPECT_EQ(blocking.error().code, Errc::capacity);
  EXPECT_EQ(blocking.error().message,
            "lock table 'small' is full for this key (capacity 6 held keys; all 16 entries where the key may live "
            "are held): release keys, or recreate the table with a larger capacity");
  ASSERT_FALSE(trying);
  EXPECT_EQ(trying.error().code, Errc::capacity);
  EXPECT_EQ(full.live_keys, 16u);
  EXPECT_EQ(full.entries, 16u);
  EXPECT_EQ(full.full_refusals, 2u);
  EXPECT_EQ(full.overflowed_keys, 8u);
  ASSERT_TRUE(after) << after.error().message;
  EXPECT_EQ(sut->stats().damaged_entries, 0u);
}

// A process killed inside an insert, at each step, leaves its bucket lock
// naming a dead thread and the entry written up to that step. Made by hand:
// the key's entry written (hash, length, key bytes, tag) but its word still
// 0 (killed before the publishing store), then the word published too.
TEST_F(LockTableTest, anInsertKilledBeforeItsPublishingStoreLeavesNoKeyAndItsBucketIsTakenOver) {
  auto probe = sut->acquire("half");
  ASSERT_TRUE(probe);
  const std::uint64_t token = probe->fencing_token();
  probe->unlock();  // the entry keeps its key bytes and tag: what a killed insert leaves, word 0
  auto view = raw_view();
  const std::uint64_t hash = detail::key_hash(*view, "half", 4);
  view->bucket(view->home_of(hash)).lock.store(dead_owner_word());

  auto guard = sut->acquire("half");

  ASSERT_TRUE(guard) << guard.error().message;
  EXPECT_FALSE(guard->owner_died());
  EXPECT_EQ(guard->fencing_token(), token + 1);
  const LockTableStats s = sut->stats();
  EXPECT_EQ(s.bucket_recoveries, 1u);
  EXPECT_EQ(s.live_keys, 1u);
  EXPECT_EQ(s.damaged_entries, 0u);
}

TEST_F(LockTableTest, anInsertKilledAfterItsPublishingStoreLeavesTheKeyHeldByADeadOwner) {
  auto view = raw_view();
  const std::uint64_t hash = detail::key_hash(*view, "done", 4);
  const std::uint64_t home = view->home_of(hash);
  const std::uint64_t dead = dead_owner_word();
  // Every field of the insert, in its order, then the word: as the killed
  // process left it, bucket lock still held.
  view->bucket(home).lock.store(dead);
  detail::TableEntry& e = view->entry(home, 0);
  e.hash.store(hash);
  e.key_len.store(4);
  e.home_distance.store(0);
  std::memcpy(view->key_of(e), "done", 4);
  view->bucket(home).epoch.store(7);
  e.token.store(7);
  view->bucket(home).tags[0].store(detail::tag_of(hash));
  e.word.store(dead);

  auto guard = sut->acquire("done");

  ASSERT_TRUE(guard) << guard.error().message;
  EXPECT_TRUE(guard->owner_died());
  EXPECT_EQ(guard->fencing_token(), 8u);
  const LockTableStats s = sut->stats();
  EXPECT_EQ(s.bucket_recoveries, 1u);
  EXPECT_EQ(s.recoveries, 1u);
  EXPECT_EQ(s.live_keys, 1u);
}

TEST_F(LockTableTest, anEntryThatNamesNoThreadIsIsolatedCountedAndSkipped) {
  auto view = raw_view();
  const std::uint64_t hash = detail::key_hash(*view, "victim", 6);
  const std::uint64_t home = view->home_of(hash);
  view->entry(home, 0).word.store(0x1234'5678'0000'0001);  // tid field 0: no thread, not free

  auto guard = sut->acquire("victim");

  ASSERT_TRUE(guard) << guard.error().message;
  EXPECT_EQ(view->entry(home, 0).word.load(), detail::kEntryDamaged);
  EXPECT_EQ(view->entry(home, 1).word.load(), shm::self_owner_word());
  EXPECT_EQ(sut->stats().damaged_entries, 1u);
  guard->unlock();
  EXPECT_EQ(sut->stats().live_keys, 0u);
}

TEST_F(LockTableTest, anEntryWhoseKeyCannotBelongThereIsIsolated) {
  auto view = raw_view();
  const std::uint64_t hash = detail::key_hash(*view, "k", 1);
  const std::uint64_t home = view->home_of(hash);
  detail::TableEntry& e = view->entry(home, 0);
  e.key_len.store(500);  // longer than any key
  e.hash.store(hash);
  e.word.store(dead_owner_word());

  auto guard = sut->acquire("k");

  ASSERT_TRUE(guard) << guard.error().message;
  EXPECT_EQ(e.word.load(), detail::kEntryDamaged);
  EXPECT_EQ(sut->stats().damaged_entries, 1u);
}

TEST_F(LockTableTest, aReleaseThatFindsItsEntryOverwrittenLeavesItAndCountsTheDamage) {
  auto guard = sut->acquire("k");
  ASSERT_TRUE(guard);
  auto view = raw_view();
  const std::uint64_t hash = detail::key_hash(*view, "k", 1);
  detail::TableEntry& e = view->entry(view->home_of(hash), 0);
  const std::uint64_t scribble = dead_owner_word();
  e.word.store(scribble);

  guard->unlock();

  EXPECT_EQ(e.word.load(), scribble);
  EXPECT_EQ(sut->stats().damaged_entries, 1u);
  auto next = sut->acquire("k");  // the "dead" holder's key is taken over
  ASSERT_TRUE(next);
  EXPECT_TRUE(next->owner_died());
}

TEST_F(LockTableTest, openingWithOtherParametersSaysWhatExists) {
  auto other = node_->lock_table("T", OpenMode::create_or_open, {.capacity = 2000});
  auto lock = node_->lock("T");
  auto reopened = node_->lock_table("T", OpenMode::open);

  ASSERT_FALSE(other);
  EXPECT_EQ(other.error().code, Errc::parameter_mismatch);
  EXPECT_EQ(other.error().message,
            "lock-table 'T' in namespace '" + ns +
                "' exists with scope host, capacity 1000, max key 64 bytes, not scope host, capacity 2000, max key 64 bytes");
  ASSERT_FALSE(lock);
  EXPECT_EQ(lock.error().code, Errc::kind_mismatch);
  ASSERT_TRUE(reopened) << reopened.error().message;
  EXPECT_EQ(reopened->stats().capacity, 1000u);
}

TEST_F(LockTableTest, badOptionsAreRefusedBeforeAnythingIsCreated) {
  auto zero = node_->lock_table("Z", OpenMode::create, {.capacity = 0});
  auto huge_key = node_->lock_table("Z", OpenMode::create, {.capacity = 10, .max_key_bytes = 257});

  ASSERT_FALSE(zero);
  EXPECT_EQ(zero.error().message, "lock table 'Z': capacity 0 is not in 1 .. 67108864");
  ASSERT_FALSE(huge_key);
  EXPECT_EQ(huge_key.error().message, "lock table 'Z': max key size 257 is not in 1 .. 256");
  EXPECT_FALSE(node_->info("Z"));
}

TEST_F(LockTableTest, listShowsOneObjectPerTableAndInfoScansIt) {
  auto guard = sut->acquire("a");
  ASSERT_TRUE(guard);

  auto all = node_->list();
  auto info = node_->info("T");

  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0].kind, ObjectKind::lock_table);
  EXPECT_EQ((*all)[0].state, ObjectState::ready);
  EXPECT_FALSE((*all)[0].lock_table.has_value());
  ASSERT_TRUE(info);
  ASSERT_TRUE(info->lock_table.has_value());
  EXPECT_EQ(info->lock_table->live_keys, 1u);
  EXPECT_EQ(info->lock_table->capacity, 1000u);
}

// `colo` on lock tables, as a real process.
TEST_F(LockTableTest, coloCreatesATableLocksItsKeysAndShowsIt) {
  const auto made = test::run_colo(ns, {"create", "lock-table", "orders", "--capacity", "100"});
  ASSERT_EQ(made.exit_code, 0) << test::describe(made);
  EXPECT_EQ(made.out.rfind("created lock-table 'orders' in namespace '" + ns + "': 100 keys of up to 64 bytes, ", 0), 0u)
      << made.out;
  const auto first = test::run_colo(ns, {"lock", "--table", "orders", "order:42", "--", "sh", "-c", "echo $COLO_FENCING_TOKEN"});
  const auto second = test::run_colo(ns, {"lock", "--table", "orders", "order:42", "--", "sh", "-c", "echo $COLO_FENCING_TOKEN"});
  const auto missing = test::run_colo(ns, {"lock", "--table", "nope", "k", "--", "true"});
  const auto stat = test::run_colo(ns, {"stat", "orders", "--json", "--interval", "0"});
  const auto ls = test::run_colo(ns, {"ls"});

  EXPECT_EQ(first.out, "1\n") << test::describe(first);
  EXPECT_EQ(second.out, "2\n") << test::describe(second);
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_EQ(missing.err, "colo: lock-table 'nope' in namespace '" + ns +
                             "' does not exist; create it (`colo create lock-table nope`, or OpenMode::create_or_open)\n");
  ASSERT_EQ(stat.exit_code, 0) << test::describe(stat);
  const auto j = nlohmann::json::parse(stat.out);
  EXPECT_EQ(j["kind"], "lock-table");
  EXPECT_EQ(j["lock_table"]["grants"], 2);
  EXPECT_EQ(j["lock_table"]["live_keys"], 0);
  EXPECT_EQ(j["lock_table"]["capacity"], 100);
  EXPECT_NE(ls.out.find("\nlock-table orders "), std::string::npos) << ls.out;
}

TEST_F(LockTableTest, coloLockOnATableKeyTimesOutNamingItsHolder) {
  Process& holder = start_holder("k");

  const auto timed = test::run_colo(ns, {"lock", "--table", "T", "--timeout", "0.2", "k", "--", "true"});

  EXPECT_EQ(timed.exit_code, 75) << test::describe(timed);
  EXPECT_EQ(timed.err, "colo: timed out after 0.2 s waiting for key 'k' of lock table 'T' (held by pid " +
                           std::to_string(holder.pid()) + ")\n");
}

}  // namespace
}  // namespace colo
