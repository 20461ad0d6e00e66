#include "colo/object.hpp"

namespace colo {

const char* scope_name(Scope scope) noexcept {
  switch (scope) {
    case Scope::host: return "host";
    case Scope::cluster: return "cluster";
  }
  return "unknown";
}

const char* to_string(ObjectKind kind) noexcept {
  switch (kind) {
    case ObjectKind::lock: return "lock";
    case ObjectKind::topic: return "topic";
    case ObjectKind::queue: return "queue";
    case ObjectKind::lock_table: return "lock-table";
  }
  return "unknown";
}

}  // namespace colo
