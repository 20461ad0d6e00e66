#include "lock_service.hpp"

#include <algorithm>
#include <chrono>
#include <optional>
#include <set>

#include "backends/backend.hpp"
#include "colo/internal/clock.hpp"
#include "colo/internal/cluster_keeper.hpp"

namespace colo::bridge {
namespace {

using internal::ClusterHold;
using internal::monotonic_ns;
constexpr std::uint64_t kMs = 1'000'000;
constexpr std::uint64_t kAcquireSliceNs = 100 * kMs;   // one backend wait, with the pool free
constexpr std::uint64_t kBusyAcquireSliceNs = 10 * kMs;  // ... with keepers waiting for a worker
constexpr std::uint64_t kYieldStepNs = 5 * kMs;
constexpr std::uint64_t kRetryNs = 200 * kMs;          // after a failed acquire or no session
constexpr std::uint64_t kReconnectEveryNs = 1000 * kMs;
constexpr std::uint64_t kSafetyWakeNs = 1000 * kMs;     // the reactor looks around at least this often
constexpr auto kWorkerIdle = std::chrono::seconds(5);

}  // namespace

// One [[lock_backend]] and its session.
struct LockService::Backend {
  LockBackendConfig config;
  BackendSettings settings;
  std::mutex mutex;
  std::shared_ptr<LockBackend> session;  // keepers keep it alive while they use it
  std::uint64_t next_attempt_ns = 0;
  std::string last_error;

  std::string describe() const { return config.kind + " at " + config.endpoints; }

  // The session, opened now if there is none and an attempt is due.
  std::shared_ptr<LockBackend> get(const Log& log) {
    std::lock_guard<std::mutex> guard(mutex);
    if (session) return session;
    const std::uint64_t now = monotonic_ns();
    if (now < next_attempt_ns) return nullptr;
    next_attempt_ns = now + kReconnectEveryNs;
    auto opened = open_backend(settings);
    if (!opened) {
      // Once per distinct cause: a server that stays down is not a log flood.
      if (opened.error().message != last_error)
        log.write(LogLevel::warn, "lock backend %s: %s (cluster locks it serves wait; retrying every second)",
                  describe().c_str(), opened.error().message.c_str());
      last_error = opened.error().message;
      return nullptr;
    }
    if (!last_error.empty() || log.enabled(LogLevel::info))
      log.write(LogLevel::info, "lock backend %s: connected", describe().c_str());
    last_error.clear();
    session = std::shared_ptr<LockBackend>(std::move(opened).value());
    return session;
  }
};

// A cluster-scope lock table this colod keeps.
struct LockService::Table {
  std::string name;
  std::uint64_t created_realtime_ns = 0;
  std::unique_ptr<internal::ClusterTableKeeper> keeper;
  bool removed = false;  // gone from the registry: dropped once no keeper of its keys is left
};

// One cluster hold's state machine (see the header). step() runs on a
// worker, one at a time (`busy`); the reactor reads `busy`, `next_at` and
// `phase`, and the record through `hold` only while not busy.
struct LockService::Keeper {
  enum class Phase { idle, acquiring, held, yielding };

  std::string name;                       // the backend lock's name
  bool table_key = false;                 // a table key (dropped when idle) or a named lock
  std::string table;                      // table keys: their table
  std::uint64_t created_realtime_ns = 0;  // named: tells a recreated segment from the one we keep
  Backend* backend = nullptr;
  const LockPolicy* policy = nullptr;
  const Log* log = nullptr;
  const std::atomic<bool>* pool_crowded = nullptr;  // every worker busy: shorter acquire slices
  std::unique_ptr<ClusterHold> hold;

  std::atomic<bool> busy{false};
  std::atomic<std::uint64_t> next_at{0};  // 0: no timer (the doorbell wakes it)
  std::atomic<Phase> phase{Phase::idle};
  std::atomic<bool> retire{false};        // release what it holds, step down, then done
  std::atomic<bool> done{false};
  // A step ended with no timer: the reactor looks at the record once more
  // (a request that rang while the step ran found the keeper busy).
  std::atomic<bool> look{false};

  // Worker-only state.
  std::shared_ptr<LockBackend> session;
  std::unique_ptr<BackendLock> lock;
  std::uint64_t requeue_not_before = 0, held_since = 0, idle_since = 0, valid_until = 0;
  std::string last_failure;

  std::atomic<std::uint64_t> cluster_grants{0}, yields{0}, idle_releases{0}, lease_losses{0}, backend_errors{0};

  std::uint64_t tick_ns() const {
    return std::clamp<std::uint64_t>(static_cast<std::uint64_t>(policy->idle_release_ms) * kMs / 2, kMs, 10 * kMs);
  }
  std::uint64_t requeue_pause_ns() const {
    if (policy->requeue_pause_ms >= 0) return static_cast<std::uint64_t>(policy->requeue_pause_ms) * kMs;
    // Redis waiters poll: give the other hosts' pollers a few rounds.
    return backend->config.kind == "redis" ? 3ull * backend->config.poll_ms * kMs : 0;
  }

  // One step; returns when to step again (0: when the doorbell says so).
  std::uint64_t step() {
    if (retire.load(std::memory_order_acquire)) {
      step_down();
      done.store(true, std::memory_order_release);
      return 0;
    }
    const std::uint64_t now = monotonic_ns();
    switch (phase.load(std::memory_order_relaxed)) {
      case Phase::idle: {
        const LeaseState state = hold->state();
        if (state == LeaseState::held || state == LeaseState::yielding) {
          hold->mark_lost();  // not ours (a keeper before us, or a foreign write): its session is not ours either
          return 0;
        }
        if (state != LeaseState::requested) return 0;
        if (now < requeue_not_before) return requeue_not_before;
        phase.store(Phase::acquiring, std::memory_order_relaxed);
        return acquire(now);
      }
      case Phase::acquiring: return acquire(now);
      case Phase::held: return held_tick(now);
      case Phase::yielding: return yield_step(now);
    }
    return 0;
  }

  std::uint64_t acquire(std::uint64_t now) {
    if (hold->state() != LeaseState::requested && table_key) {  // the key left (freed, or taken back)
      drop_backend_lock();
      phase.store(Phase::idle, std::memory_order_relaxed);
      return 0;
    }
    if (!lock) {
      session = backend->get(*log);
      if (!session) return now + kRetryNs;
      lock = session->lock(name);
    }
    const bool crowded = pool_crowded != nullptr && pool_crowded->load(std::memory_order_relaxed);
    const Acquire got = lock->acquire(now + (crowded ? kBusyAcquireSliceNs : kAcquireSliceNs));
    if (got.status == Acquire::Status::waiting) return monotonic_ns();  // again at once, keeping the place
    if (got.status == Acquire::Status::failed || got.epoch == 0 || got.epoch >= internal::kMaxClusterEpoch) {
      backend_errors.fetch_add(1, std::memory_order_relaxed);
      const std::string why = got.status == Acquire::Status::failed
                                  ? got.detail
                                  : "grant epoch " + std::to_string(got.epoch) + " is outside 1..2^44";
      if (why != last_failure)
        log->write(LogLevel::warn, "cluster lock %s: %s: %s", name.c_str(), backend->describe().c_str(), why.c_str());
      last_failure = why;
      drop_backend_lock();
      phase.store(Phase::idle, std::memory_order_relaxed);
      return monotonic_ns() + kRetryNs;
    }
    last_failure.clear();
    if (!hold->grant_cluster(got.epoch, got.valid_until_ns, policy->max_handoffs)) {
      drop_backend_lock();  // the key left its entry while we queued
      phase.store(Phase::idle, std::memory_order_relaxed);
      return 0;
    }
    cluster_grants.fetch_add(1, std::memory_order_relaxed);
    log->write(LogLevel::debug, "cluster lock %s: held (epoch %llu)", name.c_str(),
               static_cast<unsigned long long>(got.epoch));
    held_since = monotonic_ns();
    idle_since = 0;
    valid_until = got.valid_until_ns;
    phase.store(Phase::held, std::memory_order_relaxed);
    return held_since + tick_ns();
  }

  // While held: renew, watch the budget and idleness, hand back.
  std::uint64_t held_tick(std::uint64_t now) {
    if (!renewed()) return 0;
    if (!hold->has_local_holder() && !hold->has_local_waiters()) {
      if (idle_since == 0) idle_since = now;
      const std::uint64_t idle_release = static_cast<std::uint64_t>(policy->idle_release_ms) * kMs;
      if (now - idle_since >= idle_release && hold->try_take_local_mutex()) {
        drop_backend_lock();
        hold->finish_release();
        idle_releases.fetch_add(1, std::memory_order_relaxed);
        phase.store(Phase::idle, std::memory_order_relaxed);
        return 0;
      }
    } else {
      idle_since = 0;
    }
    const std::uint64_t max_hold = static_cast<std::uint64_t>(policy->max_hold_ms) * kMs;
    if (hold->local_grants() >= policy->max_handoffs || now - held_since >= max_hold) {
      // Budget spent: local acquirers step aside, colod takes the local
      // mutex (the current holder finishes first), then releases.
      hold->begin_yield();
      phase.store(Phase::yielding, std::memory_order_relaxed);
      return yield_step(monotonic_ns());
    }
    return now + tick_ns();
  }

  std::uint64_t yield_step(std::uint64_t now) {
    if (hold->take_local_mutex(now + kYieldStepNs)) {
      drop_backend_lock();
      hold->finish_release();
      yields.fetch_add(1, std::memory_order_relaxed);
      requeue_not_before = monotonic_ns() + requeue_pause_ns();
      phase.store(Phase::idle, std::memory_order_relaxed);
      return 0;
    }
    if (!renewed()) return 0;  // lost while the holder finished: it was told
    return monotonic_ns();
  }

  // Renews the lease when due. False (and the record marked lost, the
  // backend lock dropped, the keeper idle) once the hold is gone or may be.
  bool renewed() {
    const Renewal r = lock->renew();
    if (r.status == Renewal::Status::held) {
      if (r.valid_until_ns != valid_until) {
        valid_until = r.valid_until_ns;
        hold->extend(valid_until);
      }
      return true;
    }
    if (r.status == Renewal::Status::unknown && monotonic_ns() < valid_until) return true;
    hold->mark_lost();
    lease_losses.fetch_add(1, std::memory_order_relaxed);
    log->write(LogLevel::warn, "cluster lock %s: hold lost (%s); its holder is told, local grants wait for a new hold",
               name.c_str(), r.detail.empty() ? "the lease ran out" : r.detail.c_str());
    drop_backend_lock();
    phase.store(Phase::idle, std::memory_order_relaxed);
    return false;
  }

  // Clean stop: hand a held lock back if no local process has it; otherwise
  // its holder is told (nobody will renew the lease).
  void step_down() {
    const Phase p = phase.load(std::memory_order_relaxed);
    if (p == Phase::held || p == Phase::yielding) {
      if (hold->try_take_local_mutex()) {
        drop_backend_lock();
        hold->finish_release();
      } else {
        hold->mark_lost();
      }
    }
    drop_backend_lock();
    hold->step_down();
    phase.store(Phase::idle, std::memory_order_relaxed);
  }

  void drop_backend_lock() {
    if (lock) lock->release();
    lock.reset();
  }
};

LockService::LockService(const Config& config, const Log& log) : config_(config), log_(log) {
  for (const auto& b : config.lock_backends) {
    auto backend = std::make_unique<Backend>();
    backend->config = b;
    backend->settings.kind = b.kind;
    backend->settings.endpoints = b.endpoints;
    backend->settings.root = b.root;
    backend->settings.lease = std::chrono::milliseconds(b.lease_ms);
    backend->settings.op_timeout = std::chrono::milliseconds(b.op_timeout_ms);
    backend->settings.poll = std::chrono::milliseconds(b.poll_ms);
    backends_.push_back(std::move(backend));
  }
}

LockService::~LockService() { stop(); }

Result<void> LockService::start() {
  NodeOptions options;
  options.ns = config_.ns;
  auto node = Node::open(options);
  if (!node) return std::move(node).error();
  node_ = std::make_unique<Node>(std::move(node).value());
  reactor_ = std::thread([this] { reactor(); });
  return Ok{};
}

void LockService::stop() {
  if (stopping_.exchange(true)) return;
  internal::wake_word(wake_);
  if (reactor_.joinable()) reactor_.join();
  retire_all();
  {
    std::lock_guard<std::mutex> guard(pool_mutex_);
    pool_stopping_ = true;
  }
  pool_cv_.notify_all();
  for (auto& t : workers_)
    if (t.joinable()) t.join();
  workers_.clear();
  std::lock_guard<std::mutex> guard(keepers_mutex_);
  keepers_.clear();
  for (auto& [name, table] : tables_) table->keeper->step_down();
  tables_.clear();
  backends_.clear();
}

// Every keeper steps down at once (through the pool), bounded by the
// backends' op_timeout.
void LockService::retire_all() {
  std::vector<Keeper*> all;
  {
    std::lock_guard<std::mutex> guard(keepers_mutex_);
    for (auto& [name, k] : keepers_) all.push_back(k.get());
  }
  for (Keeper* k : all) k->retire.store(true, std::memory_order_release);
  for (;;) {
    bool pending = false;
    for (Keeper* k : all) {
      if (k->done.load(std::memory_order_acquire)) continue;
      pending = true;
      if (!k->busy.load(std::memory_order_acquire)) dispatch(*k);
    }
    if (!pending) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

LockService::Backend* LockService::backend_for(const std::string& lock_name) {
  Backend* best = nullptr;
  for (auto& b : backends_) {
    const std::string& prefix = b->config.prefix;
    if (lock_name.compare(0, prefix.size(), prefix) != 0) continue;
    if (best == nullptr || prefix.size() > best->config.prefix.size()) best = b.get();
  }
  return best;
}

// ------------------------------------------------------------------ reactor

void LockService::reactor() {
  std::uint32_t seen_bell = internal::doorbell(*node_) - 1;  // look around once at the start
  std::uint32_t seen_wake = wake_.load(std::memory_order_acquire);
  while (!stopping_.load(std::memory_order_acquire)) {
    const std::uint32_t bell = internal::doorbell(*node_);
    seen_wake = wake_.load(std::memory_order_acquire);
    if (bell != seen_bell) {
      seen_bell = bell;
      if (node_->generation() != seen_generation_) rescan();
      take_key_requests();
      look_at_idle_named();
    }
    {  // workers that left after idling
      std::lock_guard<std::mutex> guard(pool_mutex_);
      for (auto id : finished_)
        for (auto it = workers_.begin(); it != workers_.end(); ++it)
          if (it->get_id() == id) {
            it->join();
            workers_.erase(it);
            break;
          }
      finished_.clear();
    }
    const std::uint64_t now = monotonic_ns();
    const std::uint64_t next = dispatch_due(now);
    std::uint64_t timeout = kSafetyWakeNs;
    if (next != 0) timeout = next > now ? std::min(next - now, kSafetyWakeNs) : 0;
    if (timeout != 0) internal::wait_doorbell(*node_, seen_bell, wake_, seen_wake, timeout);
  }
}

// The registry changed: keepers for the named cluster locks and tables of
// cluster scope there now; those of removed or recreated ones end.
void LockService::rescan() {
  auto& unserved_reported = unserved_reported_;
  // The generation before the listing: an object created while we list
  // moves it again, so the next ring lists again (read after, it would be
  // taken as seen and that object never kept).
  const std::uint64_t generation = node_->generation();
  auto objects = node_->list();
  if (!objects) return;
  seen_generation_ = generation;
  std::map<std::string, std::uint64_t> named, tables;  // name -> created
  for (const auto& o : *objects) {
    if (o.scope != Scope::cluster || o.state != ObjectState::ready) continue;
    if (o.kind == ObjectKind::lock) named.emplace(o.name, o.created_realtime_ns);
    if (o.kind == ObjectKind::lock_table) tables.emplace(o.name, o.created_realtime_ns);
  }
  std::lock_guard<std::mutex> guard(keepers_mutex_);
  for (auto& [name, k] : keepers_) {
    const std::string& owner = k->table_key ? k->table : name;
    const auto& live = k->table_key ? tables : named;
    auto found = live.find(owner);
    const std::uint64_t created = k->table_key ? (tables_.count(owner) ? tables_[owner]->created_realtime_ns : 0)
                                               : k->created_realtime_ns;
    if (found == live.end() || found->second != created) k->retire.store(true, std::memory_order_release);
  }
  for (auto& [name, table] : tables_) {
    auto found = tables.find(name);
    if (table->removed || (found != tables.end() && found->second == table->created_realtime_ns)) continue;
    // Its keys' keepers retire above; the table goes once they have ended
    // (they point into its mapping).
    table->removed = true;
    log_.write(LogLevel::info, "cluster lock table %s: removed, no longer kept", name.c_str());
  }
  for (const auto& [name, created] : named) {
    if (keepers_.count(name) != 0) continue;
    Backend* backend = backend_for(name);
    if (backend == nullptr) {
      if (unserved_reported.insert(name).second)
        log_.write(LogLevel::warn,
                   "cluster lock %s: no [[lock_backend]] prefix matches this name; its acquirers will fail",
                   name.c_str());
      continue;
    }
    auto view = internal::ClusterLockKeeper::adopt(*node_, name);
    if (!view) {
      log_.write(LogLevel::warn, "cluster lock %s: %s", name.c_str(), view.error().message.c_str());
      continue;
    }
    auto k = std::make_unique<Keeper>();
    k->name = name;
    k->created_realtime_ns = created;
    k->backend = backend;
    k->policy = &config_.locks;
    k->log = &log_;
    k->hold = std::make_unique<internal::ClusterLockKeeper>(std::move(view).value());
    log_.write(LogLevel::info, "cluster lock %s: kept through %s", name.c_str(), backend->describe().c_str());
    keepers_.emplace(name, std::move(k));
  }
  for (const auto& [name, created] : tables) {
    if (tables_.count(name) != 0) continue;  // a recreated table is adopted once the old one is dropped
    if (backend_for(name + "/") == nullptr) {
      if (unserved_reported.insert(name).second)
        log_.write(LogLevel::warn,
                   "cluster lock table %s: no [[lock_backend]] prefix matches %s/; its acquirers will fail",
                   name.c_str(), name.c_str());
      continue;
    }
    auto adopted = internal::ClusterTableKeeper::adopt(*node_, name);
    if (!adopted) {
      log_.write(LogLevel::warn, "cluster lock table %s: %s", name.c_str(), adopted.error().message.c_str());
      continue;
    }
    auto t = std::make_unique<Table>();
    t->name = name;
    t->created_realtime_ns = created;
    t->keeper = std::make_unique<internal::ClusterTableKeeper>(std::move(adopted).value());
    log_.write(LogLevel::info, "cluster lock table %s: kept (keys through their [[lock_backend]])", name.c_str());
    tables_.emplace(name, std::move(t));
  }
}

// A keeper per requested key, unless it has one.
void LockService::take_key_requests() {
  std::lock_guard<std::mutex> guard(keepers_mutex_);
  for (auto& [table_name, table] : tables_) {
    if (table->removed) continue;
    for (const std::uint64_t index : table->keeper->take_requests()) {
      auto hold = table->keeper->key_at(index);
      if (!hold) continue;
      const std::string name = hold->backend_name();
      auto existing = keepers_.find(name);
      if (existing != keepers_.end()) {
        Keeper& k = *existing->second;
        // The key again: asked anew after a loss (the same hold), or in a
        // new incarnation after its entry was freed (the idle keeper takes
        // the new hold). A busy keeper sees the request when its step ends.
        if (!k.busy.load(std::memory_order_acquire) && k.phase.load() == Keeper::Phase::idle &&
            k.next_at.load(std::memory_order_relaxed) == 0) {
          if (k.hold->state() != LeaseState::requested) k.hold = std::move(hold);
          k.next_at.store(1, std::memory_order_relaxed);  // due now
        }
        continue;
      }
      Backend* backend = backend_for(name);
      if (backend == nullptr) continue;  // no prefix for this key: its acquirer waits (logged at adoption otherwise)
      auto k = std::make_unique<Keeper>();
      k->name = name;
      k->table_key = true;
      k->table = table_name;
      k->backend = backend;
      k->policy = &config_.locks;
      k->log = &log_;
      k->hold = std::move(hold);
      k->next_at.store(1, std::memory_order_relaxed);  // due now
      keepers_.emplace(name, std::move(k));
    }
  }
}

// A ring may mean a named lock was requested: look at the idle ones.
void LockService::look_at_idle_named() {
  std::lock_guard<std::mutex> guard(keepers_mutex_);
  for (auto& [name, k] : keepers_) {
    if (k->table_key || k->busy.load(std::memory_order_acquire) || k->next_at.load(std::memory_order_relaxed) != 0 ||
        k->phase.load() != Keeper::Phase::idle)
      continue;
    const LeaseState state = k->hold->state();
    if (state == LeaseState::requested || state == LeaseState::held || state == LeaseState::yielding)
      k->next_at.store(1, std::memory_order_relaxed);  // due now
  }
}

std::uint64_t LockService::dispatch_due(std::uint64_t now) {
  std::uint64_t next = 0;
  std::lock_guard<std::mutex> guard(keepers_mutex_);
  for (auto it = keepers_.begin(); it != keepers_.end();) {
    Keeper& k = *it->second;
    if (k.busy.load(std::memory_order_acquire)) {
      ++it;
      continue;
    }
    if (k.look.exchange(false, std::memory_order_acq_rel) && k.next_at.load(std::memory_order_relaxed) == 0 &&
        k.phase.load() == Keeper::Phase::idle) {
      const LeaseState state = k.hold->state();
      if (state == LeaseState::requested || (!k.table_key && (state == LeaseState::held || state == LeaseState::yielding)))
        k.next_at.store(1, std::memory_order_relaxed);  // due now
    }
    const bool retiring = k.retire.load(std::memory_order_acquire);
    const bool idle_key = k.table_key && k.phase.load() == Keeper::Phase::idle &&
                          k.next_at.load(std::memory_order_relaxed) == 0 && k.hold->state() != LeaseState::requested;
    if (k.done.load(std::memory_order_acquire) || (idle_key && !retiring)) {
      if (!k.table_key) log_.write(LogLevel::info, "cluster lock %s: removed, no longer kept", k.name.c_str());
      it = keepers_.erase(it);  // a key in use again makes a new keeper
      continue;
    }
    const std::uint64_t at = k.next_at.load(std::memory_order_relaxed);
    if (retiring || (at != 0 && at <= now)) {
      dispatch(k);
    } else if (at != 0) {
      next = next == 0 ? at : std::min(next, at);
    }
    ++it;
  }
  for (auto it = tables_.begin(); it != tables_.end();) {
    const bool in_use = std::any_of(keepers_.begin(), keepers_.end(),
                                    [&](const auto& k) { return k.second->table_key && k.second->table == it->first; });
    if (!it->second->removed || in_use) {
      ++it;
      continue;
    }
    it->second->keeper->step_down();
    it = tables_.erase(it);
    seen_generation_ = ~std::uint64_t{0};  // a table recreated under this name is adopted at the next look
  }
  return next;
}

// ------------------------------------------------------------------ workers

void LockService::dispatch(Keeper& k) {
  k.busy.store(true, std::memory_order_release);
  k.next_at.store(0, std::memory_order_relaxed);
  k.pool_crowded = &pool_crowded_;
  {
    std::lock_guard<std::mutex> guard(pool_mutex_);
    queue_.push_back(&k);
    pool_crowded_.store(idle_workers_ < static_cast<int>(queue_.size()), std::memory_order_relaxed);
    if (idle_workers_ < static_cast<int>(queue_.size()) &&
        static_cast<int>(workers_.size() - finished_.size()) < kMaxWorkers)
      workers_.emplace_back([this] { worker(); });
  }
  pool_cv_.notify_one();
}

void LockService::worker() {
  std::unique_lock<std::mutex> lock(pool_mutex_);
  for (;;) {
    ++idle_workers_;
    const bool woken = pool_cv_.wait_for(lock, kWorkerIdle, [this] { return pool_stopping_ || !queue_.empty(); });
    --idle_workers_;
    if (pool_stopping_ && queue_.empty()) return;
    if (!woken) {  // idle for a while: one thread fewer (the reactor joins it)
      if (workers_.size() - finished_.size() > 1) {
        finished_.push_back(std::this_thread::get_id());
        return;
      }
      continue;
    }
    Keeper* k = queue_.front();
    queue_.pop_front();
    lock.unlock();
    const std::uint64_t next = k->step();
    k->next_at.store(next, std::memory_order_relaxed);
    if (next == 0) k->look.store(true, std::memory_order_release);
    k->busy.store(false, std::memory_order_release);
    internal::wake_word(wake_);
    lock.lock();
  }
}

// ------------------------------------------------------------------ metrics

void LockService::render_metrics(std::string& out) const {
  auto family = [&](const char* name, const char* type, const char* help) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  };
  std::lock_guard<std::mutex> guard(keepers_mutex_);
  std::size_t named = 0;
  for (const auto& [name, k] : keepers_) named += k->table_key ? 0 : 1;
  family("colod_cluster_locks", "gauge", "cluster-scope locks this colod keeps");
  out += "colod_cluster_locks " + std::to_string(named) + "\n";
  family("colod_cluster_lock_tables", "gauge", "cluster-scope lock tables this colod keeps");
  out += "colod_cluster_lock_tables " + std::to_string(tables_.size()) + "\n";
  family("colod_cluster_table_keys", "gauge", "cluster-scope table keys in use (with a keeper now)");
  out += "colod_cluster_table_keys " + std::to_string(keepers_.size() - named) + "\n";
  family("colod_cluster_lock_held", "gauge", "1 while this host holds the cluster lock");
  for (const auto& [name, k] : keepers_) {
    const LeaseState s = k->hold->state();
    out += "colod_cluster_lock_held{lock=\"" + name + "\"} " +
           (s == LeaseState::held || s == LeaseState::yielding ? "1" : "0") + "\n";
  }
  auto counter = [&](const char* metric, const char* help, auto field) {
    family(metric, "counter", help);
    for (const auto& [name, k] : keepers_)
      out += std::string(metric) + "{lock=\"" + name + "\"} " +
             std::to_string((k.get()->*field).load(std::memory_order_relaxed)) + "\n";
  };
  counter("colod_cluster_lock_grants_total", "cluster holds taken from the backend", &Keeper::cluster_grants);
  counter("colod_cluster_lock_yields_total", "holds given up because the hand-off budget was spent", &Keeper::yields);
  counter("colod_cluster_lock_idle_releases_total", "holds given up because the host stopped using the lock",
          &Keeper::idle_releases);
  counter("colod_cluster_lock_lease_losses_total", "holds lost (session, lease or server)", &Keeper::lease_losses);
  counter("colod_cluster_lock_backend_errors_total", "failed backend acquires", &Keeper::backend_errors);
}

}  // namespace colo::bridge
