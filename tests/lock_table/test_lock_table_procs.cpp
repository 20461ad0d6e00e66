// Lock tables under many processes, with exact per-key expectations:
//   - 8 processes x COLO_TABLE_ACQUISITIONS random keys of 100,000: every
//     key's counter equals the number of times the workers' seeded random
//     sequences drew it (replayed here), tokens strictly increasing per key;
//   - COLO_TABLE_KILLS (default 1,000) holders SIGKILLed while they hold: each
//     kill is reported as exactly one owner_died, on the killed holder's key;
//   - insert/free churn with processes SIGKILLed at random moments (inside
//     insert and free): afterwards no live entry, no damage, exact counts;
//   - a process scribbling over the table: no crash, damage counted, the
//     table usable afterwards.
#include <gtest/gtest.h>

#include <chrono>
#include <random>
#include <thread>

#include "colo/node.hpp"
#include "support.hpp"
#include "table_state_file.hpp"

namespace colo {
namespace {

using namespace std::chrono_literals;
using test::Process;
using test::TableStateFile;
using test::table_worker;

std::uint64_t env_number(const char* name, std::uint64_t fallback) {
  const char* text = std::getenv(name);
  return text != nullptr ? std::strtoull(text, nullptr, 10) : fallback;
}

class LockTableProcsTest : public test::NamespaceTest {
 protected:
  void SetUp() override {
    NamespaceTest::SetUp();
    auto node = Node::open(test::node_options(ns));
    ASSERT_TRUE(node) << node.error().message;
    node_.emplace(std::move(node).value());
  }
  void TearDown() override {
    children.clear();
    table.reset();
    node_.reset();
    state.reset();
    NamespaceTest::TearDown();
  }

  void setup(std::uint64_t capacity, std::uint64_t keys) {
    auto t = node_->lock_table("T", OpenMode::create, {.capacity = capacity});
    ASSERT_TRUE(t) << t.error().message;
    table.emplace(std::move(t).value());
    state = std::make_unique<TableStateFile>(ns, keys);
  }

  Process& spawn_keys(std::size_t worker, std::uint64_t seed, std::uint64_t count, const std::string& mode) {
    return adopt(Process::spawn({table_worker(), "keys", ns, "T", state->path(), std::to_string(worker),
                                 std::to_string(seed), std::to_string(count), mode}));
  }

  // Sets go once `n` workers are ready.
  void start(std::uint32_t n) {
    ASSERT_TRUE(test::wait_until([&] { return (*state)->ready.load() >= n; }, 60s)) << "workers not ready";
    (*state)->go.store(1);
  }

  // Waits for a worker that ends by itself; it must print "done N".
  void expect_done(Process& p, std::uint64_t count, std::chrono::seconds within) {
    const auto status = p.wait_for(within);
    ASSERT_TRUE(status.has_value()) << "worker " << p.pid() << " still running";
    EXPECT_EQ(*status, 0) << p.out() << p.err();
    if (count != 0) {
      EXPECT_EQ(p.out(), "done " + std::to_string(count) + "\n");
    }
  }

  // Acquires every key once from this process (a dead holder is taken over
  // at once by try_acquire) and checks it as a worker would.
  void sweep_every_key() {
    for (std::uint64_t k = 0; k < (*state)->keys; ++k) {
      auto guard = table->try_acquire(test::key_name(k));
      ASSERT_TRUE(guard) << guard.error().message;
      ASSERT_TRUE(guard->has_value()) << "key " << k << " still held by a live process";
      test::on_grant(state->cell(k), **guard);
    }
  }

  // How many times each key is drawn by workers [first, first + n) with
  // seeds seed + worker, `count` draws each: the worker's own sequence.
  std::vector<std::uint64_t> replay(std::size_t first, std::size_t n, std::uint64_t seed, std::uint64_t count) {
    std::vector<std::uint64_t> drawn((*state)->keys, 0);
    for (std::size_t w = first; w < first + n; ++w) {
      std::mt19937_64 rng(seed + w);
      for (std::uint64_t i = 0; i < count; ++i) ++drawn[rng() % (*state)->keys];
    }
    return drawn;
  }

  // The table still works after what a test did to it: `n` fresh workers x
  // `count` random keys (seeds seed + 0 .. n - 1) add exactly their draws to
  // every key's counter, with no violation and nothing half-done.
  void expect_exact_counts_again(std::size_t n, std::uint64_t seed, std::uint64_t count) {
    std::vector<std::uint64_t> before((*state)->keys);
    for (std::uint64_t k = 0; k < (*state)->keys; ++k) before[k] = state->cell(k).a.load();
    (*state)->go.store(0);
    (*state)->ready.store(0);
    (*state)->stop.store(0);
    std::vector<Process*> again;
    for (std::size_t w = 0; w < n; ++w) again.push_back(&spawn_keys(w, seed + w, count, "plain"));
    start(static_cast<std::uint32_t>(n));
    for (auto* w : again) expect_done(*w, count, 120s);
    const auto drawn = replay(0, n, seed, count);
    std::uint64_t wrong = 0;
    for (std::uint64_t k = 0; k < (*state)->keys; ++k) wrong += state->cell(k).a.load() - before[k] != drawn[k];
    EXPECT_EQ(wrong, 0u);
    expect_cells_consistent();
  }

  // Every key's cell: no violation, and a == b (nothing left half-done).
  void expect_cells_consistent() {
    std::uint64_t violations = 0, half_done = 0;
    for (std::uint64_t k = 0; k < (*state)->keys; ++k) {
      violations += state->cell(k).violations.load();
      half_done += state->cell(k).a.load() != state->cell(k).b.load();
    }
    EXPECT_EQ(violations, 0u);
    EXPECT_EQ(half_done, 0u);
  }

  std::optional<Node> node_;
  std::optional<LockTable> table;
  std::unique_ptr<TableStateFile> state;
};

TEST_F(LockTableProcsTest, eightProcessesOnRandomKeysKeepEveryKeysCounterExact) {
  constexpr std::uint64_t kKeys = 100'000;
  constexpr std::size_t kWorkers = 8;
  const std::uint64_t count = env_number("COLO_TABLE_ACQUISITIONS", 100'000);
  const std::uint64_t seed = std::random_device{}();
  std::cout << "seed " << seed << ", " << kWorkers << " x " << count << " acquisitions over " << kKeys << " keys\n";
  setup(kKeys, kKeys);
  std::vector<Process*> workers;
  for (std::size_t w = 0; w < kWorkers; ++w) workers.push_back(&spawn_keys(w, seed + w, count, "plain"));

  start(kWorkers);
  for (auto* w : workers) expect_done(*w, count, 600s);

  const auto drawn = replay(0, kWorkers, seed, count);
  std::uint64_t wrong = 0, violations = 0;
  for (std::uint64_t k = 0; k < kKeys; ++k) {
    const auto& c = state->cell(k);
    wrong += c.a.load() != drawn[k] || c.b.load() != drawn[k];
    violations += c.violations.load();
  }
  EXPECT_EQ(wrong, 0u);
  EXPECT_EQ(violations, 0u);
  const LockTableStats s = table->stats();
  EXPECT_EQ(s.grants, kWorkers * count);
  EXPECT_EQ(s.live_keys, 0u);
  EXPECT_EQ(s.recoveries, 0u);
  EXPECT_EQ(s.damaged_entries, 0u);
}

TEST_F(LockTableProcsTest, everyKilledHolderIsReportedOnceOnItsOwnKey) {
  constexpr std::uint64_t kKeys = 1'000;
  constexpr std::size_t kNormal = 4, kVictims = 2;
  const std::uint64_t kills = env_number("COLO_TABLE_KILLS", 1'000);
  const std::uint64_t seed = std::random_device{}();
  std::cout << "seed " << seed << ", " << kills << " kills\n";
  setup(4096, kKeys);
  std::vector<Process*> normal;
  for (std::size_t w = 0; w < kNormal; ++w) normal.push_back(&spawn_keys(w, seed + w, 0, "churn"));
  std::vector<Process*> victims;
  std::uint64_t spawned = 0;
  for (std::size_t v = 0; v < kVictims; ++v) victims.push_back(&spawn_keys(kNormal + v, seed + 1000 + spawned++, 0, "victim"));
  start(kNormal + kVictims);

  std::mt19937_64 rng(seed);
  for (std::uint64_t done = 0; done < kills;) {
    const std::size_t v = done % kVictims;
    auto& slot = (*state)->workers[kNormal + v];
    ASSERT_TRUE(test::wait_until([&] { return slot.phase.load() == test::kHolding; }, 10s, 20us))
        << "victim " << victims[v]->pid() << " never held a key: " << victims[v]->out() << victims[v]->err();
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 200));
    std::uint32_t holding = test::kHolding;
    if (!slot.phase.compare_exchange_strong(holding, test::kDoomed)) continue;  // it released first: next hold
    const std::uint64_t key = slot.key.load();
    victims[v]->kill(SIGKILL);
    ASSERT_TRUE(victims[v]->wait_for(10s).has_value());
    state->cell(key).kills.fetch_add(1);
    ++done;
    slot.phase.store(test::kIdle);
    victims[v] = &spawn_keys(kNormal + v, seed + 1000 + spawned++, 0, "victim");
  }
  (*state)->stop.store(1);
  for (auto* w : normal) expect_done(*w, 0, 60s);
  for (auto* v : victims) expect_done(*v, 0, 60s);
  sweep_every_key();

  std::uint64_t wrong_key = 0, reported = 0;
  for (std::uint64_t k = 0; k < kKeys; ++k) {
    wrong_key += state->cell(k).owner_died.load() != state->cell(k).kills.load();
    reported += state->cell(k).owner_died.load();
  }
  EXPECT_EQ(wrong_key, 0u);
  EXPECT_EQ(reported, kills);
  expect_cells_consistent();
  const LockTableStats s = table->stats();
  EXPECT_EQ(s.recoveries, kills);
  EXPECT_EQ(s.live_keys, 0u);
  EXPECT_EQ(s.damaged_entries, 0u);
}

TEST_F(LockTableProcsTest, processesKilledInsideInsertAndFreeLeaveTheTableConsistentAndReusable) {
  // A small key space: nearly every acquire inserts and every release frees.
  constexpr std::uint64_t kKeys = 64;
  constexpr std::size_t kWorkers = 6;
  const std::uint64_t kills = env_number("COLO_TABLE_CHURN_KILLS", 300);
  const std::uint64_t seed = std::random_device{}();
  std::cout << "seed " << seed << ", " << kills << " kills\n";
  setup(256, kKeys);
  std::vector<Process*> workers;
  std::uint64_t spawned = 0;
  // Half loop tightly (a kill then lands inside insert or free), half pause.
  auto mode = [](std::size_t w) { return w % 2 == 0 ? "plain" : "churn"; };
  for (std::size_t w = 0; w < kWorkers; ++w) workers.push_back(&spawn_keys(w, seed + spawned++, 0, mode(w)));
  start(kWorkers);

  std::mt19937_64 rng(seed);
  for (std::uint64_t done = 0; done < kills; ++done) {
    std::this_thread::sleep_for(std::chrono::microseconds(500 + rng() % 3000));
    const std::size_t w = rng() % kWorkers;
    workers[w]->kill(SIGKILL);
    ASSERT_TRUE(workers[w]->wait_for(10s).has_value());
    workers[w] = &spawn_keys(w, seed + spawned++, 0, mode(w));
  }
  (*state)->stop.store(1);
  for (auto* w : workers) expect_done(*w, 0, 60s);
  sweep_every_key();
  const LockTableStats after_churn = table->stats();
  std::cout << "bucket locks taken from killed processes: " << after_churn.bucket_recoveries
            << ", holders found dead: " << after_churn.recoveries << "\n";

  EXPECT_EQ(after_churn.live_keys, 0u);
  EXPECT_EQ(after_churn.dead_holders, 0u);
  EXPECT_EQ(after_churn.damaged_entries, 0u);
  expect_cells_consistent();

  expect_exact_counts_again(4, seed + 5000, 20'000);
  EXPECT_EQ(table->stats().live_keys, 0u);
}

TEST_F(LockTableProcsTest, aScribblerCannotCrashTheTablesUsersItsDamageIsCountedAndTheTableStaysUsable) {
  constexpr std::uint64_t kKeys = 1'000;
  constexpr std::size_t kWorkers = 4;
  const std::uint64_t writes = env_number("COLO_TABLE_SCRIBBLES", 50'000);
  const std::uint64_t seed = std::random_device{}();
  std::cout << "seed " << seed << ", " << writes << " scribbles\n";
  setup(4096, kKeys);
  std::vector<Process*> workers;
  for (std::size_t w = 0; w < kWorkers; ++w) workers.push_back(&spawn_keys(w, seed + w, 0, "plain"));
  start(kWorkers);
  Process& scribbler = adopt(Process::spawn({table_worker(), "scribble", ns, "T", std::to_string(seed), std::to_string(writes)}));

  ASSERT_TRUE(scribbler.wait_for(300s).has_value());
  EXPECT_EQ(*scribbler.status(), 0) << scribbler.err();
  EXPECT_EQ(scribbler.out(), "scribbled " + std::to_string(writes) + "\n");
  (*state)->stop.store(1);
  // Every worker ends by itself (none crashed or hangs), having kept working.
  for (std::size_t w = 0; w < kWorkers; ++w) {
    expect_done(*workers[w], 0, 60s);
    EXPECT_GT((*state)->workers[w].grants.load(), 0u);
  }
  const LockTableStats scribbled = table->stats();
  std::cout << "damaged entries " << scribbled.damaged_entries << ", bucket locks taken over "
            << scribbled.bucket_recoveries << "\n";
  EXPECT_GE(scribbled.damaged_entries, 1u);

  // Usable: fresh cells (the scribbled keys' may show violations), exact counts.
  for (std::uint64_t k = 0; k < kKeys; ++k) {
    auto& c = state->cell(k);
    c.a.store(0);
    c.b.store(0);
    c.violations.store(0);
    c.last_token.store(0);
  }
  expect_exact_counts_again(2, seed + 100, 10'000);
}

}  // namespace
}  // namespace colo
