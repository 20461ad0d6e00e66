// Placeholder: the zookeeper backend is being written.
#include "backends/backend.hpp"

namespace colo::bridge {

Result<std::unique_ptr<LockBackend>> open_zookeeper(const BackendSettings&) {
  return Error{Errc::not_supported, "the zookeeper lock backend is not built yet"};
}

}  // namespace colo::bridge
