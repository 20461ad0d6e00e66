#include "colo/lock.hpp"

#include <algorithm>
#include <thread>

#include "clock.hpp"
#include "colo/internal/lock_wait.hpp"
#include "futex.hpp"
#include "lock_record.hpp"
#include "lock_table_view.hpp"
#include "mapped_object.hpp"
#include "process.hpp"
#include "registry.hpp"

namespace colo {
namespace {

constexpr auto relaxed = std::memory_order_relaxed;
constexpr std::uint64_t kOverflowSliceNs = 50'000'000;

// Holder-line counters are only written under the mutex: a plain load and
// store is enough and avoids a locked RMW on the hot path.
inline void bump(std::atomic<std::uint64_t>& counter, std::uint64_t by = 1) noexcept {
  counter.store(counter.load(relaxed) + by, relaxed);
}

// Records the calling process as blocked on the lock, for tools. Returns the
// slot index, or kWaiterSlots if it only counted itself as an overflow
// waiter. Slow path only: it runs just before a futex wait.
std::size_t register_waiter(detail::LockRecord& r) noexcept {
  const shm::ProcessRef me = shm::self();
  for (int pass = 0; pass < 2; ++pass) {
    for (std::size_t i = 0; i < detail::kWaiterSlots; ++i) {
      auto& slot = r.waiter_slots[i];
      std::uint32_t seen = slot.pid.load(relaxed);
      // First pass: free slots. Second pass (table full): slots of dead waiters.
      if (seen != 0 && (pass == 0 || shm::liveness({seen, slot.start_time.load(relaxed)}) == shm::Liveness::alive))
        continue;
      if (slot.pid.compare_exchange_strong(seen, me.pid, std::memory_order_acq_rel)) {
        slot.start_time.store(me.start_time, relaxed);
        return i;
      }
    }
  }
  r.overflow_waiters.fetch_add(1, relaxed);
  return detail::kWaiterSlots;
}

void unregister_waiter(detail::LockRecord& r, std::size_t slot) noexcept {
  if (slot == detail::kWaiterSlots) {
    r.overflow_waiters.fetch_sub(1, relaxed);
  } else {
    r.waiter_slots[slot].pid.store(0, std::memory_order_release);
  }
}

// Waits for the local mutex, recorded in a waiter slot for tools. Wait::until
// gives up at `deadline` (timed_out).
shm::MutexResult wait_for_mutex(detail::LockRecord& r, bool forever, std::uint64_t deadline) noexcept {
  std::size_t slot = register_waiter(r);
  shm::MutexResult rc;
  while (slot == detail::kWaiterSlots) {
    // No slot: wait in slices and retry for one, so that this waiter is
    // counted by identity as soon as it can be (a killed overflow waiter
    // is then only counted while all slots hold live waiters).
    const std::uint64_t slice_end = shm::monotonic_ns() + kOverflowSliceNs;
    rc = r.mutex.lock_until(forever ? slice_end : std::min(slice_end, deadline));
    if (rc != shm::MutexResult::timed_out || (!forever && shm::monotonic_ns() >= deadline)) {
      unregister_waiter(r, slot);
      return rc;
    }
    unregister_waiter(r, slot);
    slot = register_waiter(r);
  }
  rc = forever ? r.mutex.lock() : r.mutex.lock_until(deadline);
  unregister_waiter(r, slot);
  return rc;
}

// How long an acquirer of a cluster lock waits for a live colod before it
// says none serves the namespace: long enough for colod's registry scan
// (every 100 ms) and a restart, short enough to tell a user who forgot it.
constexpr std::uint64_t kKeeperGraceNs = 5'000'000'000;
// Acquirers waiting for the cluster lock re-check at least this often
// (colod may be gone, or a lease may run out without anyone saying so).
constexpr std::uint64_t kClusterWaitSliceNs = 20'000'000;

bool keeper_alive(const detail::LockRecord& r) noexcept {
  const std::uint32_t pid = r.keeper_pid.load(std::memory_order_acquire);
  return pid != 0 && shm::liveness({pid, r.keeper_start_time.load(relaxed)}) == shm::Liveness::alive;
}

void bump_signal(detail::LockRecord& r) noexcept {
  r.state_signal.fetch_add(1, std::memory_order_acq_rel);
  shm::futex_wake_all(r.state_signal);
}

// The grant whose token is `token` no longer stands cluster-wide.
bool cluster_hold_lost(const detail::LockRecord& r, std::uint64_t token) noexcept {
  const auto state = static_cast<LeaseState>(r.lease_state.load(std::memory_order_acquire));
  if (state != LeaseState::held && state != LeaseState::yielding) return true;
  if (r.cluster_epoch.load(std::memory_order_acquire) != token >> internal::kLocalGrantBits) return true;
  return shm::monotonic_ns() >= r.valid_until_ns.load(std::memory_order_acquire);
}

// The lease state a record holds, `invalid` if it holds none (written by
// something else than colo).
LeaseState lease_state_of(std::uint32_t stored) noexcept {
  switch (static_cast<LeaseState>(stored)) {
    case LeaseState::none:
    case LeaseState::requested:
    case LeaseState::held:
    case LeaseState::yielding:
    case LeaseState::lost: return static_cast<LeaseState>(stored);
    case LeaseState::invalid: break;
  }
  return LeaseState::invalid;
}

// A cluster grant's lease, as on_lease_lost()'s watcher reads it: a named
// lock's record, or a table key's cluster line.
struct LeaseView {
  detail::LockRecord* record;
  detail::TableView* table;
  std::uint64_t table_entry;  // as in LockGuard
  std::uint64_t token;
  std::uint64_t index() const noexcept { return table_entry & ((std::uint64_t{1} << 48) - 1); }
  std::atomic<std::uint32_t>& signal() const noexcept {
    return table != nullptr ? table->cluster_line_of(table->entry_at(index())).signal : record->state_signal;
  }
  std::uint64_t valid_until() const noexcept {
    return (table != nullptr ? table->cluster_line_of(table->entry_at(index())).valid_until_ns : record->valid_until_ns)
        .load(std::memory_order_acquire);
  }
  bool lost() const noexcept {
    return table != nullptr ? detail::table_lease_lost(*table, index(), token) : cluster_hold_lost(*record, token);
  }
};

}  // namespace

namespace detail {

// on_lease_lost()'s watcher: sleeps on the record's state signal (colod
// bumps it on every change) and until the lease's end, whichever is first.
struct LeaseWatch {
  std::atomic<bool> stop{false};
  std::thread thread;
};

}  // namespace detail

const char* to_string(LeaseState state) noexcept {
  switch (state) {
    case LeaseState::none: return "none";
    case LeaseState::requested: return "requested";
    case LeaseState::held: return "held";
    case LeaseState::yielding: return "yielding";
    case LeaseState::lost: return "lost";
    case LeaseState::invalid: break;
  }
  return "invalid";
}

// ---------------------------------------------------------------- LockGuard

bool LockGuard::lease_lost() const noexcept {
  if (!cluster_) return false;
  if (table_ != nullptr) return detail::table_lease_lost(*table_, table_entry_ & ((std::uint64_t{1} << 48) - 1), token_);
  if (record_ == nullptr) return false;
  return cluster_hold_lost(*record_, token_);
}

void LockGuard::on_lease_lost(std::function<void()> callback) {
  if (!cluster_ || !owns_lock()) return;
  stop_watch();
  auto* watch = new detail::LeaseWatch;
  // The watcher keeps a copy of what it reads: the guard may be moved.
  watch->thread = std::thread([view = LeaseView{record_, table_, table_entry_, token_}, stop = &watch->stop,
                               callback = std::move(callback)] {
    std::atomic<std::uint32_t>& signal = view.signal();
    while (!stop->load(std::memory_order_acquire)) {
      const std::uint32_t seen = signal.load(std::memory_order_acquire);
      if (view.lost()) {
        if (!stop->load(std::memory_order_acquire)) callback();
        return;
      }
      // Until just past the lease's end (colod extends it without a
      // signal, so this wakes to find it extended), at most a second.
      const std::uint64_t now = shm::monotonic_ns();
      const std::uint64_t until = view.valid_until();
      const std::uint64_t left = until > now ? until - now : 0;
      shm::futex_wait(signal, seen, static_cast<std::int64_t>(std::clamp<std::uint64_t>(left + 1'000'000, 1'000'000, 1'000'000'000)));
    }
  });
  watch_ = watch;
}

void LockGuard::stop_watch() noexcept {
  if (!watch_) return;
  watch_->stop.store(true, std::memory_order_release);
  if (watch_->thread.get_id() == std::this_thread::get_id()) {
    // unlock() from inside the callback (documented as not allowed): the
    // watcher returns right after it, so detach; it still reads `stop`, so
    // leak the small struct rather than free it under it.
    watch_->thread.detach();
    watch_ = nullptr;
    return;
  }
  shm::futex_wake_all(LeaseView{record_, table_, table_entry_, token_}.signal());  // spurious for others; they re-check
  watch_->thread.join();
  delete watch_;
  watch_ = nullptr;
}

void LockGuard::unlock() noexcept {
  if (table_ != nullptr) {
    stop_watch();
    detail::release_table_key(*table_, table_entry_ & ((std::uint64_t{1} << 48) - 1),
                              static_cast<std::uint32_t>(table_entry_ >> 48));
    table_ = nullptr;
    return;
  }
  if (record_ == nullptr) return;
  auto& r = *record_;
  stop_watch();
  if (sampled_ticks_ != 0) [[unlikely]] {
    bump(r.hold_ticks_sampled, shm::ticks() - sampled_ticks_);
    bump(r.hold_samples);
  }
  r.owner_pid.store(0, relaxed);
  r.mutex.unlock();
  // colod releases the cluster lock once the host stops using it: tell it
  // the host may have (one system call; cluster locks cost far more anyway).
  if (cluster_) bump_signal(r);
  record_ = nullptr;
}

// --------------------------------------------------------------------- Lock

Lock::Lock(std::string name, std::unique_ptr<detail::MappedObject> mapping, detail::LockRecord* record,
           std::shared_ptr<detail::Registry> registry) noexcept
    : name_(std::move(name)), mapping_(std::move(mapping)), record_(record), registry_(std::move(registry)) {}
Lock::Lock(Lock&&) noexcept = default;
Lock& Lock::operator=(Lock&&) noexcept = default;
Lock::~Lock() = default;

Scope Lock::scope() const noexcept { return static_cast<Scope>(record_->scope); }

__attribute__((always_inline)) inline LockGuard Lock::grant(bool contended, bool owner_died, bool make_consistent,
                                                            std::uint64_t cluster_epoch) noexcept {
  auto& r = *record_;
  if (make_consistent) {
    // Consistent at once: if this holder dies too before repairing, the
    // next one is told again (the mutex is again left by a dead owner).
    r.mutex.make_consistent();
  }
  if (owner_died) bump(r.recoveries);
  std::uint64_t token;
  if (cluster_epoch == 0) {
    token = r.fencing_epoch.load(relaxed) + 1;
  } else {
    // Under the mutex; admit_cluster() checked it stays below 2^20.
    const std::uint64_t local = r.local_grants.load(relaxed) + 1;
    r.local_grants.store(local, relaxed);
    token = cluster_epoch << internal::kLocalGrantBits | local;
  }
  r.fencing_epoch.store(token, relaxed);
  bump(r.grants);
  if (contended) bump(r.contended_grants);
  const shm::ProcessRef me = shm::self();
  r.owner_pid.store(me.pid, relaxed);
  r.owner_tid.store(shm::self_tid(), relaxed);
  r.owner_start_time.store(me.start_time, relaxed);
  const bool timed = contended || owner_died || (token & (detail::kHoldSampleEvery - 1)) == 0;
  const std::uint64_t now = timed ? shm::ticks() | 1 : 0;  // | 1: never 0 once sampled
  r.acquired_ticks.store(now, relaxed);
  return LockGuard(record_, token, owner_died, now, cluster_epoch != 0);
}

Lock::Admission Lock::admit_cluster(Wait wait, std::uint64_t deadline, std::uint64_t& epoch,
                                    std::uint64_t& keeper_missing_since) noexcept {
  auto& r = *record_;
  for (;;) {
    const std::uint32_t seen = r.state_signal.load(std::memory_order_acquire);
    const auto state = static_cast<LeaseState>(r.lease_state.load(std::memory_order_acquire));
    const std::uint64_t now = shm::monotonic_ns();
    switch (state) {
      case LeaseState::held:
        // A lease that ran out without colod saying so (colod paused or
        // killed) is not granted on: wait for colod to renew or drop it.
        // Nor beyond colod's hand-off budget: it is about to yield.
        if (now < r.valid_until_ns.load(std::memory_order_acquire) &&
            r.local_grants.load(relaxed) < std::min<std::uint64_t>(r.grant_limit.load(relaxed), internal::kMaxLocalGrants)) {
          epoch = r.cluster_epoch.load(std::memory_order_acquire);
          if (epoch != 0 && epoch < internal::kMaxClusterEpoch) return Admission::granted;
        }
        break;
      case LeaseState::yielding:
        return Admission::yield_first;  // colod needs the mutex to give the cluster lock up
      case LeaseState::none:
      case LeaseState::lost: {
        // Only acquirers leave none/lost, and only under the mutex: a plain
        // CAS against colod's concurrent writes (it never writes these two).
        std::uint32_t expected = static_cast<std::uint32_t>(state);
        if (r.lease_state.compare_exchange_strong(expected, static_cast<std::uint32_t>(LeaseState::requested),
                                                  std::memory_order_acq_rel)) {
          bump_signal(r);
          if (registry_) registry_->ring();  // colod sleeps on the namespace's doorbell
        }
        continue;
      }
      case LeaseState::requested:
        break;
      default:  // not a state: someone wrote the record; ask colod to sort it out
        r.lease_state.store(static_cast<std::uint32_t>(LeaseState::requested), std::memory_order_release);
        bump_signal(r);
        if (registry_) registry_->ring();
        continue;
    }
    if (wait == Wait::none || (wait == Wait::until && now >= deadline)) return Admission::timed_out;
    if (keeper_alive(r)) {
      keeper_missing_since = 0;
    } else if (keeper_missing_since == 0) {
      keeper_missing_since = now;
    } else if (now - keeper_missing_since >= kKeeperGraceNs) {
      return Admission::no_keeper;
    }
    std::uint64_t slice = kClusterWaitSliceNs;
    if (wait == Wait::until) slice = std::min(slice, deadline - now);
    shm::futex_wait(r.state_signal, seen, static_cast<std::int64_t>(slice));
  }
}

Result<std::optional<LockGuard>> Lock::acquire_until(Wait wait, std::uint64_t deadline, Progress* sliced) noexcept {
  auto& r = *record_;
  const bool cluster = r.scope == static_cast<std::uint32_t>(Scope::cluster);
  Progress whole;  // an acquire in one call
  Progress& progress = sliced != nullptr ? *sliced : whole;
  // The end of a slice is not the end of the acquire: the caller counts
  // its own timeout (LockWait::timed_out).
  auto count_timeout = [&] {
    if (sliced == nullptr) r.timeouts.fetch_add(1, relaxed);
  };
  for (;;) {
    shm::MutexResult rc = r.mutex.try_lock();
    if (rc == shm::MutexResult::busy) {
      if (wait == Wait::none) return std::optional<LockGuard>{};
      progress.contended = true;
      rc = wait_for_mutex(r, wait == Wait::forever, deadline);
      if (rc == shm::MutexResult::timed_out) {
        count_timeout();
        return std::optional<LockGuard>{};
      }
    }
    switch (rc) {
      case shm::MutexResult::acquired:
      case shm::MutexResult::acquired_owner_died: break;
      case shm::MutexResult::deadlock:
        return Error{Errc::invalid_argument, "lock '" + name_ + "' is already held by this thread"};
      case shm::MutexResult::unrecoverable:
        return Error{Errc::corrupt, "lock '" + name_ +
                                        "' is unrecoverable (released without being made consistent: its memory was "
                                        "written by something other than colo); remove and recreate it"};
      default:
        return Error{Errc::corrupt, "lock '" + name_ + "' has a corrupt mutex; remove and recreate it"};
    }
    bool owner_died = rc == shm::MutexResult::acquired_owner_died;
    if (!cluster) return std::optional<LockGuard>(grant(progress.contended, owner_died, owner_died, 0));

    // Cluster scope. The mutex is made consistent at once: the paths below
    // may unlock it without a grant, and a death reported to nobody is
    // carried to the next grant by a flag.
    if (owner_died) {
      r.mutex.make_consistent();
      // colod died while it held the mutex to yield: no user state was
      // half-written, so there is nothing to tell the next holder.
      const std::uint32_t keeper = r.keeper_pid.load(relaxed);
      if (keeper != 0 && r.owner_pid.load(relaxed) == keeper) owner_died = false;
    }
    if (r.cluster_flags.load(relaxed) & detail::kClusterFlagOwnerDiedPending) {
      owner_died = true;
    }
    std::uint64_t epoch = 0;
    const Admission admission = admit_cluster(wait, deadline, epoch, progress.keeper_missing_since);
    if (admission == Admission::granted) {
      r.cluster_flags.fetch_and(~detail::kClusterFlagOwnerDiedPending, relaxed);
      return std::optional<LockGuard>(grant(progress.contended, owner_died, false, epoch));
    }
    if (owner_died) r.cluster_flags.fetch_or(detail::kClusterFlagOwnerDiedPending, relaxed);
    r.mutex.unlock();
    switch (admission) {
      case Admission::no_keeper:
        return Error{Errc::not_ready,
                     "cluster lock '" + name_ +
                         "': no colod serves this namespace (start colod with a [[lock_backend]] for it, or check "
                         "that it runs)"};
      case Admission::timed_out:
        if (wait == Wait::until) count_timeout();
        return std::optional<LockGuard>{};
      default:
        break;
    }
    // Yielding: colod is giving the cluster lock up and needs the mutex.
    // Wait for it to finish, then queue again.
    progress.contended = true;
    for (;;) {
      const std::uint32_t seen = r.state_signal.load(std::memory_order_acquire);
      if (r.lease_state.load(std::memory_order_acquire) != static_cast<std::uint32_t>(LeaseState::yielding))
        break;
      const std::uint64_t now = shm::monotonic_ns();
      if (wait == Wait::until && now >= deadline) {
        count_timeout();
        return std::optional<LockGuard>{};
      }
      std::uint64_t slice = kClusterWaitSliceNs;
      if (wait == Wait::until) slice = std::min(slice, deadline - now);
      shm::futex_wait(r.state_signal, seen, static_cast<std::int64_t>(slice));
    }
  }
}

Result<LockGuard> Lock::acquire() noexcept {
  // The fast path of a host lock stays a try-lock and a grant, inline (the
  // general path below costs ~20 ns more, half again the whole grant).
  // A mutex left by a dead owner is granted here too (this try_lock took
  // it); busy and errors go the general way, whose try_lock sees the same.
  if (record_->scope != static_cast<std::uint32_t>(Scope::cluster)) [[likely]] {
    const shm::MutexResult rc = record_->mutex.try_lock();
    if (rc == shm::MutexResult::acquired) [[likely]]
      return grant(false, false, false, 0);
    if (rc == shm::MutexResult::acquired_owner_died) return grant(false, true, true, 0);
  }
  auto got = acquire_until(Wait::forever, 0);
  if (!got) return std::move(got).error();
  return std::move(*got.value());
}

std::optional<LockGuard> Lock::try_acquire() noexcept {
  if (record_->scope != static_cast<std::uint32_t>(Scope::cluster)) [[likely]] {  // as in acquire()
    const shm::MutexResult rc = record_->mutex.try_lock();
    if (rc == shm::MutexResult::acquired) [[likely]]
      return grant(false, false, false, 0);
    if (rc == shm::MutexResult::acquired_owner_died) return grant(false, true, true, 0);
  }
  auto got = acquire_until(Wait::none, 0);
  if (!got) return std::nullopt;
  return std::move(got.value());
}

std::optional<LockGuard> Lock::try_acquire_for(std::chrono::nanoseconds timeout) noexcept {
  const auto wait = static_cast<std::uint64_t>(std::max<std::int64_t>(0, timeout.count()));
  auto got = acquire_until(Wait::until, shm::monotonic_ns() + wait);
  if (!got) return std::nullopt;
  return std::move(got.value());
}

LockStats Lock::stats() const noexcept {
  auto& r = *record_;  // not const: stats() may record when it first saw the holder
  LockStats s;
  s.scope = static_cast<Scope>(r.scope);
  s.fencing_epoch = r.fencing_epoch.load(relaxed);
  s.grants = r.grants.load(relaxed);
  s.contended_grants = r.contended_grants.load(relaxed);
  s.recoveries = r.recoveries.load(relaxed);
  s.timeouts = r.timeouts.load(relaxed);
  s.hold_samples = r.hold_samples.load(relaxed);
  if (s.hold_samples != 0) s.hold_ns_mean = shm::ticks_to_ns(r.hold_ticks_sampled.load(relaxed)) / static_cast<double>(s.hold_samples);
  for (const auto& slot : r.waiter_slots) {
    const std::uint32_t pid = slot.pid.load(relaxed);
    if (pid != 0 && shm::liveness({pid, slot.start_time.load(relaxed)}) == shm::Liveness::alive) ++s.waiters;
  }
  // Waiters without a slot exist only while every slot holds a live waiter
  // (they move into a free one within a slice); otherwise the overflow
  // count is what killed overflow waiters left behind.
  if (s.waiters == detail::kWaiterSlots) s.waiters += r.overflow_waiters.load(relaxed);
  s.holder.pid = r.owner_pid.load(relaxed);
  if (s.holder.pid != 0) {
    s.holder.tid = r.owner_tid.load(relaxed);
    s.holder.start_time = r.owner_start_time.load(relaxed);
    std::uint64_t since = r.acquired_ticks.load(relaxed);
    const std::uint64_t now = shm::ticks();
    s.holder.held_for_exact = (since & 1) != 0;
    if (since == 0) {
      // Not timed: remember when we first saw this holder (even value, so
      // it is never taken for a sample), for this and later looks.
      std::uint64_t expected = 0;
      const std::uint64_t first_seen = now & ~std::uint64_t{1};
      since = r.acquired_ticks.compare_exchange_strong(expected, first_seen, relaxed) ? first_seen : expected;
      s.holder.held_for_exact = (since & 1) != 0;
    }
    s.holder.held_for_ns = since != 0 && now > since ? shm::ticks_to_ns(now - since) : 0.0;
    s.holder.alive = shm::liveness({s.holder.pid, s.holder.start_time}) == shm::Liveness::alive;
  }
  if (s.scope == Scope::cluster) {
    ClusterLockStats c;
    c.lease_state = lease_state_of(r.lease_state.load(std::memory_order_acquire));
    c.epoch = r.cluster_epoch.load(relaxed);
    c.local_grants = r.local_grants.load(relaxed);
    const auto until = static_cast<double>(r.valid_until_ns.load(relaxed));
    c.valid_for_ms = c.epoch != 0 ? (until - static_cast<double>(shm::monotonic_ns())) / 1e6 : 0.0;
    c.keeper_pid = r.keeper_pid.load(relaxed);
    c.keeper_alive = keeper_alive(r);
    c.lease_losses = r.lease_losses.load(relaxed);
    s.cluster = std::move(c);
  }
  return s;
}

}  // namespace colo

// ------------------------------------------------ internal::LockWait (lock_wait.hpp)

namespace colo::internal {

Result<std::optional<LockGuard>> LockWait::slice(std::uint64_t slice_end_ns) noexcept {
  return lock_.acquire_until(Lock::Wait::until, slice_end_ns, &progress_);
}

void LockWait::timed_out() noexcept { lock_.record_->timeouts.fetch_add(1, relaxed); }

}  // namespace colo::internal
