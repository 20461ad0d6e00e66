// `colo demo`: what colo is for, shown in a few seconds with real processes.
//
// The demo runs a sequence of parts, each a small scenario with forked
// processes in a private namespace `demo<pid>` that is removed at the end,
// even on failure or Ctrl-C. Each part checks exact outcomes and says OK or
// FAILED with the reason; the demo ends with `demo: OK` (exit 0) or
// `demo: FAILED: <why>` (exit 1). Parts today: "locks". Queues and topics
// slot in as further entries of kParts.
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

#include <atomic>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <thread>

#include "bench_process.hpp"
#include "cli.hpp"

namespace colo::cli {
namespace {

constexpr auto relaxed = std::memory_order_relaxed;
constexpr auto release = std::memory_order_release;
constexpr auto acquire = std::memory_order_acquire;

struct DemoOptions {
  int workers = 4;
  std::int64_t increments = 25'000;
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

// ===================================================================== demo

constexpr Part kParts[] = {
    {"locks", run_locks_part},
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
      out.line("colo demo: processes sharing state under a colo lock, one of them killed mid-update");
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
      "demo", "Start here: processes share a counter under a colo lock; one dies holding it, the next holder repairs");
  cmd->footer(
      "Forks --workers processes that add --increments to a counter in shared memory under one colo lock. One is "
      "killed (SIGKILL) in the middle of an update, holding the lock; the next holder is told the owner died and "
      "rolls the half-done update back; a restarted worker finishes the share. Checks that fencing tokens only grow "
      "and that the counter ends exact. Ends with `demo: OK` (exit 0) or `demo: FAILED: <why>` (exit 1).\n"
      "Runs in a private namespace demo<pid>, removed at the end (--ns is ignored).");
  auto opt = std::make_shared<DemoOptions>();
  cmd->add_option("--workers", opt->workers, "worker processes")
      ->capture_default_str()
      ->check(CLI::Range(1, kMaxWorkers));
  cmd->add_option("--increments", opt->increments, "increments of the counter in total, split between the workers")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1'000'000}));
  cmd->add_flag("--json", opt->json, "print JSON instead of text");
  cmd->callback([opt, &ctx] { ctx.exit_code = run_demo(*opt); });
}

}  // namespace colo::cli
