// tools/common/colod_client.hpp — the tools' side of colod's control socket
// (schemas/control.capnp): one request, one reply, read with limits.
// Used by `colo peers`, `colo federate`, `colo links`, `colo stat` and `colo top`, and by
// the harness and benchmarks to watch the colod they start.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "colo/error.hpp"

namespace colo::cli {

struct ColodPeer {
  std::string name, endpoint;
  bool connected = false;
  std::uint64_t since_ms = 0;
  std::uint64_t messages_in = 0, messages_out = 0, bytes_in = 0, bytes_out = 0;
  std::uint64_t gaps_filled = 0, lost = 0, duplicates = 0;
  std::uint64_t over_credit = 0;  // messages it sent beyond the credit colod granted (dropped)
  std::uint64_t rewinds = 0;      // streams it told colod to resume lower (colod held sequences it never sent)
};

// A cluster topic or queue, and its traffic with all peers.
struct ColodObject {
  std::string name, kind, home;  // kind "topic" or "queue"; home: a queue's
  std::uint64_t messages_in = 0, messages_out = 0, bytes_in = 0, bytes_out = 0;
  std::uint64_t lost = 0, duplicates = 0, in_flight = 0;
};

// A link of colod to another system ([[link]]: Kafka, RabbitMQ), as `colo links` shows it.
struct ColodLink {
  std::string name, system, mode, object, object_kind, remote, state, last_error;
  std::uint64_t state_ms = 0, last_error_ms = 0;
  std::uint64_t produced = 0, acknowledged = 0, returned = 0, in_flight = 0, lag_messages = 0, lag_bytes = 0;
  std::uint64_t errors = 0, lost = 0, skipped = 0, duplicates = 0, redelivered = 0, outages = 0;
};

struct ColodStatus {
  std::string node, ns;
  std::uint64_t uptime_ms = 0;
  std::vector<ColodPeer> peers;
  std::vector<std::string> topics;
  std::vector<ColodObject> objects;
  std::uint64_t bad_frames = 0, rejected_peers = 0, failed_handshakes = 0, dropped_connections = 0;
  std::uint64_t early_frames = 0;  // data of a stream restarted (a reconnect, a new epoch): dropped, sent again
  std::uint64_t refused_sessions = 0;  // hellos from a second connection naming a peer whose session is alive
  std::string ring_wait;               // "io_uring" or "threads": how colod's loop learns of a publish
  std::uint64_t ring_wakes = 0;        // io_uring: loop sleeps a publish ended
  std::vector<ColodLink> links;
  const ColodObject* object(const std::string& name) const {
    for (const auto& o : objects)
      if (o.name == name) return &o;
    return nullptr;
  }
};

nlohmann::json object_json(const ColodObject& object);  // as `colo peers --json` and `colo stat --json` show it
nlohmann::json link_json(const ColodLink& link);        // as `colo links --json` shows it

// `socket_path` "" means the namespace's default. Errors say what to do
// (Errc::timed_out when nothing answers: colod is probably not running).
Result<ColodStatus> colod_status(const std::string& ns, const std::string& socket_path, double timeout_s);
Result<void> colod_declare_topic(const std::string& ns, const std::string& socket_path, double timeout_s,
                                 const std::string& topic);
// `colo links pause|resume NAME`. Errors as colod words them (an unknown name).
Result<void> colod_pause_link(const std::string& ns, const std::string& socket_path, double timeout_s,
                              const std::string& link, bool pause);

}  // namespace colo::cli
