#include "colo/lock.hpp"

#include <algorithm>

#include "clock.hpp"
#include "lock_record.hpp"
#include "mapped_object.hpp"
#include "process.hpp"

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

}  // namespace

const char* scope_name(Scope scope) noexcept {
  switch (scope) {
    case Scope::host: return "host";
    case Scope::cluster: return "cluster";
  }
  return "unknown";
}

// ---------------------------------------------------------------- LockGuard

void LockGuard::unlock() noexcept {
  if (record_ == nullptr) return;
  auto& r = *record_;
  if (sampled_ticks_ != 0) [[unlikely]] {
    bump(r.hold_ticks_sampled, shm::ticks() - sampled_ticks_);
    bump(r.hold_samples);
  }
  r.owner_pid.store(0, relaxed);
  r.mutex.unlock();
  record_ = nullptr;
}

LockGuard::LockGuard(LockGuard&& other) noexcept
    : record_(other.record_), token_(other.token_), sampled_ticks_(other.sampled_ticks_), owner_died_(other.owner_died_) {
  other.record_ = nullptr;
}

LockGuard& LockGuard::operator=(LockGuard&& other) noexcept {
  if (this != &other) {
    unlock();
    record_ = other.record_;
    token_ = other.token_;
    sampled_ticks_ = other.sampled_ticks_;
    owner_died_ = other.owner_died_;
    other.record_ = nullptr;
  }
  return *this;
}

// --------------------------------------------------------------------- Lock

Lock::Lock(std::string name, std::unique_ptr<detail::MappedObject> mapping, detail::LockRecord* record) noexcept
    : name_(std::move(name)), mapping_(std::move(mapping)), record_(record) {}
Lock::Lock(Lock&&) noexcept = default;
Lock& Lock::operator=(Lock&&) noexcept = default;
Lock::~Lock() = default;

__attribute__((always_inline)) inline LockGuard Lock::grant(bool contended, bool owner_died) noexcept {
  auto& r = *record_;
  if (owner_died) {
    // Consistent at once: if this holder dies too before repairing, the
    // next one is told again (the mutex is again left by a dead owner).
    r.mutex.make_consistent();
    bump(r.recoveries);
  }
  const std::uint64_t token = r.fencing_epoch.load(relaxed) + 1;
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
  return LockGuard(record_, token, owner_died, now);
}

Result<LockGuard> Lock::acquire() noexcept {
  auto& r = *record_;
  shm::MutexResult rc = r.mutex.try_lock();
  const bool contended = rc == shm::MutexResult::busy;
  if (contended) {
    std::size_t slot = register_waiter(r);
    if (slot == detail::kWaiterSlots) {
      // No slot: wait in slices and retry for one, so that this waiter is
      // counted by identity as soon as it can be (a killed overflow waiter
      // is then only counted while all slots hold live waiters).
      while ((rc = r.mutex.lock_until(shm::monotonic_ns() + kOverflowSliceNs)) == shm::MutexResult::timed_out) {
        unregister_waiter(r, slot);
        slot = register_waiter(r);
        if (slot != detail::kWaiterSlots) break;
      }
      if (rc == shm::MutexResult::timed_out) rc = r.mutex.lock();
    } else {
      rc = r.mutex.lock();
    }
    unregister_waiter(r, slot);
  }
  switch (rc) {
    case shm::MutexResult::acquired: return grant(contended, false);
    case shm::MutexResult::acquired_owner_died: return grant(contended, true);
    case shm::MutexResult::deadlock:
      return Error{Errc::invalid_argument, "lock '" + name_ + "' is already held by this thread"};
    case shm::MutexResult::unrecoverable:
      return Error{Errc::corrupt, "lock '" + name_ +
                                      "' is unrecoverable (released without being made consistent: its memory was "
                                      "written by something other than colo); remove and recreate it"};
    default:
      return Error{Errc::corrupt, "lock '" + name_ + "' has a corrupt mutex; remove and recreate it"};
  }
}

std::optional<LockGuard> Lock::try_acquire() noexcept {
  const shm::MutexResult rc = record_->mutex.try_lock();
  if (!shm::granted(rc)) return std::nullopt;
  return grant(false, rc == shm::MutexResult::acquired_owner_died);
}

std::optional<LockGuard> Lock::try_acquire_for(std::chrono::nanoseconds timeout) noexcept {
  auto& r = *record_;
  shm::MutexResult rc = r.mutex.try_lock();
  const bool contended = rc == shm::MutexResult::busy;
  if (contended) {
    const auto wait = static_cast<std::uint64_t>(std::max<std::int64_t>(0, timeout.count()));
    const std::uint64_t deadline = shm::monotonic_ns() + wait;
    std::size_t slot = register_waiter(r);
    for (;;) {
      const std::uint64_t now = shm::monotonic_ns();
      const bool sliced = slot == detail::kWaiterSlots && deadline - std::min(deadline, now) > kOverflowSliceNs;
      rc = r.mutex.lock_until(sliced ? now + kOverflowSliceNs : deadline);
      if (!sliced || rc != shm::MutexResult::timed_out) break;
      unregister_waiter(r, slot);  // see acquire(): retry for a slot
      slot = register_waiter(r);
    }
    unregister_waiter(r, slot);
    if (rc == shm::MutexResult::timed_out) r.timeouts.fetch_add(1, relaxed);
  }
  if (!shm::granted(rc)) return std::nullopt;
  return grant(contended, rc == shm::MutexResult::acquired_owner_died);
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
  return s;
}

}  // namespace colo
