// Placeholder: the etcd backend is being written.
#include "backends/backend.hpp"

namespace colo::bridge {

Result<std::unique_ptr<LockBackend>> open_etcd(const BackendSettings&) {
  return Error{Errc::not_supported, "the etcd lock backend is not built yet"};
}

}  // namespace colo::bridge
