// bridge/lock_service.hpp — colod's cluster-scope locks and cluster-scope
// lock table keys (docs/cluster-locks.md, docs/lock-tables.md).
//
// THREADS: a fixed few, whatever the number of locks
//   reactor  sleeps on the namespace's doorbell (acquirers ring it when they
//            ask for a cluster lock, the registry when it changes) and on a
//            word of its own (workers bump it when a step ends), until the
//            next timer of a keeper in use. On a ring it lists the registry
//            if its generation moved (a keeper per named cluster lock, a
//            ClusterTableKeeper per cluster table), takes the tables' key
//            requests (a keeper per key in use) and looks at idle named
//            keepers' records; then it hands every keeper with work due to
//            the workers.
//   workers  run one keeper step each (at most one backend call, bounded by
//            a slice): 1 thread, more while every worker is busy (up to
//            kMaxWorkers: keepers waiting for a backend lock hold a worker
//            for a slice), fewer again after 5 s idle.
//
// ONE KEEPER: a named lock's record or a table key's entry (ClusterHold)
//
//   idle ──(a local acquirer asked: requested)──▶ acquiring
//   acquiring: backend acquire in slices (100 ms; 10 ms while other keepers
//       wait for a worker), keeping its queue place ──held──▶ held
//   held, a step every tick (idle_release_ms / 2, 1 to 10 ms):
//       renew the lease (cheap unless due); lost, or unknown past
//       valid_until ──▶ lost, idle
//       no local holder and no local waiter for idle_release_ms: take the
//       local mutex (only if free at once), release ──▶ none, idle
//       local grants >= max_handoffs or held >= max_hold_ms ──▶ yielding
//   yielding: wait for the local mutex in 5 ms steps (renewing meanwhile),
//       release ──▶ none, idle, and do not queue again for requeue_pause_ms
//
//   An idle named keeper costs nothing: no timer, its record is looked at
//   only when the doorbell rings. An idle key keeper is dropped: the key's
//   next request makes a new one. So colod's cost follows the locks and
//   keys in use, not how many exist.
//
// The cohort: while held, local acquirers are granted by the local mutex (a
// table key: its entry) alone, with tokens epoch << 20 | local grant, at
// most max_handoffs of them (the record's grant_limit).
//
// SESSIONS: one LockBackend per [[lock_backend]], opened on first use and
// again after a failure (at most once a second), shared by its keepers. A
// table key's backend lock is named TABLE/KEY and served by the longest
// [[lock_backend]] prefix matching that name; a table is kept if some
// prefix matches TABLE/.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "colo/node.hpp"
#include "config.hpp"
#include "log.hpp"

namespace colo::internal {
class ClusterTableKeeper;
}

namespace colo::bridge {

class LockService {
 public:
  LockService(const Config& config, const Log& log);
  ~LockService();
  LockService(const LockService&) = delete;
  LockService& operator=(const LockService&) = delete;

  // Opens the namespace and starts the reactor. Backends connect lazily: a
  // server that is down does not stop colod, its locks wait for it.
  Result<void> start();
  // Stops every keeper: a lock held cluster-wide is released (if no local
  // holder has it) or marked lost (its holder is told), and the sessions
  // close. Bounded by the backends' op_timeout.
  void stop();

  // Prometheus samples (families colod_cluster_lock*), appended to `out`.
  void render_metrics(std::string& out) const;

 private:
  struct Backend;
  struct Keeper;
  struct Table;
  static constexpr int kMaxWorkers = 16;

  void reactor();
  void rescan();
  void take_key_requests();
  void look_at_idle_named();
  std::uint64_t dispatch_due(std::uint64_t now);  // returns the next timer (0: none)
  void dispatch(Keeper& k);
  void worker();
  void retire_all();
  Backend* backend_for(const std::string& lock_name);

  const Config& config_;
  const Log& log_;
  std::unique_ptr<Node> node_;
  std::vector<std::unique_ptr<Backend>> backends_;

  mutable std::mutex keepers_mutex_;  // keepers_ and tables_, against render_metrics
  std::map<std::string, std::unique_ptr<Keeper>> keepers_;  // by backend lock name
  std::map<std::string, std::unique_ptr<Table>> tables_;
  std::uint64_t seen_generation_ = ~std::uint64_t{0};
  std::set<std::string> unserved_reported_;  // names logged once as matching no [[lock_backend]]
  std::atomic<bool> stopping_{false};
  std::atomic<std::uint32_t> wake_{0};  // bumped by workers and stop(): the reactor's second futex
  std::thread reactor_;

  // The worker pool.
  mutable std::mutex pool_mutex_;
  std::condition_variable pool_cv_;
  std::deque<Keeper*> queue_;
  std::vector<std::thread> workers_;
  std::vector<std::thread::id> finished_;  // exited idle workers, joined by the reactor
  int idle_workers_ = 0;
  bool pool_stopping_ = false;
  std::atomic<bool> pool_crowded_{false};  // more steps queued than idle workers: keepers take shorter slices
};

}  // namespace colo::bridge
