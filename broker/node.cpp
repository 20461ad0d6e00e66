#include "colo/node.hpp"

#include <algorithm>
#include <cstring>
#include <functional>

#include "channel_state.hpp"
#include "lock_record.hpp"
#include "lock_table_view.hpp"
#include "mapped_object.hpp"
#include "namespace_files.hpp"
#include "registry.hpp"

namespace colo {
namespace {

using detail::LockRecord;
using detail::MappedObject;

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
  options.shm_dir = detail::normalised_dir(options.shm_dir);
  if (auto ok = detail::check_namespace_dir(options.shm_dir); !ok) return std::move(ok).error();
  const detail::NamespaceFiles files(options.shm_dir, options.ns);
  auto registry = detail::Registry::open_or_create(files.registry(), permissions_of(options), options.ready_timeout);
  if (!registry) {
    // Only /dev/shm lets anyone create a namespace first ("squatting"); a
    // namespace directory's errors say what they say.
    if (registry.error().code != Errc::permission_denied || !files.in_dev_shm()) return std::move(registry).error();
    return Error{Errc::permission_denied, "namespace '" + options.ns + "': " + registry.error().message +
                                              ". Whoever creates a namespace's registry first owns the namespace. "
                                              "If that is not its rightful owner, remove its files as root (rm "
                                              "/dev/shm/colo." + options.ns +
                                              ".*) and create it again; a namespace directory only its owner may "
                                              "write to (COLO_SHM_DIR, NodeOptions::shm_dir) cannot be taken first "
                                              "(docs/security.md)"};
  }
  return Node(std::move(options), std::move(registry).value());
}

std::string Node::shm_name_of(std::string_view object_name) const {
  return detail::NamespaceFiles(options_.shm_dir, options_.ns).object(object_name);
}

std::string Node::file_of(const std::string& shm_name) { return shm::segment_file(shm_name); }

// What differs between kinds when an object is created or opened.
struct detail::ObjectSpec {
  shm::SegmentKind kind;
  std::uint32_t scope;
  std::uint64_t params[4];  // creation parameters, compared with the registry entry
  std::size_t body_size;
  std::function<Result<void>(shm::Segment&)> init;  // creator: initialise the body, before publish
  // Opener: validate the body; with `compare`, also that it matches params.
  std::function<Result<void>(shm::Segment&, bool compare)> check;
  std::function<std::string(const std::uint64_t (&)[4], std::uint32_t scope)> describe;  // params in words
};

Result<std::unique_ptr<MappedObject>> Node::open_object(std::string_view name, OpenMode mode,
                                                        const detail::ObjectSpec& spec) {
  if (auto ok = validate_object_name(name); !ok) return std::move(ok).error();
  const std::string shm_name = shm_name_of(name);
  const std::string what = std::string(shm::kind_name(spec.kind)) + " '" + std::string(name) + "' in namespace '" +
                           options_.ns + "'";
  auto mapped = [](shm::Segment segment) { return std::make_unique<MappedObject>(MappedObject{std::move(segment)}); };

  auto open_existing = [&]() -> Result<std::unique_ptr<MappedObject>> {
    auto segment = shm::Segment::open(shm_name, spec.kind, options_.ready_timeout);
    if (!segment) {
      if (segment.error().code == Errc::not_found)
        return Error{Errc::not_found, what + " does not exist; create it (`colo create " + shm::kind_name(spec.kind) +
                                          " " + std::string(name) + "`, or OpenMode::create_or_open)"};
      return std::move(segment).error();
    }
    if (auto ok = spec.check(*segment, mode != OpenMode::open); !ok) return std::move(ok).error();
    return mapped(std::move(segment).value());
  };
  if (mode == OpenMode::open) return open_existing();

  auto registry = registry_->lock();
  if (!registry) return std::move(registry).error();

  if (detail::RegistryEntry* entry = registry->find(name)) {
    const auto kind = static_cast<shm::SegmentKind>(entry->kind);
    if (kind != spec.kind)
      return Error{Errc::kind_mismatch, "'" + std::string(name) + "' in namespace '" + options_.ns +
                                            "' exists as a " + shm::kind_name(kind) + ", not a " +
                                            shm::kind_name(spec.kind)};
    if (entry->scope != spec.scope || std::memcmp(entry->params, spec.params, sizeof spec.params) != 0)
      return Error{Errc::parameter_mismatch, what + " exists with " + spec.describe(entry->params, entry->scope) +
                                                 ", not " + spec.describe(spec.params, spec.scope)};
    if (mode == OpenMode::create) return Error{Errc::already_exists, what + " already exists"};
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
    auto created = shm::Segment::create(shm_name, name, spec.kind, spec.body_size, permissions_of(options_));
    if (!created) {
      if (created.error().code != Errc::already_exists) return std::move(created).error();
      auto adopted = open_existing();
      if (adopted) {
        if (mode == OpenMode::create) return Error{Errc::already_exists, what + " already exists"};
        if (auto added = registry->add(name, spec.kind, spec.scope, spec.params); !added) return std::move(added).error();
        return adopted;
      }
      const Errc code = adopted.error().code;
      if (code == Errc::creator_died || code == Errc::not_ready || code == Errc::corrupt) {
        auto reclaimed = shm::Segment::reclaim_if_abandoned(shm_name, options_.ready_timeout);
        if (!reclaimed) return std::move(reclaimed).error();
        if (!*reclaimed && code != Errc::creator_died) return adopted;
        continue;
      }
      if (code == Errc::not_found) continue;  // removed meanwhile: create again
      return adopted;
    }
    if (auto ok = spec.init(*created); !ok) {
      (void)shm::Segment::unlink(shm_name);
      return Error{ok.error().code, what + ": " + ok.error().message};
    }
    created->publish();
    if (auto added = registry->add(name, spec.kind, spec.scope, spec.params); !added) {
      (void)shm::Segment::unlink(shm_name);
      return std::move(added).error();
    }
    auto object = mapped(std::move(created).value());
    object->created = true;
    return object;
  }
  return Error{Errc::timed_out, what + " kept changing while creating it; retry"};
}

Result<Lock> Node::lock(std::string_view name, OpenMode mode, LockOptions options) {
  if (options.scope != Scope::host && options.scope != Scope::cluster)
    return Error{Errc::invalid_argument, "lock '" + std::string(name) + "': unknown scope"};
  detail::ObjectSpec spec{shm::SegmentKind::lock, static_cast<std::uint32_t>(options.scope), {}, sizeof(LockRecord),
                          nullptr, nullptr, nullptr};
  spec.init = [&](shm::Segment& segment) -> Result<void> {
    auto* record = reinterpret_cast<LockRecord*>(segment.body());
    if (int rc = record->mutex.init(); rc != 0)
      return Error{Errc::system, std::string("cannot initialise its mutex: ") + std::strerror(rc)};
    record->layout_version = detail::kLockLayoutVersion;
    record->scope = static_cast<std::uint32_t>(options.scope);
    return Ok{};
  };
  spec.check = [&](shm::Segment& segment, bool compare) -> Result<void> {
    auto record = checked_lock_record(segment, name);
    if (!record) return std::move(record).error();
    if (compare && (*record)->scope != static_cast<std::uint32_t>(options.scope))
      return Error{Errc::parameter_mismatch, "lock '" + std::string(name) + "' exists with scope " +
                                                 scope_name(static_cast<Scope>((*record)->scope)) + ", not " +
                                                 scope_name(options.scope)};
    return Ok{};
  };
  spec.describe = [](const std::uint64_t (&)[4], std::uint32_t scope) {
    return std::string("scope ") + scope_name(static_cast<Scope>(scope));
  };
  auto object = open_object(name, mode, spec);
  if (!object) return std::move(object).error();
  auto* record = reinterpret_cast<LockRecord*>((*object)->segment.body());
  return Lock(std::string(name), std::move(object).value(), record,
              record->scope == static_cast<std::uint32_t>(Scope::cluster) ? registry_ : nullptr);
}

Result<LockTable> Node::lock_table(std::string_view name, OpenMode mode, LockTableOptions options) {
  if (mode != OpenMode::open)
    if (auto ok = detail::check_table_options(name, options); !ok) return std::move(ok).error();
  const bool cluster = options.scope == Scope::cluster;
  detail::ObjectSpec spec{shm::SegmentKind::lock_table,
                          static_cast<std::uint32_t>(options.scope),
                          {options.capacity, options.max_key_bytes, 0, 0},
                          detail::table_body_bytes(options.capacity, cluster, options.max_key_bytes),
                          nullptr, nullptr, nullptr};
  spec.init = [&](shm::Segment& segment) { return detail::init_table(segment, options); };
  spec.check = [&](shm::Segment& segment, bool compare) -> Result<void> {
    if (segment.body_size() < sizeof(detail::TableGeometry))
      return Error{Errc::corrupt, "lock table '" + std::string(name) + "': segment too small"};
    const auto& g = reinterpret_cast<const detail::TableHeader*>(segment.body())->geometry;
    if (compare && (g.scope != static_cast<std::uint32_t>(options.scope) || g.capacity != options.capacity ||
                    g.max_key != options.max_key_bytes))
      return Error{Errc::parameter_mismatch, "lock table '" + std::string(name) + "' exists with " +
                                                 spec.describe({g.capacity, g.max_key, 0, 0}, g.scope) + ", not " +
                                                 spec.describe(spec.params, spec.scope)};
    return Ok{};
  };
  spec.describe = [](const std::uint64_t (&p)[4], std::uint32_t scope) {
    return std::string("scope ") + scope_name(static_cast<Scope>(scope)) + ", capacity " + std::to_string(p[0]) +
           ", max key " + std::to_string(p[1]) + " bytes";
  };
  auto object = open_object(name, mode, spec);
  if (!object) return std::move(object).error();
  auto view = detail::open_table(name, std::move(object).value());
  if (!view) return std::move(view).error();
  if ((*view)->scope == Scope::cluster) (*view)->registry = registry_;
  return LockTable(std::move(view).value());
}

Result<std::shared_ptr<detail::ChannelState>> Node::open_channel(std::string_view name, OpenMode mode, bool queue,
                                                               std::uint64_t capacity, std::uint32_t max_message,
                                                               bool acks, std::uint32_t max_deliveries,
                                                               std::uint32_t history, bool exclusive) {
  shm::RingConfig config;
  config.kind = queue ? shm::RingKind::queue : shm::RingKind::topic;
  config.capacity = capacity;
  config.max_message = max_message;
  config.acks = acks;
  config.max_deliveries = acks ? max_deliveries : 0;
  config.history = queue ? 0 : history;
  config.exclusive = exclusive;
  const std::string kind = queue ? "queue" : "topic";
  if (mode != OpenMode::open)
    if (auto ok = shm::Ring::validate(config); !ok)
      return Error{Errc::invalid_argument, kind + " '" + std::string(name) + "': " + ok.error().message};
  detail::ObjectSpec spec{queue ? shm::SegmentKind::queue : shm::SegmentKind::topic,
                          static_cast<std::uint32_t>(Scope::host),
                          // word 3: max deliveries (queue with acks) or history (topic)
                          {capacity, max_message,
                           (acks ? detail::kAcksFlag : 0) | (exclusive ? detail::kExclusiveFlag : 0),
                           queue ? config.max_deliveries : config.history},
                          shm::Ring::bytes_for(capacity),
                          nullptr, nullptr, nullptr};
  spec.init = [&](shm::Segment& segment) -> Result<void> {
    auto ring = shm::Ring::create(segment.body(), segment.body_size(), config);
    if (!ring) return std::move(ring).error();
    return Ok{};
  };
  spec.check = [&](shm::Segment& segment, bool compare) -> Result<void> {
    auto ring = shm::Ring::attach(segment.body(), segment.body_size());
    if (!ring) return Error{ring.error().code, kind + " '" + std::string(name) + "': " + ring.error().message};
    const auto found = ring->config();
    if (compare && (found.capacity != config.capacity || found.max_message != config.max_message ||
                    found.acks != config.acks || (acks && found.max_deliveries != config.max_deliveries) ||
                    found.history != config.history || found.exclusive != config.exclusive))
      return Error{Errc::parameter_mismatch, kind + " '" + std::string(name) + "' exists with other parameters"};
    return Ok{};
  };
  spec.describe = [queue](const std::uint64_t (&p)[4], std::uint32_t) {
    std::string out = "capacity " + std::to_string(p[0]) + ", max message " + std::to_string(p[1]);
    if ((p[2] & detail::kAcksFlag) != 0) out += ", acks, max deliveries " + std::to_string(p[3]);
    if (!queue && p[3] != 0) out += ", history " + std::to_string(p[3]);
    if ((p[2] & detail::kExclusiveFlag) != 0) out += ", exclusive publisher";
    return out;
  };
  auto object = open_object(name, mode, spec);
  if (!object) return std::move(object).error();
  auto& segment = (*object)->segment;
  auto ring = shm::Ring::attach(segment.body(), segment.body_size());
  if (!ring) return std::move(ring).error();
  auto state = std::make_shared<detail::ChannelState>(
      detail::ChannelState{std::string(name), std::move(object).value(), *ring, nullptr});
  if (queue && state->ring.config().acks) {
    const std::string dlq_name = std::string(name) + ".dlq";
    // Opening only: a removed dead-letter queue is not quietly re-created
    // (messages past their limit are then delivered with deliveries() telling).
    auto dlq = open_channel(dlq_name, mode == OpenMode::open ? OpenMode::open : OpenMode::create_or_open, true,
                            state->ring.config().capacity, state->ring.config().max_message, false, 0, 0, false);
    if (dlq) {
      state->dead_letters = std::move(dlq).value();
    } else if (mode != OpenMode::open || dlq.error().code != Errc::not_found) {
      // All or nothing: a queue this call created goes again with its
      // dead-letter queue, so that a retry does not find half of it.
      const bool undo = state->mapping->created;
      if (undo) {
        state.reset();
        (void)remove(name);
      }
      return Error{dlq.error().code, "dead-letter queue of '" + std::string(name) + "': " + dlq.error().message +
                                         (undo ? "; so the queue was not created either" : "")};
    }
  }
  return state;
}

Result<Topic> Node::topic(std::string_view name, OpenMode mode, TopicOptions options) {
  auto state = open_channel(name, mode, false, options.capacity, options.max_message, false, 0, options.history,
                            options.exclusive_publisher);
  if (!state) return std::move(state).error();
  return Topic(std::move(state).value());
}

Result<Queue> Node::queue(std::string_view name, OpenMode mode, QueueOptions options) {
  auto state = open_channel(name, mode, true, options.capacity, options.max_message, options.acks,
                            options.max_deliveries, 0, options.exclusive_publisher);
  if (!state) return std::move(state).error();
  return Queue(std::move(state).value());
}

}  // namespace colo
