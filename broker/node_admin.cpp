// Node's administrative side: listing, describing, removing, garbage
// collection. Used by the `colo` tool; none of it is on a hot path.
#include <algorithm>
#include <set>

#include "colo/node.hpp"
#include "channel_state.hpp"
#include "lock_record.hpp"
#include "lock_table_view.hpp"
#include "mapped_object.hpp"
#include "namespace_files.hpp"
#include "registry.hpp"

namespace colo {
namespace {

// The object kind of a segment kind; nullopt for the registry's own.
std::optional<ObjectKind> object_kind(shm::SegmentKind kind) {
  switch (kind) {
    case shm::SegmentKind::lock: return ObjectKind::lock;
    case shm::SegmentKind::topic: return ObjectKind::topic;
    case shm::SegmentKind::queue: return ObjectKind::queue;
    case shm::SegmentKind::lock_table: return ObjectKind::lock_table;
    case shm::SegmentKind::registry: break;
  }
  return std::nullopt;
}

// A segment this process could not open: unreadable if it may not, else corrupt.
void set_unopenable(ObjectInfo& info, const Error& error) {
  info.state = error.code == Errc::permission_denied ? ObjectState::unreadable : ObjectState::corrupt;
  info.problem = error.message;
}

void set_corrupt(ObjectInfo& info, std::string problem) {
  info.state = ObjectState::corrupt;
  info.problem = std::move(problem);
}

}  // namespace

const char* to_string(ObjectState state) noexcept {
  switch (state) {
    case ObjectState::ready: return "ready";
    case ObjectState::creating: return "creating";
    case ObjectState::abandoned: return "abandoned";
    case ObjectState::missing: return "missing";
    case ObjectState::unregistered: return "unregistered";
    case ObjectState::unreadable: return "unreadable";
    case ObjectState::corrupt: return "corrupt";
  }
  return "unknown";
}

std::string state_text(const ObjectInfo& info) {
  std::string text = to_string(info.state);
  if (info.state == ObjectState::unreadable || info.state == ObjectState::corrupt) text += ": " + info.problem;
  return text;
}

Result<ObjectInfo> Node::describe(std::string_view name, bool registered, bool deep) const {
  ObjectInfo info;
  info.name = std::string(name);
  info.shm_name = shm_name_of(name);
  auto seg = shm::Segment::inspect(info.shm_name);
  if (!seg) {
    if (seg.error().code != Errc::not_found) return std::move(seg).error();
    info.state = ObjectState::missing;
    return info;
  }
  info.size_bytes = seg->file_size;
  if (!seg->header_valid) {
    set_corrupt(info, seg->header_problem);
    return info;
  }
  info.kind = object_kind(seg->kind);
  info.creator_pid = seg->creator.pid;
  info.creator_alive = seg->creator_alive;
  info.created_realtime_ns = seg->created_realtime_ns;
  if (seg->state == shm::SegmentState::creating) {
    info.state = seg->creator_alive ? ObjectState::creating : ObjectState::abandoned;
    return info;
  }
  info.state = registered ? ObjectState::ready : ObjectState::unregistered;
  if (seg->kind == shm::SegmentKind::lock) {
    auto segment = shm::Segment::open(info.shm_name, shm::SegmentKind::lock, std::chrono::milliseconds(0));
    if (!segment) {
      set_unopenable(info, segment.error());
      return info;
    }
    if (segment->body_size() < sizeof(detail::LockRecord)) {
      set_corrupt(info, "lock segment too small");
      return info;
    }
    auto* record = reinterpret_cast<detail::LockRecord*>(segment->body());
    const std::uint32_t scope = record->scope;
    info.scope = scope == static_cast<std::uint32_t>(Scope::cluster) ? Scope::cluster : Scope::host;
    // Stats through a Lock view; the view owns the mapping only while we read.
    Lock view(info.name, std::make_unique<detail::MappedObject>(detail::MappedObject{std::move(segment).value()}),
              record);
    info.lock = view.stats();
  } else if (seg->kind == shm::SegmentKind::lock_table) {
    auto segment = shm::Segment::open(info.shm_name, seg->kind, std::chrono::milliseconds(0));
    if (!segment) {
      set_unopenable(info, segment.error());
      return info;
    }
    auto view = detail::open_table(info.name, std::make_unique<detail::MappedObject>(
                                                  detail::MappedObject{std::move(segment).value()}));
    if (!view) {
      set_corrupt(info, view.error().message);
      return info;
    }
    info.scope = (*view)->scope;
    if (deep) info.lock_table = LockTable(std::move(view).value()).stats();
  } else if (seg->kind == shm::SegmentKind::topic || seg->kind == shm::SegmentKind::queue) {
    auto segment = shm::Segment::open(info.shm_name, seg->kind, std::chrono::milliseconds(0));
    if (!segment) {
      set_unopenable(info, segment.error());
      return info;
    }
    auto ring = shm::Ring::attach(segment->body(), segment->body_size());
    if (!ring) {
      set_corrupt(info, ring.error().message);
      return info;
    }
    detail::ChannelState state{info.name, std::make_unique<detail::MappedObject>(
                                              detail::MappedObject{std::move(segment).value()}), *ring, nullptr};
    info.channel = detail::channel_stats(state);
  }
  return info;
}

std::uint64_t Node::generation() const noexcept { return registry_->generation(); }

Result<std::vector<ObjectInfo>> Node::list() const {
  std::vector<detail::EntrySnapshot> entries;
  {
    auto registry = registry_->lock();
    if (!registry) return std::move(registry).error();
    entries = registry->snapshot();
  }
  std::vector<ObjectInfo> out;
  std::set<std::string> seen;
  for (const auto& e : entries) {
    auto info = describe(e.name, true, false);
    if (!info) return std::move(info).error();
    if (!info->kind) info->kind = object_kind(e.kind);
    info->scope = static_cast<Scope>(e.scope);
    if (info->creator_pid == 0) {
      info->creator_pid = e.creator.pid;
      info->created_realtime_ns = e.created_realtime_ns;
    }
    seen.insert(e.name);
    out.push_back(std::move(info).value());
  }
  for (const auto& name : detail::NamespaceFiles(options_.shm_dir, options_.ns).objects()) {
    if (seen.count(name) != 0) continue;
    auto info = describe(name, false, false);
    if (info) out.push_back(std::move(info).value());
  }
  std::sort(out.begin(), out.end(), [](const ObjectInfo& a, const ObjectInfo& b) { return a.name < b.name; });
  return out;
}

Result<ObjectInfo> Node::info(std::string_view name) const {
  if (auto ok = validate_object_name(name); !ok) return std::move(ok).error();
  bool registered = false;
  Scope scope = Scope::host;
  {
    auto registry = registry_->lock();
    if (!registry) return std::move(registry).error();
    if (const auto* entry = registry->find(name)) {
      registered = true;
      scope = static_cast<Scope>(entry->scope);
    }
  }
  auto info = describe(name, registered, true);
  if (!info) return info;
  if (!registered && info->state == ObjectState::missing)
    return Error{Errc::not_found, "no object '" + std::string(name) + "' in namespace '" + options_.ns + "'"};
  if (registered && !info->lock) info->scope = scope;
  return info;
}

Result<void> Node::remove(std::string_view name) {
  if (auto ok = validate_object_name(name); !ok) return std::move(ok).error();
  auto registry = registry_->lock();
  if (!registry) return std::move(registry).error();
  detail::RegistryEntry* entry = registry->find(name);
  auto unlinked = shm::Segment::unlink(shm_name_of(name));
  if (!unlinked && unlinked.error().code != Errc::not_found) return unlinked;
  if (entry != nullptr) registry->erase(entry);
  if (entry == nullptr && !unlinked)
    return Error{Errc::not_found, "no object '" + std::string(name) + "' in namespace '" + options_.ns + "'"};
  return Ok{};
}

Result<GcReport> Node::gc(bool dry_run) {
  GcReport report;
  auto registry = registry_->lock();
  if (!registry) return std::move(registry).error();
  // 1. Segments whose creator died before they were ready.
  for (const auto& name : detail::NamespaceFiles(options_.shm_dir, options_.ns).objects()) {
    const std::string shm_name = shm_name_of(name);
    auto seg = shm::Segment::inspect(shm_name);
    if (!seg) continue;
    // No header, or not even sized for one: its creator died before writing it.
    const bool no_header = !seg->header_valid && (seg->header_problem.rfind("no header", 0) == 0 ||
                                                  seg->header_problem.rfind("truncated", 0) == 0);
    const bool abandoned = seg->header_valid && seg->state == shm::SegmentState::creating && !seg->creator_alive;
    if (!no_header && !abandoned) continue;
    if (dry_run) {
      report.removed_segments.push_back(shm_name);
      continue;
    }
    auto removed = shm::Segment::reclaim_if_abandoned(shm_name, options_.ready_timeout);
    if (removed && *removed) report.removed_segments.push_back(shm_name);
  }
  // 2. Registry entries whose segment is gone.
  for (const auto& e : registry->snapshot()) {
    auto seg = shm::Segment::inspect(shm_name_of(e.name));
    if (seg || seg.error().code != Errc::not_found) continue;
    report.removed_registry_entries.push_back(e.name);
    if (!dry_run)
      if (auto* entry = registry->find(e.name)) registry->erase(entry);
  }
  return report;
}

}  // namespace colo
