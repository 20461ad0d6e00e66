// `colo bench cluster-lock`: what colod's cohorting buys over taking the
// backend lock directly, for each backend (ZooKeeper, etcd, Redis).
//
// For each backend asked for (--backends), with its server's endpoint
// (--zookeeper/--etcd/--redis, else $COLO_ZOOKEEPER/$COLO_ETCD/$COLO_REDIS):
//
//   colod    one colod on loopback (LocalCluster: one host, one scratch
//            namespace) with a [[lock_backend]] for it and the default
//            [locks] budget. Processes open the lock with Scope::cluster:
//            colod takes the backend lock once and the host's processes
//            pass it on through the local mutex (docs/cluster-locks.md).
//   direct   each process opens its own session with open_backend(), the
//            client library colod itself uses, and takes the backend lock
//            (BackendLock::acquire/release) for every grant.
//
// Measured, colod side then direct side, on two lock names unique to the run:
//   contended    N forked processes (default 8) acquire and release one lock
//                in a loop for S seconds: grants/s over all of them, and the
//                per-process minimum and maximum (fairness).
//   uncontended  one process, K acquire+release pairs, 5 ms apart: p50, p99,
//                max in microseconds. colod "cold": before each pair the
//                process waits until colod has given the backend lock back
//                (idle_release_ms = 2), so each acquire is a real backend
//                acquisition; colod "warm": back-to-back pairs while colod
//                keeps its hold (the cohort's fast path). With colod the
//                release is asynchronous: the backend lock goes back
//                idle_release_ms after the last local release, off the
//                caller's clock.
//
// Checked on every grant, through a page of shared memory mapped before the
// processes are forked: exclusion (a flag set after the grant and cleared
// before the release; finding it set, or cleared, is a violation) and fencing
// tokens (each greater than the process's previous one and than the largest
// any process was granted, a maximum kept under the lock). A violation makes
// the exit status 1; so do a failed measurement and anything left behind.
// The goals are reported and not enforced: contended, colod at
// least 20x the direct grants/s; uncontended, the colod cold p50 at most
// 1.2x the direct p50.
//
// Every use of a backend client happens in a forked child, never in colo-bench
// itself: the ZooKeeper and etcd clients start threads, and a process that
// forks must not have any. A backend whose session cannot be opened (by a
// probe child) is reported as skipped with the reason. Cleanup: colod is
// stopped and the namespace removed after each backend (LocalCluster::stop);
// on Ctrl-C the harness's signal handler kills the children and colod and
// unlinks the same files. The backends' fence counters for the run's lock
// names stay on the server, as they must for tokens to stay increasing.
#include "commands.hpp"

#include <unistd.h>  // getpid, isatty

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cctype>  // toupper
#include <cmath>
#include <csignal>  // SIGPIPE
#include <cstdio>
#include <cstdlib>  // getenv
#include <cstring>
#include <ctime>    // time: scratch namespace names
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "app.hpp"
#include "backends/backend.hpp"
#include "colo/internal/clock.hpp"
#include "colo/internal/text.hpp"  // errno_text
#include "colo/lock.hpp"
#include "format.hpp"
#include "local_cluster.hpp"
#include "processes.hpp"  // Children, SharedBlock, shm_segments_with_prefix

namespace colo::cli {
namespace {

using namespace std::chrono_literals;
using bridge::Acquire;
using bridge::BackendLock;
using bridge::BackendSettings;

constexpr int kMaxProcesses = 64;
constexpr int kMaxIterations = 10'000;
constexpr int kLocalGrantBits = 20;  // cluster tokens are epoch << 20 | local grant (colo/lock.hpp)
constexpr std::uint32_t kOpTimeoutMs = 2000;
constexpr std::uint32_t kIdleReleaseMs = 2;
// Between uncontended pairs: longer than idle_release_ms plus the 1 ms that
// colod's keeper sleeps between looks at a held lock.
constexpr auto kPauseBetweenPairs = 5ms;
// How long a cold pair waits for colod to give the backend lock back.
constexpr auto kReleaseWaitLimit = 1s;
// A direct waiter's slice: it looks at the stop flag this often (keeping its
// place in the backend's queue).
constexpr std::uint64_t kAcquireSliceNs = 100'000'000;
constexpr auto kColodStartLimit = 20.0;  // s
constexpr auto kReadyLimit = 30s;        // first grant of every process: colod's keeper starts within 100 ms
constexpr double kGoalContendedRatio = 20;
constexpr double kGoalUncontendedRatio = 1.2;
const char* const kAllBackends[] = {"zookeeper", "etcd", "redis"};

struct Options {
  std::vector<std::string> backends = {"zookeeper", "etcd", "redis"};
  std::string zookeeper, etcd, redis;  // endpoints: the option, else the environment
  int processes = 8;
  double seconds = 2.0;
  int iterations = 200;
  std::uint32_t lease_ms = 3000;
  std::string colod;
  bool quick = false;
  bool json = false;
};

// The clock BackendLock deadlines are given in (backend.hpp).
using internal::monotonic_ns;

// What a child says when it gives up, for the parent's report.
struct ChildError {
  std::atomic<int> failed{0};
  char text[400] = {};
  int set(const std::string& what) {
    std::snprintf(text, sizeof text, "%s", what.c_str());
    failed.store(1, std::memory_order_release);
    return 1;
  }
};

// hiredis writes with write(2): a connection the server closed must give an
// error, not kill the process. Children get default signal actions at fork.
void ignore_sigpipe() { ::signal(SIGPIPE, SIG_IGN); }

BackendSettings settings_for(const std::string& kind, const std::string& endpoints, const Options& opt) {
  BackendSettings s;
  s.kind = kind;
  s.endpoints = endpoints;
  s.lease = std::chrono::milliseconds(opt.lease_ms);
  s.op_timeout = std::chrono::milliseconds(kOpTimeoutMs);
  return s;  // root and poll: the defaults, as in colod's config below
}

// ------------------------------------------------------------- contention

enum Phase : int { kWaiting = 0, kRunning = 1, kStopping = 2 };

// Shared by the parent and the contending children of one side.
struct ContentionShared {
  alignas(64) std::atomic<int> ready{0};  // children that had their first (untimed) grant
  alignas(64) std::atomic<int> phase{kWaiting};
  // Written by the holder of the lock only, unless exclusion is broken.
  alignas(64) std::atomic<int> inside{0};
  std::atomic<int> last_holder{-1};
  std::atomic<std::uint64_t> max_token{0};
  std::atomic<std::uint64_t> last_epoch{0};
  std::atomic<std::uint64_t> handoffs{0};  // timed grants that went to another process than the previous grant
  std::atomic<std::uint64_t> holds{0};     // timed grants under a backend epoch other than the previous grant's
  alignas(64) std::atomic<std::uint64_t> exclusion_violations{0};
  std::atomic<std::uint64_t> token_regressions{0};
  struct alignas(64) PerProcess {
    std::atomic<std::uint64_t> grants{0};   // in the timed window
    std::atomic<std::uint64_t> checked{0};  // every grant, the untimed ones included
    std::atomic<std::uint64_t> lease_lost{0};
    ChildError error;
  };
  PerProcess process[kMaxProcesses];
};

// The checks made on every grant, between the grant and the release.
class GrantCheck {
 public:
  GrantCheck(ContentionShared& shared, int me) : shared_(shared), me_(me) {}

  // `epoch` is the backend's grant epoch (colod: the token's upper bits).
  // `timed`: the grant counts for the figures.
  void granted(std::uint64_t token, std::uint64_t epoch, bool timed) {
    if (shared_.inside.exchange(1) != 0) shared_.exclusion_violations.fetch_add(1);
    if (token <= my_last_token_) shared_.token_regressions.fetch_add(1);
    my_last_token_ = token;
    // Load then store is enough under the lock; two holders at once are
    // caught by the flag above.
    if (token <= shared_.max_token.load()) shared_.token_regressions.fetch_add(1);
    else shared_.max_token.store(token);
    const bool other_holder = shared_.last_holder.exchange(me_) != me_;
    const bool other_epoch = shared_.last_epoch.exchange(epoch) != epoch;
    if (timed && other_holder) shared_.handoffs.fetch_add(1, std::memory_order_relaxed);
    if (timed && other_epoch) shared_.holds.fetch_add(1, std::memory_order_relaxed);
    shared_.process[me_].checked.fetch_add(1, std::memory_order_relaxed);
  }
  void releasing() {
    if (shared_.inside.exchange(0) != 1) shared_.exclusion_violations.fetch_add(1);
  }

 private:
  ContentionShared& shared_;
  int me_;
  std::uint64_t my_last_token_ = 0;
};

void wait_for_start(const ContentionShared& shared) {
  while (shared.phase.load(std::memory_order_acquire) == kWaiting) std::this_thread::sleep_for(100us);
}

int colod_contender(ContentionShared& shared, int me, const std::string& ns, const std::string& name) {
  auto& self = shared.process[me];
  NodeOptions options;
  options.ns = ns;
  auto node = Node::open(options);
  if (!node) return self.error.set("namespace " + ns + ": " + node.error().message);
  auto lock = node->lock(name, OpenMode::open, {.scope = Scope::cluster});
  if (!lock) return self.error.set("lock " + name + ": " + lock.error().message);
  GrantCheck check(shared, me);
  {
    // The first grant waits for colod's keeper and the backend: untimed.
    auto guard = lock->acquire();
    if (!guard) return self.error.set("first acquire: " + guard.error().message);
    check.granted(guard->fencing_token(), guard->fencing_token() >> kLocalGrantBits, false);
    check.releasing();
  }
  shared.ready.fetch_add(1, std::memory_order_acq_rel);
  wait_for_start(shared);
  while (shared.phase.load(std::memory_order_acquire) == kRunning) {
    auto guard = lock->acquire();
    if (!guard) return self.error.set("acquire: " + guard.error().message);
    // A grant that arrives after the stop is checked but not counted.
    const bool timed = shared.phase.load(std::memory_order_relaxed) == kRunning;
    const std::uint64_t token = guard->fencing_token();
    check.granted(token, token >> kLocalGrantBits, timed);
    if (guard->lease_lost()) self.lease_lost.fetch_add(1, std::memory_order_relaxed);
    check.releasing();
    guard->unlock();
    if (timed) self.grants.fetch_add(1, std::memory_order_relaxed);
  }
  return 0;
}

// Waits in slices until held; false when stopped first (the queue place is
// then given up) or on failure (`error` set).
bool take_backend_lock(BackendLock& lock, const ContentionShared& shared, bool stop_on_phase, Acquire& got,
                       std::string& error) {
  for (;;) {
    got = lock.acquire(monotonic_ns() + kAcquireSliceNs);
    if (got.status == Acquire::Status::held) return true;
    if (got.status == Acquire::Status::failed) {
      error = got.detail.empty() ? std::string("acquire failed") : got.detail;
      return false;
    }
    if (stop_on_phase && shared.phase.load(std::memory_order_acquire) != kRunning) {
      lock.release();
      return false;
    }
  }
}

int direct_contender(ContentionShared& shared, int me, const BackendSettings& settings, const std::string& name) {
  ignore_sigpipe();
  auto& self = shared.process[me];
  auto backend = bridge::open_backend(settings);
  if (!backend) return self.error.set("open " + settings.kind + ": " + backend.error().message);
  std::unique_ptr<BackendLock> lock = (*backend)->lock(name);
  GrantCheck check(shared, me);
  Acquire got;
  std::string error;
  // The first grant (connection warm, scripts cached): untimed.
  if (!take_backend_lock(*lock, shared, false, got, error)) return self.error.set("first acquire: " + error);
  check.granted(got.epoch, got.epoch, false);
  check.releasing();
  lock->release();
  shared.ready.fetch_add(1, std::memory_order_acq_rel);
  wait_for_start(shared);
  while (shared.phase.load(std::memory_order_acquire) == kRunning) {
    if (!take_backend_lock(*lock, shared, true, got, error)) {
      if (!error.empty()) return self.error.set("acquire: " + error);
      break;  // stopped while waiting
    }
    const bool timed = shared.phase.load(std::memory_order_relaxed) == kRunning;
    check.granted(got.epoch, got.epoch, timed);
    check.releasing();
    lock->release();
    if (timed) self.grants.fetch_add(1, std::memory_order_relaxed);
  }
  return 0;
}

struct ContendedFigures {
  std::string error;  // empty: measured
  double seconds = 0;
  std::vector<std::uint64_t> per_process;
  std::uint64_t grants = 0, checked = 0, handoffs = 0, holds = 0, lease_lost = 0;
  std::uint64_t exclusion_violations = 0, token_regressions = 0;
  double grants_per_s() const { return seconds > 0 ? static_cast<double>(grants) / seconds : 0; }
  std::uint64_t min_process() const {
    return per_process.empty() ? 0 : *std::min_element(per_process.begin(), per_process.end());
  }
  std::uint64_t max_process() const {
    return per_process.empty() ? 0 : *std::max_element(per_process.begin(), per_process.end());
  }
  int starved() const {
    return static_cast<int>(std::count(per_process.begin(), per_process.end(), std::uint64_t{0}));
  }
};

// Forks `processes` children running `body`, lets them run together for
// `seconds` once each has had a first grant, stops them and collects.
ContendedFigures run_contended(int processes, double seconds, std::chrono::milliseconds stop_grace,
                               const std::function<int(ContentionShared&, int)>& body) {
  ContendedFigures f;
  SharedBlock<ContentionShared> shared;
  if (!shared) {
    f.error = internal::errno_text("mmap");
    return f;
  }
  Children children;
  std::vector<pid_t> pids;
  for (int me = 0; me < processes; ++me) {
    const pid_t pid = children.spawn([&shared, &body, me] { return body(*shared, me); });
    if (pid < 0) {
      f.error = internal::errno_text("fork");
      return f;  // ~Children kills the ones started
    }
    pids.push_back(pid);
  }
  auto first_child_error = [&]() -> std::string {
    for (int me = 0; me < processes; ++me)
      if (shared->process[me].error.failed.load(std::memory_order_acquire) != 0)
        return "process " + std::to_string(me + 1) + ": " + shared->process[me].error.text;
    return {};
  };
  const auto ready_by = SteadyClock::now() + kReadyLimit;
  std::string ended_early;
  while (shared->ready.load(std::memory_order_acquire) < processes && ended_early.empty()) {
    if (!first_child_error().empty() || SteadyClock::now() > ready_by) break;
    for (int me = 0; me < processes && ended_early.empty(); ++me)
      if (auto exit = children.poll(pids[me]))
        ended_early = "process " + std::to_string(me + 1) + " ended before its first grant (" + exit->text() + ")";
    std::this_thread::sleep_for(1ms);
  }
  const bool all_ready = shared->ready.load(std::memory_order_acquire) == processes;
  const auto t0 = SteadyClock::now();
  shared->phase.store(all_ready ? kRunning : kStopping, std::memory_order_release);
  if (all_ready) std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  shared->phase.store(kStopping, std::memory_order_release);
  const auto t1 = SteadyClock::now();
  const bool in_time = children.wait_all(t1 + stop_grace);

  f.seconds = std::chrono::duration<double>(t1 - t0).count();
  for (int me = 0; me < processes; ++me) {
    const auto& p = shared->process[me];
    f.per_process.push_back(p.grants.load());
    f.grants += p.grants.load();
    f.checked += p.checked.load();
    f.lease_lost += p.lease_lost.load();
  }
  f.handoffs = shared->handoffs.load();
  f.holds = shared->holds.load();
  f.exclusion_violations = shared->exclusion_violations.load();
  f.token_regressions = shared->token_regressions.load();
  if (std::string e = first_child_error(); !e.empty()) f.error = e;
  else if (!ended_early.empty()) f.error = ended_early;
  else if (!all_ready)
    f.error = std::to_string(processes - shared->ready.load()) + " of " + std::to_string(processes) +
              " processes had no first grant within " + std::to_string(kReadyLimit.count()) + " s";
  else if (!in_time)
    f.error = "a process did not stop within " + std::to_string(stop_grace.count()) + " ms of the end (killed)";
  if (f.error.empty())
    for (int me = 0; me < processes; ++me)
      if (const ChildExit e = children.status(pids[me]); e.how != ChildExit::How::exited || e.code != 0) {
        f.error = "process " + std::to_string(me + 1) + ": " + e.text();
        break;
      }
  return f;
}

// ------------------------------------------------------------- uncontended

struct LatencyShared {
  ChildError error;
  std::atomic<std::uint64_t> token_regressions{0};
  int cold_count = 0, warm_count = 0, direct_count = 0;
  int cold_acquisitions = 0;  // cold pairs granted under a new backend epoch (colod really acquired)
  int cold_release_waits_exceeded = 0;  // colod still held the lock after kReleaseWaitLimit
  int warm_within_hold = 0;   // warm pairs under the epoch of the warm-up grant
  double cold_us[kMaxIterations] = {};
  double warm_us[kMaxIterations] = {};
  double direct_us[kMaxIterations] = {};
  double direct_acquire_us[kMaxIterations] = {};  // the acquire alone: what a colod cold pair waits for
};

double micros_since(std::uint64_t start_ns) { return static_cast<double>(monotonic_ns() - start_ns) / 1e3; }

// Until colod has given the backend lock back (lease_state none): true, or
// false after kReleaseWaitLimit.
bool wait_released(const Lock& lock) {
  std::this_thread::sleep_for(kPauseBetweenPairs);
  const auto give_up = SteadyClock::now() + kReleaseWaitLimit;
  for (;;) {
    const LockStats stats = lock.stats();
    if (!stats.cluster || stats.cluster->lease_state == LeaseState::none) return true;
    if (SteadyClock::now() > give_up) return false;
    std::this_thread::sleep_for(1ms);
  }
}

int colod_latency(LatencyShared& shared, const std::string& ns, const std::string& name, int iterations) {
  NodeOptions options;
  options.ns = ns;
  auto node = Node::open(options);
  if (!node) return shared.error.set("namespace " + ns + ": " + node.error().message);
  auto lock = node->lock(name, OpenMode::open, {.scope = Scope::cluster});
  if (!lock) return shared.error.set("lock " + name + ": " + lock.error().message);
  std::uint64_t last_token = 0;
  auto take = [&](std::uint64_t& epoch) -> std::string {
    auto guard = lock->acquire();
    if (!guard) return guard.error().message;
    if (guard->fencing_token() <= last_token) shared.token_regressions.fetch_add(1);
    last_token = guard->fencing_token();
    epoch = last_token >> kLocalGrantBits;
    return {};
  };
  std::uint64_t epoch = 0;
  if (std::string e = take(epoch); !e.empty()) return shared.error.set("first acquire: " + e);  // untimed
  for (int i = 0; i < iterations; ++i) {
    if (!wait_released(*lock)) ++shared.cold_release_waits_exceeded;
    const std::uint64_t previous_epoch = epoch;
    const std::uint64_t start = monotonic_ns();
    if (std::string e = take(epoch); !e.empty()) return shared.error.set("acquire: " + e);
    shared.cold_us[i] = micros_since(start);
    if (epoch != previous_epoch) ++shared.cold_acquisitions;
    shared.cold_count = i + 1;
  }
  // Warm: one grant makes colod take the backend lock; back-to-back pairs
  // then never leave it idle for idle_release_ms.
  std::this_thread::sleep_for(kPauseBetweenPairs);
  std::uint64_t hold_epoch = 0;
  if (std::string e = take(hold_epoch); !e.empty()) return shared.error.set("acquire: " + e);
  for (int i = 0; i < iterations; ++i) {
    const std::uint64_t start = monotonic_ns();
    if (std::string e = take(epoch); !e.empty()) return shared.error.set("acquire: " + e);
    shared.warm_us[i] = micros_since(start);
    if (epoch == hold_epoch) ++shared.warm_within_hold;
    shared.warm_count = i + 1;
  }
  return 0;
}

int direct_latency(LatencyShared& shared, const BackendSettings& settings, const std::string& name, int iterations) {
  ignore_sigpipe();
  auto backend = bridge::open_backend(settings);
  if (!backend) return shared.error.set("open " + settings.kind + ": " + backend.error().message);
  std::unique_ptr<BackendLock> lock = (*backend)->lock(name);
  std::uint64_t last_epoch = 0;
  // Nobody else uses the name: the deadline only bounds a stuck server.
  const std::uint64_t limit_ns = 10ull * 1'000'000'000u;
  for (int i = -1; i < iterations; ++i) {  // pair -1: untimed, as on the colod side
    std::this_thread::sleep_for(kPauseBetweenPairs);
    const std::uint64_t start = monotonic_ns();
    const Acquire got = lock->acquire(start + limit_ns);
    if (got.status != Acquire::Status::held)
      return shared.error.set(got.status == Acquire::Status::failed ? "acquire: " + got.detail
                                                                    : "acquire: not granted within 10 s");
    if (got.epoch <= last_epoch) shared.token_regressions.fetch_add(1);
    last_epoch = got.epoch;
    const double acquired_us = micros_since(start);
    lock->release();
    if (i < 0) continue;
    shared.direct_acquire_us[i] = acquired_us;
    shared.direct_us[i] = micros_since(start);
    shared.direct_count = i + 1;
  }
  return 0;
}

struct Percentiles {
  std::size_t samples = 0;
  double p50 = NAN, p99 = NAN, max = NAN;
};

// Nearest-rank percentiles.
Percentiles percentiles_of(const double* samples, int count) {
  Percentiles p;
  if (count <= 0) return p;
  std::vector<double> v(samples, samples + count);
  std::sort(v.begin(), v.end());
  auto rank = [&](double q) {
    const auto i = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size())));
    return v[std::clamp<std::size_t>(i, 1, v.size()) - 1];
  };
  p.samples = v.size();
  p.p50 = rank(0.50);
  p.p99 = rank(0.99);
  p.max = v.back();
  return p;
}

struct LatencyFigures {
  std::string error;
  Percentiles colod_cold, colod_warm, direct, direct_acquire;
  int cold_acquisitions = 0, cold_release_waits_exceeded = 0, warm_within_hold = 0;
  std::uint64_t token_regressions = 0;
};

// One child running `body` to the end (bounded), then its samples.
std::string run_latency_child(LatencyShared& shared, std::chrono::seconds limit,
                              const std::function<int(LatencyShared&)>& body) {
  Children children;
  const pid_t pid = children.spawn([&shared, &body] { return body(shared); });
  if (pid < 0) return internal::errno_text("fork");
  const ChildExit exit = children.wait(pid, SteadyClock::now() + limit);
  if (shared.error.failed.load(std::memory_order_acquire) != 0) return shared.error.text;
  if (exit.how != ChildExit::How::exited || exit.code != 0) return "the measuring process: " + exit.text();
  return {};
}

LatencyFigures run_latency(const std::string& ns, const std::string& colod_lock, const BackendSettings& settings,
                           const std::string& direct_lock, int iterations) {
  LatencyFigures f;
  SharedBlock<LatencyShared> shared;
  if (!shared) {
    f.error = internal::errno_text("mmap");
    return f;
  }
  // Each pair takes a pause plus at most a few backend round trips; a
  // stuck backend is cut off here.
  const auto limit = std::chrono::seconds(60 + iterations / 10);
  f.error = run_latency_child(*shared, limit,
                              [&](LatencyShared& s) { return colod_latency(s, ns, colod_lock, iterations); });
  if (f.error.empty())
    f.error = run_latency_child(*shared, limit,
                                [&](LatencyShared& s) { return direct_latency(s, settings, direct_lock, iterations); });
  if (!f.error.empty()) f.error = "uncontended: " + f.error;
  f.colod_cold = percentiles_of(shared->cold_us, shared->cold_count);
  f.colod_warm = percentiles_of(shared->warm_us, shared->warm_count);
  f.direct = percentiles_of(shared->direct_us, shared->direct_count);
  f.direct_acquire = percentiles_of(shared->direct_acquire_us, shared->direct_count);
  f.cold_acquisitions = shared->cold_acquisitions;
  f.cold_release_waits_exceeded = shared->cold_release_waits_exceeded;
  f.warm_within_hold = shared->warm_within_hold;
  f.token_regressions = shared->token_regressions.load();
  return f;
}

// ------------------------------------------------------------- per backend

struct BackendRun {
  std::string kind, endpoints;
  enum class Status { ran, skipped, failed } status = Status::ran;
  std::string reason;  // skipped or failed: why
  std::string ns, colod_lock, direct_lock;
  ContendedFigures colod, direct;
  LatencyFigures latency;
  std::uint64_t colod_lease_losses = 0;  // the lock record's count: holds colod lost while the run used them
  std::vector<std::string> leftovers;
  bool measured = false;  // the measurements were started: the figures above mean something (partly, if failed)

  const char* status_name() const {
    return status == Status::ran ? "ran" : status == Status::skipped ? "skipped" : "failed";
  }
  bool correct() const {
    return status != Status::failed && colod.exclusion_violations + direct.exclusion_violations == 0 &&
           colod.token_regressions + direct.token_regressions + latency.token_regressions == 0 && leftovers.empty();
  }
  double contended_ratio() const {
    return direct.grants_per_s() > 0 ? colod.grants_per_s() / direct.grants_per_s() : NAN;
  }
  double uncontended_ratio() const { return latency.colod_cold.p50 / latency.direct.p50; }
};

std::string toml_quoted(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// Whether a session opens, tried in a child (see the top of the file):
// "" or the reason.
std::string probe_backend(const BackendSettings& settings) {
  SharedBlock<ChildError> error;
  if (!error) return internal::errno_text("mmap");
  Children children;
  const pid_t pid = children.spawn([&] {
    ignore_sigpipe();
    auto backend = bridge::open_backend(settings);
    return backend ? 0 : error->set(backend.error().message);
  });
  if (pid < 0) return internal::errno_text("fork");
  const ChildExit exit = children.wait(pid, SteadyClock::now() + std::chrono::milliseconds(kOpTimeoutMs) + 10s);
  if (error->failed.load(std::memory_order_acquire) != 0) return error->text;
  if (exit.how != ChildExit::How::exited || exit.code != 0) return "the probing process: " + exit.text();
  return {};
}

BackendRun run_backend(const std::string& kind, const std::string& endpoints, const Options& opt,
                       const std::string& colod, Progress& progress) {
  BackendRun r;
  r.kind = kind;
  r.endpoints = endpoints;
  if (endpoints.empty()) {
    std::string var = "COLO_" + kind;
    std::transform(var.begin(), var.end(), var.begin(), [](unsigned char c) { return std::toupper(c); });
    r.status = BackendRun::Status::skipped;
    r.reason = "no endpoint (set " + var + " or pass --" + kind + ")";
    return r;
  }
  const BackendSettings settings = settings_for(kind, endpoints, opt);
  progress.show("bench cluster-lock: " + kind + ": opening a session");
  if (std::string why = probe_backend(settings); !why.empty()) {
    r.status = BackendRun::Status::skipped;
    r.reason = why;
    return r;
  }
  if (colod.empty()) {
    r.status = BackendRun::Status::failed;
    r.reason = "cannot find colod (beside colo-bench, in ../../bridge/ of a build tree, or on $PATH); set COLOD_BIN or "
               "pass --colod PATH";
    return r;
  }
  // Names unique to the run: the servers keep their state between runs, and
  // a concurrent run must not share our lock.
  const std::string base =
      "benchcl-" + std::to_string(static_cast<long long>(std::time(nullptr))) + "-" + std::to_string(::getpid());
  r.colod_lock = base + "-colod";
  r.direct_lock = base + "-direct";

  progress.show("bench cluster-lock: " + kind + ": starting colod");
  LocalCluster cluster;
  const std::string config = "[locks]\nidle_release_ms = " + std::to_string(kIdleReleaseMs) +
                             "\n[[lock_backend]]\nkind = " + toml_quoted(kind) + "\nendpoints = " +
                             toml_quoted(endpoints) + "\nlease_ms = " + std::to_string(opt.lease_ms) +
                             "\nop_timeout_ms = " + std::to_string(kOpTimeoutMs) + "\n";
  auto fail_with_log = [&](const std::string& what) {
    r.status = BackendRun::Status::failed;
    r.reason = what;
    if (!cluster.hosts().empty() && cluster.host(0).pid != 0)
      r.reason += "; colod's last log lines:\n" + cluster.log_tail(0, 6);
  };
  if (auto started = cluster.start(colod, {kind}, "clbench-", config, kColodStartLimit); !started) {
    fail_with_log("colod: " + started.error().message);
    r.leftovers = cluster.stop();
    return r;
  }
  LocalCluster::Host& host = cluster.host(0);
  r.ns = host.ns();
  {
    host.scratch->track(r.colod_lock);  // unlinked on Ctrl-C too
    auto lock = host.scratch->node().lock(r.colod_lock, OpenMode::create, {.scope = Scope::cluster});
    if (!lock) {
      fail_with_log("lock " + r.colod_lock + ": " + lock.error().message);
    } else {
      r.measured = true;
      // A process waiting in acquire is served within a lease at worst.
      const auto grace = std::chrono::milliseconds(10'000 + 2 * opt.lease_ms);
      progress.show("bench cluster-lock: " + kind + ": " + std::to_string(opt.processes) + " processes through colod");
      r.colod = run_contended(opt.processes, opt.seconds, grace, [&](ContentionShared& s, int me) {
        return colod_contender(s, me, r.ns, r.colod_lock);
      });
      progress.show("bench cluster-lock: " + kind + ": " + std::to_string(opt.processes) + " processes direct");
      r.direct = run_contended(opt.processes, opt.seconds, grace, [&](ContentionShared& s, int me) {
        return direct_contender(s, me, settings, r.direct_lock);
      });
      progress.show("bench cluster-lock: " + kind + ": uncontended acquire+release");
      if (r.colod.error.empty() && r.direct.error.empty())
        r.latency = run_latency(r.ns, r.colod_lock, settings, r.direct_lock, opt.iterations);
      if (const LockStats stats = lock->stats(); stats.cluster) r.colod_lease_losses = stats.cluster->lease_losses;
      if (!r.colod.error.empty()) fail_with_log("colod side: " + r.colod.error);
      else if (!r.direct.error.empty()) fail_with_log("direct side: " + r.direct.error);
      else if (!r.latency.error.empty()) fail_with_log(r.latency.error);
    }
  }  // the parent's handle on the lock is closed before its namespace goes
  progress.show("bench cluster-lock: " + kind + ": stopping colod");
  r.leftovers = cluster.stop();
  for (const auto& s : shm_segments_with_prefix("colo." + r.ns + "."))
    if (std::find(r.leftovers.begin(), r.leftovers.end(), s) == r.leftovers.end()) r.leftovers.push_back(s);
  return r;
}

// ------------------------------------------------------------------ output

nlohmann::json number_or_null(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

nlohmann::json to_json(const ContendedFigures& f) {
  return {{"seconds", f.seconds},
          {"grants", f.grants},
          {"grants_per_s", f.grants_per_s()},
          {"per_process_grants", f.per_process},
          {"min_process_grants", f.min_process()},
          {"max_process_grants", f.max_process()},
          {"processes_without_grant", f.starved()},
          {"handoffs", f.handoffs},
          {"backend_acquisitions", f.holds},
          {"grants_checked", f.checked},
          {"exclusion_violations", f.exclusion_violations},
          {"token_regressions", f.token_regressions},
          {"tokens_increasing", f.token_regressions == 0},
          {"lease_lost_grants", f.lease_lost},
          {"error", f.error.empty() ? nlohmann::json(nullptr) : nlohmann::json(f.error)}};
}

nlohmann::json to_json(const Percentiles& p) {
  return {{"samples", p.samples}, {"p50_us", number_or_null(p.p50)}, {"p99_us", number_or_null(p.p99)},
          {"max_us", number_or_null(p.max)}};
}

nlohmann::json goal_json(double limit, double ratio, bool at_least) {
  const bool known = std::isfinite(ratio);
  const bool met = known && (at_least ? ratio >= limit : ratio <= limit);
  return {{"limit", limit},
          {"ratio", number_or_null(ratio)},
          {"met", known ? nlohmann::json(met) : nlohmann::json(nullptr)}};
}

nlohmann::json to_json(const BackendRun& r) {
  nlohmann::json j = {{"kind", r.kind}, {"endpoints", r.endpoints}, {"status", r.status_name()}};
  if (!r.reason.empty()) j["reason"] = r.reason;
  if (r.status == BackendRun::Status::skipped) return j;
  j["namespace"] = r.ns;
  j["lock_names"] = {{"colod", r.colod_lock}, {"direct", r.direct_lock}};
  if (r.measured) {
    j["contended"] = {{"colod", to_json(r.colod)},
                      {"direct", to_json(r.direct)},
                      {"ratio_colod_over_direct", number_or_null(r.contended_ratio())}};
    j["uncontended"] = {
        {"colod_cold", to_json(r.latency.colod_cold)},
        {"colod_cold_backend_acquisitions", r.latency.cold_acquisitions},
        {"colod_cold_release_waits_exceeded", r.latency.cold_release_waits_exceeded},
        {"colod_warm", to_json(r.latency.colod_warm)},
        {"colod_warm_within_one_hold", r.latency.warm_within_hold},
        {"direct", to_json(r.latency.direct)},
        {"direct_acquire_only", to_json(r.latency.direct_acquire)},
        {"ratio_colod_cold_over_direct_acquire_only_p50",
         number_or_null(r.latency.colod_cold.p50 / r.latency.direct_acquire.p50)},
        {"token_regressions", r.latency.token_regressions},
        {"ratio_colod_cold_over_direct_p50", number_or_null(r.uncontended_ratio())},
        {"release",
         "asynchronous with colod: the backend lock goes back idle_release_ms after the last local release"}};
    j["goals"] = {{"contended_colod_at_least_20x_direct", goal_json(kGoalContendedRatio, r.contended_ratio(), true)},
                  {"uncontended_colod_p50_within_1_2x_direct",
                   goal_json(kGoalUncontendedRatio, r.uncontended_ratio(), false)}};
    j["colod_lease_losses"] = r.colod_lease_losses;
  }
  j["leftovers"] = r.leftovers;
  j["correct"] = r.correct();
  return j;
}

std::string us_text(double us) {
  if (!std::isfinite(us)) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, us >= 100 ? "%.0f" : "%.1f", us);
  return buf;
}

std::string goal_text(double ratio, double limit, bool at_least) {
  if (!std::isfinite(ratio)) return "unknown";
  const bool met = at_least ? ratio >= limit : ratio <= limit;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s %gx: %s", at_least ? ">=" : "<=", limit, met ? "met" : "NOT MET");
  return buf;
}

void print_row(const std::string& label, const std::string& colod, const std::string& direct = "",
               const std::string& ratio = "", const std::string& goal = "") {
  std::printf("  %-34s %-26s %-20s %-8s %s\n", label.c_str(), colod.c_str(), direct.c_str(), ratio.c_str(),
              goal.c_str());
}

void print_backend(const BackendRun& r, const Options& opt) {
  if (r.status == BackendRun::Status::skipped) {
    std::printf("%s: skipped: %s\n\n", r.kind.c_str(), r.reason.c_str());
    return;
  }
  if (r.ns.empty())  // colod did not start
    std::printf("%s at %s\n", r.kind.c_str(), r.endpoints.c_str());
  else
    std::printf("%s at %s (namespace %s; locks %s, %s)\n", r.kind.c_str(), r.endpoints.c_str(), r.ns.c_str(),
                r.colod_lock.c_str(), r.direct_lock.c_str());
  if (r.status == BackendRun::Status::failed) std::printf("  FAILED: %s\n", r.reason.c_str());
  if (!r.measured) {
    std::printf("\n");
    return;
  }
  print_row("", "colod cohorting", "direct", "colod/", "goal");
  print_row("", "", "", "direct", "");
  const std::string procs = std::to_string(opt.processes) + " processes";
  print_row("contended grants/s, " + procs, human_rate(r.colod.grants_per_s()), human_rate(r.direct.grants_per_s()),
            ratio_text(r.contended_ratio()), goal_text(r.contended_ratio(), kGoalContendedRatio, true));
  auto min_max = [](const ContendedFigures& f) {
    return with_commas(f.min_process()) + " - " + with_commas(f.max_process());
  };
  auto handoff_rate = [](const ContendedFigures& f) {
    return human_rate(f.seconds > 0 ? static_cast<double>(f.handoffs) / f.seconds : 0);
  };
  print_row("  grants per process, min - max", min_max(r.colod), min_max(r.direct));
  print_row("  handoffs/s (to another process)", handoff_rate(r.colod), handoff_rate(r.direct));
  // With colod, how many local grants one backend acquisition served
  // (the [locks] budget, max_handoffs and max_hold_ms, bounds it).
  const std::string per_hold =
      r.colod.holds > 0 ? " (" + human_rate(static_cast<double>(r.colod.grants) / static_cast<double>(r.colod.holds)) +
                              " grants each)"
                        : "";
  print_row("  backend acquisitions", with_commas(r.colod.holds) + per_hold, with_commas(r.direct.holds));
  const LatencyFigures& l = r.latency;
  print_row("uncontended acquire+release, us", "cold", "", "", "");
  print_row("  p50", us_text(l.colod_cold.p50), us_text(l.direct.p50), ratio_text(r.uncontended_ratio()),
            goal_text(r.uncontended_ratio(), kGoalUncontendedRatio, false));
  print_row("  p99", us_text(l.colod_cold.p99), us_text(l.direct.p99), ratio_text(l.colod_cold.p99 / l.direct.p99));
  print_row("  max", us_text(l.colod_cold.max), us_text(l.direct.max), ratio_text(l.colod_cold.max / l.direct.max));
  print_row("  p50, direct acquire alone", us_text(l.colod_cold.p50), us_text(l.direct_acquire.p50),
            ratio_text(l.colod_cold.p50 / l.direct_acquire.p50));
  print_row("  warm (colod keeps its hold): p50", us_text(l.colod_warm.p50));
  print_row("                               p99", us_text(l.colod_warm.p99));
  print_row("                               max", us_text(l.colod_warm.max));
  std::printf("  cold pairs that were backend acquisitions: %d of %zu; warm pairs within one hold: %d of %zu\n",
              l.cold_acquisitions, l.colod_cold.samples, l.warm_within_hold, l.colod_warm.samples);
  const bool correct = r.correct();
  std::printf("  checks (colod / direct): exclusion violations %s / %s; token regressions %s / %s%s; "
              "processes without a grant %d / %d; grants checked %s / %s; colod lease losses %s -> %s\n",
              with_commas(r.colod.exclusion_violations).c_str(), with_commas(r.direct.exclusion_violations).c_str(),
              with_commas(r.colod.token_regressions).c_str(), with_commas(r.direct.token_regressions).c_str(),
              l.token_regressions > 0 ? (" (+" + with_commas(l.token_regressions) + " uncontended)").c_str() : "",
              r.colod.starved(), r.direct.starved(), with_commas(r.colod.checked).c_str(),
              with_commas(r.direct.checked).c_str(), with_commas(r.colod_lease_losses).c_str(),
              correct ? "ok" : "FAILED");
  if (!r.leftovers.empty()) {
    std::printf("  left in /dev/shm (a bug of colo bench; remove by hand):");
    for (const auto& s : r.leftovers) std::printf(" %s", s.c_str());
    std::printf("\n");
  }
  std::printf("\n");
}

int run_bench_cluster_lock(Options opt, const CLI::App& cmd) {
  if (opt.quick) {
    if (cmd.count("--seconds") == 0) opt.seconds = 0.5;
    if (cmd.count("--iterations") == 0) opt.iterations = 50;
  }
  auto endpoint_of = [&](const std::string& kind) {
    const std::string& given = kind == "zookeeper" ? opt.zookeeper : kind == "etcd" ? opt.etcd : opt.redis;
    if (!given.empty()) return given;
    const char* env = std::getenv(kind == "zookeeper" ? "COLO_ZOOKEEPER" : kind == "etcd" ? "COLO_ETCD" : "COLO_REDIS");
    return std::string(env != nullptr ? env : "");
  };
  const std::string colod = opt.colod.empty() ? find_colod() : opt.colod;

  const double load_before = load_average();
  std::vector<BackendRun> runs;
  {
    Progress progress(true);
    for (const char* kind : kAllBackends)  // a fixed order, whatever the order given
      if (std::find(opt.backends.begin(), opt.backends.end(), kind) != opt.backends.end())
        runs.push_back(run_backend(kind, endpoint_of(kind), opt, colod, progress));
  }
  const double load_after = load_average();
  bool correct = true;
  for (const auto& r : runs) correct = correct && r.correct();

  if (opt.json) {
    nlohmann::json backends = nlohmann::json::array();
    for (const auto& r : runs) backends.push_back(to_json(r));
    nlohmann::json out = {
        {"benchmark", "cluster-lock"},
        {"machine", machine_json()},
        {"load_average_1min", {{"before", load_before}, {"after", load_after}}},
        {"settings",
         {{"processes", opt.processes},
          {"contended_seconds", opt.seconds},
          {"uncontended_iterations", opt.iterations},
          {"pause_between_uncontended_pairs_ms", kPauseBetweenPairs.count()},
          {"lease_ms", opt.lease_ms},
          {"op_timeout_ms", kOpTimeoutMs},
          {"locks", {{"idle_release_ms", kIdleReleaseMs}, {"other_keys", "colod's defaults"}}}}},
        {"colod", colod},
        {"goals",
         {{"contended_colod_over_direct_at_least", kGoalContendedRatio},
          {"uncontended_colod_cold_p50_over_direct_at_most", kGoalUncontendedRatio}}},
        {"backends", backends},
        {"correct", correct},
    };
    std::cout << out.dump(2) << '\n';
  } else {
    std::printf("colo bench cluster-lock: %d processes contending for one cluster lock, colod cohorting vs each "
                "process taking the backend lock directly\n%s\n",
                opt.processes, machine_line().c_str());
    std::printf("load average (1 min): %.2f before, %.2f after the run (above 0: other processes competed for the "
                "CPUs)\n",
                load_before, load_after);
    std::printf("contended: %d processes x %.3g s per side; uncontended: %d acquire+release pairs per figure, "
                "%lld ms apart, 1 process\n",
                opt.processes, opt.seconds, opt.iterations, static_cast<long long>(kPauseBetweenPairs.count()));
    std::printf("colod: %s; [[lock_backend]] lease_ms %u, op_timeout_ms %u; [locks] idle_release_ms %u, the "
                "rest colod's defaults\n\n",
                colod.empty() ? "(not found)" : colod.c_str(), opt.lease_ms, kOpTimeoutMs, kIdleReleaseMs);
    for (const auto& r : runs) print_backend(r, opt);
    std::printf(
        "cold: each pair waits first until colod has given the backend lock back, so every colod acquire is a\n"
        "      backend acquisition. With colod the release is asynchronous: colod gives the backend lock back\n"
        "      idle_release_ms after the last local release, outside the measured pair; direct, release() is a\n"
        "      round trip inside it; \"direct acquire alone\" leaves that round trip out, for the fairest\n"
        "      comparison of the acquire path. warm: back-to-back pairs while colod keeps its hold (the cohort's\n"
        "      fast path).\n"
        "ratios: colod / direct. Goals are reported, not enforced; the exit status is 1 only if a check failed,\n"
        "a measurement failed or something was left behind.\n");
  }
  return correct ? kExitOk : kExitFailure;
}

}  // namespace

void register_bench_cluster_lock(CLI::App& bench, int& exit_code) {
  auto* cmd = bench.add_subcommand(
      "cluster-lock",
      "a cluster lock through colod's cohorting vs each process taking the backend lock directly "
      "(ZooKeeper, etcd, Redis): contended grants/s with 8 processes, uncontended acquire+release latency");
  cmd->footer(
      "For each backend: one colod on loopback (a scratch namespace clbench-<kind><pid>) with a [[lock_backend]] "
      "for it; N forked processes acquire and release one cluster-scope lock in a loop for --seconds, then N "
      "processes each with its own backend session (the client colod uses) take the backend lock directly; then one "
      "process measures --iterations acquire+release pairs each way. Endpoints: --zookeeper, --etcd, --redis, else "
      "$COLO_ZOOKEEPER, $COLO_ETCD, $COLO_REDIS (tests/services/services.sh env); a backend without one, or whose "
      "session does not open, is skipped with the reason. Every grant is checked for exclusion and increasing "
      "fencing tokens. Goals: contended, colod at least 20x direct; uncontended, colod p50 at most 1.2x direct; "
      "reported, not enforced. Exit status 1 if a check or a measurement failed, or anything was left behind.\n"
      "Examples:\n"
      "  colo bench cluster-lock --backends redis\n"
      "  colo bench cluster-lock --quick --json");
  auto opt = std::make_shared<Options>();
  cmd->add_option("--backends", opt->backends, "backends to measure, comma-separated")
      ->delimiter(',')
      ->check(CLI::IsMember({"zookeeper", "etcd", "redis"}))
      ->capture_default_str();
  cmd->add_option("--zookeeper", opt->zookeeper, "ZooKeeper HOST:PORT[,...] (default: $COLO_ZOOKEEPER)");
  cmd->add_option("--etcd", opt->etcd, "etcd http://HOST:PORT (default: $COLO_ETCD)");
  cmd->add_option("--redis", opt->redis, "Redis HOST:PORT (default: $COLO_REDIS)");
  cmd->add_option("--processes", opt->processes, "contending processes per side")
      ->capture_default_str()
      ->check(CLI::Range(2, kMaxProcesses));
  cmd->add_option("--seconds", opt->seconds, "contended run per side, in seconds (--quick: 0.5)")
      ->capture_default_str()
      ->check(number_in(0.05, 600, "seconds"));
  cmd->add_option("--iterations", opt->iterations, "uncontended acquire+release pairs per figure (--quick: 50)")
      ->capture_default_str()
      ->check(CLI::Range(1, kMaxIterations));
  cmd->add_option("--lease-ms", opt->lease_ms, "lease of every backend session (colod's lease_ms)")
      ->capture_default_str()
      ->check(CLI::Range(1000u, 600'000u));
  cmd->add_option("--colod", opt->colod, "the colod program (default: $COLOD_BIN, beside colo-bench, or on $PATH)");
  cmd->add_flag("--quick", opt->quick, "a short run: 0.5 s per contended side, 50 uncontended pairs");
  cmd->add_flag("--json", opt->json, "print one JSON document instead of tables");
  cmd->callback([opt, cmd, &exit_code] { exit_code = run_bench_cluster_lock(*opt, *cmd); });
}

}  // namespace colo::cli
