// colo/node.hpp — a namespace on this host and its registry of objects.
//
// A Node is the entry point of libcolo: it opens (or creates) the namespace's
// registry segment, /dev/shm/colo.<ns>.registry, and creates or opens the
// objects of the namespace, each in its own segment /dev/shm/colo.<ns>.obj.<name>
// ('/' in names becomes '^'); or the same files in a namespace directory
// (NodeOptions::shm_dir) instead of /dev/shm. The registry lists every object with its kind,
// scope, creator, creation time and creation parameters; the counters live in
// each object's own segment, so reading them disturbs nobody.
//
// Creation is serialised by the registry's robust mutex, so "create" and
// "create or open" are race-free between processes; "open" does not touch the
// registry at all.
#pragma once

#include <sys/types.h>  // gid_t

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "colo/channel.hpp"
#include "colo/error.hpp"
#include "colo/lock.hpp"
#include "colo/lock_table.hpp"
#include "colo/names.hpp"
#include "colo/object.hpp"

namespace colo {

namespace detail {
class Registry;
struct NodeAccess;  // libcolo's own access to a Node's registry
struct MappedObject;
struct ObjectSpec;
struct ChannelState;
}

enum class OpenMode {
  open,            // must exist
  create,          // must not exist
  create_or_open,  // either; parameters must match if it exists
};

struct NodeOptions {
  std::string ns = default_namespace();           // COLO_NS, or "default"
  std::optional<gid_t> group;                     // share segments with this group (mode 0660)
  std::chrono::milliseconds ready_timeout{2000};  // bounded wait for a segment being created
  // Where the namespace's segments are: /dev/shm, or a directory on a tmpfs
  // that only its owner (root or this user) and their group may write to,
  // which no other user can take the namespace in first. Default:
  // COLO_SHM_DIR, else /dev/shm. Every process of the namespace must agree.
  std::string shm_dir = default_shm_dir();
};

struct LockOptions {
  Scope scope = Scope::host;
};

// What `colo ls` says of an object, from its registry entry and its segment.
enum class ObjectState {
  ready,         // registered, its segment ready
  creating,      // its creator is still initialising it
  abandoned,     // its creator died before it was ready (`colo gc` removes it)
  missing,       // registered, but its segment is gone
  unregistered,  // a ready segment with no registry entry
  unreadable,    // this process may not open the segment (ObjectInfo::problem says why)
  corrupt,       // the segment fails validation (ObjectInfo::problem says why)
};
// "ready", "creating", ... (a static string).
const char* to_string(ObjectState state) noexcept;

// One row of `colo ls`: what the registry and the segment say of an object.
struct ObjectInfo {
  std::string name;
  std::optional<ObjectKind> kind;  // unknown if neither the registry nor a valid segment header says
  Scope scope = Scope::host;
  std::string shm_name;     // as Node::shm_name_of says: Node::file_of(shm_name) is the file
  std::uint64_t size_bytes = 0;
  std::uint32_t creator_pid = 0;
  bool creator_alive = false;
  std::uint64_t created_realtime_ns = 0;
  ObjectState state = ObjectState::ready;
  std::string problem;  // unreadable or corrupt: why (a sentence fragment)
  std::optional<LockStats> lock;        // for ready locks
  std::optional<LockTableStats> lock_table;  // for ready lock tables, from info() only (list() does not scan them)
  std::optional<ChannelStats> channel;  // for ready topics and queues
};

// The state as `colo ls` prints it: "ready", or "corrupt: <problem>".
std::string state_text(const ObjectInfo& info);

struct GcReport {
  std::vector<std::string> removed_segments;         // abandoned before ready
  std::vector<std::string> removed_registry_entries;  // their segment is gone
};

class Node {
 public:
  static Result<Node> open(NodeOptions options = {});

  Result<Lock> lock(std::string_view name, OpenMode mode = OpenMode::create_or_open, LockOptions options = {});
  // A table of locks keyed by byte strings (colo/lock_table.hpp). Opening
  // an existing table with create_or_open checks scope, capacity and key
  // size against `options`; OpenMode::open takes the table as it is.
  Result<LockTable> lock_table(std::string_view name, OpenMode mode = OpenMode::create_or_open,
                               LockTableOptions options = {});
  Result<Topic> topic(std::string_view name, OpenMode mode = OpenMode::create_or_open, TopicOptions options = {});
  // With acks, also creates or opens the dead-letter queue NAME.dlq.
  Result<Queue> queue(std::string_view name, OpenMode mode = OpenMode::create_or_open, QueueOptions options = {});

  Result<std::vector<ObjectInfo>> list() const;
  // Changes whenever an object of the namespace is created or removed (read
  // from the registry, no lock taken): poll it to know when to list() again.
  std::uint64_t generation() const noexcept;
  Result<ObjectInfo> info(std::string_view name) const;
  // Removes the object's segment and registry entry. Processes that have it
  // open keep using their mapping; new opens see it gone.
  Result<void> remove(std::string_view name);
  Result<GcReport> gc(bool dry_run);

  const std::string& ns() const noexcept { return options_.ns; }
  // Segment name of an object of this namespace: a file name in /dev/shm
  // (without the leading '/'), or the file's absolute path in shm_dir.
  std::string shm_name_of(std::string_view object_name) const;
  // The file of a segment name (shm_name_of, ObjectInfo::shm_name).
  static std::string file_of(const std::string& shm_name);

  Node(Node&&) noexcept;
  Node& operator=(Node&&) noexcept;
  ~Node();

 private:
  friend struct detail::NodeAccess;
  Node(NodeOptions options, std::unique_ptr<detail::Registry> registry) noexcept;
  // `deep`: also the stats that scan the object (a lock table's entries).
  Result<ObjectInfo> describe(std::string_view name, bool registered, bool deep) const;
  // Creates or opens an object's segment, kept consistent with the registry.
  Result<std::unique_ptr<detail::MappedObject>> open_object(std::string_view name, OpenMode mode,
                                                            const detail::ObjectSpec& spec);
  Result<std::shared_ptr<detail::ChannelState>> open_channel(std::string_view name, OpenMode mode, bool queue,
                                                             std::uint64_t capacity, std::uint32_t max_message,
                                                             bool acks, std::uint32_t max_deliveries, std::uint32_t history,
                                                             bool exclusive);

  NodeOptions options_;
  std::shared_ptr<detail::Registry> registry_;  // shared with cluster-scope objects, which ring its doorbell
};

}  // namespace colo
