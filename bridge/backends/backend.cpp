#include "backends/backend.hpp"

namespace colo::bridge {

Result<std::unique_ptr<LockBackend>> open_backend(const BackendSettings& settings) {
  if (settings.kind == "zookeeper") return open_zookeeper(settings);
  if (settings.kind == "etcd") return open_etcd(settings);
  if (settings.kind == "redis") return open_redis(settings);
  return Error{Errc::invalid_argument, "unknown lock backend '" + settings.kind +
                                           "': expected zookeeper, etcd or redis (Consul is not supported)"};
}

}  // namespace colo::bridge
