// Placeholder: the redis backend is being written.
#include "backends/backend.hpp"

namespace colo::bridge {

Result<std::unique_ptr<LockBackend>> open_redis(const BackendSettings&) {
  return Error{Errc::not_supported, "the redis lock backend is not built yet"};
}

}  // namespace colo::bridge
