// `colo bench lock`: colo's lock against the usual ways to exclude processes.
//
// Measured in one run, interleaved (run r of every lock, then run r+1), so
// that a noisy neighbour slows every lock alike:
//   - uncontended: one process, N acquire+release pairs, ns per pair;
//   - contended: two forked processes take and release the same lock in a
//     loop for S seconds, started together by a shared flag and stopped by
//     another; grants per second over both.
// Each figure is the median of R runs (min and max shown too). By default
// nothing is pinned (a 2-CPU VM has nothing to spare for isolation); --pin
// puts the two contending processes on two different CPUs, so that the run
// measures true parallel contention rather than what the scheduler chose.
// The contended figure depends heavily on scheduling: a lock that lets its
// releaser re-take it at once (barging) grants many times per second while
// the other process sleeps; handoffs/s (grants that changed process) shows it.
//
// Baselines:
//   colo                  colo::Lock (acquire() + guard release), namespace bench<pid>
//   pthread robust mutex  the floor: what colo's lock is built on, bare
//                         (PTHREAD_PROCESS_SHARED + PTHREAD_MUTEX_ROBUST, default type)
//   flock(2)              LOCK_EX / LOCK_UN on a file; each process opens it itself
//   boost named_mutex     Boost.Interprocess; on Linux a POSIX named semaphore underneath
//   POSIX semaphore       sem_open / sem_wait / sem_post
// Every contended run also checks mutual exclusion: a counter incremented
// inside the critical section with a plain load and store must end equal to
// the grants counted; a lock that lets two holders in loses increments.
#include "commands.hpp"

#include <fcntl.h>      // open
#include <sched.h>      // sched_setaffinity (--pin)
#include <semaphore.h>  // sem_open
#include <sys/file.h>   // flock
#include <unistd.h>

#include <boost/interprocess/permissions.hpp>
#include <boost/interprocess/sync/named_mutex.hpp>

#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>  // getenv (TMPDIR)
#include <cstring>
#include <iostream>
#include <memory>
#include <thread>

#include "app.hpp"
#include "colo/internal/text.hpp"  // errno_text
#include "format.hpp"
#include "processes.hpp"

namespace colo::cli {
namespace {

namespace bip = boost::interprocess;

constexpr auto relaxed = std::memory_order_relaxed;
constexpr double kUncontendedGoalVsRaw = 1.3;   // colo within 1.3x of the bare robust mutex
constexpr double kUncontendedGoalVsFlock = 10;  // and at least 10x faster than flock(2)

struct Options {
  int runs = 7;
  std::int64_t iterations = 2'000'000;
  double seconds = 1.0;
  bool pin = false;
  bool json = false;
};

// --------------------------------------------------------- contended state

// Shared by the parent and the two contending children of one run.
struct ContendedShared {
  static constexpr int kProcesses = 2;
  int pin_cpu[kProcesses] = {-1, -1};     // CPU of each child, -1: not pinned
  alignas(64) std::atomic<int> ready{0};   // children that opened their handle
  alignas(64) std::atomic<int> phase{0};   // 0 wait, 1 run, 2 stop
  // Written only inside the critical section, with a plain load and store.
  alignas(64) std::atomic<std::uint64_t> in_lock_count{0};
  std::atomic<int> last_holder{-1};
  struct alignas(64) PerProcess {
    std::atomic<std::uint64_t> grants{0};
    std::atomic<std::uint64_t> handoffs{0};  // grants that followed the other process's grant
    std::atomic<int> failed{0};
    char error[200] = {};
  };
  PerProcess process[kProcesses];
};

void set_error(ContendedShared::PerProcess& p, const std::string& text) {
  std::snprintf(p.error, sizeof p.error, "%s", text.c_str());
  p.failed.store(1, std::memory_order_release);
}

// ----------------------------------------------------------------- locks
//
// Each lock type offers:
//   std::string setup()         parent, before any run: create it ("" or why not)
//   bool pair()                 one acquire + release (uncontended loop)
//   std::string reopen()        in a contending child: its own handle
//   template<F> bool locked(F)  run F holding the lock (contended loop)
//   void teardown()             parent, at the end: remove everything
// The loops are templates over these, so nothing virtual sits on the hot path.

using internal::errno_text;

class ColoBench {
 public:
  static constexpr const char* kKey = "colo";
  static constexpr const char* kName = "colo";
  static constexpr const char* kLockName = "bench/lock";

  std::string setup() {
    if (auto ok = scratch_.open("bench"); !ok) return ok.error().message;
    auto lock = scratch_.create_lock(kLockName);
    if (!lock) return lock.error().message;
    lock_.emplace(std::move(lock).value());
    return {};
  }
  bool pair() {
    auto guard = lock_->acquire();
    return guard.has_value();
  }
  std::string reopen() {
    NodeOptions options;
    options.ns = scratch_.ns();
    auto node = Node::open(options);
    if (!node) return node.error().message;
    auto lock = node->lock(kLockName, OpenMode::open);
    if (!lock) return lock.error().message;
    lock_.emplace(std::move(lock).value());
    return {};
  }
  template <typename F>
  bool locked(F&& f) {
    auto guard = lock_->acquire();
    if (!guard) return false;
    f();
    return true;
  }
  void teardown() {
    lock_.reset();
    (void)scratch_.remove_all();
  }
  const std::string& ns() const { return scratch_.ns(); }

 private:
  ScratchNamespace scratch_;
  std::optional<Lock> lock_;
};

class RawRobustMutexBench {
 public:
  static constexpr const char* kKey = "pthread_robust_mutex";
  static constexpr const char* kName = "pthread robust mutex";

  std::string setup() {
    mutex_ = static_cast<pthread_mutex_t*>(map_shared_anonymous(sizeof(pthread_mutex_t)));
    if (mutex_ == nullptr) return errno_text("mmap");
    pthread_mutexattr_t attr;
    ::pthread_mutexattr_init(&attr);
    int rc = ::pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    if (rc == 0) rc = ::pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    if (rc == 0) rc = ::pthread_mutex_init(mutex_, &attr);
    ::pthread_mutexattr_destroy(&attr);
    if (rc != 0) return std::string("pthread_mutex_init: ") + std::strerror(rc);
    return {};
  }
  bool lock() {
    const int rc = ::pthread_mutex_lock(mutex_);
    if (rc == EOWNERDEAD) ::pthread_mutex_consistent(mutex_);
    return rc == 0 || rc == EOWNERDEAD;
  }
  bool pair() {
    if (!lock()) return false;
    return ::pthread_mutex_unlock(mutex_) == 0;
  }
  std::string reopen() { return {}; }  // the anonymous mapping is inherited
  template <typename F>
  bool locked(F&& f) {
    if (!lock()) return false;
    f();
    return ::pthread_mutex_unlock(mutex_) == 0;
  }
  void teardown() {
    if (mutex_ == nullptr) return;
    ::pthread_mutex_destroy(mutex_);
    unmap_shared(mutex_, sizeof(pthread_mutex_t));
    mutex_ = nullptr;
  }

 private:
  pthread_mutex_t* mutex_ = nullptr;
};

class FlockBench {
 public:
  static constexpr const char* kKey = "flock";
  static constexpr const char* kName = "flock(2)";

  std::string setup() {
    const char* tmp = std::getenv("TMPDIR");
    path_ = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/colo-bench" + std::to_string(::getpid()) +
            ".flock";
    unlink_on_interrupt(path_);
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd_ < 0) return errno_text(("open " + path_).c_str());
    return {};
  }
  bool pair() { return ::flock(fd_, LOCK_EX) == 0 && ::flock(fd_, LOCK_UN) == 0; }
  // flock locks belong to the open file description: a child that kept the
  // inherited descriptor would share the parent's lock, not contend for it.
  std::string reopen() {
    ::close(fd_);
    fd_ = ::open(path_.c_str(), O_RDWR | O_CLOEXEC);
    if (fd_ < 0) return errno_text(("open " + path_).c_str());
    return {};
  }
  template <typename F>
  bool locked(F&& f) {
    if (::flock(fd_, LOCK_EX) != 0) return false;
    f();
    return ::flock(fd_, LOCK_UN) == 0;
  }
  void teardown() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    if (!path_.empty()) {
      ::unlink(path_.c_str());
      forget_on_interrupt(path_);
      path_.clear();
    }
  }

 private:
  std::string path_;
  int fd_ = -1;
};

class BoostNamedMutexBench {
 public:
  static constexpr const char* kKey = "boost_named_mutex";
  static constexpr const char* kName = "boost named_mutex";

  std::string setup() {
    name_ = "colo-bench" + std::to_string(::getpid()) + "-boost";
    unlink_on_interrupt("/dev/shm/sem." + name_);  // where its POSIX semaphore lives on Linux
    try {
      bip::named_mutex::remove(name_.c_str());
      mutex_ = std::make_unique<bip::named_mutex>(bip::create_only, name_.c_str(), bip::permissions(0600));
    } catch (const std::exception& e) {
      return std::string("boost named_mutex: ") + e.what();
    }
    return {};
  }
  bool pair() {
    try {
      mutex_->lock();
      mutex_->unlock();
      return true;
    } catch (const std::exception&) {
      return false;
    }
  }
  std::string reopen() {
    try {
      (void)mutex_.release();  // the parent's handle: not ours to close
      mutex_ = std::make_unique<bip::named_mutex>(bip::open_only, name_.c_str());
    } catch (const std::exception& e) {
      return std::string("boost named_mutex: ") + e.what();
    }
    return {};
  }
  template <typename F>
  bool locked(F&& f) {
    try {
      mutex_->lock();
      f();
      mutex_->unlock();
      return true;
    } catch (const std::exception&) {
      return false;
    }
  }
  void teardown() {
    mutex_.reset();
    if (!name_.empty()) {
      bip::named_mutex::remove(name_.c_str());
      forget_on_interrupt("/dev/shm/sem." + name_);
      name_.clear();
    }
  }

 private:
  std::string name_;
  std::unique_ptr<bip::named_mutex> mutex_;
};

class PosixSemaphoreBench {
 public:
  static constexpr const char* kKey = "posix_semaphore";
  static constexpr const char* kName = "POSIX named semaphore";

  std::string setup() {
    name_ = "/colo-bench" + std::to_string(::getpid()) + "-sem";
    unlink_on_interrupt("/dev/shm/sem." + name_.substr(1));
    ::sem_unlink(name_.c_str());
    sem_ = ::sem_open(name_.c_str(), O_CREAT | O_EXCL, 0600, 1);
    if (sem_ == SEM_FAILED) {
      sem_ = nullptr;
      return errno_text(("sem_open " + name_).c_str());
    }
    return {};
  }
  bool wait() {
    while (::sem_wait(sem_) != 0)
      if (errno != EINTR) return false;
    return true;
  }
  bool pair() { return wait() && ::sem_post(sem_) == 0; }
  std::string reopen() {
    sem_ = ::sem_open(name_.c_str(), 0);
    if (sem_ == SEM_FAILED) {
      sem_ = nullptr;
      return errno_text(("sem_open " + name_).c_str());
    }
    return {};
  }
  template <typename F>
  bool locked(F&& f) {
    if (!wait()) return false;
    f();
    return ::sem_post(sem_) == 0;
  }
  void teardown() {
    if (sem_ != nullptr) ::sem_close(sem_);
    sem_ = nullptr;
    if (!name_.empty()) {
      ::sem_unlink(name_.c_str());
      forget_on_interrupt("/dev/shm/sem." + name_.substr(1));
      name_.clear();
    }
  }

 private:
  std::string name_;
  sem_t* sem_ = nullptr;
};

// ---------------------------------------------------------------- loops

// One uncontended run: ns per acquire+release pair, or NaN if any failed.
template <typename L>
double uncontended_run(L& lock, std::int64_t iterations) {
  std::int64_t failures = 0;
  const auto t0 = SteadyClock::now();
  for (std::int64_t i = 0; i < iterations; ++i)
    if (!lock.pair()) ++failures;
  const auto t1 = SteadyClock::now();
  if (failures != 0) return std::nan("");
  return static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count()) /
         static_cast<double>(iterations);
}

// The body of a contending child.
template <typename L>
int contended_child(L& lock, ContendedShared& shared, int me) {
  auto& mine = shared.process[me];
  if (shared.pin_cpu[me] >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(shared.pin_cpu[me], &set);
    if (::sched_setaffinity(0, sizeof set, &set) != 0) {
      set_error(mine, errno_text("sched_setaffinity"));
      return 2;
    }
  }
  if (std::string why = lock.reopen(); !why.empty()) {
    set_error(mine, why);
    return 2;
  }
  shared.ready.fetch_add(1, std::memory_order_acq_rel);
  const auto give_up = SteadyClock::now() + std::chrono::seconds(30);
  while (shared.phase.load(std::memory_order_acquire) == 0) {
    if (SteadyClock::now() > give_up) {
      set_error(mine, "never told to start");
      return 3;
    }
    std::this_thread::yield();
  }
  std::uint64_t grants = 0;
  std::uint64_t handoffs = 0;
  bool ok = true;
  while (shared.phase.load(relaxed) == 1) {
    ok = lock.locked([&] {
      shared.in_lock_count.store(shared.in_lock_count.load(relaxed) + 1, relaxed);
      if (shared.last_holder.load(relaxed) != me) {
        shared.last_holder.store(me, relaxed);
        ++handoffs;
      }
    });
    if (!ok) break;
    ++grants;
  }
  mine.grants.store(grants, relaxed);
  mine.handoffs.store(handoffs, relaxed);
  if (!ok) {
    set_error(mine, "acquire or release failed");
    return 4;
  }
  return 0;
}

struct ContendedSample {
  double grants_per_s = 0;
  double handoffs_per_s = 0;
};

// One contended run: two children, `seconds` long. Sets `error` on failure.
template <typename L>
std::optional<ContendedSample> contended_run(L& lock, double seconds, const std::vector<int>& pin_cpus,
                                             std::string& error) {
  SharedBlock<ContendedShared> shared;
  if (!shared) {
    error = errno_text("mmap");
    return std::nullopt;
  }
  for (int me = 0; me < ContendedShared::kProcesses; ++me) shared->pin_cpu[me] = pin_cpus.empty() ? -1 : pin_cpus[me];
  Children children;
  for (int me = 0; me < ContendedShared::kProcesses; ++me)
    if (children.spawn([&lock, &shared, me] { return contended_child(lock, *shared, me); }) < 0) {
      error = errno_text("fork");
      return std::nullopt;
    }
  const auto ready_by = SteadyClock::now() + std::chrono::seconds(10);
  while (shared->ready.load(std::memory_order_acquire) < ContendedShared::kProcesses) {
    bool child_failed = false;
    for (const auto& p : shared->process) child_failed |= p.failed.load(std::memory_order_acquire) != 0;
    if (child_failed || SteadyClock::now() > ready_by) break;
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  const bool all_ready = shared->ready.load(std::memory_order_acquire) == ContendedShared::kProcesses;
  const auto t0 = SteadyClock::now();
  shared->phase.store(all_ready ? 1 : 2, std::memory_order_release);
  if (all_ready) std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  shared->phase.store(2, std::memory_order_release);
  const auto t1 = SteadyClock::now();
  const bool in_time = children.wait_all(t1 + std::chrono::seconds(10));

  std::uint64_t grants = 0;
  std::uint64_t handoffs = 0;
  for (int me = 0; me < ContendedShared::kProcesses; ++me) {
    const auto& p = shared->process[me];
    if (p.failed.load(std::memory_order_acquire) != 0) {
      error = "contending process " + std::to_string(me + 1) + ": " + p.error;
      return std::nullopt;
    }
    grants += p.grants.load(relaxed);
    handoffs += p.handoffs.load(relaxed);
  }
  if (!all_ready) {
    error = "the contending processes did not start within 10 s";
    return std::nullopt;
  }
  if (!in_time) {
    error = "a contending process did not stop within 10 s of the deadline (killed)";
    return std::nullopt;
  }
  if (shared->in_lock_count.load(relaxed) != grants) {
    error = "mutual exclusion violated: " + std::to_string(grants) + " grants but " +
            std::to_string(shared->in_lock_count.load(relaxed)) + " increments inside the lock";
    return std::nullopt;
  }
  const double elapsed = std::chrono::duration<double>(t1 - t0).count();
  return ContendedSample{static_cast<double>(grants) / elapsed, static_cast<double>(handoffs) / elapsed};
}

// ---------------------------------------------------------------- driver

// The figures of one lock type.
struct LockFigures {
  std::string key;
  std::string name;
  std::string error;  // empty: measured
  std::vector<double> uncontended_ns;
  std::vector<double> grants_per_s;
  std::vector<double> handoffs_per_s;
  Spread uncontended() const { return spread_of(uncontended_ns); }
  Spread contended() const { return spread_of(grants_per_s); }
};

// Type-erased handle on one lock type, for the driver (not on the hot path).
struct Bench {
  LockFigures result;
  std::function<std::string()> setup;
  std::function<double(std::int64_t)> uncontended;
  std::function<std::optional<ContendedSample>(double, const std::vector<int>&, std::string&)> contended;
  std::function<void()> teardown;
};

template <typename L>
Bench make_bench(std::shared_ptr<L> lock) {
  Bench b;
  b.result.key = L::kKey;
  b.result.name = L::kName;
  b.setup = [lock] { return lock->setup(); };
  b.uncontended = [lock](std::int64_t n) { return uncontended_run(*lock, n); };
  b.contended = [lock](double s, const std::vector<int>& pin, std::string& err) {
    return contended_run(*lock, s, pin, err);
  };
  b.teardown = [lock] { lock->teardown(); };
  return b;
}

std::string ns_text(double ns) {
  char buf[32];
  std::snprintf(buf, sizeof buf, ns >= 1000 ? "%.0f" : "%.1f", ns);
  return buf;
}

nlohmann::json spread_json(const Spread& s) { return {{"median", s.median}, {"min", s.min}, {"max", s.max}}; }

nlohmann::json number_or_null(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

// --pin: the first two CPUs this process may run on, one per contending
// process; "" or why they cannot be had.
std::string pinning_cpus(const Options& opt, std::vector<int>& pin_cpus) {
  if (!opt.pin) return {};
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (::sched_getaffinity(0, sizeof allowed, &allowed) == 0)
    for (int cpu = 0; cpu < CPU_SETSIZE && pin_cpus.size() < std::size_t{ContendedShared::kProcesses}; ++cpu)
      if (CPU_ISSET(cpu, &allowed)) pin_cpus.push_back(cpu);
  if (pin_cpus.size() < std::size_t{ContendedShared::kProcesses})
    return "bench lock: --pin needs 2 CPUs this process may run on; it may use " + std::to_string(pin_cpus.size());
  return {};
}

// Every run of every lock, interleaved (run r of each, then run r+1), after
// a warm-up. A lock whose setup or a run failed keeps its error instead.
void measure(std::vector<Bench>& benches, const Options& opt, const std::vector<int>& pin_cpus) {
  for (auto& b : benches) b.result.error = b.setup();
  Progress progress(true);
  // Warm-up: page in code and data, let the CPU clock settle.
  for (auto& b : benches)
    if (b.result.error.empty()) (void)b.uncontended(std::max<std::int64_t>(1000, opt.iterations / 10));

  for (int run = 0; run < opt.runs; ++run)
    for (auto& b : benches) {
      if (!b.result.error.empty()) continue;
      progress.show("bench lock: uncontended run " + std::to_string(run + 1) + "/" + std::to_string(opt.runs) + ", " +
                    b.result.name);
      const double ns = b.uncontended(opt.iterations);
      if (std::isnan(ns)) b.result.error = "an acquire or release failed in the uncontended loop";
      else b.result.uncontended_ns.push_back(ns);
    }
  for (int run = 0; run < opt.runs; ++run)
    for (auto& b : benches) {
      if (!b.result.error.empty()) continue;
      progress.show("bench lock: contended run " + std::to_string(run + 1) + "/" + std::to_string(opt.runs) + ", " +
                    b.result.name);
      std::string error;
      if (auto sample = b.contended(opt.seconds, pin_cpus, error)) {
        b.result.grants_per_s.push_back(sample->grants_per_s);
        b.result.handoffs_per_s.push_back(sample->handoffs_per_s);
      } else {
        b.result.error = error;
      }
    }
}

// The figures, compared with colo's.
struct LockReport {
  const Options& opt;
  const std::vector<Bench>& benches;
  const std::vector<int>& pin_cpus;
  const std::vector<std::string>& leftovers;
  const LockFigures& colo() const { return benches[0].result; }
  const LockFigures& of(const char* key) const {
    for (const auto& b : benches)
      if (b.result.key == key) return b.result;
    return benches[0].result;
  }
  double ratio_uncontended(const LockFigures& r) const {  // it / colo: above 1, colo is faster
    return colo().error.empty() && r.error.empty() ? r.uncontended().median / colo().uncontended().median
                                                   : std::nan("");
  }
  double ratio_contended(const LockFigures& r) const {  // colo / it: above 1, colo grants more
    return colo().error.empty() && r.error.empty() ? colo().contended().median / r.contended().median : std::nan("");
  }
  double colo_vs_raw() const { return 1.0 / ratio_uncontended(of(RawRobustMutexBench::kKey)); }  // NaN stays NaN
  double flock_vs_colo() const { return ratio_uncontended(of(FlockBench::kKey)); }
  bool raw_met() const { return std::isfinite(colo_vs_raw()) && colo_vs_raw() <= kUncontendedGoalVsRaw; }
  bool flock_met() const { return std::isfinite(flock_vs_colo()) && flock_vs_colo() >= kUncontendedGoalVsFlock; }
};

void print_json(const LockReport& rep) {
  const Options& opt = rep.opt;
  const std::vector<int>& pin_cpus = rep.pin_cpus;
  const double colo_vs_raw = rep.colo_vs_raw(), flock_vs_colo = rep.flock_vs_colo();
  const bool raw_known = std::isfinite(colo_vs_raw), flock_known = std::isfinite(flock_vs_colo);
  const bool raw_met = rep.raw_met(), flock_met = rep.flock_met();
  const std::vector<std::string>& leftovers = rep.leftovers;
    nlohmann::json results = nlohmann::json::array();
  for (const auto& b : rep.benches) {
    const LockFigures& r = b.result;
    nlohmann::json j = {{"name", r.key}, {"label", r.name}};
    if (!r.error.empty()) {
      j["error"] = r.error;
    } else {
      j["uncontended_ns"] = spread_json(r.uncontended());
      j["uncontended_ns_runs"] = r.uncontended_ns;
      j["contended_grants_per_s"] = spread_json(r.contended());
      j["contended_grants_per_s_runs"] = r.grants_per_s;
      j["contended_handoffs_per_s"] = spread_json(spread_of(r.handoffs_per_s));
    }
    j["ratio_uncontended_vs_colo"] = number_or_null(rep.ratio_uncontended(r));
    j["ratio_contended_colo_vs_it"] = number_or_null(rep.ratio_contended(r));
    results.push_back(j);
  }
  nlohmann::json out = {
      {"benchmark", "lock"},
      {"machine", machine_json()},
      {"iterations", opt.iterations},
      {"runs", opt.runs},
      {"contended_seconds", opt.seconds},
      {"contended_processes", ContendedShared::kProcesses},
      {"pinned_cpus", pin_cpus},
      {"results", results},
      {"goals",
       {{"uncontended_colo_within_1_3x_of_raw_robust_mutex",
         {{"limit", kUncontendedGoalVsRaw},
          {"colo_over_raw", number_or_null(colo_vs_raw)},
          {"met", raw_known ? nlohmann::json(raw_met) : nlohmann::json(nullptr)}}},
        {"uncontended_colo_10x_faster_than_flock",
         {{"limit", kUncontendedGoalVsFlock},
          {"flock_over_colo", number_or_null(flock_vs_colo)},
          {"met", flock_known ? nlohmann::json(flock_met) : nlohmann::json(nullptr)}}},
        {"all_met", raw_met && flock_met}}},
      {"leftovers", leftovers},
  };
  std::cout << out.dump(2) << '\n';
}

void print_table(const LockReport& rep) {
  const Options& opt = rep.opt;
  const std::vector<int>& pin_cpus = rep.pin_cpus;
  const double colo_vs_raw = rep.colo_vs_raw(), flock_vs_colo = rep.flock_vs_colo();
  const bool raw_known = std::isfinite(colo_vs_raw), flock_known = std::isfinite(flock_vs_colo);
  const bool raw_met = rep.raw_met(), flock_met = rep.flock_met();
  const std::vector<std::string>& leftovers = rep.leftovers;
    std::printf("colo bench lock\n%s\n", machine_line().c_str());
  const std::string pinning = pin_cpus.empty() ? std::string("not pinned")
                                               : "pinned to CPUs " + std::to_string(pin_cpus[0]) + " and " +
                                                     std::to_string(pin_cpus[1]);
  std::printf("uncontended: %d runs x %s acquire+release pairs, 1 process; "
              "contended: %d runs x %.3g s, %d processes, %s; medians\n\n",
              opt.runs, with_commas(static_cast<std::uint64_t>(opt.iterations)).c_str(), opt.runs, opt.seconds,
              ContendedShared::kProcesses, pinning.c_str());
  std::printf("%-22s | %-27s | %-8s | %-31s | %-8s | %s\n", "lock", "uncontended ns/pair", "ratio",
              "contended grants/s (2 procs)", "ratio", "handoffs/s");
  std::printf("%-22s | %-27s | %-8s | %-31s | %-8s | %s\n", "", "median (min - max)", "it/colo", "median (min - max)",
              "colo/it", "median");
  std::printf("%s\n", std::string(22 + 3 + 27 + 3 + 8 + 3 + 31 + 3 + 8 + 3 + 10, '-').c_str());
  for (const auto& b : rep.benches) {
    const LockFigures& r = b.result;
    if (!r.error.empty()) {
      std::printf("%-22s | FAILED: %s\n", r.name.c_str(), r.error.c_str());
      continue;
    }
    const Spread u = r.uncontended();
    const Spread g = r.contended();
    const std::string ucell = ns_text(u.median) + " (" + ns_text(u.min) + " - " + ns_text(u.max) + ")";
    const std::string gcell = human_rate(g.median) + " (" + human_rate(g.min) + " - " + human_rate(g.max) + ")";
    std::printf("%-22s | %-27s | %-8s | %-31s | %-8s | %s\n", r.name.c_str(), ucell.c_str(),
                ratio_text(rep.ratio_uncontended(r)).c_str(), gcell.c_str(), ratio_text(rep.ratio_contended(r)).c_str(),
                human_rate(spread_of(r.handoffs_per_s).median).c_str());
  }
  std::printf("\nratios: above 1x, colo is faster "
              "(uncontended: its ns / colo's ns; contended: colo's grants/s / its).\n");
  std::printf("handoffs/s: grants that went to the other process (a lock that lets its holder re-take it at once\n"
              "            grants more per second but hands off less).\n\n");
  std::printf("goals (uncontended, medians):\n");
  std::printf("  colo within %.1fx of the bare robust mutex: colo/raw = %s  %s\n", kUncontendedGoalVsRaw,
              ratio_text(colo_vs_raw).c_str(), raw_known ? (raw_met ? "met" : "NOT MET") : "unknown");
  std::printf("  colo at least %.0fx faster than flock(2):   flock/colo = %s  %s\n", kUncontendedGoalVsFlock,
              ratio_text(flock_vs_colo).c_str(), flock_known ? (flock_met ? "met" : "NOT MET") : "unknown");
  if (!leftovers.empty()) {
    std::printf("\nleft in /dev/shm (a bug of colo bench; remove by hand):");
    for (const auto& s : leftovers) std::printf(" %s", s.c_str());
    std::printf("\n");
  }
}

int run_bench_lock(const Options& opt) {
  std::vector<int> pin_cpus;
  if (std::string why = pinning_cpus(opt, pin_cpus); !why.empty()) return fail(why);

  std::vector<Bench> benches;
  auto colo = std::make_shared<ColoBench>();
  benches.push_back(make_bench(colo));
  benches.push_back(make_bench(std::make_shared<RawRobustMutexBench>()));
  benches.push_back(make_bench(std::make_shared<FlockBench>()));
  benches.push_back(make_bench(std::make_shared<BoostNamedMutexBench>()));
  benches.push_back(make_bench(std::make_shared<PosixSemaphoreBench>()));

  // Tear everything down on every path out of here (teardown is idempotent).
  struct Teardown {
    std::vector<Bench>& benches;
    ~Teardown() {
      for (auto& b : benches) b.teardown();
    }
  } teardown{benches};

  measure(benches, opt, pin_cpus);
  const std::string colo_ns = colo->ns();
  for (auto& b : benches) b.teardown();

  // Leftovers would be a bug of this command: say so.
  std::vector<std::string> leftovers = shm_segments_with_prefix("colo." + colo_ns + ".");
  for (const auto& s : shm_segments_with_prefix("sem.colo-bench" + std::to_string(::getpid()) + "-"))
    leftovers.push_back(s);

  bool any_error = false;
  for (const auto& b : benches) any_error |= !b.result.error.empty();
  const LockReport rep{opt, benches, pin_cpus, leftovers};
  if (opt.json) print_json(rep);
  else print_table(rep);
  return any_error || !leftovers.empty() ? kExitFailure : kExitOk;
}

}  // namespace

void register_bench_lock(CLI::App& bench, int& exit_code) {
  auto* cmd = bench.add_subcommand(
      "lock", "colo lock vs pthread robust mutex, flock(2), boost named_mutex, POSIX semaphore: uncontended ns "
              "per acquire+release, 2-process contended grants/s");
  cmd->footer(
      "Measures every lock in one run, interleaved, and prints the medians with min and max, the ratios to colo and "
      "the goals (colo within 1.3x of the bare robust mutex, 10x faster than flock). Runs in a private namespace "
      "bench<pid>, removed at the end (--ns is ignored). Goals are reported, not enforced: the exit status is 1 "
      "only if a measurement failed.\n"
      "Examples:\n"
      "  colo bench lock\n"
      "  colo bench lock --pin --json");
  auto opt = std::make_shared<Options>();
  cmd->add_option("--runs", opt->runs, "runs of each measurement; the median is reported")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  cmd->add_option("--iterations", opt->iterations, "acquire+release pairs per uncontended run")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1'000'000'000}));
  cmd->add_option("--seconds", opt->seconds, "duration of each contended run, in seconds")
      ->capture_default_str()
      ->check(number_in(0.001, 600, "seconds"));
  cmd->add_flag("--pin", opt->pin, "pin the two contending processes to two different CPUs (default: not pinned)");
  cmd->add_flag("--json", opt->json, "print JSON instead of a table");
  cmd->callback([opt, &exit_code] { exit_code = run_bench_lock(*opt); });
}

}  // namespace colo::cli
