// bridge/lock_service.hpp — colod's cluster-scope locks (docs/cluster-locks.md).
//
// THREADS
//   scanner    every 100 ms: if the namespace's registry changed, lists it
//              and starts a keeper for each cluster-scope lock not yet kept
//              (or whose segment was recreated), choosing its backend by
//              the longest matching [[lock_backend]].prefix.
//   keeper     one per cluster lock: the only writer of colod's side of the
//              lock record, and the only user of that lock's BackendLock.
//
// ONE KEEPER, ONE LOCK (lease_state in the record, drawn in lock_record.hpp)
//
//   none/lost ──(a local acquirer asks)──▶ requested
//   requested ──backend acquire (in 100 ms slices, keeping its queue place)──▶ held
//   held, every 1 ms:
//     renew the lease when due; lost, or unknown past valid_until ──▶ lost
//     no local holder and no local waiter for idle_release_ms:
//         take the local mutex (only if free at once), release ──▶ none
//     local grants >= max_handoffs or held >= max_hold_ms:
//         yielding, wait for the local mutex (renewing meanwhile),
//         release ──▶ none, and do not queue again for requeue_pause_ms
//
//   The cohort: while held, local acquirers are granted by the local mutex
//   alone (nanoseconds, no colod involvement) with tokens
//   epoch << 20 | local grant, at most max_handoffs of them (the record's
//   grant_limit: the next acquirer waits for the yield); colod watches the
//   time budget and idleness.
//
// SESSIONS: one LockBackend per [[lock_backend]], opened on first use and
// again after a failure (at most once a second), shared by its keepers.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "colo/node.hpp"
#include "config.hpp"
#include "log.hpp"

namespace colo::bridge {

// What a keeper has done, for /metrics and the tests.
struct ClusterLockCounters {
  std::uint64_t cluster_grants = 0;   // backend acquisitions
  std::uint64_t yields = 0;           // budget spent: given up with local waiters left
  std::uint64_t idle_releases = 0;    // given up because the host stopped using it
  std::uint64_t lease_losses = 0;     // held, then lost (session, lease or server)
  std::uint64_t backend_errors = 0;   // failed acquires and unreachable sessions
};

class LockService {
 public:
  LockService(const Config& config, const Log& log);
  ~LockService();
  LockService(const LockService&) = delete;
  LockService& operator=(const LockService&) = delete;

  // Opens the namespace and starts the scanner. Backends connect lazily: a
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
  void scan();
  Backend* backend_for(const std::string& lock_name);

  const Config& config_;
  const Log& log_;
  std::unique_ptr<Node> node_;
  std::vector<std::unique_ptr<Backend>> backends_;
  mutable std::mutex keepers_mutex_;  // the list, against render_metrics
  std::vector<std::unique_ptr<Keeper>> keepers_;
  std::uint64_t seen_generation_ = ~std::uint64_t{0};
  std::atomic<bool> stopping_{false};
  std::thread scanner_;
};

}  // namespace colo::bridge
