#include "colo/node.hpp"

#include <algorithm>
#include <cstring>

#include "lock_record.hpp"
#include "mapped_object.hpp"
#include "registry.hpp"

namespace colo {
namespace {

using detail::LockRecord;
using detail::MappedObject;

// '/' cannot appear in a POSIX shm name; '^' cannot appear in an object name.
std::string encode(std::string_view object_name) {
  std::string out(object_name);
  std::replace(out.begin(), out.end(), '/', '^');
  return out;
}

std::string object_prefix(const std::string& ns) { return "colo." + ns + ".obj."; }

shm::Permissions permissions_of(const NodeOptions& options) {
  shm::Permissions p;
  p.mode = options.group ? 0660 : 0600;
  p.group = options.group;
  return p;
}

// Checks the body of an opened lock segment before anyone uses it.
Result<LockRecord*> checked_lock_record(shm::Segment& segment, std::string_view name) {
  if (segment.body_size() < sizeof(LockRecord))
    return Error{Errc::corrupt, "lock '" + std::string(name) + "': segment body is " +
                                    std::to_string(segment.body_size()) + " bytes, smaller than a lock record"};
  auto* record = reinterpret_cast<LockRecord*>(segment.body());
  const std::uint32_t version = record->layout_version;
  const std::uint32_t scope = record->scope;
  if (version != detail::kLockLayoutVersion)
    return Error{Errc::corrupt, "lock '" + std::string(name) + "' has lock layout " + std::to_string(version) +
                                    "; this build reads " + std::to_string(detail::kLockLayoutVersion)};
  if (scope != static_cast<std::uint32_t>(Scope::host) && scope != static_cast<std::uint32_t>(Scope::cluster))
    return Error{Errc::corrupt, "lock '" + std::string(name) + "' has unknown scope " + std::to_string(scope)};
  return record;
}

}  // namespace

Node::Node(NodeOptions options, std::unique_ptr<detail::Registry> registry) noexcept
    : options_(std::move(options)), registry_(std::move(registry)) {}
Node::Node(Node&&) noexcept = default;
Node& Node::operator=(Node&&) noexcept = default;
Node::~Node() = default;

Result<Node> Node::open(NodeOptions options) {
  if (auto ok = validate_namespace(options.ns); !ok) return std::move(ok).error();
  if (options.ready_timeout.count() < 0)
    return Error{Errc::invalid_argument, "ready timeout must not be negative"};
  auto registry = detail::Registry::open_or_create(options.ns, permissions_of(options), options.ready_timeout);
  if (!registry) return std::move(registry).error();
  return Node(std::move(options), std::move(registry).value());
}

std::string Node::shm_name_of(std::string_view object_name) const {
  return object_prefix(options_.ns) + encode(object_name);
}

Result<Lock> Node::lock(std::string_view name, OpenMode mode, LockOptions options) {
  if (auto ok = validate_object_name(name); !ok) return std::move(ok).error();
  if (options.scope == Scope::cluster)
    return Error{Errc::not_supported, "lock '" + std::string(name) +
                                          "': cluster scope needs colod, which this version does not include yet"};
  if (options.scope != Scope::host)
    return Error{Errc::invalid_argument, "lock '" + std::string(name) + "': unknown scope"};
  const std::string shm_name = shm_name_of(name);
  const std::string where = "' in namespace '" + options_.ns + "'";
  // Lock's constructor is private to Node (lambdas here share its access).
  auto make_lock_impl = [](std::string_view lock_name, shm::Segment segment, LockRecord* record) {
    return Lock(std::string(lock_name), std::make_unique<MappedObject>(MappedObject{std::move(segment)}), record);
  };

  auto open_existing = [&]() -> Result<Lock> {
    auto segment = shm::Segment::open(shm_name, shm::SegmentKind::lock, options_.ready_timeout);
    if (!segment) {
      if (segment.error().code == Errc::not_found)
        return Error{Errc::not_found, "lock '" + std::string(name) + where +
                                          " does not exist; create it (`colo create lock " + std::string(name) +
                                          "`, or OpenMode::create_or_open)"};
      return std::move(segment).error();
    }
    auto record = checked_lock_record(*segment, name);
    if (!record) return std::move(record).error();
    if (mode != OpenMode::open && (*record)->scope != static_cast<std::uint32_t>(options.scope))
      return Error{Errc::parameter_mismatch, "lock '" + std::string(name) + where + " exists with scope " +
                                                 scope_name(static_cast<Scope>((*record)->scope)) + ", not " +
                                                 scope_name(options.scope)};
    return make_lock_impl(name, std::move(segment).value(), *record);
  };

  if (mode == OpenMode::open) return open_existing();

  auto registry = registry_->lock();
  if (!registry) return std::move(registry).error();
  const std::uint64_t params[4] = {};

  if (detail::RegistryEntry* entry = registry->find(name)) {
    const auto kind = static_cast<shm::SegmentKind>(entry->kind);
    if (kind != shm::SegmentKind::lock)
      return Error{Errc::kind_mismatch, "'" + std::string(name) + where + " exists as a " + shm::kind_name(kind) +
                                            ", not a lock"};
    if (entry->scope != static_cast<std::uint32_t>(options.scope))
      return Error{Errc::parameter_mismatch, "lock '" + std::string(name) + where + " exists with scope " +
                                                 scope_name(static_cast<Scope>(entry->scope)) + ", not " +
                                                 scope_name(options.scope)};
    if (mode == OpenMode::create)
      return Error{Errc::already_exists, "lock '" + std::string(name) + where + " already exists"};
    auto opened = open_existing();
    if (opened) return opened;
    const Errc code = opened.error().code;
    if (code != Errc::not_found && code != Errc::creator_died) return opened;
    // The entry outlived its segment: forget it and create anew below.
    if (code == Errc::creator_died) (void)shm::Segment::reclaim_if_abandoned(shm_name, options_.ready_timeout);
    registry->erase(entry);
  }

  // Not registered. A segment may still exist if its creator died between
  // creating it and registering it: adopt it if ready, reclaim if abandoned.
  for (int attempt = 0; attempt < 4; ++attempt) {
    auto created = shm::Segment::create(shm_name, name, shm::SegmentKind::lock, sizeof(LockRecord),
                                        permissions_of(options_));
    if (!created) {
      if (created.error().code != Errc::already_exists) return std::move(created).error();
      auto adopted = open_existing();
      if (adopted) {
        if (mode == OpenMode::create)
          return Error{Errc::already_exists, "lock '" + std::string(name) + where + " already exists"};
        if (auto added = registry->add(name, shm::SegmentKind::lock, static_cast<std::uint32_t>(options.scope), params);
            !added)
          return std::move(added).error();
        return adopted;
      }
      const Errc code = adopted.error().code;
      if (code == Errc::creator_died || code == Errc::not_ready) {
        auto reclaimed = shm::Segment::reclaim_if_abandoned(shm_name, options_.ready_timeout);
        if (!reclaimed) return std::move(reclaimed).error();
        if (!*reclaimed && code == Errc::not_ready) return adopted;
        continue;
      }
      if (code == Errc::not_found) continue;  // removed meanwhile: create again
      return adopted;
    }
    auto* record = reinterpret_cast<LockRecord*>(created->body());
    if (int rc = record->mutex.init(); rc != 0) {
      (void)shm::Segment::unlink(shm_name);
      return Error{Errc::system, "lock '" + std::string(name) + "': cannot initialise its mutex: " + std::strerror(rc)};
    }
    record->layout_version = detail::kLockLayoutVersion;
    record->scope = static_cast<std::uint32_t>(options.scope);
    created->publish();
    if (auto added = registry->add(name, shm::SegmentKind::lock, static_cast<std::uint32_t>(options.scope), params);
        !added) {
      (void)shm::Segment::unlink(shm_name);
      return std::move(added).error();
    }
    return make_lock_impl(name, std::move(created).value(), record);
  }
  return Error{Errc::timed_out, "lock '" + std::string(name) + where + " kept changing while creating it; retry"};
}

}  // namespace colo
