// Lock holders SIGKILLed at random points while updating the state the lock
// protects, COLO_KILLS times (200 in the multiproc
// suite, 10,000 in the stress suite).
//
// Processes (all fork/exec'd colo-test-worker):
// - 2 `churn` workers acquire in a loop (timed acquires, so they can stop),
//   check/repair/log each grant, update a then b (invariant a == b between
//   updates), release, pause a random while.
// - one `victim` at a time: acquires, logs its grant, begins an update
//   (a != b), marks itself as holding, then goes on updating a and b in
//   steps with random pauses and never releases.
// The test waits until the victim holds, sleeps a random delay, SIGKILLs it,
// reaps it, and waits (bounded) until the death was reported to the next
// holder before starting the next victim.
//
// Checked at the end, exactly: owner_died grants == kills; each victim grant
// is immediately followed in the grant log by an owner_died grant, and no
// other grant reports owner_died; no normal grant ever saw a half-updated
// state (the next holder after a death repaired it); tokens in grant order
// increase by exactly one per grant; the lock's own counters agree (grants,
// recoveries, fencing epoch); every worker exits on its own within a bound.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "colo/node.hpp"
#include "support.hpp"

namespace colo {
namespace {

using namespace std::chrono_literals;
using test::Process;

std::uint64_t env_number(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoull(v, nullptr, 10) : fallback;
}

class KillHolder : public test::NamespaceTest {};

TEST_F(KillHolder, everyHolderKilledMidUpdateIsReportedToExactlyOneNextHolderWhoRepairs) {
  const std::uint64_t kills = env_number("COLO_KILLS", 200);
  const std::uint64_t seed = env_number("COLO_SEED", std::random_device{}());
  constexpr int kChurners = 2;
  constexpr std::uint32_t kChurnPauseUs = 500;
  std::printf("kills=%llu seed=%llu (rerun with COLO_SEED=%llu)\n", static_cast<unsigned long long>(kills),
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  // Churners grant at most every ~250 us on average each; 500 log entries
  // per kill leaves ample room (kills take a few ms each).
  const std::uint64_t capacity = 100'000 + kills * 500;

  NodeOptions options;
  options.ns = ns;
  auto node = Node::open(options);
  ASSERT_TRUE(node) << node.error().message;
  auto lock = node->lock("protected", OpenMode::create);
  ASSERT_TRUE(lock) << lock.error().message;
  test::SharedStateFile state(ns, capacity);
  std::vector<Process*> churners;
  for (int i = 0; i < kChurners; ++i)
    churners.push_back(&adopt(Process::spawn(
        {test::worker_path(), "churn", ns, "protected", state.path(), std::to_string(kChurnPauseUs)})));
  ASSERT_TRUE(test::wait_until([&] { return state->ready.load() == kChurners; }, 30s));

  const auto start = std::chrono::steady_clock::now();
  for (std::uint64_t k = 1; k <= kills; ++k) {
    state->holding_pid.store(0);
    Process victim = Process::spawn(
        {test::worker_path(), "victim", ns, "protected", state.path(), std::to_string(rng())});
    const auto victim_pid = static_cast<std::uint32_t>(victim.pid());
    const bool holds = test::wait_until([&] { return state->holding_pid.load() == victim_pid; }, 20s, 50us);
    ASSERT_TRUE(holds) << "kill " << k << ": victim " << victim_pid << " did not get the lock within 20 s ("
                       << (victim.wait_for(0ms) ? "it exited: " + victim.out() + victim.err() : "still waiting") << ")";
    // Random delay: 0 (kill at once) in 1/8 of the kills, else up to 2 ms.
    if (rng() % 8 != 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 2000));

    victim.kill(SIGKILL);
    const auto status = victim.wait_for(10s);

    ASSERT_TRUE(status.has_value()) << "kill " << k << ": victim not reaped";
    ASSERT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL)
        << "kill " << k << ": victim ended otherwise (status " << *status << "): " << victim.out() << victim.err();
    const bool reported = test::wait_until([&] { return state->owner_died_grants.load() >= k; }, 20s, 50us);
    ASSERT_TRUE(reported) << "kill " << k << ": no holder was told within 20 s (a waiter hangs?)";
    ASSERT_EQ(state->owner_died_grants.load(), k) << "kill " << k << ": more owner_died grants than kills";
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%llu kills in %.1f s\n", static_cast<unsigned long long>(kills), seconds);
  RecordProperty("kills", static_cast<int>(kills));
  RecordProperty("seconds", std::to_string(seconds));

  state->stop.store(1);
  for (Process* c : churners) {
    const auto status = c->wait_for(20s);
    ASSERT_TRUE(status.has_value()) << "churn worker " << c->pid() << " did not stop within 20 s";
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << c->out() << c->err();
  }

  // --- everything stopped: check the record
  const std::uint64_t n = state->log_count.load();
  const test::GrantRecord* log = state.log();
  std::printf("grants logged %llu, owner_died grants %llu, repairs %llu, violations %llu\n",
              static_cast<unsigned long long>(n), static_cast<unsigned long long>(state->owner_died_grants.load()),
              static_cast<unsigned long long>(state->repairs.load()),
              static_cast<unsigned long long>(state->violations.load()));
  EXPECT_EQ(state->log_overflow.load(), 0u);
  EXPECT_EQ(state->violations.load(), 0u) << "a normal grant saw a half-updated state, or a token went backwards";
  EXPECT_EQ(state->owner_died_grants.load(), kills);
  EXPECT_GE(state->repairs.load(), kills >= 20 ? 1u : 0u);  // most kills land mid-update
  EXPECT_LE(state->repairs.load(), kills);
  ASSERT_GE(n, 2 * kills);
  EXPECT_EQ(log[0].token, 1u);
  std::uint64_t victims = 0, owner_died = 0, out_of_order = 0, not_followed = 0, unexplained = 0;
  for (std::uint64_t i = 0; i < n; ++i) {
    if (i > 0 && log[i].token != log[i - 1].token + 1) ++out_of_order;
    const bool died = (log[i].flags & test::kGrantOwnerDied) != 0;
    const bool victim = (log[i].flags & test::kGrantVictim) != 0;
    victims += victim;
    owner_died += died;
    if (victim && (i + 1 == n || (log[i + 1].flags & test::kGrantOwnerDied) == 0)) ++not_followed;
    if (died && (i == 0 || (log[i - 1].flags & test::kGrantVictim) == 0)) ++unexplained;
  }
  EXPECT_EQ(out_of_order, 0u) << "tokens must increase by exactly one per grant, in grant order";
  EXPECT_EQ(victims, kills);
  EXPECT_EQ(owner_died, kills);
  EXPECT_EQ(not_followed, 0u) << "a killed holder's grant not followed by an owner_died grant";
  EXPECT_EQ(unexplained, 0u) << "an owner_died grant that no kill explains";

  const LockStats s = lock->stats();
  EXPECT_EQ(s.grants, n);
  EXPECT_EQ(s.fencing_epoch, log[n - 1].token);
  EXPECT_EQ(s.recoveries, kills);
  EXPECT_EQ(s.waiters, 0u);
  EXPECT_EQ(s.holder.pid, 0u);
  auto mine = lock->try_acquire_for(5s);
  ASSERT_TRUE(mine.has_value());
  EXPECT_FALSE(mine->owner_died());
  EXPECT_EQ(mine->fencing_token(), log[n - 1].token + 1);
  EXPECT_EQ(state->a.load(), state->b.load());  // repaired and consistent
}

}  // namespace
}  // namespace colo
