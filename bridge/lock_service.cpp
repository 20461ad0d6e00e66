#include "lock_service.hpp"

#include <chrono>
#include <map>
#include <optional>
#include <set>

#include "backends/backend.hpp"
#include "colo/internal/clock.hpp"
#include "colo/internal/cluster_keeper.hpp"

namespace colo::bridge {
namespace {

using internal::ClusterLockKeeper;
constexpr std::uint64_t kMs = 1'000'000;
constexpr std::uint64_t kAcquireSliceNs = 100 * kMs;  // a keeper checks for shutdown this often while queued
constexpr std::uint64_t kHoldPollNs = 1 * kMs;        // and this often while it holds
constexpr std::uint64_t kScanEveryNs = 100 * kMs;
constexpr std::uint64_t kReconnectEveryNs = 1000 * kMs;

using internal::monotonic_ns;
void sleep_ns(std::uint64_t ns) { std::this_thread::sleep_for(std::chrono::nanoseconds(ns)); }

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

// One cluster-scope lock: its record (colod's side) and its thread.
struct LockService::Keeper {
  std::string name;
  std::uint64_t created_realtime_ns = 0;  // tells a recreated segment from the one we keep
  Backend* backend = nullptr;
  const LockPolicy* policy = nullptr;
  const Log* log = nullptr;
  std::optional<ClusterLockKeeper> view;
  std::atomic<bool> stop{false};
  std::thread thread;
  std::atomic<std::uint64_t> cluster_grants{0}, yields{0}, idle_releases{0}, lease_losses{0}, backend_errors{0};

  std::uint64_t requeue_pause_ns() const {
    if (policy->requeue_pause_ms >= 0) return static_cast<std::uint64_t>(policy->requeue_pause_ms) * kMs;
    // Redis waiters poll: give the other hosts' pollers a few rounds.
    return backend->config.kind == "redis" ? 3ull * backend->config.poll_ms * kMs : 0;
  }

  void run() {
    auto& k = *view;
    std::shared_ptr<LockBackend> session;
    std::unique_ptr<BackendLock> lock;
    std::uint64_t requeue_not_before = 0;
    std::string last_failure;
    while (!stop.load(std::memory_order_acquire)) {
      const std::uint32_t seen = k.signal();
      const LeaseState state = k.state();
      const std::uint64_t now = monotonic_ns();
      if (state == LeaseState::held || state == LeaseState::yielding) {
        k.mark_lost();  // not ours (a keeper before us, or a foreign write): its session is not ours either
        continue;
      }
      if (state != LeaseState::requested) {
        k.wait(seen, kAcquireSliceNs);
        continue;
      }
      if (now < requeue_not_before) {
        k.wait(seen, requeue_not_before - now);
        continue;
      }
      if (!lock) {
        session = backend->get(*log);
        if (!session) {
          k.wait(seen, 200 * kMs);
          continue;
        }
        lock = session->lock(name);
      }
      const Acquire got = lock->acquire(now + kAcquireSliceNs);
      if (got.status == Acquire::Status::waiting) continue;
      if (got.status == Acquire::Status::failed || got.epoch == 0 || got.epoch >= internal::kMaxClusterEpoch) {
        backend_errors.fetch_add(1, std::memory_order_relaxed);
        const std::string why = got.status == Acquire::Status::failed
                                    ? got.detail
                                    : "grant epoch " + std::to_string(got.epoch) + " is outside 1..2^44";
        if (why != last_failure)
          log->write(LogLevel::warn, "cluster lock %s: %s: %s", name.c_str(), backend->describe().c_str(), why.c_str());
        last_failure = why;
        lock->release();
        lock.reset();
        k.wait(seen, 200 * kMs);
        continue;
      }
      last_failure.clear();
      k.grant_cluster(got.epoch, got.valid_until_ns, policy->max_handoffs);
      cluster_grants.fetch_add(1, std::memory_order_relaxed);
      log->write(LogLevel::debug, "cluster lock %s: held (epoch %llu)", name.c_str(),
                 static_cast<unsigned long long>(got.epoch));
      hold(*lock, got.valid_until_ns, requeue_not_before);
    }
    if (lock) lock->release();
    k.step_down();
  }

  // While held: renew, watch the budget and idleness, hand back.
  void hold(BackendLock& lock, std::uint64_t valid_until, std::uint64_t& requeue_not_before) {
    auto& k = *view;
    const std::uint64_t since = monotonic_ns();
    const std::uint64_t max_hold = static_cast<std::uint64_t>(policy->max_hold_ms) * kMs;
    const std::uint64_t idle_release = static_cast<std::uint64_t>(policy->idle_release_ms) * kMs;
    std::uint64_t idle_since = 0;
    for (;;) {
      if (stop.load(std::memory_order_acquire)) {
        // Clean stop: hand the lock back if no local process has it;
        // otherwise its holder is told (nobody will renew the lease).
        if (k.try_take_local_mutex()) {
          lock.release();
          k.finish_release();
        } else {
          k.mark_lost();
          lock.release();
        }
        return;
      }
      if (!renewed(lock, valid_until)) return;
      const std::uint64_t now = monotonic_ns();
      if (!k.has_local_holder() && !k.has_local_waiters()) {
        if (idle_since == 0) idle_since = now;
        if (now - idle_since >= idle_release && k.try_take_local_mutex()) {
          lock.release();
          k.finish_release();
          idle_releases.fetch_add(1, std::memory_order_relaxed);
          return;
        }
      } else {
        idle_since = 0;
      }
      if (k.local_grants() >= policy->max_handoffs || now - since >= max_hold) {
        if (yield(lock, valid_until)) {
          yields.fetch_add(1, std::memory_order_relaxed);
          requeue_not_before = monotonic_ns() + requeue_pause_ns();
        }
        return;
      }
      sleep_ns(kHoldPollNs);
    }
  }

  // Budget spent: local acquirers step aside, colod takes the local mutex
  // (the current holder finishes first), then releases the cluster lock.
  bool yield(BackendLock& lock, std::uint64_t& valid_until) {
    auto& k = *view;
    k.begin_yield();
    for (;;) {
      if (k.take_local_mutex(monotonic_ns() + 5 * kMs)) {
        lock.release();
        k.finish_release();
        return true;
      }
      if (!renewed(lock, valid_until)) return false;  // lost while the holder finished: it was told
      if (stop.load(std::memory_order_acquire)) {
        k.mark_lost();
        lock.release();
        return false;
      }
    }
  }

  // Renews the lease when due. False (and the record marked lost, the
  // backend lock dropped) once the hold is gone or may be gone.
  bool renewed(BackendLock& lock, std::uint64_t& valid_until) {
    auto& k = *view;
    const Renewal r = lock.renew();
    if (r.status == Renewal::Status::held) {
      if (r.valid_until_ns != valid_until) {
        valid_until = r.valid_until_ns;
        k.extend(valid_until);
      }
      return true;
    }
    if (r.status == Renewal::Status::unknown && monotonic_ns() < valid_until) return true;
    k.mark_lost();
    lease_losses.fetch_add(1, std::memory_order_relaxed);
    log->write(LogLevel::warn, "cluster lock %s: hold lost (%s); its holder is told, local grants wait for a new hold",
               name.c_str(), r.detail.empty() ? "the lease ran out" : r.detail.c_str());
    lock.release();
    return false;
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
  scanner_ = std::thread([this] { scan(); });
  return Ok{};
}

void LockService::stop() {
  stopping_.store(true, std::memory_order_release);
  if (scanner_.joinable()) scanner_.join();
  std::lock_guard<std::mutex> guard(keepers_mutex_);
  for (auto& k : keepers_) k->stop.store(true, std::memory_order_release);  // all at once, then join
  for (auto& k : keepers_)
    if (k->thread.joinable()) k->thread.join();
  keepers_.clear();
  backends_.clear();
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

void LockService::scan() {
  std::set<std::string> unserved_reported;
  while (!stopping_.load(std::memory_order_acquire)) {
    const std::uint64_t generation = node_->generation();
    if (generation != seen_generation_) {
      auto objects = node_->list();
      if (objects) {
        seen_generation_ = generation;
        std::map<std::string, std::uint64_t> cluster_locks;  // name -> created
        for (const auto& o : *objects)
          if (o.kind == ObjectKind::lock && o.scope == Scope::cluster && o.state == ObjectState::ready)
            cluster_locks.emplace(o.name, o.created_realtime_ns);
        std::lock_guard<std::mutex> guard(keepers_mutex_);
        // Keepers of removed or recreated locks end first.
        for (auto it = keepers_.begin(); it != keepers_.end();) {
          auto found = cluster_locks.find((*it)->name);
          if (found != cluster_locks.end() && found->second == (*it)->created_realtime_ns) {
            ++it;
            continue;
          }
          (*it)->stop.store(true, std::memory_order_release);
          (*it)->thread.join();
          log_.write(LogLevel::info, "cluster lock %s: removed, no longer kept", (*it)->name.c_str());
          it = keepers_.erase(it);
        }
        for (const auto& [name, created] : cluster_locks) {
          const bool kept = std::any_of(keepers_.begin(), keepers_.end(),
                                        [&](const auto& k) { return k->name == name; });
          if (kept) continue;
          Backend* backend = backend_for(name);
          if (backend == nullptr) {
            if (unserved_reported.insert(name).second)
              log_.write(LogLevel::warn,
                         "cluster lock %s: no [[lock_backend]] prefix matches this name; its acquirers will fail",
                         name.c_str());
            continue;
          }
          auto view = ClusterLockKeeper::adopt(*node_, name);
          if (!view) {
            log_.write(LogLevel::warn, "cluster lock %s: %s", name.c_str(), view.error().message.c_str());
            continue;
          }
          auto keeper = std::make_unique<Keeper>();
          keeper->name = name;
          keeper->created_realtime_ns = created;
          keeper->backend = backend;
          keeper->policy = &config_.locks;
          keeper->log = &log_;
          keeper->view.emplace(std::move(view).value());
          keeper->thread = std::thread([k = keeper.get()] { k->run(); });
          log_.write(LogLevel::info, "cluster lock %s: kept through %s", name.c_str(), backend->describe().c_str());
          keepers_.push_back(std::move(keeper));
        }
      }
    }
    for (std::uint64_t slept = 0; slept < kScanEveryNs && !stopping_.load(std::memory_order_acquire); slept += 10 * kMs)
      sleep_ns(10 * kMs);
  }
}

void LockService::render_metrics(std::string& out) const {
  auto family = [&](const char* name, const char* type, const char* help) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  };
  std::lock_guard<std::mutex> guard(keepers_mutex_);
  family("colod_cluster_locks", "gauge", "cluster-scope locks this colod keeps");
  out += "colod_cluster_locks " + std::to_string(keepers_.size()) + "\n";
  family("colod_cluster_lock_held", "gauge", "1 while this host holds the cluster lock");
  for (const auto& k : keepers_) {
    const LeaseState s = k->view->state();
    out += "colod_cluster_lock_held{lock=\"" + k->name + "\"} " +
           (s == LeaseState::held || s == LeaseState::yielding ? "1" : "0") + "\n";
  }
  auto counter = [&](const char* name, const char* help, auto field) {
    family(name, "counter", help);
    for (const auto& k : keepers_)
      out += std::string(name) + "{lock=\"" + k->name + "\"} " +
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
