// colo/object.hpp — what every object of a namespace has: a kind and a scope.
#pragma once

#include <cstdint>

namespace colo {

// Stored in shared memory (registry entries, lock records): values are part
// of the format.
enum class Scope : std::uint32_t {
  host = 1,     // this host only
  cluster = 2,  // every host: escalated through colod to ZooKeeper, etcd or Redis
};
// "host", "cluster" (a static string).
const char* scope_name(Scope scope) noexcept;

enum class ObjectKind : std::uint32_t { lock, topic, queue, lock_table };
// "lock", "topic", "queue", "lock-table" (a static string).
const char* to_string(ObjectKind kind) noexcept;

}  // namespace colo
