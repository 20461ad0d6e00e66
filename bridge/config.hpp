// bridge/config.hpp — colod's configuration: one TOML file per daemon.
//
// Every key is documented in the README ("colod configuration"); the sample
// bridge/colod.example.toml shows them all. load_config() checks everything
// it can without touching the network: a bad file gets one error naming the
// file, the line and the key ("colod.toml:12: peer[1].endpoint: ...";
// [[peer]], [[topic]] and [[queue]] tables are counted from 0).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "colo/error.hpp"

namespace colo::bridge {

enum class LogLevel { debug, info, warn, error };

struct PeerConfig {
  std::string name;        // its [node].name; unique, not ours
  std::string endpoint;    // where its colod listens: "tcp://HOST:PORT" (not *) or "ipc://PATH"
  std::string public_key;  // its CURVE public key, Z85 (40 characters); "" when CURVE is off
};

struct TopicConfig {
  std::string name;            // a valid object name (colo/names.hpp)
  std::uint64_t capacity = 1 << 20;       // ring bytes if colod creates it (power of two, 4 KiB..16 GiB)
  std::uint32_t max_message = 64 * 1024;  // payload bytes if colod creates it
  std::uint32_t history = 0;              // topic history if colod creates it
  // How peers follow this topic: false ("block") holds local publishers back
  // for a connected peer that is behind, like a blocking subscriber; true
  // ("lossy") never does, and a peer that falls behind by more than the ring
  // is told what it lost. A disconnected peer never holds anyone back.
  bool lossy = false;                     // key: backpressure = "block" | "lossy"
};

struct QueueConfig {
  std::string name;
  std::string home;            // node name that holds the queue: ours or a peer's
  std::uint64_t capacity = 1 << 20;
  std::uint32_t max_message = 64 * 1024;
  bool acks = false;                // as QueueOptions::acks (a crashed consumer's message is redelivered)
  std::uint32_t max_deliveries = 5;  // with acks: then dead-lettered to NAME.dlq
};

struct Config {
  std::string path;  // the file it came from

  // [node]
  std::string node_name;       // 1-64 bytes of A-Z a-z 0-9 _ - .
  std::string ns = "default";  // colo namespace this daemon federates (validate_namespace)
  std::string listen;          // "tcp://ADDR:PORT" (ZeroMQ endpoint; ADDR may be * or an IP) or "ipc://PATH"

  // [security]
  std::string secret_key_file;  // file holding our CURVE secret key, Z85; "" = CURVE off
                                // (a relative path in the file is resolved against the file's
                                // directory; this holds the result)
                                // (then no peer may have a public_key, and the reverse)

  // [control]
  std::string control_socket;  // path of the ipc:// control socket; default: default_control_socket(ns)

  // [metrics]
  std::uint16_t metrics_port = 0;        // Prometheus text over HTTP; 0 = off
  std::string metrics_address = "127.0.0.1";

  // [limits]
  std::uint32_t max_frame = 4 << 20;     // bytes; larger frames from the network are rejected (ZMQ_MAXMSGSIZE)
  std::uint32_t credit = 1024;           // messages a peer may send us per topic before we grant more
  std::uint32_t heartbeat_ms = 1000;     // hello/heartbeat interval; a peer silent for 3x this is "down"

  // [log]
  LogLevel log_level = LogLevel::info;

  std::vector<PeerConfig> peers;    // [[peer]]
  std::vector<TopicConfig> topics;  // [[topic]]
  std::vector<QueueConfig> queues;  // [[queue]]
};

// Reads and checks the file. Errors are Errc::invalid_argument (or
// Errc::not_found for a missing file) with a message of the form
// "PATH:LINE: KEY: what is wrong". For a missing key LINE is that of its
// table ("PATH:4: peer[0].endpoint: missing"), omitted when the table is
// missing too ("PATH: node.name: missing (the file has no [node] table)").
// A TOML syntax error is "PATH:LINE: what toml++ says".
Result<Config> load_config(const std::string& path);

// "/run/colo/<ns>/colod.sock" for root, "$XDG_RUNTIME_DIR/colo/<ns>/colod.sock"
// (else "/tmp/colo-<uid>/<ns>/colod.sock") for other users.
std::string default_control_socket(const std::string& ns);

const char* log_level_name(LogLevel level) noexcept;

}  // namespace colo::bridge
