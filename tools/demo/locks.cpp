// tools/demo/locks.cpp — the "locks" part of the demo (demo.hpp).
//
// W worker processes share a counter in shared memory under one
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
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <optional>
#include <thread>
#include <vector>

#include "demo.hpp"
#include "format.hpp"
#include "scenario.hpp"

namespace colo::cli {
namespace {

constexpr auto relaxed = std::memory_order_relaxed;
constexpr auto release = std::memory_order_release;
constexpr auto acquire = std::memory_order_acquire;

constexpr const char* kLockName = "demo/counter";
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
// the journal's release stores keep the steps in order (the next
// holder must be able to tell how far the dead one got).
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

// One worker process's own figures (written by that process only); its
// pid and failure are in the scenario's RoleStatus.
struct WorkerRecord {
  std::atomic<std::uint64_t> grants;
  std::atomic<std::uint64_t> increments;       // increments this process committed
  std::atomic<std::uint64_t> token_violations;  // tokens not above the last recorded one
  std::atomic<std::uint64_t> owner_died;        // grants with owner_died() == true
  std::atomic<std::uint64_t> unreported_damage;  // open journal found without owner_died()
};

struct LocksShared {
  alignas(64) std::atomic<int> victim_holding;  // the victim is mid-update, holding the lock
  std::atomic<std::uint64_t> victim_token;
  std::atomic<std::uint64_t> victim_value_before;
  alignas(64) CounterState counter;
  alignas(64) WorkerRecord process[kMaxProcesses];
};

struct WorkerPlan {
  std::string ns;
  int process = 0;              // index in LocksShared::process and of its role
  int slot = 0;                 // worker slot: whose share this process works on
  std::uint64_t share = 0;      // increments of this slot in total
  std::uint64_t stall_at = 0;   // the victim: stop mid-update at this grant (0: never)
};

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

int demo_worker(const WorkerPlan& plan, LocksShared& shared, Role& role) {
  WorkerRecord& me = shared.process[plan.process];
  CounterState& c = shared.counter;
  const auto pid = static_cast<std::uint32_t>(::getpid());

  NodeOptions options;
  options.ns = plan.ns;
  auto node = Node::open(options);
  if (!node) return role.fail(node.error().message, 2);
  auto lock = node->lock(kLockName, OpenMode::open);
  if (!lock) return role.fail(lock.error().message, 2);
  role.ready();
  if (!role.wait_for_go(std::chrono::seconds(10))) return 3;

  std::uint64_t grants = 0;
  for (;;) {
    auto acquired = lock->acquire();
    if (!acquired) return role.fail(acquired.error().message, 4);
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
      return role.fail("stalled holding the lock but was never killed", 5);
    }
    // 3. second half, 4. commit
    c.done[plan.slot].store(done + 1, release);
    c.journal_open.store(0, release);
    me.increments.store(me.increments.load(relaxed) + 1, relaxed);
  }
}

// The parent's side of the part, step by step; each step appends to the
// part's failures and figures.
class LocksPart {
 public:
  LocksPart(const DemoOptions& opt, ScratchNamespace& scratch, Reporter& out, PartOutcome& result)
      : scratch_(scratch),
        out_(out),
        result_(result),
        failures_(result.failures),
        workers_(opt.workers),
        increments_(static_cast<std::uint64_t>(opt.increments)),
        victim_(opt.workers - 1),
        scenario_(result.failures) {}

  void run() {
    if (!prepare() || !start_workers()) return;
    t0_ = SteadyClock::now();
    const auto deadline = t0_ + std::chrono::seconds(15);
    scenario_.go();
    kill_victim_and_restart();
    in_time_ = scenario_.wait_all(deadline);
    t1_ = SteadyClock::now();
    if (!in_time_) failures_.push_back("a worker did not finish within 15 s (killed)");
    tally_processes();
    report_recoveries();
    check();
    summarize();
  }

 private:
  bool prepare();
  bool start_workers();
  void kill_victim_and_restart();
  void tally_processes();
  void report_recoveries();
  void check();
  void summarize();

  ScratchNamespace& scratch_;
  Reporter& out_;
  PartOutcome& result_;
  std::vector<std::string>& failures_;
  const int workers_;
  const std::uint64_t increments_;
  const int victim_;  // the last worker, killed halfway through its share

  std::optional<Lock> lock_;
  SharedBlock<LocksShared> shared_;
  std::vector<WorkerPlan> plans_;
  Scenario scenario_;  // roles 0 .. workers-1: the workers; role `workers`: the restarted victim
  pid_t victim_pid_ = -1;
  bool victim_ready_ = false;
  bool restarted_ = false;
  bool in_time_ = false;
  SteadyClock::time_point t0_, t1_;
  nlohmann::json kill_json_ = nullptr;
  // Tallied once the processes ended.
  std::uint64_t sum_grants_ = 0, violations_ = 0, owner_died_ = 0, unreported_ = 0, sum_increments_ = 0;
  LockStats stats_;
};

bool LocksPart::prepare() {
  auto lock = scratch_.create_lock(kLockName);
  if (!lock) {
    failures_.push_back(lock.error().message);
    return false;
  }
  lock_.emplace(std::move(lock).value());
  if (!shared_ || !scenario_) {
    failures_.push_back("cannot map shared memory for the counter");
    return false;
  }
  // The first Lock::stats() of a process calibrates the tick clock (~10 ms
  // of sleep, shm/clock.cpp): do it now, not while the victim holds the lock.
  (void)lock_->stats();

  // Shares, and the victim: the last worker, killed halfway through its share.
  const auto n = static_cast<std::uint64_t>(workers_);
  for (int i = 0; i < workers_; ++i) {
    WorkerPlan p;
    p.ns = scratch_.ns();
    p.process = i;
    p.slot = i;
    p.share = increments_ / n + (static_cast<std::uint64_t>(i) < increments_ % n ? 1 : 0);
    plans_.push_back(p);
  }
  plans_[victim_].stall_at = (plans_[victim_].share + 1) / 2;
  out_.line("[locks] " + plural(n, "worker process adds ", "worker processes add ") + with_commas(increments_) +
            " to one counter in shared memory, under the colo lock '" + kLockName + "'");
  out_.line("        each increment is journaled in two steps; worker " + std::to_string(victim_ + 1) +
            " will be killed in the middle of one, holding the lock");
  return true;
}

bool LocksPart::start_workers() {
  for (const auto& plan : plans_)
    if (!scenario_.start("worker " + std::to_string(plan.slot + 1),
                         [&plan, this](Role& role) { return demo_worker(plan, *shared_, role); }))
      return false;
  if (!scenario_.wait_ready(std::chrono::seconds(10))) return false;
  victim_pid_ = scenario_.pid(static_cast<std::size_t>(victim_));
  const WorkerPlan& first = plans_[0];
  const WorkerPlan& last = plans_[victim_];
  out_.line("  started " + (workers_ == 1 ? std::string("worker 1") : "workers 1-" + std::to_string(workers_)) +
            ": " + scenario_.pids(0, scenario_.size()) + " (" + plural(first.share, "increment", "increments") +
            (workers_ > 1 ? " each" : "") +
            (first.share != last.share ? ", or " + with_commas(last.share) : std::string()) + ")");
  return true;
}

// Waits (bounded) for the victim to be mid-update, holding the lock; kills
// it there; starts a replacement to finish its share, as a supervisor would.
void LocksPart::kill_victim_and_restart() {
  const std::string victim = "worker " + std::to_string(victim_ + 1);
  const auto reached = scenario_.wait_until(
      static_cast<std::size_t>(victim_), [this] { return shared_->victim_holding.load(acquire) != 0; },
      t0_ + std::chrono::seconds(10));
  if (!reached.reached) {
    failures_.push_back(reached.ended ? victim + " ended (" + reached.ended->text() + ") before reaching its stall point"
                                      : victim + " did not reach its stall point within 10 s");
    return;
  }
  victim_ready_ = true;
  const LockStats before = lock_->stats();
  const std::uint64_t token = shared_->victim_token.load(relaxed);
  const std::uint64_t value_before = shared_->victim_value_before.load(relaxed);
  out_.line("  " + victim + " (pid " + std::to_string(victim_pid_) + ") holds the lock (fencing token " +
            with_commas(token) + ") mid-update: counter " + with_commas(value_before) + " -> " +
            with_commas(value_before + 1) + " written, not committed");
  out_.line("  Lock::stats says the holder is pid " + std::to_string(before.holder.pid) +
            (before.holder.alive ? " (alive)" : " (dead?)") + ", " + std::to_string(before.waiters) +
            " waiting; sending SIGKILL to pid " + std::to_string(victim_pid_));
  if (before.holder.pid != static_cast<std::uint32_t>(victim_pid_))
    failures_.push_back("Lock::stats names pid " + std::to_string(before.holder.pid) +
                        " as the holder, not the victim " + std::to_string(victim_pid_));
  const ChildExit killed = scenario_.kill(static_cast<std::size_t>(victim_), std::chrono::seconds(5));
  if (killed.how != ChildExit::How::signaled || killed.code != SIGKILL)
    failures_.push_back("the victim did not die of SIGKILL (" + killed.text() + ")");
  kill_json_ = {{"pid", victim_pid_},
                {"worker", victim_ + 1},
                {"token", token},
                {"counter_before", value_before},
                {"stats_holder_pid", before.holder.pid},
                {"waiters", before.waiters}};

  WorkerPlan again = plans_[victim_];
  again.process = workers_;
  again.stall_at = 0;
  restarted_ = scenario_.start("restarted " + victim,
                               [again, this](Role& role) { return demo_worker(again, *shared_, role); });
  if (restarted_)
    out_.line("  restarted " + victim + " as pid " + std::to_string(scenario_.pid(scenario_.size() - 1)) +
              " to finish its share");
}

void LocksPart::tally_processes() {
  (void)scenario_.collect(victim_ready_ ? victim_pid_ : -1);  // the killed victim: checked where it was killed
  nlohmann::json procs = nlohmann::json::array();
  for (std::size_t i = 0; i < scenario_.size(); ++i) {
    const WorkerRecord& p = shared_->process[i];
    const pid_t pid = scenario_.pid(i);
    const bool is_victim = pid == victim_pid_;
    const bool replacement = i == static_cast<std::size_t>(workers_);
    sum_grants_ += p.grants.load(relaxed);
    violations_ += p.token_violations.load(relaxed);
    owner_died_ += p.owner_died.load(relaxed);
    unreported_ += p.unreported_damage.load(relaxed);
    sum_increments_ += p.increments.load(relaxed);
    procs.push_back({{"pid", pid},
                     {"worker", (replacement ? victim_ : static_cast<int>(i)) + 1},
                     {"role", is_victim ? "killed holding the lock" : replacement ? "restarted worker" : "worker"},
                     {"grants", p.grants.load(relaxed)},
                     {"increments", p.increments.load(relaxed)},
                     {"owner_died", p.owner_died.load(relaxed)},
                     {"token_violations", p.token_violations.load(relaxed)},
                     {"exit", scenario_.exit_of(i).text()}});
  }
  result_.detail["processes"] = procs;
  stats_ = lock_->stats();
}

void LocksPart::report_recoveries() {
  const CounterState& c = shared_->counter;
  const std::uint32_t seen = c.recoveries.load(acquire);
  nlohmann::json repairs = nlohmann::json::array();
  for (std::uint32_t i = 0; i < std::min<std::uint32_t>(seen, kMaxRecoveryRecords); ++i) {
    const RecoveryRecord& r = c.recovery[i];
    repairs.push_back({{"dead_holder_pid", r.dead_pid},
                       {"dead_holder_token", r.dead_token},
                       {"new_holder_pid", r.new_pid},
                       {"new_token", r.new_token},
                       {"rolled_back", r.rolled_back != 0},
                       {"counter_found", r.value_found},
                       {"counter_restored", r.value_restored}});
    out_.line("  recovery: pid " + std::to_string(r.new_pid) + " was granted the lock with owner_died() = true" +
              " (dead holder: pid " + std::to_string(r.dead_pid) + ", token " + with_commas(r.dead_token) +
              "; new fencing token " + with_commas(r.new_token) + ")");
    if (r.rolled_back != 0)
      out_.line("            it rolled back worker " + std::to_string(r.journal_slot + 1) +
                "'s half-done increment: counter " + with_commas(r.value_found) + " -> " +
                with_commas(r.value_restored));
    else
      out_.line("            the journal was closed: nothing to roll back");
  }
  result_.detail["repairs"] = repairs;
}

void LocksPart::check() {
  const CounterState& c = shared_->counter;
  const std::uint64_t value = c.value.load(acquire);
  std::uint64_t sum_done = 0;
  for (int i = 0; i < workers_; ++i) sum_done += c.done[i].load(relaxed);
  const std::uint32_t recoveries_seen = c.recoveries.load(acquire);
  const std::uint64_t expected_grants = increments_ + static_cast<std::uint64_t>(workers_) + 1;
  if (victim_ready_) {
    if (stats_.recoveries != 1)
      failures_.push_back("Lock::stats counts " + std::to_string(stats_.recoveries) + " recoveries, expected 1");
    if (owner_died_ != 1)
      failures_.push_back(std::to_string(owner_died_) + " grants were told owner_died(), expected 1");
    if (recoveries_seen != 1 || c.recovery[0].rolled_back == 0)
      failures_.push_back("the half-done increment of the killed worker was not rolled back by the next holder");
    else if (c.recovery[0].dead_pid != static_cast<std::uint32_t>(victim_pid_))
      failures_.push_back("the repairing holder found pid " + std::to_string(c.recovery[0].dead_pid) +
                          " as the last holder, not the killed pid " + std::to_string(victim_pid_));
  }
  if (unreported_ != 0)
    failures_.push_back(std::to_string(unreported_) + " grants found a half-done update without owner_died()");
  if (violations_ != 0)
    failures_.push_back(std::to_string(violations_) + " fencing tokens were not strictly increasing");
  if (c.journal_open.load(acquire) != 0) failures_.push_back("an update was left half-done at the end");
  if (value != increments_ || sum_done != increments_ || sum_increments_ != increments_)
    failures_.push_back("counter " + std::to_string(value) + " (per-worker sum " + std::to_string(sum_done) +
                        ", committed by processes " + std::to_string(sum_increments_) + "), expected " +
                        std::to_string(increments_));
  if (stats_.grants != sum_grants_)
    failures_.push_back("Lock::stats counts " + std::to_string(stats_.grants) + " grants, the processes " +
                        std::to_string(sum_grants_));
  else if (victim_ready_ && in_time_ && stats_.grants != expected_grants)
    failures_.push_back(std::to_string(stats_.grants) + " grants, expected " + std::to_string(expected_grants));
  result_.detail["expected_grants"] = expected_grants;
}

void LocksPart::summarize() {
  const std::uint64_t value = shared_->counter.value.load(acquire);
  const std::size_t processes = scenario_.size();
  const double wall_ns = std::chrono::duration<double, std::nano>(t1_ - t0_).count();
  const double ns_per_grant = stats_.grants > 0 ? wall_ns / static_cast<double>(stats_.grants) : 0;
  const auto workers = static_cast<std::uint64_t>(workers_);
  out_.line("  processes:      " + std::to_string(processes) + " (" + plural(workers, "worker", "workers") +
            (restarted_ ? ", 1 killed holding the lock and restarted" : std::string()) + ")");
  out_.line("  grants:         " + with_commas(stats_.grants) + " (Lock::stats) = " +
            plural(increments_, "increment", "increments") + " + " + plural(workers, "grant", "grants") +
            " that found the share done + the killed worker's");
  out_.line("  recoveries:     " + std::to_string(stats_.recoveries) +
            " (Lock::stats: grants that found the owner dead)");
  out_.line("  fencing tokens: strictly increasing: " + std::string(violations_ == 0 ? "yes" : "NO") + " (" +
            std::to_string(violations_) + " violations in " + with_commas(sum_grants_) + " grants; epoch now " +
            with_commas(stats_.fencing_epoch) + ")");
  out_.line("  counter:        " + with_commas(value) + ", expected " + with_commas(increments_) + ": " +
            (value == increments_ ? "exact" : "WRONG") +
            " (the killed worker's half-done increment rolled back, redone)");
  out_.line("  time per grant: " + human_duration_ns(ns_per_grant) + " (wall " + human_duration_ns(wall_ns) + " / " +
            with_commas(stats_.grants) + " grants, " + std::to_string(processes) + " processes on " +
            std::to_string(::sysconf(_SC_NPROCESSORS_ONLN)) + " CPUs); mean hold " +
            human_duration_ns(stats_.hold_ns_mean) + " (Lock::stats)");
  result_.detail.update({
      {"lock", kLockName},
      {"workers", workers_},
      {"increments", increments_},
      {"killed", kill_json_},
      {"grants", stats_.grants},
      {"contended_grants", stats_.contended_grants},
      {"recoveries", stats_.recoveries},
      {"fencing",
       {{"strictly_increasing", violations_ == 0}, {"violations", violations_}, {"epoch", stats_.fencing_epoch}}},
      {"counter", {{"value", value}, {"expected", increments_}, {"exact", value == increments_},
                   {"partial_increment", "rolled back"}}},
      {"wall_ns", wall_ns},
      {"ns_per_grant", ns_per_grant},
      {"mean_hold_ns", stats_.hold_ns_mean},
  });
}

}  // namespace

PartOutcome run_locks_part(const DemoOptions& opt, ScratchNamespace& scratch, Reporter& out) {
  PartOutcome result{"locks", {}, nlohmann::json::object()};
  LocksPart(opt, scratch, out, result).run();
  return result;
}

}  // namespace colo::cli
