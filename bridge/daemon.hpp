// bridge/daemon.hpp — colod's event loop: federation of cluster topics
// between hosts over ZeroMQ, with CURVE, and the local control socket.
//
// SOCKETS (one thread, one zmq_poll loop; every send is non-blocking)
//   router   ROUTER bound on [node].listen: peers' DEALERs connect here and
//            send hello/data/lost; we answer hello/subscribe/credit.
//   dealer[] one DEALER per configured peer, connected to its listen
//            endpoint: we send hello/data/lost, it answers.
//   zap      REP on inproc://zeromq.zap.01 when CURVE is on: admits only the
//            public keys of the configured peers (ZAP, RFC 27).
//   monitor  PAIR fed by zmq_socket_monitor(router): counts handshakes that
//            failed (garbage, wrong key) and dropped connections (a frame
//            over [limits].max_frame makes libzmq drop the connection).
//   control  ROUTER on ipc://<control socket>: `colo peers` asks for status.
//
// FEDERATION OF A CLUSTER TOPIC T (schemas/federation.capnp has the frames)
//   Origin side: for each peer that subscribed to T, a lossy subscriber of
//   the local ring T started at the sequence the peer asked for. Messages
//   published on this host (origin() == 0) go out as data frames while the
//   peer's credit lasts; relayed ones (from other hosts) are never sent on:
//   no loops, whatever the topology. A lossy cursor never holds local
//   writers back; if it is lapped, the peer is told how many it lost.
//   Receiving side: data from peer P is published into T as relayed (origin
//   P, origin sequence), only if its sequence is above the last one
//   delivered from P (so a resent message is never delivered twice), and
//   credit is returned as it is published. On every new connection (a hello
//   from a new routing id or incarnation) we subscribe again from that last
//   sequence + 1, read back from our own ring at start-up: a restart of
//   either side or a dropped link loses nothing the origin still retains.
//   Nothing is buffered beyond one encoded frame per stream.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "colo/node.hpp"
#include "config.hpp"
#include "log.hpp"

namespace colo::bridge {

// Counters of the daemon, as `colo peers` and the status reply show them.
struct PeerCounters {
  std::uint64_t messages_in = 0, messages_out = 0, bytes_in = 0, bytes_out = 0;
  std::uint64_t gaps_filled = 0;  // streams resumed by a subscribe after a (re)connection
  std::uint64_t lost = 0;         // messages the peer told us it no longer had for us
  std::uint64_t duplicates = 0;   // data frames at or below the last delivered sequence (dropped)
};

struct DaemonCounters {
  std::uint64_t bad_frames = 0;         // malformed or unexpected frames (dropped, logged)
  std::uint64_t rejected_peers = 0;     // ZAP refusals: keys not in the allow-list
  std::uint64_t failed_handshakes = 0;  // ZMTP/CURVE handshakes that failed on the listen socket
  std::uint64_t dropped_connections = 0;
};

class Daemon {
 public:
  explicit Daemon(Config config);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Opens the namespace, the topics and the sockets. Errors name what failed.
  Result<void> start();
  // Runs until stop_requested() is set (SIGTERM/SIGINT); returns the exit status.
  int run(const std::atomic<bool>& stop_requested);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Z85 key helpers (CURVE): a new key pair, and the public key of a secret one.
struct KeyPair {
  std::string public_key, secret_key;  // 40 characters each
};
Result<KeyPair> generate_keypair();
Result<std::string> public_key_of(const std::string& secret_key);

}  // namespace colo::bridge
