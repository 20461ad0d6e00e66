// tests/chaos/backend_link.hpp — how a colod inside a network namespace
// reaches the lock servers (ZooKeeper, etcd, Redis) that listen on the
// loopback of the namespace the chaos run started in.
//
//   network namespace of host alpha          the run's own namespace
//   +-----------------------------+          +------------------------------+
//   | colod alpha                 |          |                              |
//   |   -> 127.0.0.1:21810 -------+--(this process)--> 127.0.0.1:21810 ZooKeeper
//   |   -> 127.0.0.1:23790 -------+--(this process)--> 127.0.0.1:23790 etcd
//   |   -> 127.0.0.1:63790 -------+--(this process)--> 127.0.0.1:63790 Redis
//   +-----------------------------+          +------------------------------+
//
// One process per host: it makes its listening sockets inside the host's
// namespace (setns(2), then back: a socket stays in the namespace it was
// made in) and connects out from its own, then copies bytes both ways. It is
// a process of its own, not a thread of the driver, so that the chaos
// schedule can cut a host off from its lock servers: SIGSTOP holds every
// byte (a silent partition: colod's requests time out and its leases run
// out), kill -9 resets every connection and refuses new ones until it is
// started again.
//
// Written here rather than with socat: socat cannot listen in one network
// namespace and connect from another.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "records.hpp"

namespace colo::chaos {

// The process body: listens on 127.0.0.1:PORT in `netns` (a name under
// /var/run/netns) for each port and forwards each connection to
// 127.0.0.1:PORT of the caller's namespace, until the run's phase reaches
// drain. Returns 0 then, 3 if it cannot set up (why on stderr).
int run_backend_link(SharedRecords& records, const std::string& netns, const std::vector<std::uint16_t>& ports);

}  // namespace colo::chaos
