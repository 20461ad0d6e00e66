// colo/names.hpp — validation of namespace and object names.
#pragma once

#include <string>
#include <string_view>

#include "colo/error.hpp"

namespace colo {

inline constexpr std::size_t kMaxObjectNameBytes = 200;
inline constexpr std::size_t kMaxNamespaceBytes = 32;

// Object names: 1..200 bytes of [A-Za-z0-9._/-]; no leading or trailing '/',
// no empty, "." or ".." path component. (The allowed set is ASCII, so any
// valid name is valid UTF-8; any non-ASCII byte is refused.)
Result<void> validate_object_name(std::string_view name);

// A key of a cluster-scope lock table: 1..200 bytes of [A-Za-z0-9._:-], not
// "." or "..". colod names its backend lock TABLE/KEY ("orders/order:42"),
// so that other clients can lock the same key by that name.
Result<void> validate_cluster_key(std::string_view key);
// A name a backend lock may have: an object name whose components may also
// hold ':' (a named cluster lock's name, or TABLE/KEY).
Result<void> validate_backend_lock_name(std::string_view name);

// Namespaces: 1..32 bytes of [A-Za-z0-9_-] (no '.', which separates the
// parts of a segment name).
Result<void> validate_namespace(std::string_view ns);

// The namespace from COLO_NS, or "default".
std::string default_namespace();

// The directory of the namespaces' segments: COLO_SHM_DIR, or "/dev/shm".
// Every process of a namespace must use the same one (docs/security.md:
// a directory only the namespace's owner may write to cannot be squatted).
std::string default_shm_dir();

// Where the namespace's colod listens for control requests (an ipc://
// socket path): /run/colo/<ns>/colod.sock for root; for other users
// $XDG_RUNTIME_DIR/colo/<ns>/colod.sock, else /tmp/colo-<uid>/<ns>/colod.sock.
std::string default_control_socket(const std::string& ns);

}  // namespace colo
