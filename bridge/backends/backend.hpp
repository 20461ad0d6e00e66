// bridge/backends/backend.hpp — colod's session with a cluster-lock server.
//
// colod holds one LockBackend per configured backend (ZooKeeper, etcd or
// Redis) and, for each cluster-scoped lock it serves, one BackendLock that a
// single keeper thread drives (bridge/lock_keeper.hpp). User processes never
// see this: they talk to colod through the lock record in shared memory
// (docs/cluster-locks.md). `colo bench cluster-lock` also uses it directly,
// one session per process, as the "without colod" baseline.
//
// Each backend follows the recipe of that server's own client library, so
// that colo and those clients exclude each other on the same name
// (tests/services/README.md has the recipes as observed):
//
//   backend    colo name "orders/pool" becomes           grant epoch
//   zookeeper  /colo/locks/orders/pool/<uuid>__lock__N   N, the node's sequence
//   etcd       colo/locks/orders/pool/<lease id hex>     the key's create revision
//   redis      colo:lock:orders/pool (value: our token)  INCR colo:fence:orders/pool
//
// (with the default `root`s: "/colo/locks", "colo/locks", "colo:lock:").
//
// The grant epoch is what makes fencing tokens cluster-wide: it is strictly
// greater than the epoch of every earlier grant of the same lock by any colo
// session, 1 <= epoch < 2^44 (colod builds tokens as epoch << 20 | local
// grant count). It survives a server restart as long as the server keeps its
// data (ZooKeeper and etcd always; Redis only with persistence, see docs/cluster-locks.md).
//
// Time: every instant here is CLOCK_MONOTONIC nanoseconds (colo/internal/clock.hpp),
// the clock all processes of the host share: colod copies valid_until_ns into
// the lock record, and holders compare it with their own clock reading.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "colo/error.hpp"

namespace colo::bridge {

struct BackendSettings {
  std::string kind;       // "zookeeper", "etcd" or "redis"
  // zookeeper: "host:port[,host:port...]"; etcd: "http://host:port";
  // redis: "host:port". Loopback in tests; any address in deployments.
  std::string endpoints;
  // Prefix of every lock's path or key; empty means the default above.
  std::string root;
  // How long a hold outlives a session that stopped answering: ZooKeeper's
  // session timeout, etcd's lease TTL (rounded up to whole seconds), Redis's
  // PX. A killed or paused colod's lock goes to another host after about
  // this long; holders are told of the loss before it can happen.
  std::chrono::milliseconds lease{3000};
  // Bound of one request to the server (connect, command, reply).
  std::chrono::milliseconds op_timeout{2000};
  // Redis only: how often a waiter tries `SET NX` again (Redis has no
  // queue and no notification for this recipe; redis-py polls every 100 ms).
  std::chrono::milliseconds poll{5};
};

// The outcome of BackendLock::acquire().
struct Acquire {
  enum class Status {
    held,     // this session holds the lock: epoch and valid_until_ns are set
    waiting,  // deadline reached; still queued (call acquire() again to keep the place)
    failed,   // the server refused or could not be reached; the queue place is gone
  };
  Status status = Status::failed;
  std::uint64_t epoch = 0;
  std::uint64_t valid_until_ns = 0;  // the hold is ours at least until then
  std::string detail;                // failed: a sentence naming the server and the cause
};

// The outcome of BackendLock::renew().
struct Renewal {
  enum class Status {
    held,     // still ours; valid_until_ns is the new bound
    lost,     // no longer ours for sure (key gone or taken, session expired, lease revoked)
    unknown,  // the server did not answer: ours until the previous valid_until_ns at most
  };
  Status status = Status::unknown;
  std::uint64_t valid_until_ns = 0;
  std::string detail;
};

// One lock of one session. Driven by one thread at a time; different
// BackendLocks of the same LockBackend may be driven by different threads.
class BackendLock {
 public:
  virtual ~BackendLock() = default;  // release()s
  // Joins the lock's queue if not already in it, then waits until this
  // session holds the lock or deadline_ns passes. Returns `waiting` at the
  // deadline without leaving the queue, so a caller can wait in slices
  // (colod checks for shutdown between them) without losing its turn.
  // Calling it while held returns `held` again with the same epoch.
  virtual Acquire acquire(std::uint64_t deadline_ns) = 0;
  // While held: refreshes the lease or checks the session when due (cheap
  // when not due; colod calls it every few ms). Not held: `lost`.
  virtual Renewal renew() = 0;
  // Releases the hold or leaves the queue, whichever applies; idempotent.
  // Bounded by op_timeout. The next acquire() starts a new queue entry.
  virtual void release() noexcept = 0;
};

class LockBackend {
 public:
  virtual ~LockBackend() = default;
  virtual const char* kind() const noexcept = 0;
  // `name` is a valid object name (colo::validate_object_name). Thread-safe.
  virtual std::unique_ptr<BackendLock> lock(const std::string& name) = 0;
};

// Connects (ZooKeeper: the session is established; etcd: the lease is
// granted; Redis: PING answered) within op_timeout, or says why not.
Result<std::unique_ptr<LockBackend>> open_backend(const BackendSettings& settings);

// One per backend, called by open_backend() (backends/<kind>.cpp).
Result<std::unique_ptr<LockBackend>> open_zookeeper(const BackendSettings& settings);
Result<std::unique_ptr<LockBackend>> open_etcd(const BackendSettings& settings);
Result<std::unique_ptr<LockBackend>> open_redis(const BackendSettings& settings);

}  // namespace colo::bridge
