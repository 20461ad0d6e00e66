// bridge/daemon.hpp — colod's event loop: federation of cluster topics and
// queues between hosts over ZeroMQ, with CURVE, and the local control socket.
// Beside the loop, in threads of their own: cluster-scope locks
// (lock_service.hpp) and links to other systems such as Kafka
// (links/link_service.hpp); the loop serves their status and metrics.
//
// SOCKETS (one thread, one loop; every send is non-blocking)
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
//   rings    the loop sleeps in io_uring (uring_wait.hpp, Linux 6.7+) on
//            the sockets' descriptors and, registered as a sleeping reader,
//            on each cluster topic's futex word: a publish wakes the loop
//            itself, so a message leaves at once, not at the next timeout.
//   wake     without io_uring's futex wait: an eventfd (polled as a raw fd)
//            that one Waker thread per cluster topic, asleep on the ring,
//            writes when a message is published while the loop sleeps.
//
// FRAMES: what a stream has ready within credit goes out as one `batch`
// frame (up to 512 messages / 256 KiB; one message alone as `data`), so a
// busy stream pays one ZeroMQ message and one Cap'n Proto read per batch.
//
// FEDERATION OF A CLUSTER TOPIC T (schemas/federation.capnp has the frames)
//   Origin side, per peer that subscribed to T:
//   - a lossy subscriber of our ring T, started at the sequence the peer
//     asked for: messages published on this host (origin() == 0) go out as
//     data frames while the peer's credit lasts. Relayed ones (from other
//     hosts) are never sent on: no loops, whatever the topology.
//   - for `block` topics, a bridge subscriber (ReaderMode::bridge) that
//     holds our local writers back at the oldest message of ours the peer
//     has not yet *received* (its credit frames carry receivedThrough), so a
//     dropped link or a restart of the peer loses nothing. Relayed writes
//     are not held back by it, and local writers leave them a quarter of
//     the ring: inbound federation never waits for outbound federation, so
//     two busy hosts cannot deadlock. Only if relays fill that quarter too
//     do they lap a bridge cursor; the peer is then told what it lost.
//   Receiving side: data from peer P is published into T as relayed (origin
//   P, origin sequence) if its sequence is above the last one we have from
//   P (a resent message is never delivered twice). While our ring has no
//   room, frames wait in order in memory: at most `credit` per peer and
//   topic, since credit is returned only for what we published, and what P
//   sends beyond the credit we granted is dropped and counted (over_credit).
//   Each subscribe starts a new epoch of the stream; frames of an earlier
//   one (in flight when we subscribed again) are dropped: the new stream
//   sends them again from where we are. On every new
//   connection (a hello from a new routing id or incarnation) we subscribe
//   again from the sequence after the last one we have, read back from our
//   own ring at start-up, so a restart of either side or a dropped link
//   loses nothing the origin still retains, and what it no longer retains
//   is reported (lost frames) and counted.
//
// CLUSTER QUEUE Q WITH HOME H (the same frames, per queue and peer)
//   Every host has a local ring Q; its producers and consumers use it as a
//   host queue. Messages move between hosts only through H (a star):
//
//     non-home B                          home H
//     ring Q ──take (no consumers here,──▶ data ──▶ ring Q (relayed, origin B)
//             or backlog > 4 x credit)
//     ring Q ◀── data ◀── take (B's credit) ── ring Q
//            credit{n}: B's consumers want n more (demand, not publication)
//
//   So a message is consumed where it was produced when that host has
//   consumers that keep up (memory speed, no network), and otherwise by any
//   host whose consumers ask. Each move is one take from a ring (exclusive:
//   the ring's take cursor) and one publish into another, so a message is in
//   exactly one ring, or in flight, at any time.
//   In flight: the sender copies what it takes into `unconfirmed` with a
//   per-stream wire sequence, sends it within the peer's credit and drops it
//   when the peer's receivedThrough covers it. After a dropped link or a
//   restart of the receiver, the receiver subscribes again from the sequence
//   after the last one it has (read back from its ring, relayed records
//   carry it), and the sender sends again what is not confirmed: nothing is
//   lost or delivered twice. A clean stop of the sender puts its unconfirmed
//   messages back into its own ring (at least once, like a consumer that
//   dies before its ack); a SIGKILLed sender loses them (at most `credit`
//   per peer and queue): known limitation, see docs/colod.md.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
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
  // Messages it sent beyond the credit we granted (dropped): a colod never
  // does; a sender that ignores credit cannot fill our memory.
  std::uint64_t over_credit = 0;
  // Streams it told us to resume lower (a rewind frame): we held sequences
  // of it that it never sent (a forged frame, or its ring is new).
  std::uint64_t rewinds = 0;
};

struct DaemonCounters {
  std::uint64_t bad_frames = 0;         // malformed or unexpected frames (dropped, logged)
  std::uint64_t rejected_peers = 0;     // ZAP refusals: keys not in the allow-list
  std::uint64_t failed_handshakes = 0;  // ZMTP/CURVE handshakes that failed on the listen socket
  std::uint64_t dropped_connections = 0;
  // Data of a stream we asked to restart: before its connection's hello (a
  // reconnect), or of an earlier epoch (see Subscribe.epoch): dropped, sent
  // again in the new stream.
  std::uint64_t early_frames = 0;
  // Hellos from another connection naming a peer whose session is alive,
  // with another incarnation: refused (without CURVE anyone may claim a
  // name; the same colod reconnecting is taken at once, another claim once
  // the old session is silent).
  std::uint64_t refused_sessions = 0;
  // Sleeps of the event loop that a publish into a cluster topic ended
  // (io_uring: the loop sleeps on the rings' futex words itself; with
  // waker threads these show as their eventfd's wake-ups, not counted).
  std::uint64_t ring_wakes = 0;
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

  // The code that reads what peers and control clients send, without the
  // sockets: for the fuzz targets (tests/fuzz/) and their replay test. Call
  // after start(), from the thread that would run(), never during run().
  // Bad input is counted and logged as bad frames, as from a socket.
  //   feed_listen_frame: a PeerFrame as if it came on the listen socket from
  //     the connection `routing_id` (hello, data, batch, lost).
  //   feed_link_frame: a PeerFrame as if the configured peer `peer_name`
  //     answered on our link to it (hello, subscribe, credit); false if there
  //     is no such peer.
  //   answer_control: a ControlRequest; returns the ControlReply's bytes.
  void feed_listen_frame(const std::string& routing_id, std::span<const std::byte> frame);
  bool feed_link_frame(const std::string& peer_name, std::span<const std::byte> frame);
  std::vector<std::byte> answer_control(std::span<const std::byte> request);

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
