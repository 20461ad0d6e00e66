#include "registry.hpp"

#include <algorithm>
#include <cstring>

#include "clock.hpp"
#include "futex.hpp"

namespace colo::detail {
namespace {

constexpr auto relaxed = std::memory_order_relaxed;

bool entry_name_is(const RegistryEntry& e, std::string_view name) noexcept {
  const std::size_t len = ::strnlen(e.name, sizeof e.name);
  return len < sizeof e.name && std::string_view(e.name, len) == name;
}

// After EOWNERDEAD: the dead holder may have left one entry half-written.
void repair(RegistryRecord& r) noexcept {
  std::uint32_t used = 0;
  for (auto& e : r.entries) {
    const auto state = e.state.load(relaxed);
    if (state == static_cast<std::uint32_t>(EntryState::used) && ::strnlen(e.name, sizeof e.name) < sizeof e.name) {
      ++used;
    } else if (state != static_cast<std::uint32_t>(EntryState::free)) {
      e.state.store(static_cast<std::uint32_t>(EntryState::free), std::memory_order_release);
    }
  }
  r.count.store(used, relaxed);
  r.generation.fetch_add(1, relaxed);
}

void ring_doorbell(RegistryRecord& r) noexcept {
  r.doorbell.fetch_add(1, std::memory_order_acq_rel);
  shm::futex_wake_all(r.doorbell);
}

}  // namespace

EntrySnapshot snapshot_of(const RegistryEntry& e) {
  EntrySnapshot s;
  s.name.assign(e.name, ::strnlen(e.name, sizeof e.name));
  s.kind = static_cast<shm::SegmentKind>(e.kind);
  s.scope = e.scope;
  s.creator = {e.creator_pid, e.creator_start_time};
  s.created_realtime_ns = e.created_realtime_ns;
  std::memcpy(s.params, e.params, sizeof s.params);
  return s;
}

Result<std::unique_ptr<Registry>> Registry::open_or_create(const std::string& name, const shm::Permissions& permissions,
                                                           std::chrono::milliseconds ready_timeout) {
  const std::string label = shm::segment_label(name);
  // Bounded: each round either succeeds or removes an abandoned segment.
  for (int attempt = 0; attempt < 8; ++attempt) {
    auto opened = shm::Segment::open(name, shm::SegmentKind::registry, ready_timeout);
    if (opened) {
      if (opened->body_size() < sizeof(RegistryRecord))
        return Error{Errc::corrupt, "registry " + label + " is too small for this version of colo"};
      auto& r = *reinterpret_cast<RegistryRecord*>(opened->body());
      if (r.layout_version != kRegistryLayoutVersion || r.capacity != kRegistryCapacity)
        return Error{Errc::corrupt, "registry " + label + " has layout " + std::to_string(r.layout_version) +
                                        " / capacity " + std::to_string(r.capacity) + "; this build expects " +
                                        std::to_string(kRegistryLayoutVersion) + " / " +
                                        std::to_string(kRegistryCapacity)};
      return std::unique_ptr<Registry>(new Registry(std::move(opened).value()));
    }
    const Errc code = opened.error().code;
    // Abandoned by a creator that died (before ready, or before even sizing
    // it: that one reads as truncated): reclaim it, then create anew.
    if (code == Errc::creator_died || code == Errc::not_ready || code == Errc::corrupt) {
      auto reclaimed = shm::Segment::reclaim_if_abandoned(name, ready_timeout);
      if (!reclaimed) return std::move(reclaimed).error();
      if (!*reclaimed && code != Errc::creator_died) return std::move(opened).error();
      continue;
    }
    if (code != Errc::not_found) return std::move(opened).error();

    auto created = shm::Segment::create(name, "registry", shm::SegmentKind::registry, sizeof(RegistryRecord), permissions);
    if (!created) {
      if (created.error().code == Errc::already_exists) continue;  // lost the race: open theirs
      return std::move(created).error();
    }
    auto& r = *reinterpret_cast<RegistryRecord*>(created->body());
    if (int rc = r.mutex.init(); rc != 0) {
      (void)shm::Segment::unlink(name);
      return Error{Errc::system, "cannot initialise the registry mutex: " + std::string(std::strerror(rc))};
    }
    r.layout_version = kRegistryLayoutVersion;
    r.capacity = kRegistryCapacity;
    created->publish();
    return std::unique_ptr<Registry>(new Registry(std::move(created).value()));
  }
  return Error{Errc::timed_out, "registry " + label + " kept changing while opening it; retry"};
}

Result<Registry::Locked> Registry::lock() {
  auto& r = record();
  // Bounded: a registry change takes microseconds, so a mutex held this long
  // is a holder stopped or stuck inside one, or a lock word scribbled on
  // (a robust mutex recovers from a dead owner, not from a live or invented
  // one). An error names the holder instead of a hang.
  switch (r.mutex.lock_until(shm::monotonic_ns() + kLockTimeoutNs)) {
    case shm::MutexResult::acquired: break;
    case shm::MutexResult::timed_out:
      return Error{Errc::timed_out,
                   "the registry of " + shm::segment_label(shm_name()) + " has been locked for " +
                       std::to_string(kLockTimeoutNs / 1'000'000'000) + " s by thread " +
                       std::to_string(r.mutex.owner_tid()) +
                       ": a process stopped or stuck while creating or removing an object, or the registry's "
                       "memory is corrupt; resume or end that process and retry (if no such thread exists, "
                       "remove the namespace's segments)"};
    case shm::MutexResult::acquired_owner_died:
      repair(r);
      r.mutex.make_consistent();
      break;
    default:
      return Error{Errc::corrupt, "the registry mutex of " + shm::segment_label(shm_name()) +
                                      " is unusable (memory corrupted); remove the namespace's segments"};
  }
  return Locked(&r);
}

Registry::Locked::~Locked() {
  if (record_ == nullptr) return;
  const bool changed = record_->generation.load(relaxed) != generation_at_lock_;
  record_->mutex.unlock();
  if (changed) ring_doorbell(*record_);
}

void Registry::ring() noexcept { ring_doorbell(record()); }

RegistryEntry* Registry::Locked::find(std::string_view name) noexcept {
  for (auto& e : record_->entries)
    if (e.state.load(relaxed) == static_cast<std::uint32_t>(EntryState::used) && entry_name_is(e, name)) return &e;
  return nullptr;
}

Result<void> Registry::Locked::add(std::string_view name, shm::SegmentKind kind, std::uint32_t scope,
                                   const std::uint64_t (&params)[4]) {
  for (auto& e : record_->entries) {
    if (e.state.load(relaxed) != static_cast<std::uint32_t>(EntryState::free)) continue;
    e.state.store(static_cast<std::uint32_t>(EntryState::writing), relaxed);
    const shm::ProcessRef me = shm::self();
    e.kind = static_cast<std::uint32_t>(kind);
    e.scope = scope;
    e.creator_pid = me.pid;
    e.creator_start_time = me.start_time;
    e.created_realtime_ns = shm::realtime_ns();
    std::memcpy(e.params, params, sizeof e.params);
    std::memset(e.name, 0, sizeof e.name);
    std::memcpy(e.name, name.data(), std::min(name.size(), sizeof e.name - 1));
    e.state.store(static_cast<std::uint32_t>(EntryState::used), std::memory_order_release);
    record_->count.fetch_add(1, relaxed);
    record_->generation.fetch_add(1, relaxed);
    return Ok{};
  }
  return Error{Errc::capacity, "the namespace registry is full (" + std::to_string(kRegistryCapacity) +
                                   " objects); remove unused objects with `colo rm`"};
}

void Registry::Locked::erase(RegistryEntry* entry) noexcept {
  entry->state.store(static_cast<std::uint32_t>(EntryState::free), std::memory_order_release);
  record_->count.fetch_sub(1, relaxed);
  record_->generation.fetch_add(1, relaxed);
}

std::vector<EntrySnapshot> Registry::Locked::snapshot() const {
  std::vector<EntrySnapshot> out;
  for (const auto& e : record_->entries)
    if (e.state.load(std::memory_order_acquire) == static_cast<std::uint32_t>(EntryState::used) &&
        ::strnlen(e.name, sizeof e.name) < sizeof e.name)
      out.push_back(snapshot_of(e));
  return out;
}

}  // namespace colo::detail
