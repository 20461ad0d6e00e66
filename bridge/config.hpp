// bridge/config.hpp — colod's configuration: one TOML file per daemon.
//
// Every key is documented in docs/configuration.md; the sample
// bridge/colod.example.toml shows them all (the config-reference test keeps
// the two and this loader in agreement). load_config() checks everything
// it can without touching the network: a bad file gets one error naming the
// file, the line and the key ("colod.toml:12: peer[1].endpoint: ...";
// [[peer]], [[topic]], [[queue]], [[lock_backend]], [[kafka]], [[rabbitmq]]
// and [[link]] tables are counted from 0). librdkafka checks the Kafka
// properties.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "colo/error.hpp"
#include "colo/object.hpp"  // ObjectKind

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

// [[lock_backend]]: where cluster-scope locks are taken (docs/cluster-locks.md).
struct LockBackendConfig {
  std::string kind;        // "zookeeper", "etcd" or "redis"
  std::string endpoints;   // zookeeper "HOST:PORT[,HOST:PORT...]", etcd "http://HOST:PORT", redis "HOST:PORT"
  // Lock names this backend serves: those that start with `prefix`; the
  // longest matching prefix wins; "" matches every name.
  std::string prefix;
  std::string root;        // path/key prefix on the server; "" = the default of its kind (backends/backend.hpp)
  std::uint32_t lease_ms = 3000;       // session timeout / lease TTL / PX: how long a dead colod's hold lasts
  std::uint32_t op_timeout_ms = 2000;  // one request's bound
  std::uint32_t poll_ms = 5;           // redis: how often a waiter tries again
};

// [locks]: how colod shares a cluster lock between the processes of its host.
struct LockPolicy {
  // A cluster hold is passed from local holder to local holder while local
  // processes queue for it, until either budget is spent; then colod gives
  // it up (other hosts get their turn) and queues for it again.
  std::uint32_t max_handoffs = 1000;   // local grants per cluster hold (1..1,000,000)
  std::uint32_t max_hold_ms = 100;     // time per cluster hold
  // With no local holder and no local waiter for this long, colod releases
  // the cluster lock (0: at once).
  std::uint32_t idle_release_ms = 2;
  // After giving the lock up, wait this long before queueing for it again,
  // so that other hosts' waiters get in first. ZooKeeper and etcd queue
  // waiters in order, so 0 suffices; Redis has no queue (waiters poll): the
  // default there is 3 x poll_ms. -1 in the file (the default): by backend.
  std::int32_t requeue_pause_ms = -1;
};

// [[kafka]]: a Kafka cluster, which links name (docs/kafka.md).
struct KafkaClusterConfig {
  std::string name;       // unique among [[kafka]] tables; as node names
  std::string bootstrap;  // librdkafka's bootstrap.servers: "HOST:PORT[,HOST:PORT...]"
  // Any other librdkafka property (security.protocol, sasl.*, ssl.*,
  // client.id, ...), by name, values as strings; each was accepted by
  // librdkafka when the file was loaded. Properties a link's guarantees rest
  // on (bootstrap.servers, enable.idempotence, acks, group.id, the commit
  // settings) are colod's and refused here.
  std::vector<std::pair<std::string, std::string>> properties;
};

// [[rabbitmq]]: a RabbitMQ server (AMQP 0-9-1), which links name
// (docs/rabbitmq.md).
struct RabbitmqServerConfig {
  std::string name;            // unique among [[rabbitmq]] tables; as node names
  std::string host;            // a host name or address
  std::uint16_t port = 5672;   // AMQP's (5671 is the usual one for TLS: set it)
  std::string vhost = "/";
  std::string user;
  std::string password_file;   // resolved against the config's directory
  std::string password;        // the file's first line, read when the config is loaded
  std::uint32_t heartbeat_s = 10;  // AMQP heartbeat: a silent connection is dead after about twice this; 0: off
  bool tls = false;            // AMQPS (OpenSSL, through rabbitmq-c)
  std::string tls_ca_file, tls_cert_file, tls_key_file;  // PEM files, resolved like password_file; "" = none
  bool tls_verify = true;      // check the server's certificate and host name
};

// What a link does with its object.
enum class LinkMode {
  mirror,  // object -> the other system: every message published on this host
  source,  // the other system -> object
  spill,   // a queue's bursts out to the other system and back
};
const char* to_string(LinkMode mode) noexcept;  // "mirror", "source", "spill"

// How a Kafka mirror keys its records.
struct KafkaKey {
  enum class Kind { none, origin, payload } kind = Kind::none;
  std::uint32_t offset = 0, length = 0;  // payload: the key is bytes [offset, offset + length) of the message
};

// A link's Kafka side: [link.kafka] (or kafka = { ... } in the [[link]]).
struct KafkaLinkConfig {
  std::string cluster;      // a [[kafka]] name
  std::string topic;        // the Kafka topic; default: the object's name with '/' as '.'
  KafkaKey key;             // mirror
  std::string group;        // source, spill: consumer group; default "colo.<node>.<object>[.spill]"
  bool from_earliest = true;  // source: a group without committed offsets starts at the earliest record (else latest)
  std::int32_t partitions = 1;  // mirror: partitions if colod creates the topic (a spill's has one)
};

// A link's RabbitMQ side: [link.rabbitmq] (or rabbitmq = { ... }).
//   mirror: publishes to `exchange` ("" = the default exchange) with
//           `routing_key`; a `queue`, if given, is declared and bound.
//   source: consumes `queue`; bound to `exchange` with `routing_key` if an
//           exchange is given.
struct RabbitmqLinkConfig {
  std::string server;          // a [[rabbitmq]] name
  std::string exchange;        // "" = the default exchange (routes by queue name)
  std::string exchange_type = "direct";  // when colod declares the exchange: direct, fanout, topic, headers
  std::string queue;           // mirror: optional; source: default the object's name with '/' as '.'
  std::string routing_key;     // default: the queue's name (mirror without queue: the object's name, '/' as '.')
  bool passive = false;        // check that the exchange and queue exist instead of declaring them
  std::string dead_letter_exchange;  // declared queue's x-dead-letter-exchange; "" = none
  std::uint32_t window = 1000;       // mirror: messages published and not yet confirmed, at most
  std::uint32_t prefetch = 1000;     // source: deliveries not yet acknowledged, at most (basic.qos)
};

// The system a link joins its object to: which sub-table of [[link]] it has.
enum class LinkSystem { kafka, rabbitmq };

// [[link]]: one object of this namespace linked to another system. The
// keys of the link layer (bridge/links/link.hpp) are the table's own; the
// other system's are in its sub-table (`kafka` or `rabbitmq`; another
// system adds its own sub-table, its settings struct and a LinkSystem value).
struct LinkConfig {
  std::string name;     // unique among links; default "<mode>:<object>"
  LinkMode mode = LinkMode::mirror;
  std::string object;   // a valid object name
  ObjectKind kind = ObjectKind::topic;  // topic or queue
  // The object's ring, if colod creates it. An object declared in
  // [[topic]]/[[queue]] takes that table's values (the link may not set them).
  std::uint64_t capacity = 1 << 20;
  std::uint32_t max_message = 64 * 1024;
  std::uint32_t history = 0;         // topic
  bool acks = false;                 // queue
  std::uint32_t max_deliveries = 5;  // queue with acks
  bool lossy = false;                // mirror: backpressure = "block" | "lossy"
  double high_watermark = 0.5;       // spill: of the ring's bytes queued, when to move messages out
  double low_watermark = 0.25;       // spill: and when to bring them back
  // Starts paused: open, connected, moving nothing until `colo links resume
  // NAME` (a rollout checked before it moves messages; a benchmark's start).
  bool paused = false;
  LinkSystem system = LinkSystem::kafka;
  KafkaLinkConfig kafka;             // system kafka
  RabbitmqLinkConfig rabbitmq;       // system rabbitmq
};

// What a federation data frame (schemas/federation.capnp) adds to its one
// message, at most: the segment table, the root and envelope words, and the
// origin (64 bytes) and object (200 bytes) names with their padding come to
// under 400 bytes; 512 leaves room. A topic's or queue's max_message must
// leave it within [limits] max_frame: a larger frame drops the connection
// at the receiver, and the sender would resend it forever.
inline constexpr std::size_t kFrameOverhead = 512;
// What each further message of a batch frame adds: its entry (sequence,
// timestamp, payload pointer: 24 bytes) and the padding of its payload.
inline constexpr std::size_t kBatchEntryOverhead = 32;
// The most bytes a data or batch frame of `entries` messages holding
// `payload_bytes` in all takes: what must stay within [limits] max_frame.
constexpr std::size_t frame_bytes(std::size_t entries, std::size_t payload_bytes) noexcept {
  return kFrameOverhead + entries * kBatchEntryOverhead + payload_bytes;
}

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
  // Without CURVE, colod listens only on loopback or ipc:// unless this is
  // set: then a warning at every start says anyone who reaches the endpoint
  // can join as a peer (docs/security.md).
  bool insecure = false;

  // [control]
  std::string control_socket;  // path of the ipc:// control socket; default: default_control_socket(ns).
                               // Its directory must be colod's own, mode 0700 (checked at start).

  // [metrics]
  std::uint16_t metrics_port = 0;        // Prometheus text over HTTP; 0 = off
  std::string metrics_address = "127.0.0.1";

  // [limits]
  std::uint32_t max_frame = 4 << 20;     // bytes; larger frames from the network are rejected (ZMQ_MAXMSGSIZE)
  std::uint32_t credit = 1024;           // messages a peer may send us per topic before we grant more (at least)
  // A topic of small messages gets a larger window: as many of its largest
  // message as fit in this and in half its ring (Daemon's topic_window).
  std::uint64_t credit_bytes = 64ull << 20;
  std::uint32_t heartbeat_ms = 1000;     // hello/heartbeat interval; a peer silent for 3x this is "down"

  // [log]
  LogLevel log_level = LogLevel::info;

  std::vector<PeerConfig> peers;    // [[peer]]
  std::vector<TopicConfig> topics;  // [[topic]]
  std::vector<QueueConfig> queues;  // [[queue]]
  std::vector<LockBackendConfig> lock_backends;  // [[lock_backend]]
  LockPolicy locks;                              // [locks]
  std::vector<KafkaClusterConfig> kafka_clusters;  // [[kafka]]
  std::vector<RabbitmqServerConfig> rabbitmq_servers;  // [[rabbitmq]]
  std::vector<LinkConfig> links;                   // [[link]]
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
