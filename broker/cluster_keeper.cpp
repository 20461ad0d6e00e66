#include "colo/internal/cluster_keeper.hpp"

#include "futex.hpp"
#include "lock_record.hpp"
#include "process.hpp"

namespace colo::internal {
namespace {
constexpr auto relaxed = std::memory_order_relaxed;
using detail::LockRecord;
}  // namespace

Result<ClusterLockKeeper> ClusterLockKeeper::adopt(Node& node, std::string_view name) {
  auto lock = node.lock(name, OpenMode::open, {.scope = Scope::cluster});
  if (!lock) return std::move(lock).error();
  ClusterLockKeeper keeper(std::move(lock).value());
  auto& r = keeper.record();
  const shm::ProcessRef me = shm::self();
  r.keeper_start_time.store(me.start_time, relaxed);
  r.keeper_pid.store(me.pid, std::memory_order_release);
  const LeaseState state = keeper.state();
  if (state == LeaseState::held || state == LeaseState::yielding) keeper.mark_lost();
  return keeper;
}

LeaseState ClusterLockKeeper::state() const noexcept {
  return static_cast<LeaseState>(record().lease_state.load(std::memory_order_acquire));
}

std::uint32_t ClusterLockKeeper::signal() const noexcept { return record().state_signal.load(std::memory_order_acquire); }

void ClusterLockKeeper::wait(std::uint32_t seen, std::uint64_t timeout_ns) noexcept {
  shm::futex_wait(record().state_signal, seen, static_cast<std::int64_t>(timeout_ns));
}

void ClusterLockKeeper::set_state(LeaseState state) noexcept {
  auto& r = record();
  r.lease_state.store(static_cast<std::uint32_t>(state), std::memory_order_release);
  r.state_signal.fetch_add(1, std::memory_order_acq_rel);
  shm::futex_wake_all(r.state_signal);
}

bool ClusterLockKeeper::grant_cluster(std::uint64_t epoch, std::uint64_t valid_until_ns,
                                      std::uint32_t grant_limit) noexcept {
  auto& r = record();
  // Published before the state: an acquirer that sees held reads these.
  r.local_grants.store(0, relaxed);
  r.grant_limit.store(grant_limit, relaxed);
  r.valid_until_ns.store(valid_until_ns, std::memory_order_release);
  r.cluster_epoch.store(epoch, std::memory_order_release);
  set_state(LeaseState::held);
  return true;
}

void ClusterLockKeeper::extend(std::uint64_t valid_until_ns) noexcept {
  record().valid_until_ns.store(valid_until_ns, std::memory_order_release);
}

void ClusterLockKeeper::mark_lost() noexcept {
  auto& r = record();
  r.lease_losses.fetch_add(1, relaxed);
  r.valid_until_ns.store(0, std::memory_order_release);
  set_state(LeaseState::lost);
}

std::uint64_t ClusterLockKeeper::local_grants() const noexcept { return record().local_grants.load(relaxed); }

bool ClusterLockKeeper::has_local_holder() const noexcept {
  auto& r = record();
  const std::uint32_t pid = r.owner_pid.load(relaxed);
  // A dead holder does not count: colod then takes the mutex (owner died)
  // and lets the cluster lock go rather than keep it for nobody.
  return pid != 0 && shm::liveness({pid, r.owner_start_time.load(relaxed)}) == shm::Liveness::alive;
}

bool ClusterLockKeeper::has_local_waiters() const noexcept {
  auto& r = record();
  if (r.overflow_waiters.load(relaxed) != 0) return true;
  for (const auto& slot : r.waiter_slots) {
    const std::uint32_t pid = slot.pid.load(relaxed);
    // Liveness only for taken slots: a waiter killed while blocked must not
    // keep the cluster lock on this host forever.
    if (pid != 0 && shm::liveness({pid, slot.start_time.load(relaxed)}) == shm::Liveness::alive) return true;
  }
  return false;
}

namespace {
// colod now holds the local mutex: record it as the owner (an acquirer that
// finds colod died holding it then knows no user state is half-written), and
// carry a user holder's death on to the next grant.
void took_mutex(LockRecord& r, shm::MutexResult rc) noexcept {
  if (rc == shm::MutexResult::acquired_owner_died) {
    r.mutex.make_consistent();
    const std::uint32_t keeper = r.keeper_pid.load(relaxed);
    if (r.owner_pid.load(relaxed) != keeper) r.cluster_flags.fetch_or(detail::kClusterFlagOwnerDiedPending, relaxed);
  }
  r.owner_pid.store(shm::self().pid, relaxed);
}
}  // namespace

bool ClusterLockKeeper::try_take_local_mutex() noexcept {
  auto& r = record();
  const shm::MutexResult rc = r.mutex.try_lock();
  if (!shm::granted(rc)) return false;
  took_mutex(r, rc);
  return true;
}

void ClusterLockKeeper::begin_yield() noexcept { set_state(LeaseState::yielding); }

bool ClusterLockKeeper::take_local_mutex(std::uint64_t deadline_ns) noexcept {
  auto& r = record();
  const shm::MutexResult rc = r.mutex.lock_until(deadline_ns);
  if (!shm::granted(rc)) return false;
  took_mutex(r, rc);
  return true;
}

void ClusterLockKeeper::finish_release(LeaseState next) noexcept {
  auto& r = record();
  r.cluster_epoch.store(0, std::memory_order_release);
  r.valid_until_ns.store(0, std::memory_order_release);
  r.local_grants.store(0, relaxed);
  r.owner_pid.store(0, relaxed);
  r.lease_state.store(static_cast<std::uint32_t>(next), std::memory_order_release);
  r.mutex.unlock();
  r.state_signal.fetch_add(1, std::memory_order_acq_rel);
  shm::futex_wake_all(r.state_signal);
}

void ClusterLockKeeper::step_down() noexcept {
  auto& r = record();
  const LeaseState s = state();
  if (s == LeaseState::held || s == LeaseState::yielding) mark_lost();
  r.keeper_pid.store(0, std::memory_order_release);
}

}  // namespace colo::internal
