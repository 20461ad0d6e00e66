// colo/internal/cluster_keeper.hpp — colod's side of a cluster-scope lock
// record (internal to colo: not installed; user processes never use it).
//
// The protocol is the lock record's cluster line (broker/lock_record.hpp,
// drawn there; docs/cluster-locks.md tells the whole story). Acquirers move
// none/lost -> requested under the local mutex; this side moves
// requested -> held, held -> lost, and held -> yielding -> none, the last
// while holding the local mutex itself, so that no local holder is left
// when the backend lock is released. Every change bumps state_signal.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "colo/lock.hpp"
#include "colo/node.hpp"

namespace colo::detail {
struct LockRecord;
}

namespace colo::internal {

// A cluster-wide fencing token is epoch << kLocalGrantBits | local grant.
// colod yields the cluster lock well before 2^20 local grants (its hand-off
// budget is capped below this), so the local part never carries into the
// epoch.
inline constexpr unsigned kLocalGrantBits = 20;
inline constexpr std::uint64_t kMaxLocalGrants = (std::uint64_t{1} << kLocalGrantBits) - 1;
inline constexpr std::uint64_t kMaxClusterEpoch = std::uint64_t{1} << 44;

class ClusterLockKeeper {
 public:
  // Opens the cluster-scope lock `name` and records this process as its
  // keeper. A record left held or yielding by an earlier keeper is marked
  // lost (that keeper's backend session died with it), so no local grant
  // outlives the session that backed it.
  static Result<ClusterLockKeeper> adopt(Node& node, std::string_view name);

  const std::string& name() const noexcept { return lock_.name(); }
  LeaseState state() const noexcept;
  std::uint32_t signal() const noexcept;
  // Sleeps while the state signal is `seen`, at most timeout_ns.
  void wait(std::uint32_t seen, std::uint64_t timeout_ns) noexcept;

  // requested -> held: this host holds the cluster lock under `epoch`
  // (1 <= epoch < 2^44), at least until valid_until_ns; local acquirers get
  // at most `grant_limit` grants under it (colod's hand-off budget).
  void grant_cluster(std::uint64_t epoch, std::uint64_t valid_until_ns,
                     std::uint32_t grant_limit = static_cast<std::uint32_t>(kMaxLocalGrants)) noexcept;
  // A renewed lease: no signal (holders read it when they check).
  void extend(std::uint64_t valid_until_ns) noexcept;
  // held or yielding -> lost; holders are told (signal) and it is counted.
  void mark_lost() noexcept;
  // Local grants under the current epoch (the hand-off budget's count).
  std::uint64_t local_grants() const noexcept;
  // A live local process holds the lock (granted, not yet released).
  bool has_local_holder() const noexcept;
  // A local process waits for the local mutex (live waiter slot or overflow).
  bool has_local_waiters() const noexcept;

  // Idle release: takes the local mutex only if free at once. True: held.
  bool try_take_local_mutex() noexcept;
  // Budget release: held -> yielding (acquirers step aside), then the mutex
  // is waited for in slices with take_local_mutex() (false at the deadline).
  void begin_yield() noexcept;
  bool take_local_mutex(std::uint64_t deadline_ns) noexcept;
  // With the local mutex: the backend lock is released; epoch 0, none,
  // signal, unlock. Also ends a yield that found the lease lost.
  void finish_release(LeaseState next = LeaseState::none) noexcept;

  // colod stops: a held lock is marked lost, the keeper cleared.
  void step_down() noexcept;

 private:
  explicit ClusterLockKeeper(Lock lock) noexcept : lock_(std::move(lock)) {}
  detail::LockRecord& record() const noexcept { return *lock_.record_; }
  void set_state(LeaseState state) noexcept;
  Lock lock_;
};

}  // namespace colo::internal
