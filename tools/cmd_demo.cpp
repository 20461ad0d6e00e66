// `colo demo`: what colo is for, shown in a few seconds with real processes.
//
// The demo runs a sequence of parts, each a small scenario with forked
// processes in a private namespace `demo<pid>` that is removed at the end,
// even on failure or Ctrl-C. Each part checks exact outcomes and says OK or
// FAILED with the reason; the demo ends with `demo: OK` (exit 0) or
// `demo: FAILED: <why>` (exit 1). Parts: "locks", then "queues and topics"
// (described at its section below), then "federation" (demo_federation.cpp:
// three colod on this machine standing for hosts).
//
// Part "locks": W worker processes share a counter in shared memory under one
// colo lock; each does its share of the increments. One worker is killed
// (SIGKILL) while it holds the lock in the middle of an update; the next
// holder is told the owner died and repairs the state; a restarted worker
// finishes the killed one's share, and the counter ends exact.
//
//   An increment is a transaction with an undo journal, all under the lock:
//     1. journal = {slot, pid, token, old value, old done[slot]}; journal open
//     2. value = old value + 1          <- the victim is killed right here
//     3. done[slot] = old done + 1
//     4. journal closed                  (commit)
//   A holder told owner_died() rolls an open journal back (value and
//   done[slot] restored), so a half-done increment never happened: the
//   killed worker's partial increment is ROLLED BACK, and its replacement
//   does it again. Hence counter == sum of done[] == --increments, exactly.
//
// Every grant also checks its fencing token against the last token recorded
// in the shared state (under the lock): it must be strictly greater.
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <functional>
#include <iostream>
#include <memory>
#include <new>
#include <set>
#include <span>
#include <thread>
#include <type_traits>
#include <vector>

#include "bench_process.hpp"
#include "cli.hpp"
#include "colo/internal/clock.hpp"
#include "demo_federation.hpp"

namespace colo::cli {
namespace {

constexpr auto relaxed = std::memory_order_relaxed;
constexpr auto release = std::memory_order_release;
constexpr auto acquire = std::memory_order_acquire;
constexpr auto acq_rel = std::memory_order_acq_rel;

struct DemoOptions {
  int workers = 4;
  std::int64_t increments = 25'000;
  std::int64_t topic_messages = 200'000;  // per publisher
  std::int64_t queue_messages = 100'000;  // in all
  FederationDemoOptions federation;
  bool json = false;
};

// Prints progress as it happens (text mode); silent with --json.
class Reporter {
 public:
  explicit Reporter(bool json) : json_(json) {}
  bool json() const noexcept { return json_; }
  void line(const std::string& text) {
    if (json_) return;
    std::printf("%s\n", text.c_str());
    std::fflush(stdout);
  }

 private:
  bool json_;
};

// What a part reports: OK or why not, and its figures for --json.
struct PartOutcome {
  std::string name;
  std::vector<std::string> failures;  // empty: OK
  nlohmann::json detail = nlohmann::json::object();
};

struct Part {
  const char* name;
  PartOutcome (*run)(const DemoOptions&, ScratchNamespace&, Reporter&);
};

// ================================================================ locks part

constexpr const char* kLockName = "demo/counter";
constexpr int kMaxWorkers = 64;
constexpr int kMaxProcesses = kMaxWorkers + 1;  // the workers and the restarted victim
constexpr int kMaxRecoveryRecords = 8;

// A repair done by a holder that was told owner_died().
struct RecoveryRecord {
  std::uint32_t dead_pid;        // last holder recorded in the state
  std::uint32_t new_pid;         // the holder that repaired
  std::uint64_t dead_token;      // last token recorded (the dead holder's)
  std::uint64_t new_token;       // the repairing holder's
  std::uint64_t value_found;     // counter as the dead holder left it
  std::uint64_t value_restored;  // counter after the repair
  std::uint32_t rolled_back;     // 1: an open journal was rolled back
  std::uint32_t journal_slot;    // whose increment it was
};

// The state the demo lock protects: written only by the holder. Atomics so
// that every store of a holder killed at any instruction is a whole value;
// the journal's release stores keep the steps in order (DESIGN.md 3.4: the
// next holder must be able to tell how far the dead one got).
struct CounterState {
  std::atomic<std::uint64_t> value;
  std::atomic<std::uint64_t> done[kMaxWorkers];  // committed increments per worker slot
  std::atomic<std::uint64_t> last_token;          // fencing token of the latest grant
  std::atomic<std::uint32_t> last_holder_pid;
  // Undo journal of the increment in progress.
  std::atomic<std::uint32_t> journal_open;
  std::atomic<std::uint32_t> journal_slot;
  std::atomic<std::uint32_t> journal_pid;
  std::atomic<std::uint64_t> journal_token;
  std::atomic<std::uint64_t> journal_old_value;
  std::atomic<std::uint64_t> journal_old_done;
  // Repairs.
  std::atomic<std::uint32_t> recoveries;
  RecoveryRecord recovery[kMaxRecoveryRecords];
};

// One forked process's own record (written by that process only).
struct ProcessRecord {
  std::atomic<std::uint32_t> pid;
  std::atomic<std::uint64_t> grants;
  std::atomic<std::uint64_t> increments;       // increments this process committed
  std::atomic<std::uint64_t> token_violations;  // tokens not above the last recorded one
  std::atomic<std::uint64_t> owner_died;        // grants with owner_died() == true
  std::atomic<std::uint64_t> unreported_damage;  // open journal found without owner_died()
  std::atomic<int> failed;
  char error[240];
};

struct DemoShared {
  alignas(64) std::atomic<int> go;
  alignas(64) std::atomic<int> victim_holding;  // the victim is mid-update, holding the lock
  std::atomic<std::uint64_t> victim_token;
  std::atomic<std::uint64_t> victim_value_before;
  alignas(64) CounterState counter;
  alignas(64) ProcessRecord process[kMaxProcesses];
};

struct WorkerPlan {
  std::string ns;
  int process = 0;              // index in DemoShared::process
  int slot = 0;                 // worker slot: whose share this process works on
  std::uint64_t share = 0;      // increments of this slot in total
  std::uint64_t stall_at = 0;   // the victim: stop mid-update at this grant (0: never)
};

void fail_in_child(ProcessRecord& me, const std::string& why) {
  std::snprintf(me.error, sizeof me.error, "%s", why.c_str());
  me.failed.store(1, release);
}

template <typename T>
void bump(std::atomic<T>& counter) {
  counter.store(counter.load(relaxed) + 1, relaxed);
}

// Called holding the lock, by a holder told that the previous one died.
void repair(CounterState& c, std::uint32_t dead_pid, std::uint64_t dead_token, std::uint32_t me,
            std::uint64_t token) {
  RecoveryRecord r{};
  r.dead_pid = dead_pid;
  r.dead_token = dead_token;
  r.new_pid = me;
  r.new_token = token;
  r.value_found = c.value.load(relaxed);
  if (c.journal_open.load(acquire) != 0) {
    const std::uint32_t slot = c.journal_slot.load(relaxed);
    r.rolled_back = 1;
    r.journal_slot = slot;
    c.value.store(c.journal_old_value.load(relaxed), release);
    if (slot < kMaxWorkers) c.done[slot].store(c.journal_old_done.load(relaxed), release);
    c.journal_open.store(0, release);
  }
  r.value_restored = c.value.load(relaxed);
  const std::uint32_t n = c.recoveries.load(relaxed);
  if (n < kMaxRecoveryRecords) c.recovery[n] = r;
  c.recoveries.store(n + 1, release);
}

int demo_worker(const WorkerPlan& plan, DemoShared& shared) {
  ProcessRecord& me = shared.process[plan.process];
  CounterState& c = shared.counter;
  const auto pid = static_cast<std::uint32_t>(::getpid());
  me.pid.store(pid, release);

  NodeOptions options;
  options.ns = plan.ns;
  auto node = Node::open(options);
  if (!node) {
    fail_in_child(me, node.error().message);
    return 2;
  }
  auto lock = node->lock(kLockName, OpenMode::open);
  if (!lock) {
    fail_in_child(me, lock.error().message);
    return 2;
  }
  const auto give_up = SteadyClock::now() + std::chrono::seconds(10);
  while (shared.go.load(acquire) == 0) {
    if (SteadyClock::now() > give_up) {
      fail_in_child(me, "never told to start");
      return 3;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }

  std::uint64_t grants = 0;
  for (;;) {
    auto acquired = lock->acquire();
    if (!acquired) {
      fail_in_child(me, acquired.error().message);
      return 4;
    }
    const LockGuard& guard = *acquired;
    me.grants.store(++grants, relaxed);
    const std::uint64_t token = guard.fencing_token();
    const std::uint64_t previous_token = c.last_token.load(relaxed);
    const std::uint32_t previous_holder = c.last_holder_pid.load(relaxed);
    if (token <= previous_token) bump(me.token_violations);
    c.last_token.store(token, relaxed);
    c.last_holder_pid.store(pid, relaxed);
    if (guard.owner_died()) {
      bump(me.owner_died);
      repair(c, previous_holder, previous_token, pid, token);
    } else if (c.journal_open.load(acquire) != 0) {
      bump(me.unreported_damage);  // half-done update, yet nobody was told: a library bug
      repair(c, previous_holder, previous_token, pid, token);
    }

    const std::uint64_t done = c.done[plan.slot].load(relaxed);
    if (done >= plan.share) return 0;  // share complete (releases the lock)

    // 1. open the undo journal
    const std::uint64_t old_value = c.value.load(relaxed);
    c.journal_slot.store(static_cast<std::uint32_t>(plan.slot), relaxed);
    c.journal_pid.store(pid, relaxed);
    c.journal_token.store(token, relaxed);
    c.journal_old_value.store(old_value, relaxed);
    c.journal_old_done.store(done, relaxed);
    c.journal_open.store(1, release);
    // 2. first half of the update
    c.value.store(old_value + 1, release);
    if (plan.stall_at != 0 && grants == plan.stall_at) {
      // The victim: tell the parent "I hold it, mid-update", then stall
      // until killed. Bounded: if no SIGKILL comes, give up (exit 5).
      shared.victim_token.store(token, relaxed);
      shared.victim_value_before.store(old_value, relaxed);
      shared.victim_holding.store(1, release);
      const auto stall_until = SteadyClock::now() + std::chrono::seconds(10);
      while (SteadyClock::now() < stall_until) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      fail_in_child(me, "stalled holding the lock but was never killed");
      return 5;
    }
    // 3. second half, 4. commit
    c.done[plan.slot].store(done + 1, release);
    c.journal_open.store(0, release);
    me.increments.store(me.increments.load(relaxed) + 1, relaxed);
  }
}

// "pids 101 102 103", or "pids 101 102 103 ... 164" past eight.
std::string pid_list(const std::vector<pid_t>& pids) {
  std::string out = pids.size() == 1 ? "pid" : "pids";
  for (std::size_t i = 0; i < pids.size(); ++i) {
    if (pids.size() > 8 && i == 3) {
      out += " ...";
      i = pids.size() - 1;
    }
    out += " " + std::to_string(pids[i]);
  }
  return out;
}

std::string plural(std::uint64_t n, const char* one, const char* many) {
  return with_commas(n) + " " + (n == 1 ? one : many);
}

PartOutcome run_locks_part(const DemoOptions& opt, ScratchNamespace& scratch, Reporter& out) {
  PartOutcome result{"locks", {}, nlohmann::json::object()};
  auto& failures = result.failures;
  const int workers = opt.workers;
  const auto increments = static_cast<std::uint64_t>(opt.increments);

  auto lock = scratch.create_lock(kLockName);
  if (!lock) {
    failures.push_back(lock.error().message);
    return result;
  }
  SharedBlock<DemoShared> shared;
  if (!shared) {
    failures.push_back("cannot map shared memory for the counter");
    return result;
  }
  // The first Lock::stats() of a process calibrates the tick clock (~10 ms
  // of sleep, shm/clock.cpp): do it now, not while the victim holds the lock.
  (void)lock->stats();

  // Shares, and the victim: the last worker, killed halfway through its share.
  std::vector<WorkerPlan> plans;
  for (int i = 0; i < workers; ++i) {
    WorkerPlan p;
    p.ns = scratch.ns();
    p.process = i;
    p.slot = i;
    p.share = increments / static_cast<std::uint64_t>(workers) +
              (static_cast<std::uint64_t>(i) < increments % static_cast<std::uint64_t>(workers) ? 1 : 0);
    plans.push_back(p);
  }
  const int victim = workers - 1;
  plans[victim].stall_at = (plans[victim].share + 1) / 2;

  out.line("[locks] " + plural(static_cast<std::uint64_t>(workers), "worker process adds ", "worker processes add ") +
           with_commas(increments) +
           " to one counter in shared memory, under the colo lock '" + kLockName + "'");
  out.line("        each increment is journaled in two steps; worker " + std::to_string(victim + 1) +
           " will be killed in the middle of one, holding the lock");

  Children children;
  std::vector<pid_t> pids;
  for (const auto& plan : plans) {
    const pid_t pid = children.spawn([&plan, &shared] { return demo_worker(plan, *shared); });
    if (pid < 0) {
      failures.push_back("cannot fork worker " + std::to_string(plan.slot + 1));
      return result;
    }
    pids.push_back(pid);
  }
  const pid_t victim_pid = pids[victim];
  out.line("  started " + (workers == 1 ? std::string("worker 1") : "workers 1-" + std::to_string(workers)) + ": " +
           pid_list(pids) + " (" + plural(plans[0].share, "increment", "increments") + (workers > 1 ? " each" : "") +
           (plans[0].share != plans[victim].share ? ", or " + with_commas(plans[victim].share) : std::string()) + ")");

  const auto t0 = SteadyClock::now();
  const auto deadline = t0 + std::chrono::seconds(15);
  shared->go.store(1, release);

  // Wait (bounded) for the victim to be mid-update, holding the lock.
  bool victim_ready = false;
  while (!victim_ready) {
    victim_ready = shared->victim_holding.load(acquire) != 0;
    if (victim_ready) break;
    if (auto ended = children.poll(victim_pid)) {
      failures.push_back("worker " + std::to_string(victim + 1) + " ended (" + ended->text() +
                         ") before reaching its stall point");
      break;
    }
    if (SteadyClock::now() > t0 + std::chrono::seconds(10)) {
      failures.push_back("worker " + std::to_string(victim + 1) + " did not reach its stall point within 10 s");
      break;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }

  pid_t replacement_pid = -1;
  nlohmann::json kill_json = nullptr;
  if (victim_ready) {
    const LockStats before = lock->stats();
    const std::uint64_t token = shared->victim_token.load(relaxed);
    const std::uint64_t value_before = shared->victim_value_before.load(relaxed);
    out.line("  worker " + std::to_string(victim + 1) + " (pid " + std::to_string(victim_pid) +
             ") holds the lock (fencing token " + with_commas(token) + ") mid-update: counter " +
             with_commas(value_before) + " -> " + with_commas(value_before + 1) + " written, not committed");
    out.line("  Lock::stats says the holder is pid " + std::to_string(before.holder.pid) +
             (before.holder.alive ? " (alive)" : " (dead?)") + ", " + std::to_string(before.waiters) +
             " waiting; sending SIGKILL to pid " + std::to_string(victim_pid));
    if (before.holder.pid != static_cast<std::uint32_t>(victim_pid))
      failures.push_back("Lock::stats names pid " + std::to_string(before.holder.pid) +
                         " as the holder, not the victim " + std::to_string(victim_pid));
    children.kill(victim_pid, SIGKILL);
    const ChildExit killed = children.wait(victim_pid, SteadyClock::now() + std::chrono::seconds(5));
    if (killed.how != ChildExit::How::signaled || killed.code != SIGKILL)
      failures.push_back("the victim did not die of SIGKILL (" + killed.text() + ")");
    kill_json = {{"pid", victim_pid},
                 {"worker", victim + 1},
                 {"token", token},
                 {"counter_before", value_before},
                 {"stats_holder_pid", before.holder.pid},
                 {"waiters", before.waiters}};

    // A supervisor would restart it: the new process finishes the slot's share.
    WorkerPlan again = plans[victim];
    again.process = workers;
    again.stall_at = 0;
    replacement_pid = children.spawn([again, &shared] { return demo_worker(again, *shared); });
    if (replacement_pid < 0) failures.push_back("cannot fork the replacement worker");
    else
      out.line("  restarted worker " + std::to_string(victim + 1) + " as pid " + std::to_string(replacement_pid) +
               " to finish its share");
  }

  const bool in_time = children.wait_all(deadline);
  const auto t1 = SteadyClock::now();
  if (!in_time) failures.push_back("a worker did not finish within 15 s (killed)");

  // ---- what happened
  const int processes = workers + (replacement_pid > 0 ? 1 : 0);
  std::uint64_t sum_grants = 0, violations = 0, owner_died = 0, unreported = 0, sum_increments = 0;
  nlohmann::json procs = nlohmann::json::array();
  for (int i = 0; i < processes; ++i) {
    const ProcessRecord& p = shared->process[i];
    const pid_t pid = i < workers ? pids[i] : replacement_pid;
    const ChildExit exit = children.status(pid);
    const bool is_victim = pid == victim_pid;
    const char* role = is_victim ? "killed holding the lock" : i == workers ? "restarted worker" : "worker";
    sum_grants += p.grants.load(relaxed);
    violations += p.token_violations.load(relaxed);
    owner_died += p.owner_died.load(relaxed);
    unreported += p.unreported_damage.load(relaxed);
    sum_increments += p.increments.load(relaxed);
    if (p.failed.load(acquire) != 0)
      failures.push_back("process " + std::to_string(pid) + " (" + role + "): " + p.error);
    if (!is_victim && (exit.how != ChildExit::How::exited || exit.code != 0))
      failures.push_back("process " + std::to_string(pid) + " (" + role + ") ended with " + exit.text());
    procs.push_back({{"pid", pid},
                     {"worker", (i < workers ? i : victim) + 1},
                     {"role", role},
                     {"grants", p.grants.load(relaxed)},
                     {"increments", p.increments.load(relaxed)},
                     {"owner_died", p.owner_died.load(relaxed)},
                     {"token_violations", p.token_violations.load(relaxed)},
                     {"exit", exit.text()}});
  }

  const CounterState& c = shared->counter;
  const LockStats stats = lock->stats();
  const std::uint64_t value = c.value.load(acquire);
  std::uint64_t sum_done = 0;
  for (int i = 0; i < workers; ++i) sum_done += c.done[i].load(relaxed);
  const std::uint32_t recoveries_seen = c.recoveries.load(acquire);
  const std::uint64_t expected_grants = increments + static_cast<std::uint64_t>(workers) + 1;
  const double wall_ns = std::chrono::duration<double, std::nano>(t1 - t0).count();
  const double mean_hold_ns = stats.hold_ns_mean;
  const double ns_per_grant = stats.grants > 0 ? wall_ns / static_cast<double>(stats.grants) : 0;

  nlohmann::json recoveries_json = nlohmann::json::array();
  for (std::uint32_t i = 0; i < std::min<std::uint32_t>(recoveries_seen, kMaxRecoveryRecords); ++i) {
    const RecoveryRecord& r = c.recovery[i];
    recoveries_json.push_back({{"dead_holder_pid", r.dead_pid},
                               {"dead_holder_token", r.dead_token},
                               {"new_holder_pid", r.new_pid},
                               {"new_token", r.new_token},
                               {"rolled_back", r.rolled_back != 0},
                               {"counter_found", r.value_found},
                               {"counter_restored", r.value_restored}});
    out.line("  recovery: pid " + std::to_string(r.new_pid) + " was granted the lock with owner_died() = true" +
             " (dead holder: pid " + std::to_string(r.dead_pid) + ", token " + with_commas(r.dead_token) +
             "; new fencing token " + with_commas(r.new_token) + ")");
    if (r.rolled_back != 0)
      out.line("            it rolled back worker " + std::to_string(r.journal_slot + 1) +
               "'s half-done increment: counter " + with_commas(r.value_found) + " -> " +
               with_commas(r.value_restored));
    else
      out.line("            the journal was closed: nothing to roll back");
  }

  // ---- checks
  if (victim_ready) {
    if (stats.recoveries != 1)
      failures.push_back("Lock::stats counts " + std::to_string(stats.recoveries) + " recoveries, expected 1");
    if (owner_died != 1)
      failures.push_back(std::to_string(owner_died) + " grants were told owner_died(), expected 1");
    if (recoveries_seen != 1 || c.recovery[0].rolled_back == 0)
      failures.push_back("the half-done increment of the killed worker was not rolled back by the next holder");
    else if (c.recovery[0].dead_pid != static_cast<std::uint32_t>(victim_pid))
      failures.push_back("the repairing holder found pid " + std::to_string(c.recovery[0].dead_pid) +
                         " as the last holder, not the killed pid " + std::to_string(victim_pid));
  }
  if (unreported != 0)
    failures.push_back(std::to_string(unreported) + " grants found a half-done update without owner_died()");
  if (violations != 0) failures.push_back(std::to_string(violations) + " fencing tokens were not strictly increasing");
  if (c.journal_open.load(acquire) != 0) failures.push_back("an update was left half-done at the end");
  if (value != increments || sum_done != increments || sum_increments != increments)
    failures.push_back("counter " + std::to_string(value) + " (per-worker sum " + std::to_string(sum_done) +
                       ", committed by processes " + std::to_string(sum_increments) + "), expected " +
                       std::to_string(increments));
  if (stats.grants != sum_grants)
    failures.push_back("Lock::stats counts " + std::to_string(stats.grants) + " grants, the processes " +
                       std::to_string(sum_grants));
  else if (victim_ready && in_time && stats.grants != expected_grants)
    failures.push_back(std::to_string(stats.grants) + " grants, expected " + std::to_string(expected_grants));

  // ---- summary
  out.line("  processes:      " + std::to_string(processes) + " (" +
           plural(static_cast<std::uint64_t>(workers), "worker", "workers") +
           (replacement_pid > 0 ? ", 1 killed holding the lock and restarted" : std::string()) + ")");
  out.line("  grants:         " + with_commas(stats.grants) + " (Lock::stats) = " +
           plural(increments, "increment", "increments") + " + " +
           plural(static_cast<std::uint64_t>(workers), "grant", "grants") +
           " that found the share done + the killed worker's");
  out.line("  recoveries:     " + std::to_string(stats.recoveries) +
           " (Lock::stats: grants that found the owner dead)");
  out.line("  fencing tokens: strictly increasing: " + std::string(violations == 0 ? "yes" : "NO") + " (" +
           std::to_string(violations) + " violations in " + with_commas(sum_grants) + " grants; epoch now " +
           with_commas(stats.fencing_epoch) + ")");
  out.line("  counter:        " + with_commas(value) + ", expected " + with_commas(increments) + ": " +
           (value == increments ? "exact" : "WRONG") +
           " (the killed worker's half-done increment rolled back, redone)");
  out.line("  time per grant: " + human_duration_ns(ns_per_grant) + " (wall " + human_duration_ns(wall_ns) + " / " +
           with_commas(stats.grants) + " grants, " + std::to_string(processes) + " processes on " +
           std::to_string(::sysconf(_SC_NPROCESSORS_ONLN)) + " CPUs); mean hold " + human_duration_ns(mean_hold_ns) +
           " (Lock::stats)");

  result.detail = {
      {"lock", kLockName},
      {"workers", workers},
      {"increments", increments},
      {"processes", procs},
      {"killed", kill_json},
      {"grants", stats.grants},
      {"expected_grants", expected_grants},
      {"contended_grants", stats.contended_grants},
      {"recoveries", stats.recoveries},
      {"repairs", recoveries_json},
      {"fencing",
       {{"strictly_increasing", violations == 0}, {"violations", violations}, {"epoch", stats.fencing_epoch}}},
      {"counter", {{"value", value}, {"expected", increments}, {"exact", value == increments},
                   {"partial_increment", "rolled back"}}},
      {"wall_ns", wall_ns},
      {"ns_per_grant", ns_per_grant},
      {"mean_hold_ns", mean_hold_ns},
  };
  return result;
}

// ======================================================= queues and topics part
//
// Topic 'demo/ticks': 3 subscriber processes (2 blocking, 1 lossy and slow)
// subscribe, then 2 publisher processes write --topic-messages each, 64 bytes,
// filled in place in the ring (loan_for + commit), stamped with their
// publisher, index and send time (CLOCK_MONOTONIC). The blocking subscribers
// must see every message once, in order per publisher; they record one-way
// latency (receive time - send time) into sample arrays in shared memory. The
// lossy one pauses 1 ms every 100 messages, so the publishers lap it instead
// of waiting for it: what it received plus Reader::missed() must be the total.
//
// Queue 'demo/jobs' with acks (max deliveries 3): 2 producer processes, 3
// consumer processes, --queue-messages in total. Consumer 3 takes a message,
// says so in shared memory, and stalls without acknowledging it; the parent
// SIGKILLs it. Another consumer gets the message again with deliveries() == 2.
// Per-message counters in shared memory then show every message acknowledged
// exactly once and delivered once, except the killed consumer's: twice.

constexpr const char* kTopicName = "demo/ticks";
constexpr const char* kQueueName = "demo/jobs";
constexpr std::uint64_t kRingBytes = 1 << 20;  // 1 MiB
constexpr std::uint32_t kMaxMessage = 1024;    // 1 KiB
constexpr std::uint32_t kMessageBytes = 64;
constexpr int kPublishers = 2;
constexpr int kSubscribers = 3;  // 0 and 1 blocking, 2 lossy
constexpr int kLossySubscriber = 2;
constexpr int kProducers = 2;
constexpr int kConsumers = 3;  // the last one is killed holding a message
constexpr int kVictimConsumer = kConsumers - 1;
constexpr std::uint32_t kMaxDeliveries = 3;
constexpr int kLossyBurst = 100;                               // the lossy reader pauses 1 ms after this many
constexpr std::uint32_t kMessageMagic = 0x4f4c4f43;            // "COLO"
// Bounds on every wait. A normal run of either phase takes well under a second
// on 2 cores, even with other demos running; a hang costs about kPhaseLimit.
constexpr auto kSendTimeout = std::chrono::seconds(2);  // loan_for: space within this
constexpr auto kChildLimit = std::chrono::seconds(4);   // a child gives up (and says why) this long after go
constexpr auto kPhaseLimit = std::chrono::seconds(5);   // the parent kills what still runs this long after go
constexpr auto kReadyLimit = std::chrono::seconds(3);   // children open the object and say ready

// "4 s"
std::string secs(std::chrono::seconds s) { return std::to_string(s.count()) + " s"; }

// The 64 bytes of every message of this part.
struct Payload {
  std::uint32_t magic;
  std::uint32_t source;   // publisher or producer, from 0
  std::uint64_t index;    // per source, from 0
  std::uint64_t send_ns;  // CLOCK_MONOTONIC, taken just before commit()
  std::uint64_t check;    // mix of source, index and send_ns
  std::uint64_t fill[4];  // derived from check: the whole message is verified
};
static_assert(sizeof(Payload) == kMessageBytes, "a demo message is 64 bytes");

std::uint64_t mix(std::uint64_t a, std::uint64_t b, std::uint64_t c) noexcept {
  std::uint64_t x = (a + 1) * 0x9E3779B97F4A7C15u ^ b;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9u ^ c;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBu;
  return x ^ (x >> 31);
}

void seal(Payload& p) noexcept {
  p.magic = kMessageMagic;
  p.check = mix(p.source, p.index, p.send_ns);
  for (std::uint64_t k = 0; k < 4; ++k) p.fill[k] = p.check ^ ((k + 1) * 0x9E3779B97F4A7C15u);
}

// Copies a received message out of the ring and checks it: nullptr if intact.
const char* unseal(std::span<const std::byte> data, Payload& p, int sources) noexcept {
  if (data.size() != sizeof p) return "a message of the wrong size";
  std::memcpy(&p, data.data(), sizeof p);
  if (p.magic != kMessageMagic) return "a message with a bad magic number";
  if (p.source >= static_cast<std::uint32_t>(sources)) return "a message from an unknown source";
  if (p.check != mix(p.source, p.index, p.send_ns)) return "a message whose checksum does not match";
  for (std::uint64_t k = 0; k < 4; ++k)
    if (p.fill[k] != (p.check ^ ((k + 1) * 0x9E3779B97F4A7C15u))) return "a message with corrupted payload bytes";
  return nullptr;
}

// An array of T in shared anonymous memory (zeroed), visible to children
// forked afterwards. T: atomics or plain data.
template <typename T>
class SharedArray {
  static_assert(std::is_trivially_destructible_v<T>, "shared arrays hold plain data or atomics");

 public:
  explicit SharedArray(std::size_t n) : n_(n) {
    if (n == 0) return;
    void* p = map_shared_anonymous(n * sizeof(T));
    if (p == nullptr) return;
    data_ = static_cast<T*>(p);
    if constexpr (!std::is_trivially_default_constructible_v<T>)
      for (std::size_t i = 0; i < n; ++i) new (&data_[i]) T{};
  }
  ~SharedArray() {
    if (data_ != nullptr) unmap_shared(data_, n_ * sizeof(T));
  }
  SharedArray(const SharedArray&) = delete;
  SharedArray& operator=(const SharedArray&) = delete;
  explicit operator bool() const noexcept { return data_ != nullptr; }
  T* data() noexcept { return data_; }
  T& operator[](std::size_t i) noexcept { return data_[i]; }

 private:
  std::size_t n_;
  T* data_ = nullptr;
};

// One forked process of this part: written by that process, read by the
// parent once it ended (or while it stalls: the victim).
struct alignas(64) ChannelProcess {
  std::atomic<std::uint32_t> pid;
  std::atomic<int> ready;  // the object is open and the handle made (subscribed)
  std::atomic<int> failed;
  char error[240];
  std::atomic<std::uint64_t> count;  // published / received / acknowledged
  std::atomic<std::uint64_t> per_source[2];
  std::atomic<std::uint64_t> missed;  // lossy subscriber: Reader::missed() at the end
  std::atomic<std::uint64_t> start_ns, end_ns;  // writers: first loan, last commit; readers: last receive / ack
};

struct ChannelShared {
  alignas(64) std::atomic<int> go;
  alignas(64) std::atomic<int> publishers_done;  // topic: every publisher has exited
  alignas(64) std::atomic<std::uint64_t> acked_total;  // queue: acknowledgements, all consumers
  // The victim consumer: it holds message victim_id, not acknowledged.
  alignas(64) std::atomic<int> victim_holding;
  std::atomic<int> victim_gone;  // the parent saw the victim end before holding its message
  std::atomic<std::uint64_t> victim_id;
  std::atomic<std::uint64_t> victim_seq;
  std::atomic<std::uint32_t> victim_deliveries;
  // Receives with deliveries() > 1; the first one is described.
  alignas(64) std::atomic<std::uint32_t> redeliveries;
  std::atomic<int> redelivery_recorded;
  std::atomic<std::uint64_t> redelivered_id;
  std::atomic<std::uint64_t> redelivered_seq;
  std::atomic<std::uint32_t> redelivered_pid;
  std::atomic<std::uint32_t> redelivered_deliveries;
  std::atomic<std::uint32_t> redelivered_consumer;
  ChannelProcess writers[kPublishers > kProducers ? kPublishers : kProducers];
  ChannelProcess readers[kSubscribers > kConsumers ? kSubscribers : kConsumers];
};

struct ChannelPlan {
  std::string ns;
  int index = 0;             // in writers[] or readers[]
  std::uint64_t count = 0;   // writer: messages to write; blocking subscriber: messages to expect
  std::uint64_t total = 0;   // queue: messages in all
  std::uint64_t base[2] = {0, 0};   // queue: id of each producer's first message
  std::uint64_t share[2] = {0, 0};  // messages per source
  bool lossy = false;
  std::uint64_t stall_at = 0;       // the victim consumer: stall at this message taken (0: never)
  std::uint64_t gate = 0;           // other consumers: past this many acknowledged, wait for the victim to stall
  std::uint64_t* samples = nullptr;  // blocking subscriber: latency of message i
  std::atomic<std::uint32_t>* receives = nullptr;  // queue: deliveries seen per message id
  std::atomic<std::uint32_t>* acks = nullptr;      // queue: acknowledgements per message id
};

// Records why the process failed; returns `rc`, its exit code.
int child_fail(ChannelProcess& me, const std::string& why, int rc = 2) {
  std::snprintf(me.error, sizeof me.error, "%s", why.c_str());
  me.failed.store(1, release);
  return rc;
}

const char* send_status_text(SendStatus status) {
  switch (status) {
    case SendStatus::ok: return "ok";
    case SendStatus::timed_out: return "no space in time";
    case SendStatus::too_large: return "too large";
    case SendStatus::corrupt: return "ring state corrupt";
  }
  return "?";
}

// Bounded: a child never told to start gives up.
bool wait_for_go(const ChannelShared& sh, ChannelProcess& me) {
  const auto give_up = SteadyClock::now() + kChildLimit;
  while (sh.go.load(acquire) == 0) {
    if (SteadyClock::now() > give_up) {
      child_fail(me, "never told to start");
      return false;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  return true;
}

Result<Node> open_child_node(const std::string& ns) {
  NodeOptions options;
  options.ns = ns;
  return Node::open(options);
}

// Writes plan.count messages, each filled in place in a loan.
template <typename Channel>
int write_messages(const ChannelPlan& plan, ChannelShared& sh, Channel& channel, Result<Publisher> (Channel::*open)()) {
  ChannelProcess& me = sh.writers[plan.index];
  auto writer = (channel.*open)();
  if (!writer) {
    child_fail(me, writer.error().message);
    return 2;
  }
  me.ready.store(1, release);
  if (!wait_for_go(sh, me)) return 3;
  me.start_ns.store(internal::monotonic_ns(), relaxed);
  std::uint64_t sent = 0;
  for (; sent < plan.count; ++sent) {
    auto loan = writer->loan_for(kMessageBytes, kSendTimeout);
    if (!loan) {
      child_fail(me, "loan_for(64 bytes, " + secs(kSendTimeout) + ") failed after " + with_commas(sent) + " messages: " +
                         send_status_text(writer->last_status()));
      break;
    }
    // Zero copy: the message is built where the subscribers will read it.
    // Records start 16-byte aligned, so the payload is aligned for Payload.
    Payload* p = std::construct_at(reinterpret_cast<Payload*>(loan->data().data()));
    p->source = static_cast<std::uint32_t>(plan.index);
    p->index = sent;
    p->send_ns = internal::monotonic_ns();
    seal(*p);
    loan->commit();
    if ((sent & 4095) == 0) me.count.store(sent, relaxed);  // progress, should it be killed
  }
  me.end_ns.store(internal::monotonic_ns(), relaxed);
  me.count.store(sent, relaxed);
  return sent == plan.count ? 0 : 4;
}

int topic_publisher(const ChannelPlan& plan, ChannelShared& sh) {
  ChannelProcess& me = sh.writers[plan.index];
  me.pid.store(static_cast<std::uint32_t>(::getpid()), release);
  auto node = open_child_node(plan.ns);
  if (!node) return child_fail(me, node.error().message);
  auto topic = node->topic(kTopicName, OpenMode::open);
  if (!topic) return child_fail(me, topic.error().message);
  return write_messages(plan, sh, *topic, &Topic::publisher);
}

int queue_producer(const ChannelPlan& plan, ChannelShared& sh) {
  ChannelProcess& me = sh.writers[plan.index];
  me.pid.store(static_cast<std::uint32_t>(::getpid()), release);
  auto node = open_child_node(plan.ns);
  if (!node) return child_fail(me, node.error().message);
  auto queue = node->queue(kQueueName, OpenMode::open);
  if (!queue) return child_fail(me, queue.error().message);
  return write_messages(plan, sh, *queue, &Queue::producer);
}

// A blocking subscriber reads plan.count messages, in order per publisher,
// recording latencies; the lossy one reads until the publishers are done and
// it has caught up, pausing 1 ms every kLossyBurst messages.
int topic_subscriber(const ChannelPlan& plan, ChannelShared& sh) {
  ChannelProcess& me = sh.readers[plan.index];
  me.pid.store(static_cast<std::uint32_t>(::getpid()), release);
  auto node = open_child_node(plan.ns);
  if (!node) return child_fail(me, node.error().message);
  auto topic = node->topic(kTopicName, OpenMode::open);
  if (!topic) return child_fail(me, topic.error().message);
  auto sub = topic->subscribe({plan.lossy ? Backpressure::lossy : Backpressure::block, 0, std::nullopt});
  if (!sub) return child_fail(me, sub.error().message);
  me.ready.store(1, release);  // subscribed: it gets every message published from now on
  if (!wait_for_go(sh, me)) return 3;

  const auto deadline = SteadyClock::now() + kChildLimit;
  std::uint64_t next[kPublishers] = {};  // next index expected (blocking) or allowed (lossy) per publisher
  std::uint64_t per[kPublishers] = {};
  std::uint64_t received = 0, last_ns = 0;
  int rc = 0;
  for (;;) {
    if (!plan.lossy && received == plan.count) break;
    const bool done = plan.lossy && sh.publishers_done.load(acquire) != 0;
    auto msg = sub->receive_for(std::chrono::milliseconds(20));
    if (!msg) {
      if (done) break;  // everything is published and nothing is left to read
      if (SteadyClock::now() > deadline) {
        child_fail(me, "received " + with_commas(received) + " of " + with_commas(plan.count) + " messages in " + secs(kChildLimit));
        rc = 4;
        break;
      }
      continue;
    }
    const std::uint64_t now = internal::monotonic_ns();
    Payload p;
    const char* bad = unseal(msg->data(), p, kPublishers);
    msg->release();  // copied out: let the ring move on
    if (bad != nullptr) {
      child_fail(me, std::string("message ") + with_commas(received + 1) + " received was " + bad);
      rc = 5;
      break;
    }
    if (plan.lossy ? p.index < next[p.source] : p.index != next[p.source]) {
      child_fail(me, "publisher " + std::to_string(p.source + 1) + ": message #" + std::to_string(p.index) +
                         " arrived where #" + std::to_string(next[p.source]) + " was expected" +
                         (plan.lossy ? " or later" : ""));
      rc = 6;
      break;
    }
    next[p.source] = p.index + 1;
    ++per[p.source];
    if (!plan.lossy) plan.samples[received] = now > p.send_ns ? now - p.send_ns : 0;
    ++received;
    last_ns = now;
    if ((received & 4095) == 0) me.count.store(received, relaxed);  // progress, should it be killed
    if (plan.lossy && received % kLossyBurst == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (rc == 0 && !plan.lossy) {
    if (sub->try_receive()) {
      child_fail(me, "a message beyond the " + with_commas(plan.count) + " published");
      rc = 7;
    }
  }
  me.count.store(received, relaxed);
  for (int s = 0; s < kPublishers; ++s) me.per_source[s].store(per[s], relaxed);
  me.missed.store(sub->missed(), relaxed);
  me.end_ns.store(last_ns, relaxed);
  return rc;
}

// Takes messages and acknowledges them until all plan.total are acknowledged.
// The victim stalls at its plan.stall_at-th message without acknowledging.
int queue_consumer(const ChannelPlan& plan, ChannelShared& sh) {
  ChannelProcess& me = sh.readers[plan.index];
  const auto pid = static_cast<std::uint32_t>(::getpid());
  me.pid.store(pid, release);
  auto node = open_child_node(plan.ns);
  if (!node) return child_fail(me, node.error().message);
  auto queue = node->queue(kQueueName, OpenMode::open);
  if (!queue) return child_fail(me, queue.error().message);
  auto consumer = queue->consumer();
  if (!consumer) return child_fail(me, consumer.error().message);
  me.ready.store(1, release);
  if (!wait_for_go(sh, me)) return 3;

  const auto deadline = SteadyClock::now() + kChildLimit;
  std::uint64_t taken = 0, acked = 0, last_ns = 0;
  std::uint64_t per[kProducers] = {};
  while (sh.acked_total.load(acquire) < plan.total) {
    // Leave the victim enough to reach its stall point, however the
    // scheduler favours the others (only matters for small runs).
    const bool gated = plan.gate != 0 && sh.acked_total.load(relaxed) >= plan.gate &&
                       sh.victim_holding.load(acquire) == 0 && sh.victim_gone.load(acquire) == 0;
    auto msg = gated ? std::nullopt : consumer->receive_for(std::chrono::milliseconds(20));
    if (gated) std::this_thread::sleep_for(std::chrono::microseconds(200));
    if (!msg) {
      if (SteadyClock::now() > deadline) {
        child_fail(me, with_commas(sh.acked_total.load(acquire)) + " of " + with_commas(plan.total) +
                           " messages acknowledged after " + secs(kChildLimit));
        return 4;
      }
      continue;
    }
    Payload p;
    if (const char* bad = unseal(msg->data(), p, kProducers)) {
      child_fail(me, std::string("took ") + bad);
      return 5;
    }
    if (p.index >= plan.share[p.source]) {
      child_fail(me, "producer " + std::to_string(p.source + 1) + " message #" + std::to_string(p.index) +
                         " is beyond its " + with_commas(plan.share[p.source]));
      return 5;
    }
    const std::uint64_t id = plan.base[p.source] + p.index;
    plan.receives[id].fetch_add(1, relaxed);
    ++taken;
    const std::uint32_t deliveries = msg->deliveries();
    if (deliveries != 1 && sh.redeliveries.fetch_add(1, acq_rel) == 0) {
      sh.redelivered_id.store(id, relaxed);
      sh.redelivered_seq.store(msg->sequence(), relaxed);
      sh.redelivered_pid.store(pid, relaxed);
      sh.redelivered_deliveries.store(deliveries, relaxed);
      sh.redelivered_consumer.store(static_cast<std::uint32_t>(plan.index), relaxed);
      sh.redelivery_recorded.store(1, release);
    }
    if (taken == plan.stall_at) {
      // The victim: say "I hold message `id`, not acknowledged", then stall
      // until killed. Bounded: with no SIGKILL, give up.
      me.count.store(acked, relaxed);
      for (int s = 0; s < kProducers; ++s) me.per_source[s].store(per[s], relaxed);
      sh.victim_id.store(id, relaxed);
      sh.victim_seq.store(msg->sequence(), relaxed);
      sh.victim_deliveries.store(deliveries, relaxed);
      sh.victim_holding.store(1, release);
      const auto stall_until = SteadyClock::now() + kChildLimit;
      while (SteadyClock::now() < stall_until) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      child_fail(me, "stalled holding a message but was never killed");
      return 8;
    }
    msg->release();  // the acknowledgement
    plan.acks[id].fetch_add(1, relaxed);
    sh.acked_total.fetch_add(1, acq_rel);
    ++acked;
    ++per[p.source];
    last_ns = internal::monotonic_ns();
    if ((acked & 4095) == 0) me.count.store(acked, relaxed);  // progress, should it be killed
  }
  me.count.store(acked, relaxed);
  for (int s = 0; s < kProducers; ++s) me.per_source[s].store(per[s], relaxed);
  me.end_ns.store(last_ns, relaxed);
  if (plan.stall_at != 0) {
    child_fail(me, "never reached its stall point (message " + with_commas(plan.stall_at) + "): took only " +
                       with_commas(taken));
    return 9;
  }
  return 0;
}

// A forked process of this part, as the parent sees it.
struct Started {
  pid_t pid;
  ChannelProcess* record;
  std::string label;  // "subscriber 1"
};

// Forks the processes of `bodies`; false (with a failure) if a fork failed.
bool start_all(Children& children, std::vector<Started>& started, const std::vector<std::function<int()>>& bodies,
               std::vector<ChannelProcess*> records, const std::vector<std::string>& labels,
               std::vector<std::string>& failures) {
  for (std::size_t i = 0; i < bodies.size(); ++i) {
    const pid_t pid = children.spawn(bodies[i]);
    if (pid < 0) {
      failures.push_back("cannot fork " + labels[i]);
      return false;
    }
    started.push_back({pid, records[i], labels[i]});
  }
  return true;
}

// Waits (bounded) until every process of `started` says ready.
bool wait_ready(Children& children, const std::vector<Started>& started, std::vector<std::string>& failures) {
  const auto give_up = SteadyClock::now() + kReadyLimit;
  for (const auto& s : started) {
    while (s.record->ready.load(acquire) == 0) {
      if (auto ended = children.poll(s.pid)) {
        failures.push_back(s.label + " (pid " + std::to_string(s.pid) + ") ended (" + ended->text() + ")" +
                           (s.record->failed.load(acquire) != 0 ? std::string(": ") + s.record->error : "") +
                           " before it was ready");
        return false;
      }
      if (SteadyClock::now() > give_up) {
        failures.push_back(s.label + " (pid " + std::to_string(s.pid) + ") was not ready within " + secs(kReadyLimit));
        return false;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
  return true;
}

// Failures of processes that reported one or did not end as expected. The
// set of those that ended cleanly (exit 0, no failure), whose figures can be
// checked further: the others' are already explained.
std::set<pid_t> collect_exits(Children& children, const std::vector<Started>& started, pid_t killed,
                              std::vector<std::string>& failures) {
  std::set<pid_t> clean;
  for (const auto& s : started) {
    const ChildExit exit = children.status(s.pid);
    if (s.pid == killed) continue;  // checked where it is killed or found gone
    const std::string who = s.label + " (pid " + std::to_string(s.pid) + ")";
    if (s.record->failed.load(acquire) != 0)
      failures.push_back(who + ": " + s.record->error);
    else if (exit.how == ChildExit::How::timed_out)
      failures.push_back(who + " " + exit.text());
    else if (exit.how != ChildExit::How::exited || exit.code != 0)
      failures.push_back(who + " ended with " + exit.text());
    else
      clean.insert(s.pid);
  }
  return clean;
}

std::string pids_of(const std::vector<Started>& started, std::size_t from, std::size_t to) {
  std::vector<pid_t> pids;
  for (std::size_t i = from; i < to && i < started.size(); ++i) pids.push_back(started[i].pid);
  return pid_list(pids);
}

double per_second(std::uint64_t n, std::uint64_t ns) {
  return ns > 0 ? static_cast<double>(n) * 1e9 / static_cast<double>(ns) : 0;
}

// "1.23 M msg/s, 78.9 MB/s"
std::string rate_text(std::uint64_t messages, std::uint64_t ns) {
  char mb[32];
  std::snprintf(mb, sizeof mb, "%.1f MB/s", per_second(messages * kMessageBytes, ns) / 1e6);
  return human_rate(per_second(messages, ns)) + " msg/s, " + mb;
}

nlohmann::json rate_json(std::uint64_t messages, std::uint64_t ns) {
  return {{"messages", messages},
          {"ns", ns},
          {"messages_per_s", per_second(messages, ns)},
          {"mb_per_s", per_second(messages * kMessageBytes, ns) / 1e6}};
}

struct Latency {
  std::uint64_t n = 0, p50 = 0, p99 = 0, p999 = 0, max = 0;
};

// Nearest-rank percentiles of n samples.
Latency latency_of(const std::uint64_t* samples, std::size_t n) {
  Latency l;
  if (n == 0) return l;
  std::vector<std::uint64_t> v(samples, samples + n);
  std::sort(v.begin(), v.end());
  const auto at = [&](double q) {
    auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(n)));
    return v[std::clamp<std::size_t>(rank, 1, n) - 1];
  };
  l.n = n;
  l.p50 = at(0.50);
  l.p99 = at(0.99);
  l.p999 = at(0.999);
  l.max = v.back();
  return l;
}

std::string shm_file(ScratchNamespace& scratch, const std::string& object) {
  return "/dev/shm/" + scratch.node().shm_name_of(object);
}

// --------------------------------------------------------------- the topic

void run_topic(const DemoOptions& opt, ScratchNamespace& scratch, Reporter& out, PartOutcome& result) {
  auto& failures = result.failures;
  const auto per_publisher = static_cast<std::uint64_t>(opt.topic_messages);
  const std::uint64_t total = per_publisher * kPublishers;

  unlink_on_interrupt(shm_file(scratch, kTopicName));
  TopicOptions topic_options;
  topic_options.capacity = kRingBytes;
  topic_options.max_message = kMaxMessage;
  auto topic = scratch.node().topic(kTopicName, OpenMode::create, topic_options);
  if (!topic) {
    failures.push_back("topic: " + topic.error().message);
    return;
  }
  SharedBlock<ChannelShared> shared;
  SharedArray<std::uint64_t> samples(total * 2);  // latencies of the 2 blocking subscribers
  if (!shared || !samples) {
    failures.push_back("topic: cannot map shared memory for the results");
    return;
  }
  const std::uint64_t ring_messages = kRingBytes / ((16 + kMessageBytes + 15) / 16 * 16);
  out.line(std::string("[queues and topics] topic '") + kTopicName + "': ring of " + human_bytes(kRingBytes) +
           ", messages up to " + human_bytes(kMaxMessage) + " (" + with_commas(ring_messages) + " of " +
           std::to_string(kMessageBytes) + " bytes fit)");
  out.line("        " + std::to_string(kPublishers) + " publisher processes write " + with_commas(per_publisher) +
           " messages each, in place (loan_for + commit), stamped {publisher, index, send time};");
  out.line("        2 blocking subscribers must get all " + with_commas(total) +
           " in order, and hold publishers back; 1 lossy subscriber is slow");
  out.line("        (1 ms pause every " + std::to_string(kLossyBurst) +
           " messages): the publishers lap it, and it counts what it missed");

  std::vector<ChannelPlan> plans(kSubscribers + kPublishers);
  for (int i = 0; i < kSubscribers; ++i) {
    ChannelPlan& p = plans[static_cast<std::size_t>(i)];
    p.ns = scratch.ns();
    p.index = i;
    p.count = total;
    p.lossy = i == kLossySubscriber;
    p.samples = p.lossy ? nullptr : samples.data() + static_cast<std::uint64_t>(i) * total;
  }
  for (int i = 0; i < kPublishers; ++i) {
    ChannelPlan& p = plans[static_cast<std::size_t>(kSubscribers + i)];
    p.ns = scratch.ns();
    p.index = i;
    p.count = per_publisher;
  }
  Children children;
  std::vector<Started> started;
  std::vector<std::function<int()>> bodies;
  std::vector<ChannelProcess*> records;
  std::vector<std::string> labels;
  for (int i = 0; i < kSubscribers; ++i) {
    bodies.push_back([&plan = plans[static_cast<std::size_t>(i)], &shared] { return topic_subscriber(plan, *shared); });
    records.push_back(&shared->readers[i]);
    labels.push_back("subscriber " + std::to_string(i + 1) + (i == kLossySubscriber ? " (lossy)" : " (blocking)"));
  }
  // Subscribers first: they must be subscribed before anything is published.
  if (!start_all(children, started, bodies, records, labels, failures) || !wait_ready(children, started, failures))
    return;
  bodies.clear();
  records.clear();
  labels.clear();
  for (int i = 0; i < kPublishers; ++i) {
    bodies.push_back(
        [&plan = plans[static_cast<std::size_t>(kSubscribers + i)], &shared] { return topic_publisher(plan, *shared); });
    records.push_back(&shared->writers[i]);
    labels.push_back("publisher " + std::to_string(i + 1));
  }
  if (!start_all(children, started, bodies, records, labels, failures) || !wait_ready(children, started, failures))
    return;
  out.line("  subscribed: " + pids_of(started, 0, 2) + " (blocking), pid " + std::to_string(started[2].pid) +
           " (lossy); publishers: " + pids_of(started, kSubscribers, started.size()));

  const auto t0 = SteadyClock::now();
  const std::uint64_t go_ns = internal::monotonic_ns();
  shared->go.store(1, release);
  const auto deadline = t0 + kPhaseLimit;
  bool in_time = true;
  for (std::size_t i = kSubscribers; i < started.size(); ++i)
    if (children.wait(started[i].pid, deadline).how == ChildExit::How::timed_out) in_time = false;
  shared->publishers_done.store(1, release);  // the lossy subscriber may stop once caught up
  if (!children.wait_all(deadline)) in_time = false;
  if (!in_time) failures.push_back("topic: a process did not finish within " + secs(kPhaseLimit) + " (killed)");
  const std::set<pid_t> clean = collect_exits(children, started, -1, failures);

  // ---- publishers
  std::uint64_t published = 0, pub_start = ~std::uint64_t{0}, pub_end = 0;
  nlohmann::json pubs = nlohmann::json::array();
  for (int i = 0; i < kPublishers; ++i) {
    const ChannelProcess& w = shared->writers[i];
    const std::uint64_t n = w.count.load(relaxed);
    published += n;
    pub_start = std::min(pub_start, w.start_ns.load(relaxed));
    pub_end = std::max(pub_end, w.end_ns.load(relaxed));
    pubs.push_back({{"pid", started[static_cast<std::size_t>(kSubscribers + i)].pid},
                    {"published", n},
                    {"rate", rate_json(n, w.end_ns.load(relaxed) - w.start_ns.load(relaxed))}});
    if (n != per_publisher && clean.count(started[static_cast<std::size_t>(kSubscribers + i)].pid) != 0)
      failures.push_back("topic: publisher " + std::to_string(i + 1) + " published " + with_commas(n) + " of " +
                         with_commas(per_publisher));
  }
  const std::uint64_t pub_ns = pub_end > pub_start ? pub_end - pub_start : 0;
  const ChannelStats stats = topic->stats();
  if (stats.published != published)
    failures.push_back("topic: Topic::stats counts " + with_commas(stats.published) +
                       " messages published, the publishers " + with_commas(published));
  if (stats.dead_claims != 0 || stats.bad_records != 0)
    failures.push_back("topic: Topic::stats counts " + std::to_string(stats.dead_claims) + " dead claims and " +
                       std::to_string(stats.bad_records) + " bad records, expected none");
  out.line("  publishers:   " + with_commas(published) + " messages in " +
           human_duration_ns(static_cast<double>(pub_ns)) + ": " + rate_text(published, pub_ns) +
           " (Topic::stats: " + with_commas(stats.published) + " published)");

  // ---- subscribers
  nlohmann::json subs = nlohmann::json::array();
  for (int i = 0; i < kSubscribers; ++i) {
    const ChannelProcess& r = shared->readers[i];
    const pid_t pid = started[static_cast<std::size_t>(i)].pid;
    const std::uint64_t got = r.count.load(relaxed);
    const std::uint64_t missed = r.missed.load(relaxed);
    const std::uint64_t end = r.end_ns.load(relaxed);
    const std::uint64_t ns = end > go_ns ? end - go_ns : 0;
    const std::string who = "  subscriber " + std::to_string(i + 1) + " (pid " + std::to_string(pid) + ", ";
    nlohmann::json j = {{"pid", pid},
                        {"mode", i == kLossySubscriber ? "lossy" : "block"},
                        {"received", got},
                        {"missed", missed},
                        {"per_publisher", {r.per_source[0].load(relaxed), r.per_source[1].load(relaxed)}},
                        {"rate", rate_json(got, ns)},
                        {"ended_cleanly", clean.count(pid) != 0}};
    if (i != kLossySubscriber) {
      const bool complete = got == total && missed == 0 && r.per_source[0].load(relaxed) == per_publisher &&
                            r.per_source[1].load(relaxed) == per_publisher;
      if (!complete && clean.count(pid) != 0)
        failures.push_back("topic: blocking subscriber " + std::to_string(i + 1) + " received " + with_commas(got) +
                           " (missed " + with_commas(missed) + "), expected " + with_commas(total));
      const Latency l = latency_of(samples.data() + static_cast<std::uint64_t>(i) * total, std::min(got, total));
      const bool partial = clean.count(pid) == 0;  // its count is the last progress it recorded
      out.line(who + "blocking): " + (partial ? "at least " : "") + with_commas(got) + " messages, " +
               (complete ? "all, " : "NOT all, ") + "in order per publisher: " + rate_text(got, ns));
      out.line("                latency p50 " + human_duration_ns(static_cast<double>(l.p50)) + ", p99 " +
               human_duration_ns(static_cast<double>(l.p99)) + ", p99.9 " +
               human_duration_ns(static_cast<double>(l.p999)) + ", max " +
               human_duration_ns(static_cast<double>(l.max)));
      j["latency_ns"] = {{"samples", l.n}, {"p50", l.p50}, {"p99", l.p99}, {"p99_9", l.p999}, {"max", l.max}};
    } else {
      // Every message published is either received or counted missed.
      const bool adds_up = got + missed == stats.published;
      if (!adds_up && clean.count(pid) != 0)
        failures.push_back("topic: lossy subscriber received " + with_commas(got) + " + missed " + with_commas(missed) +
                           " = " + with_commas(got + missed) + ", but " + with_commas(stats.published) +
                           " were published");
      out.line(who + "lossy):    received " + with_commas(got) + " + missed " + with_commas(missed) +
               (missed != 0 ? " (lapped while it paused)" : "") + " = " + with_commas(got + missed) +
               (adds_up ? ": all " : ", NOT the ") + with_commas(stats.published) + " published");
      out.line("                what it received was intact and in order per publisher; its pace: " +
               rate_text(got, ns));
      j["accounted"] = adds_up;
    }
    subs.push_back(j);
  }
  out.line("  latency = receive time - send time (CLOCK_MONOTONIC), at full speed: it is mostly time spent queued");
  out.line("  in the ring behind the slowest blocking subscriber (up to " + with_commas(ring_messages) + " messages)");

  result.detail["topic"] = {{"name", kTopicName},
                            {"capacity", kRingBytes},
                            {"max_message", kMaxMessage},
                            {"message_bytes", kMessageBytes},
                            {"messages_per_publisher", per_publisher},
                            {"total", total},
                            {"published", stats.published},
                            {"publishers", pubs},
                            {"publish_rate", rate_json(published, pub_ns)},
                            {"subscribers", subs},
                            {"in_time", in_time}};
}

// --------------------------------------------------------------- the queue

void run_queue(const DemoOptions& opt, ScratchNamespace& scratch, Reporter& out, PartOutcome& result) {
  auto& failures = result.failures;
  const auto total = static_cast<std::uint64_t>(opt.queue_messages);
  const std::string dlq_name = std::string(kQueueName) + ".dlq";

  unlink_on_interrupt(shm_file(scratch, kQueueName));
  unlink_on_interrupt(shm_file(scratch, dlq_name));
  QueueOptions queue_options;
  queue_options.capacity = kRingBytes;
  queue_options.max_message = kMaxMessage;
  queue_options.acks = true;
  queue_options.max_deliveries = kMaxDeliveries;
  auto queue = scratch.node().queue(kQueueName, OpenMode::create, queue_options);
  if (!queue) {
    failures.push_back("queue: " + queue.error().message);
    return;
  }
  SharedBlock<ChannelShared> shared;
  SharedArray<std::atomic<std::uint32_t>> receives(total), acks(total);
  if (!shared || !receives || !acks) {
    failures.push_back("queue: cannot map shared memory for the results");
    return;
  }
  out.line("");
  out.line(std::string("  queue '") + kQueueName + "' with acks (max deliveries " + std::to_string(kMaxDeliveries) +
           "; then to '" + dlq_name + "'): " + std::to_string(kProducers) + " producer processes, " +
           std::to_string(kConsumers) + " consumer processes, " + with_commas(total) + " messages");
  out.line("        each message goes to one consumer; consumer " + std::to_string(kVictimConsumer + 1) +
           " will be killed holding one it has not acknowledged");

  std::uint64_t share[2], base[2] = {0, 0};
  share[0] = (total + 1) / 2;
  share[1] = total / 2;
  base[1] = share[0];
  // Stall at a message taken well into the run, with plenty left for the others.
  const std::uint64_t stall_at = std::max<std::uint64_t>(1, std::min<std::uint64_t>(2'000, total / 10));
  std::vector<ChannelPlan> plans(kConsumers + kProducers);
  for (std::size_t i = 0; i < plans.size(); ++i) {
    ChannelPlan& p = plans[i];
    p.ns = scratch.ns();
    p.total = total;
    std::copy(std::begin(share), std::end(share), p.share);
    std::copy(std::begin(base), std::end(base), p.base);
    p.receives = receives.data();
    p.acks = acks.data();
    if (i < kConsumers) {
      p.index = static_cast<int>(i);
      p.stall_at = static_cast<int>(i) == kVictimConsumer ? stall_at : 0;
      p.gate = static_cast<int>(i) == kVictimConsumer ? 0 : total / 2;
    } else {
      p.index = static_cast<int>(i - kConsumers);
      p.count = share[p.index];
    }
  }
  Children children;
  std::vector<Started> started;
  std::vector<std::function<int()>> bodies;
  std::vector<ChannelProcess*> records;
  std::vector<std::string> labels;
  for (int i = 0; i < kConsumers; ++i) {
    bodies.push_back([&plan = plans[static_cast<std::size_t>(i)], &shared] { return queue_consumer(plan, *shared); });
    records.push_back(&shared->readers[i]);
    labels.push_back("consumer " + std::to_string(i + 1));
  }
  for (int i = 0; i < kProducers; ++i) {
    bodies.push_back(
        [&plan = plans[static_cast<std::size_t>(kConsumers + i)], &shared] { return queue_producer(plan, *shared); });
    records.push_back(&shared->writers[i]);
    labels.push_back("producer " + std::to_string(i + 1));
  }
  if (!start_all(children, started, bodies, records, labels, failures) || !wait_ready(children, started, failures))
    return;
  const pid_t victim_pid = started[kVictimConsumer].pid;
  out.line("  consumers 1-" + std::to_string(kConsumers) + ": " + pids_of(started, 0, kConsumers) +
           "; producers 1-" + std::to_string(kProducers) + ": " + pids_of(started, kConsumers, started.size()) + " (" +
           (share[0] == share[1] ? with_commas(share[0]) + " messages each)"
                                 : with_commas(share[0]) + " and " + with_commas(share[1]) + " messages)"));

  const auto t0 = SteadyClock::now();
  const std::uint64_t go_ns = internal::monotonic_ns();
  const auto deadline = t0 + kPhaseLimit;
  shared->go.store(1, release);

  // Wait (bounded) for the victim to hold its message.
  bool victim_ready = false;
  while (!victim_ready) {
    victim_ready = shared->victim_holding.load(acquire) != 0;
    if (victim_ready) break;
    if (auto ended = children.poll(victim_pid)) {
      shared->victim_gone.store(1, release);
      const ChannelProcess& v = shared->readers[kVictimConsumer];
      failures.push_back("queue: consumer " + std::to_string(kVictimConsumer + 1) + " ended (" + ended->text() + ")" +
                         (v.failed.load(acquire) != 0 ? std::string(": ") + v.error : std::string()) +
                         " before holding its message");
      break;
    }
    if (SteadyClock::now() > t0 + kReadyLimit) {
      shared->victim_gone.store(1, release);
      failures.push_back("queue: consumer " + std::to_string(kVictimConsumer + 1) + " did not take " +
                         with_commas(stall_at) + " messages within " + secs(kReadyLimit));
      break;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }

  const std::uint64_t victim_id = shared->victim_id.load(relaxed);
  const auto describe = [&](std::uint64_t id) {
    const int source = id >= base[1] ? 1 : 0;
    return "message " + with_commas(id) + " (producer " + std::to_string(source + 1) + " #" +
           with_commas(id - base[source]) + ")";
  };
  nlohmann::json kill_json = nullptr;
  if (victim_ready) {
    const ChannelStats before = queue->stats();
    bool stats_holding = false;
    for (const auto& r : before.readers)
      if (r.pid == static_cast<std::uint32_t>(victim_pid) && r.holding) stats_holding = true;
    out.line("  consumer " + std::to_string(kVictimConsumer + 1) + " (pid " + std::to_string(victim_pid) + ") took " +
             describe(victim_id) + ", deliveries() = " +
             std::to_string(shared->victim_deliveries.load(relaxed)) + ", and does not acknowledge it");
    out.line(std::string("  Queue::stats: pid ") + std::to_string(victim_pid) +
             (stats_holding ? " holds a message" : " holds NO message") + "; sending SIGKILL to pid " +
             std::to_string(victim_pid));
    if (!stats_holding)
      failures.push_back("queue: Queue::stats does not show pid " + std::to_string(victim_pid) + " holding a message");
    if (shared->victim_deliveries.load(relaxed) != 1)
      failures.push_back("queue: the victim's message was on delivery " +
                         std::to_string(shared->victim_deliveries.load(relaxed)) + ", expected its first");
    children.kill(victim_pid, SIGKILL);
    const ChildExit killed = children.wait(victim_pid, SteadyClock::now() + std::chrono::seconds(2));
    if (killed.how != ChildExit::How::signaled || killed.code != SIGKILL)
      failures.push_back("queue: the victim did not die of SIGKILL (" + killed.text() + ")");
    kill_json = {{"pid", victim_pid},
                 {"consumer", kVictimConsumer + 1},
                 {"message", victim_id},
                 {"sequence", shared->victim_seq.load(relaxed)},
                 {"deliveries", shared->victim_deliveries.load(relaxed)},
                 {"stats_showed_holding", stats_holding},
                 {"exit", killed.text()}};
  }

  const bool in_time = children.wait_all(deadline);
  if (!in_time) failures.push_back("queue: a process did not finish within " + secs(kPhaseLimit) + " (killed)");
  const std::set<pid_t> clean = collect_exits(children, started, victim_pid, failures);  // the victim: reported above

  // ---- the redelivery
  nlohmann::json redelivery_json = nullptr;
  const std::uint32_t redeliveries = shared->redeliveries.load(acquire);
  if (victim_ready) {
    if (shared->redelivery_recorded.load(acquire) == 0) {
      failures.push_back("queue: " + describe(victim_id) + " held by the killed consumer was not redelivered");
    } else {
      const std::uint64_t id = shared->redelivered_id.load(relaxed);
      const std::uint32_t pid = shared->redelivered_pid.load(relaxed);
      const std::uint32_t deliveries = shared->redelivered_deliveries.load(relaxed);
      out.line("  redelivered: " + describe(id) + " to consumer " +
               std::to_string(shared->redelivered_consumer.load(relaxed) + 1) + " (pid " + std::to_string(pid) +
               ") with deliveries() = " + std::to_string(deliveries) + "; first delivered to pid " +
               std::to_string(victim_pid) + ", killed");
      if (id != victim_id)
        failures.push_back("queue: the redelivered message is " + with_commas(id) + ", not the killed consumer's " +
                           with_commas(victim_id));
      if (deliveries != 2) failures.push_back("queue: redelivered with deliveries() = " + std::to_string(deliveries) +
                                              ", expected 2");
      if (pid == static_cast<std::uint32_t>(victim_pid)) failures.push_back("queue: redelivered to the killed pid");
      redelivery_json = {{"message", id},
                         {"sequence", shared->redelivered_seq.load(relaxed)},
                         {"old_pid", victim_pid},
                         {"new_pid", pid},
                         {"consumer", shared->redelivered_consumer.load(relaxed) + 1},
                         {"deliveries", deliveries}};
    }
    if (redeliveries != 1)
      failures.push_back("queue: " + std::to_string(redeliveries) + " deliveries with deliveries() > 1, expected 1");
  }

  // ---- exactly once: per-message counters
  std::uint64_t sum_receives = 0, sum_acks = 0, not_acked = 0, acked_twice = 0, duplicates = 0;
  std::uint64_t first_bad = ~std::uint64_t{0};
  for (std::uint64_t id = 0; id < total; ++id) {
    const std::uint32_t r = receives[id].load(relaxed);
    const std::uint32_t a = acks[id].load(relaxed);
    sum_receives += r;
    sum_acks += a;
    if (a == 0) ++not_acked;
    if (a > 1) ++acked_twice;
    if (r > 1) duplicates += r - 1;
    const std::uint32_t expected_r = victim_ready && id == victim_id ? 2 : 1;
    if ((r != expected_r || a != 1) && first_bad == ~std::uint64_t{0}) first_bad = id;
  }
  if (first_bad != ~std::uint64_t{0})
    failures.push_back("queue: " + with_commas(not_acked) + " messages never acknowledged, " +
                       with_commas(acked_twice) + " acknowledged twice, " + with_commas(duplicates) +
                       " duplicate deliveries (first wrong: " + describe(first_bad) + ": delivered " +
                       std::to_string(receives[first_bad].load(relaxed)) + "x, acknowledged " +
                       std::to_string(acks[first_bad].load(relaxed)) + "x)");
  // Nothing left behind: a fresh consumer here finds nothing (it would also
  // rescue a message a dead consumer still held), and nothing went to the DLQ.
  std::string leftover;
  if (auto consumer = queue->consumer()) {
    if (auto msg = consumer->try_receive()) {
      Payload p;
      leftover = unseal(msg->data(), p, kProducers) == nullptr
                     ? describe(base[p.source < 2 ? p.source : 0] + p.index) + ", delivery " +
                           std::to_string(msg->deliveries())
                     : "an unreadable message";
      failures.push_back("queue: " + leftover + " was still in the queue at the end");
    }
  } else {
    failures.push_back("queue: cannot open a consumer for the final check: " + consumer.error().message);
  }
  const ChannelStats stats = queue->stats();
  std::uint64_t dlq_published = 0;
  if (auto dlq = scratch.node().queue(dlq_name, OpenMode::open)) dlq_published = dlq->stats().published;
  else failures.push_back("queue: cannot open '" + dlq_name + "': " + dlq.error().message);
  if (dlq_published != 0)
    failures.push_back("queue: " + with_commas(dlq_published) + " messages went to the dead-letter queue");
  if (stats.published != total || stats.depth != 0)
    failures.push_back("queue: Queue::stats counts " + with_commas(stats.published) + " published and depth " +
                       with_commas(stats.depth) + ", expected " + with_commas(total) + " and 0");
  if (stats.dead_claims != 0 || stats.bad_records != 0 || stats.dropped_unacked != 0)
    failures.push_back("queue: Queue::stats counts " + std::to_string(stats.dead_claims) + " dead claims, " +
                       std::to_string(stats.bad_records) + " bad records, " + std::to_string(stats.dropped_unacked) +
                       " dropped, expected none");

  // ---- figures
  std::uint64_t produced = 0, prod_start = ~std::uint64_t{0}, prod_end = 0, cons_end = 0;
  nlohmann::json producers = nlohmann::json::array(), consumers = nlohmann::json::array();
  for (int i = 0; i < kProducers; ++i) {
    const ChannelProcess& w = shared->writers[i];
    const std::uint64_t n = w.count.load(relaxed);
    produced += n;
    prod_start = std::min(prod_start, w.start_ns.load(relaxed));
    prod_end = std::max(prod_end, w.end_ns.load(relaxed));
    producers.push_back({{"pid", started[static_cast<std::size_t>(kConsumers + i)].pid}, {"published", n}});
  }
  std::string per_consumer;
  for (int i = 0; i < kConsumers; ++i) {
    const ChannelProcess& r = shared->readers[i];
    const std::uint64_t n = r.count.load(relaxed);
    cons_end = std::max(cons_end, r.end_ns.load(relaxed));
    const pid_t pid = started[static_cast<std::size_t>(i)].pid;
    const bool killed = i == kVictimConsumer && victim_ready;
    const bool partial = !killed && clean.count(pid) == 0;  // its count is the last progress it recorded
    per_consumer += (per_consumer.empty() ? "" : ", ") + std::to_string(i + 1) + ": " +
                    (partial ? "at least " : "") + with_commas(n) +
                    (killed ? " (+1 taken, not acknowledged: killed)" : partial ? " (did not end cleanly)" : "");
    consumers.push_back({{"pid", pid}, {"acknowledged", n}, {"killed", killed}, {"ended_cleanly", clean.count(pid) != 0}});
  }
  const std::uint64_t prod_ns = prod_end > prod_start ? prod_end - prod_start : 0;
  const std::uint64_t cons_ns = cons_end > go_ns ? cons_end - go_ns : 0;
  const bool exact = first_bad == ~std::uint64_t{0};
  out.line("  acknowledged: " + with_commas(sum_acks) + " = every message exactly once" +
           (exact ? "" : " (NOT: see below)") + "; per consumer " + per_consumer);
  out.line("  deliveries:   " + with_commas(sum_receives) + " = " + with_commas(total) + " + " +
           plural(duplicates, "duplicate", "duplicates") +
           (victim_ready ? ": message " + with_commas(victim_id) + ", redelivered after the kill" : std::string()));
  out.line("  left over:    " + std::string(leftover.empty() ? "nothing" : leftover) +
           " (a fresh consumer finds the queue empty); Queue::stats: depth " + with_commas(stats.depth) +
           ", dead-letter queue '" + dlq_name + "': " + with_commas(dlq_published));
  out.line("  producers:    " + with_commas(produced) + " messages in " +
           human_duration_ns(static_cast<double>(prod_ns)) + ": " + rate_text(produced, prod_ns));
  out.line("  consumers:    " + with_commas(sum_acks) + " acknowledged in " +
           human_duration_ns(static_cast<double>(cons_ns)) + ": " + rate_text(sum_acks, cons_ns) +
           (victim_ready ? " (including the kill and the redelivery)" : ""));

  result.detail["queue"] = {{"name", kQueueName},
                            {"capacity", kRingBytes},
                            {"max_message", kMaxMessage},
                            {"max_deliveries", kMaxDeliveries},
                            {"message_bytes", kMessageBytes},
                            {"total", total},
                            {"producers", producers},
                            {"consumers", consumers},
                            {"killed", kill_json},
                            {"redelivery", redelivery_json},
                            {"deliveries", sum_receives},
                            {"acknowledged", sum_acks},
                            {"duplicates", duplicates},
                            {"exactly_once_except_killed", exact},
                            {"dead_lettered", dlq_published},
                            {"stats_dead_readers", stats.dead_readers},
                            {"depth", stats.depth},
                            {"produce_rate", rate_json(produced, prod_ns)},
                            {"consume_rate", rate_json(sum_acks, cons_ns)},
                            {"in_time", in_time}};
}

PartOutcome run_channels_part(const DemoOptions& opt, ScratchNamespace& scratch, Reporter& out) {
  PartOutcome result{"queues and topics", {}, nlohmann::json::object()};
  const auto t0 = SteadyClock::now();
  run_topic(opt, scratch, out, result);
  run_queue(opt, scratch, out, result);
  result.detail["wall_ns"] = std::chrono::duration<double, std::nano>(SteadyClock::now() - t0).count();
  return result;
}

// ============================================================ federation part

PartOutcome run_federation_part(const DemoOptions& opt, ScratchNamespace&, Reporter& out) {
  PartOutcome result{"federation", {}, nlohmann::json::object()};
  const auto t0 = SteadyClock::now();
  result.detail = run_federation_demo(opt.federation, [&out](const std::string& text) { out.line(text); },
                                      result.failures);
  result.detail["wall_ns"] = std::chrono::duration<double, std::nano>(SteadyClock::now() - t0).count();
  return result;
}

// ===================================================================== demo

constexpr Part kParts[] = {
    {"locks", run_locks_part},
    {"queues and topics", run_channels_part},
    {"federation", run_federation_part},
};

std::string join(const std::vector<std::string>& items, const char* sep) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : sep) + s;
  return out;
}

int run_demo(const DemoOptions& opt) {
  if (opt.increments < opt.workers) {
    std::cerr << "colo: demo: --increments (" << opt.increments << ") must be at least --workers (" << opt.workers
              << "): every worker needs an increment to do\n";
    return kExitUsage;
  }
  Reporter out(opt.json);
  const auto t0 = SteadyClock::now();
  std::vector<std::string> failures;
  nlohmann::json parts = nlohmann::json::array();
  std::string ns;
  std::vector<std::string> leftovers;
  {
    ScratchNamespace scratch;
    if (auto opened = scratch.open("demo"); !opened) {
      failures.push_back(opened.error().message);
    } else {
      ns = scratch.ns();
      out.line("colo demo: processes sharing state under a colo lock, publishing on a topic and sharing a queue;");
      out.line("           in each part one of them is killed mid-work, and the others carry on exactly;");
      out.line("           then three colod stand for three hosts sharing a cluster topic and a cluster queue");
      out.line(machine_line());
      out.line("namespace '" + ns + "' (temporary, removed at the end)");
      out.line("");
      for (const Part& part : kParts) {
        PartOutcome outcome = part.run(opt, scratch, out);
        const bool ok = outcome.failures.empty();
        out.line(std::string("  ") + part.name + ": " + (ok ? "OK" : "FAILED: " + join(outcome.failures, "; ")));
        out.line("");
        nlohmann::json j = {{"name", part.name}, {"ok", ok}, {"failures", outcome.failures}};
        j.update(outcome.detail);
        parts.push_back(j);
        for (const auto& f : outcome.failures) failures.push_back(std::string(part.name) + ": " + f);
      }
    }
    leftovers = scratch.remove_all();
  }
  if (!leftovers.empty()) failures.push_back("segments left in /dev/shm: " + join(leftovers, ", "));
  const double wall_ns = std::chrono::duration<double, std::nano>(SteadyClock::now() - t0).count();
  const bool ok = failures.empty();
  if (opt.json) {
    nlohmann::json j = {{"demo", "colo"},
                        {"machine", machine_json()},
                        {"namespace", ns},
                        {"workers", opt.workers},
                        {"increments", opt.increments},
                        {"topic_messages", opt.topic_messages},
                        {"queue_messages", opt.queue_messages},
                        {"parts", parts},
                        {"wall_ns", wall_ns},
                        {"leftovers", leftovers},
                        {"ok", ok},
                        {"failures", failures}};
    std::cout << j.dump(2) << '\n';
  } else {
    out.line("namespace '" + ns + "' removed; total " + human_duration_ns(wall_ns));
    out.line(ok ? "demo: OK" : "demo: FAILED: " + join(failures, "; "));
  }
  return ok ? kExitOk : kExitFailure;
}

}  // namespace

void register_demo(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand(
      "demo", "Start here: a colo lock, a topic and a queue shared by processes, some of them killed mid-work");
  cmd->footer(
      "Part \"locks\": forks --workers processes that add --increments to a counter in shared memory under one "
      "colo lock. One is killed (SIGKILL) in the middle of an update, holding the lock; the next holder is told the "
      "owner died and rolls the half-done update back; a restarted worker finishes the share. Checks that fencing "
      "tokens only grow and that the counter ends exact.\n"
      "Part \"queues and topics\": 2 publisher processes write --topic-messages each on a topic with zero-copy "
      "loans; 2 blocking subscribers must get every message in order (one-way latency is measured), a slow lossy "
      "one counts what it missed. Then 2 producers and 3 consumers share --queue-messages on a queue with acks; "
      "one consumer is killed holding an unacknowledged message, which is redelivered to another. Checks that "
      "every message is acknowledged exactly once.\n"
      "Part \"federation\": three colod on 127.0.0.1 stand for hosts alpha, beta and gamma (a namespace each). A "
      "cluster topic with a subscriber on each host and publishers on alpha and beta (gamma's colod is killed and "
      "restarted halfway: every subscriber still gets every message exactly once, in order); a cluster queue (home "
      "alpha) with a consumer on each host and producers on beta and gamma: every job consumed exactly once in the "
      "cluster. colod is found beside colo, in ../bridge/ of a build tree, on $PATH, or through COLOD_BIN.\n"
      "Ends with `demo: OK` (exit 0) or `demo: FAILED: <why>` (exit 1). Runs in a private namespace demo<pid>, "
      "removed at the end (--ns is ignored).");
  auto opt = std::make_shared<DemoOptions>();
  cmd->add_option("--workers", opt->workers, "worker processes")
      ->capture_default_str()
      ->check(CLI::Range(1, kMaxWorkers));
  cmd->add_option("--increments", opt->increments, "increments of the counter in total, split between the workers")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1'000'000}));
  cmd->add_option("--topic-messages", opt->topic_messages, "messages per topic publisher (2 publishers)")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{1'000}, std::int64_t{2'000'000}));
  cmd->add_option("--queue-messages", opt->queue_messages, "queue messages in total (2 producers, 3 consumers)")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{1'000}, std::int64_t{1'000'000}));
  cmd->add_option("--cluster-topic-messages", opt->federation.topic_messages,
                  "federation part: messages per cluster topic publisher (2 publishers)")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{100}, std::int64_t{1'000'000}));
  cmd->add_option("--cluster-queue-messages", opt->federation.queue_messages,
                  "federation part: cluster queue jobs in total (2 producers)")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{100}, std::int64_t{1'000'000}));
  cmd->add_flag("--json", opt->json, "print JSON instead of text");
  cmd->callback([opt, &ctx] { ctx.exit_code = run_demo(*opt); });
}

}  // namespace colo::cli
