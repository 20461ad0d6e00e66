// colod's config loader (bridge/config.cpp): what a valid file gives, the
// defaults, and for each rule the exact error — file, line, key and cause —
// because an operator fixes the file from that one line.
//
// Every test writes its files into its own directory under /tmp (removed in
// TearDown). No network, no root; bridge/colod.example.toml is found through
// COLO_SOURCE_ROOT (tests/bridge/meson.build sets it).
#include <gtest/gtest.h>
#include <sys/wait.h>  // waitpid
#include <unistd.h>    // geteuid, fork, setuid

#include <cerrno>
#include <cstdlib>  // getenv, setenv
#include <cstring>  // strerror
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "config.hpp"
#include "daemon.hpp"  // generate_keypair: keys as libzmq makes them

namespace colo::bridge {
namespace {

// Keys of 40 Z85 characters (any such string whose 5-character groups stay
// below 2^32 is a key to the loader).
const std::string kKeyBeta = "0123456789abcdefghijklmnopqrstuvwxyzABCD";
const std::string kKeyGamma = "ABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>(";
const std::string kSecret = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123";

using Lines = std::vector<std::string>;

// Lines 1-3 of most files below: the required part.
const Lines kNode = {"[node]", "name = \"alpha\"", "listen = \"tcp://127.0.0.1:7100\""};

Lines node_and(const Lines& more) {
  Lines out = kNode;
  out.insert(out.end(), more.begin(), more.end());
  return out;
}

class LoadConfig : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/colo-config-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr) << std::strerror(errno);
    dir_ = tmpl;
    path_ = dir_ + "/colod.toml";
  }
  void TearDown() override {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  std::string write(const std::string& name, const std::string& text) const {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }
  Result<Config> load(const Lines& lines) const {
    std::string text;
    for (const auto& line : lines) text += line + "\n";
    write("colod.toml", text);
    return load_config(path_);
  }
  // The message of a file that must not load (always invalid_argument).
  std::string error(const Lines& lines) const {
    auto sut = load(lines);
    if (sut.has_value()) {
      ADD_FAILURE() << "the file loaded";
      return {};
    }
    EXPECT_EQ(sut.error().code, Errc::invalid_argument);
    return sut.error().message;
  }
  // "PATH:LINE: " of colod.toml
  std::string at(int line) const { return path_ + ":" + std::to_string(line) + ": "; }
  // A secret key file holding `text`, as a security table.
  Lines curve_on(const std::string& text = kSecret + "\n") const {
    return {"[security]", "secret_key_file = \"" + write("alpha.key", text) + "\""};
  }

  std::string dir_, path_;
};

// ------------------------------------------------------------- valid files

TEST_F(LoadConfig, givesEveryFieldOfAFullFile) {
  const std::string key_file = write("alpha.key", "  " + kSecret + "\n\n");
  const std::string socket = dir_ + "/control.sock";

  auto sut = load({
      "[node]", "name = \"alpha\"", "namespace = \"ns_1\"", "listen = \"tcp://*:7100\"",  //
      "[security]", "secret_key_file = \"" + key_file + "\"",                               //
      "[control]", "socket = \"" + socket + "\"",                                           //
      "[metrics]", "port = 9464", "address = \"::1\"",                                      //
      "[limits]", "max_frame = 1_048_576", "credit = 16", "credit_bytes = 1_048_576", "heartbeat_ms = 250",
      "[log]", "level = \"debug\"",                                                         //
      "[[peer]]", "name = \"beta\"", "endpoint = \"tcp://10.0.0.2:7101\"", "public_key = \"" + kKeyBeta + "\"",
      "[[peer]]", "name = \"gamma.2\"", "endpoint = \"ipc:///run/gamma.sock\"", "public_key = \"" + kKeyGamma + "\"",
      "[[topic]]", "name = \"prices/eu\"", "capacity = 4096", "max_message = 2016", "history = 10",
      "backpressure = \"lossy\"",  //
      "[[queue]]", "name = \"jobs\"", "home = \"gamma.2\"", "capacity = 8192", "max_message = 100",
      "acks = true", "max_deliveries = 3",
  });

  ASSERT_TRUE(sut.has_value()) << sut.error().message;
  EXPECT_EQ(sut->path, path_);
  EXPECT_EQ(sut->node_name, "alpha");
  EXPECT_EQ(sut->ns, "ns_1");
  EXPECT_EQ(sut->listen, "tcp://*:7100");
  EXPECT_EQ(sut->secret_key_file, key_file);
  EXPECT_EQ(sut->control_socket, socket);
  EXPECT_EQ(sut->metrics_port, 9464);
  EXPECT_EQ(sut->metrics_address, "::1");
  EXPECT_EQ(sut->max_frame, 1048576u);
  EXPECT_EQ(sut->credit, 16u);
  EXPECT_EQ(sut->credit_bytes, 1048576u);
  EXPECT_EQ(sut->heartbeat_ms, 250u);
  EXPECT_EQ(sut->log_level, LogLevel::debug);
  ASSERT_EQ(sut->peers.size(), 2u);
  EXPECT_EQ(sut->peers[0].name, "beta");
  EXPECT_EQ(sut->peers[0].endpoint, "tcp://10.0.0.2:7101");
  EXPECT_EQ(sut->peers[0].public_key, kKeyBeta);
  EXPECT_EQ(sut->peers[1].name, "gamma.2");
  EXPECT_EQ(sut->peers[1].endpoint, "ipc:///run/gamma.sock");
  EXPECT_EQ(sut->peers[1].public_key, kKeyGamma);
  ASSERT_EQ(sut->topics.size(), 1u);
  EXPECT_EQ(sut->topics[0].name, "prices/eu");
  EXPECT_EQ(sut->topics[0].capacity, 4096u);
  EXPECT_EQ(sut->topics[0].max_message, 2016u);  // the largest that fits twice in 4096
  EXPECT_EQ(sut->topics[0].history, 10u);
  EXPECT_TRUE(sut->topics[0].lossy);
  ASSERT_EQ(sut->queues.size(), 1u);
  EXPECT_EQ(sut->queues[0].name, "jobs");
  EXPECT_EQ(sut->queues[0].home, "gamma.2");
  EXPECT_EQ(sut->queues[0].capacity, 8192u);
  EXPECT_EQ(sut->queues[0].max_message, 100u);
  EXPECT_TRUE(sut->queues[0].acks);
  EXPECT_EQ(sut->queues[0].max_deliveries, 3u);
}

TEST_F(LoadConfig, appliesTheDefaultsToAMinimalFile) {
  auto sut = load(kNode);

  ASSERT_TRUE(sut.has_value()) << sut.error().message;
  EXPECT_EQ(sut->node_name, "alpha");
  EXPECT_EQ(sut->listen, "tcp://127.0.0.1:7100");
  EXPECT_EQ(sut->ns, "default");
  EXPECT_EQ(sut->secret_key_file, "");
  EXPECT_EQ(sut->control_socket, default_control_socket("default"));
  EXPECT_EQ(sut->metrics_port, 0);
  EXPECT_EQ(sut->metrics_address, "127.0.0.1");
  EXPECT_EQ(sut->max_frame, 4u << 20);
  EXPECT_EQ(sut->credit, 1024u);
  EXPECT_EQ(sut->credit_bytes, 64u << 20);
  EXPECT_EQ(sut->heartbeat_ms, 1000u);
  EXPECT_EQ(sut->log_level, LogLevel::info);
  EXPECT_TRUE(sut->peers.empty());
  EXPECT_TRUE(sut->topics.empty());
  EXPECT_TRUE(sut->queues.empty());
}

TEST_F(LoadConfig, appliesTheDefaultsOfTopicsQueuesAndEmptyTables) {
  auto sut = load({"[node]", "name = \"alpha\"", "namespace = \"eu\"", "listen = \"ipc:///tmp/alpha\"", "[security]",
                   "secret_key_file = \"\"", "[control]", "socket = \"\"", "[metrics]", "[limits]", "[log]",
                   "[[topic]]", "name = \"prices\"", "[[queue]]", "name = \"jobs\"", "home = \"alpha\""});

  ASSERT_TRUE(sut.has_value()) << sut.error().message;
  EXPECT_EQ(sut->secret_key_file, "");                         // "" is CURVE off
  EXPECT_EQ(sut->control_socket, default_control_socket("eu"));  // of the file's namespace
  ASSERT_EQ(sut->topics.size(), 1u);
  EXPECT_EQ(sut->topics[0].capacity, 1u << 20);
  EXPECT_EQ(sut->topics[0].max_message, 64u * 1024);
  EXPECT_EQ(sut->topics[0].history, 0u);
  EXPECT_FALSE(sut->topics[0].lossy);
  ASSERT_EQ(sut->queues.size(), 1u);
  EXPECT_EQ(sut->queues[0].home, "alpha");
  EXPECT_EQ(sut->queues[0].capacity, 1u << 20);
  EXPECT_EQ(sut->queues[0].max_message, 64u * 1024);
  EXPECT_FALSE(sut->queues[0].acks);
  EXPECT_EQ(sut->queues[0].max_deliveries, 5u);
}

TEST_F(LoadConfig, loadsTheExampleShippedInBridge) {
  const char* root = std::getenv("COLO_SOURCE_ROOT");
  ASSERT_NE(root, nullptr) << "COLO_SOURCE_ROOT is not set (tests/bridge/meson.build sets it)";
  const std::string path = std::string(root) + "/bridge/colod.example.toml";

  auto sut = load_config(path);

  ASSERT_TRUE(sut.has_value()) << sut.error().message;
  EXPECT_EQ(sut->node_name, "alpha");
  EXPECT_EQ(sut->ns, "default");
  EXPECT_EQ(sut->secret_key_file, "");  // CURVE off, as shipped
  EXPECT_EQ(sut->control_socket, default_control_socket("default"));
  EXPECT_EQ(sut->max_frame, 4u << 20);
  EXPECT_EQ(sut->log_level, LogLevel::info);
  ASSERT_EQ(sut->peers.size(), 2u);
  EXPECT_EQ(sut->peers[0].name, "beta");
  EXPECT_EQ(sut->peers[1].name, "gamma");
  EXPECT_EQ(sut->peers[0].public_key, "");
  ASSERT_EQ(sut->topics.size(), 1u);
  EXPECT_EQ(sut->topics[0].name, "prices");
  ASSERT_EQ(sut->queues.size(), 1u);
  EXPECT_EQ(sut->queues[0].name, "jobs");
  EXPECT_EQ(sut->queues[0].home, "alpha");
  ASSERT_EQ(sut->lock_backends.size(), 2u);
  EXPECT_EQ(sut->lock_backends[0].kind, "zookeeper");
  EXPECT_EQ(sut->lock_backends[0].prefix, "");
  EXPECT_EQ(sut->lock_backends[1].kind, "redis");
  EXPECT_EQ(sut->lock_backends[1].prefix, "payments/");
  EXPECT_EQ(sut->locks.max_handoffs, 1000u);
  EXPECT_EQ(sut->locks.requeue_pause_ms, -1);
  ASSERT_EQ(sut->kafka_clusters.size(), 1u);
  EXPECT_EQ(sut->kafka_clusters[0].name, "dc1");
  ASSERT_GE(sut->links.size(), 3u);
  EXPECT_EQ(sut->links[0].mode, LinkMode::mirror);
  EXPECT_EQ(sut->links[1].mode, LinkMode::source);
  EXPECT_EQ(sut->links[2].mode, LinkMode::spill);
  ASSERT_EQ(sut->rabbitmq_servers.size(), 1u);
  EXPECT_EQ(sut->rabbitmq_servers[0].name, "mq1");
  EXPECT_EQ(sut->rabbitmq_servers[0].password, "change-me");  // bridge/colod.example.password, beside it
  ASSERT_EQ(sut->links.size(), 5u);
  EXPECT_EQ(sut->links[3].system, LinkSystem::rabbitmq);
  EXPECT_EQ(sut->links[3].rabbitmq.exchange, "events");
  EXPECT_EQ(sut->links[4].mode, LinkMode::source);
  EXPECT_EQ(sut->links[4].rabbitmq.queue, "tasks");
}

TEST_F(LoadConfig, readsLockBackendsAndThePolicy) {
  auto sut = load(node_and({"[locks]", "max_handoffs = 50", "max_hold_ms = 20", "idle_release_ms = 0",
                            "requeue_pause_ms = 7",  //
                            "[[lock_backend]]", "kind = \"etcd\"", "endpoints = \"http://127.0.0.1:2379\"",
                            "prefix = \"orders/\"", "root = \"x/locks\"", "lease_ms = 5000", "op_timeout_ms = 300"}));
  ASSERT_TRUE(sut.has_value()) << sut.error().message;
  EXPECT_EQ(sut->locks.max_handoffs, 50u);
  EXPECT_EQ(sut->locks.max_hold_ms, 20u);
  EXPECT_EQ(sut->locks.idle_release_ms, 0u);
  EXPECT_EQ(sut->locks.requeue_pause_ms, 7);
  ASSERT_EQ(sut->lock_backends.size(), 1u);
  const auto& b = sut->lock_backends[0];
  EXPECT_EQ(b.kind, "etcd");
  EXPECT_EQ(b.endpoints, "http://127.0.0.1:2379");
  EXPECT_EQ(b.prefix, "orders/");
  EXPECT_EQ(b.root, "x/locks");
  EXPECT_EQ(b.lease_ms, 5000u);
  EXPECT_EQ(b.op_timeout_ms, 300u);
  EXPECT_EQ(b.poll_ms, 5u);
}

TEST_F(LoadConfig, refusesBadLockBackends) {
  EXPECT_EQ(error(node_and({"[[lock_backend]]", "kind = \"consul\"", "endpoints = \"x:1\""})),
            at(5) + "lock_backend[0].kind: consul is not supported (its server is not open source any more); use "
                    "zookeeper, etcd or redis");
  EXPECT_EQ(error(node_and({"[[lock_backend]]", "kind = \"etcd\"", "endpoints = \"127.0.0.1:2379\""})),
            at(6) + "lock_backend[0].endpoints: '127.0.0.1:2379' is not http://HOST:PORT (etcd's HTTP/JSON gateway; "
                    "https is not supported)");
  EXPECT_EQ(error(node_and({"[[lock_backend]]", "kind = \"redis\"", "endpoints = \"a:1\"", "prefix = \"a b\""})),
            at(7) + "lock_backend[0].prefix: 'a b' has a character no lock name can have (names are [A-Za-z0-9._/-])");
  EXPECT_EQ(error(node_and({"[[lock_backend]]", "kind = \"zookeeper\"", "endpoints = \"a:1\"", "lease_ms = 500"})),
            at(7) + "lock_backend[0].lease_ms: 500 is outside 1000..600000");
  EXPECT_EQ(error(node_and({"[[lock_backend]]", "kind = \"etcd\"", "endpoints = \"http://a:1\"", "poll_ms = 5"})),
            at(7) + "lock_backend[0].poll_ms: only redis polls; etcd tells waiters");
  EXPECT_EQ(error(node_and({"[[lock_backend]]", "kind = \"redis\"", "endpoints = \"a:1\"",  //
                            "[[lock_backend]]", "kind = \"etcd\"", "endpoints = \"http://a:1\""})),
            at(7) + "lock_backend[1].prefix: '' is already served by lock_backend[0].prefix (line 5)");
  EXPECT_EQ(error(node_and({"[locks]", "max_handoffs = 2000000"})),
            at(5) + "locks.max_handoffs: 2000000 is outside 1..1000000");
}

TEST_F(LoadConfig, readsKafkaClustersAndLinksOfEveryMode) {
  auto sut = load(node_and({"[[queue]]", "name = \"jobs\"", "home = \"alpha\"", "acks = true",  //
                            "[[kafka]]", "name = \"dc1\"", "bootstrap = \"k1:9092,k2:9092\"",
                            "[kafka.properties]", "\"security.protocol\" = \"plaintext\"", "\"socket.timeout.ms\" = 5000",
                            "\"socket.keepalive.enable\" = true",  //
                            "[[link]]", "object = \"prices/eu\"", "kind = \"topic\"", "mode = \"mirror\"",
                            "backpressure = \"lossy\"", "capacity = 4194304",
                            "kafka = { cluster = \"dc1\", key = \"payload:4:8\", partitions = 3 }",  //
                            "[[link]]", "name = \"in\"", "object = \"orders\"", "kind = \"queue\"", "mode = \"source\"",
                            "acks = true", "paused = true", "[link.kafka]", "cluster = \"dc1\"", "topic = \"orders.v1\"",
                            "group = \"g1\"", "start = \"latest\"",  //
                            "[[link]]", "object = \"jobs\"", "kind = \"queue\"", "mode = \"spill\"",
                            "high_watermark = 0.6", "low_watermark = 0.2", "kafka = { cluster = \"dc1\" }"}));
  ASSERT_TRUE(sut.has_value()) << sut.error().message;
  ASSERT_EQ(sut->kafka_clusters.size(), 1u);
  const auto& k = sut->kafka_clusters[0];
  EXPECT_EQ(k.name, "dc1");
  EXPECT_EQ(k.bootstrap, "k1:9092,k2:9092");
  EXPECT_EQ(k.properties, (std::vector<std::pair<std::string, std::string>>{
                              {"security.protocol", "plaintext"}, {"socket.keepalive.enable", "true"},
                              {"socket.timeout.ms", "5000"}}));  // by name
  ASSERT_EQ(sut->links.size(), 3u);
  const auto& mirror = sut->links[0];
  EXPECT_EQ(mirror.name, "mirror:prices/eu");
  EXPECT_EQ(mirror.mode, LinkMode::mirror);
  EXPECT_EQ(mirror.kind, ObjectKind::topic);
  EXPECT_TRUE(mirror.lossy);
  EXPECT_EQ(mirror.capacity, 4194304u);
  EXPECT_EQ(mirror.kafka.cluster, "dc1");
  EXPECT_EQ(mirror.kafka.topic, "prices.eu");  // the object's name, '/' as '.'
  EXPECT_EQ(mirror.kafka.key.kind, KafkaKey::Kind::payload);
  EXPECT_EQ(mirror.kafka.key.offset, 4u);
  EXPECT_EQ(mirror.kafka.key.length, 8u);
  EXPECT_EQ(mirror.kafka.partitions, 3);
  EXPECT_FALSE(mirror.paused) << "by default a link moves messages from the start";
  const auto& source = sut->links[1];
  EXPECT_TRUE(source.paused);
  EXPECT_EQ(source.name, "in");
  EXPECT_EQ(source.mode, LinkMode::source);
  EXPECT_TRUE(source.acks);
  EXPECT_EQ(source.kafka.topic, "orders.v1");
  EXPECT_EQ(source.kafka.group, "g1");
  EXPECT_FALSE(source.kafka.from_earliest);
  const auto& spill = sut->links[2];
  EXPECT_EQ(spill.name, "spill:jobs");
  EXPECT_TRUE(spill.acks) << "from the [[queue]] table";
  EXPECT_DOUBLE_EQ(spill.high_watermark, 0.6);
  EXPECT_DOUBLE_EQ(spill.low_watermark, 0.2);
  EXPECT_EQ(spill.kafka.topic, "jobs.spill");
  EXPECT_EQ(spill.kafka.group, "colo.alpha.jobs.spill");
  EXPECT_STREQ(to_string(LinkMode::spill), "spill");
}

TEST_F(LoadConfig, refusesBadKafkaClustersWithLibrdkafkasOwnWords) {
  const Lines cluster = {"[[kafka]]", "name = \"dc1\"", "bootstrap = \"k:9092\""};
  auto with = [&](const Lines& more) {
    Lines l = node_and(cluster);
    l.insert(l.end(), more.begin(), more.end());
    return l;
  };
  EXPECT_EQ(error(with({"[kafka.properties]", "\"no.such.property\" = \"1\""})),
            at(8) + "kafka[0].properties.no.such.property: librdkafka: No such configuration property: "
                    "\"no.such.property\"");
  EXPECT_EQ(error(with({"[kafka.properties]", "\"socket.timeout.ms\" = \"soon\""})),
            at(8) + "kafka[0].properties.socket.timeout.ms: librdkafka: Invalid value for configuration property "
                    "\"socket.timeout.ms\"");
  EXPECT_EQ(error(with({"[kafka.properties]", "\"enable.idempotence\" = false"})),
            at(8) + "kafka[0].properties.enable.idempotence: 'enable.idempotence' is set by colod: a mirror's "
                    "exactly-once needs the idempotent producer");
  EXPECT_EQ(error(with({"[kafka.properties]", "\"group.id\" = \"x\""})),
            at(8) + "kafka[0].properties.group.id: 'group.id' is set by colod: a link names its group in [link.kafka] "
                    "group");
  EXPECT_EQ(error(with({"[kafka.properties]", "security.protocol = \"ssl\""})),
            at(8) + "kafka[0].properties.security: a table: quote a property name that has dots "
                    "(\"security.name\" = \"value\")");
  EXPECT_EQ(error(node_and({"[[kafka]]", "name = \"dc1\"", "bootstrap = \"a b:1\""})),
            at(6) + "kafka[0].bootstrap: 'a b:1' is not HOST:PORT[,HOST:PORT...] (1-4096 bytes, no spaces)");
  EXPECT_EQ(error(node_and({"[[kafka]]", "name = \"dc1\""})), at(4) + "kafka[0].bootstrap: missing");
  EXPECT_EQ(error(with({"[[kafka]]", "name = \"dc1\"", "bootstrap = \"x:1\""})),
            at(8) + "kafka[1].name: 'dc1' is already the name of kafka[0].name (line 5)");
}

TEST_F(LoadConfig, refusesLinksThatCannotWork) {
  const Lines cluster = {"[[kafka]]", "name = \"dc1\"", "bootstrap = \"k:9092\""};  // lines 4-6
  auto link = [&](const Lines& keys) {
    Lines l = node_and(cluster);
    l.push_back("[[link]]");  // line 7
    l.insert(l.end(), keys.begin(), keys.end());
    return l;
  };
  const std::string topic = "object = \"t\"", kind = "kind = \"topic\"", to_dc1 = "kafka = { cluster = \"dc1\" }";
  EXPECT_EQ(error(link({topic, kind, "mode = \"mirror\"", "kafka = { cluster = \"dc2\" }"})),
            at(11) + "link[0].kafka.cluster: 'dc2' is not the name of a [[kafka]] table (known: 'dc1')");
  EXPECT_EQ(error(link({topic, kind, "mode = \"mirror\""})),
            at(7) + "link[0].kafka: missing (the system it links to: kafka = { cluster = \"NAME\", topic = \"TOPIC\" }, "
                    "or rabbitmq = { server = \"NAME\", queue = \"QUEUE\" })");
  EXPECT_EQ(error(link({topic, kind, "mode = \"copy\"", to_dc1})),
            at(10) + "link[0].mode: 'copy' is not mirror, source or spill");
  EXPECT_EQ(error(link({topic, "mode = \"mirror\"", to_dc1})),
            at(7) + "link[0].kind: missing (topic or queue: the kind of object 't')");
  EXPECT_EQ(error(link({topic, kind, "mode = \"spill\"", to_dc1})),
            at(10) + "link[0].mode: only a queue spills (its bursts go out and come back)");
  EXPECT_EQ(error(link({topic, "kind = \"queue\"", "mode = \"spill\"", to_dc1})),
            at(10) + "link[0].mode: a spill needs a queue with acks (what colod takes out must come back if it dies)");
  EXPECT_EQ(error(link({topic, "kind = \"queue\"", "acks = true", "mode = \"spill\"", "low_watermark = 0.9", to_dc1})),
            at(12) + "link[0].low_watermark: must be below high_watermark (0.500000)");
  EXPECT_EQ(error(link({topic, kind, "mode = \"mirror\"", "paused = \"yes\"", to_dc1})),
            at(11) + "link[0].paused: expected true or false, found a string");
  EXPECT_EQ(error(link({topic, kind, "mode = \"source\"", "backpressure = \"lossy\"", to_dc1})),
            at(11) + "link[0].backpressure: only a mirror has a backpressure class");
  EXPECT_EQ(error(link({topic, kind, "mode = \"mirror\"", "kafka = { cluster = \"dc1\", key = \"payload:8\" }"})),
            at(11) + "link[0].kafka.key: 'payload:8' is not none, origin or payload:OFFSET:LENGTH");
  EXPECT_EQ(error(link({topic, kind, "mode = \"mirror\"", "max_message = 100",
                        "kafka = { cluster = \"dc1\", key = \"payload:90:20\" }"})),
            at(12) + "link[0].kafka.key: bytes 90..110 lie beyond the object's max_message of 100");
  EXPECT_EQ(error(link({topic, kind, "mode = \"source\"", "kafka = { cluster = \"dc1\", key = \"origin\" }"})),
            at(11) + "link[0].kafka.key: only a mirror keys the records it produces");
  EXPECT_EQ(error(link({topic, kind, "mode = \"mirror\"", "kafka = { cluster = \"dc1\", topic = \"a/b\" }"})),
            at(11) + "link[0].kafka.topic: 'a/b' is not a Kafka topic name (1-249 bytes of A-Z a-z 0-9 . _ -)");
  EXPECT_EQ(error(link({topic, kind, "mode = \"mirror\"", "kafka = { cluster = \"dc1\", group = \"g\" }"})),
            at(11) + "link[0].kafka.group: a mirror only produces: it has no consumer group");
  EXPECT_EQ(error(link({topic, kind, "mode = \"mirror\"", to_dc1, "[[link]]", topic, kind, "mode = \"mirror\"", to_dc1})),
            at(12) + "link[1].name: 'mirror:t' is already the name of link[0].name (line 10) (two links of one "
                     "object and mode need a name each)");
  EXPECT_EQ(error(node_and({"[[topic]]", "name = \"t\"", "[[kafka]]", "name = \"dc1\"", "bootstrap = \"k:1\"",
                            "[[link]]", topic, "kind = \"queue\"", "mode = \"mirror\"", to_dc1})),
            at(11) + "link[0].kind: 't' is declared as a [[topic]]");
  EXPECT_EQ(error(node_and({"[[topic]]", "name = \"t\"", "[[kafka]]", "name = \"dc1\"", "bootstrap = \"k:1\"",
                            "[[link]]", topic, kind, "mode = \"mirror\"", "capacity = 8192", to_dc1})),
            at(13) + "link[0].capacity: 't' is declared in a [[topic]] table: set its ring there");
}

TEST_F(LoadConfig, readsRabbitmqServersAndLinksWithTheirDefaults) {
  write("mq.password", "s3cret\r\nsecond line ignored\n");
  auto sut = load(node_and({"[[rabbitmq]]", "name = \"mq1\"", "host = \"rabbit-1\"", "user = \"colo\"",
                            "password_file = \"mq.password\"",  //
                            "[[link]]", "object = \"prices/eu\"", "kind = \"topic\"", "mode = \"mirror\"",
                            "rabbitmq = { server = \"mq1\" }",  //
                            "[[link]]", "object = \"orders/in\"", "kind = \"queue\"", "mode = \"source\"",
                            "rabbitmq = { server = \"mq1\", prefetch = 50, dead_letter_exchange = \"dead\" }",  //
                            "[[link]]", "object = \"events\"", "kind = \"topic\"", "mode = \"mirror\"",
                            "rabbitmq = { server = \"mq1\", exchange = \"x\", exchange_type = \"fanout\", window = 7 }"}));
  ASSERT_TRUE(sut.has_value()) << sut.error().message;
  ASSERT_EQ(sut->rabbitmq_servers.size(), 1u);
  const auto& s = sut->rabbitmq_servers[0];
  EXPECT_EQ(s.port, 5672);
  EXPECT_EQ(s.vhost, "/");
  EXPECT_EQ(s.password, "s3cret");  // the first line, without its CR LF
  EXPECT_EQ(s.password_file, dir_ + "/mq.password");
  EXPECT_EQ(s.heartbeat_s, 10u);
  EXPECT_FALSE(s.tls);
  ASSERT_EQ(sut->links.size(), 3u);
  const auto& mirror = sut->links[0].rabbitmq;
  EXPECT_EQ(sut->links[0].system, LinkSystem::rabbitmq);
  EXPECT_EQ(mirror.exchange, "");
  EXPECT_EQ(mirror.queue, "prices.eu");
  EXPECT_EQ(mirror.routing_key, "prices.eu");
  EXPECT_EQ(mirror.window, 1000u);
  const auto& source = sut->links[1].rabbitmq;
  EXPECT_EQ(source.queue, "orders.in");
  EXPECT_EQ(source.prefetch, 50u);
  EXPECT_EQ(source.dead_letter_exchange, "dead");
  EXPECT_FALSE(source.passive);
  const auto& fanout = sut->links[2].rabbitmq;
  EXPECT_EQ(fanout.exchange, "x");
  EXPECT_EQ(fanout.exchange_type, "fanout");
  EXPECT_EQ(fanout.queue, "") << "with an exchange, no queue unless one is named";
  EXPECT_EQ(fanout.routing_key, "events");
  EXPECT_EQ(fanout.window, 7u);
}

TEST_F(LoadConfig, refusesRabbitmqTablesThatCannotWork) {
  write("pw", "secret\n");
  const Lines server = {"[[rabbitmq]]", "name = \"mq\"", "host = \"h\"", "user = \"u\"",
                        "password_file = \"pw\""};  // lines 4-8
  auto link = [&](const std::string& table) {
    Lines l = node_and(server);
    l.insert(l.end(), {"[[link]]", "object = \"t\"", "kind = \"topic\"", "mode = \"mirror\"", table});  // 9-13
    return l;
  };
  write("empty", "\nsecret on line 2\n");
  EXPECT_EQ(error(node_and({"[[rabbitmq]]", "name = \"mq\"", "host = \"h\"", "user = \"u\"",
                            "password_file = \"empty\""})),
            at(8) + "rabbitmq[0].password_file: '" + dir_ + "/empty' holds no password (its first line is empty)");
  EXPECT_EQ(error(node_and({"[[rabbitmq]]", "name = \"mq\"", "host = \"h\"", "user = \"u\"",
                            "password_file = \"pw\"", "tls_verify = false"})),
            at(9) + "rabbitmq[0].tls_verify: only with tls = true");
  EXPECT_EQ(error(link("rabbitmq = { server = \"mq\", queue = \"amq.gen\" }")),
            at(13) + "link[0].rabbitmq.queue: 'amq.gen': names that start with 'amq.' are RabbitMQ's; use passive = "
                     "true to use one");
  EXPECT_EQ(error(link("rabbitmq = { server = \"mq\", exchange = \"x\", exchange_type = \"round\" }")),
            at(13) + "link[0].rabbitmq.exchange_type: 'round' is not direct, fanout, topic or headers");
  EXPECT_EQ(error(link("rabbitmq = { server = \"mq\", routing_key = \"k\" }")),
            at(13) + "link[0].rabbitmq.routing_key: the default exchange routes by queue name: set queue instead");
  EXPECT_EQ(error(link("rabbitmq = { server = \"mq\", passive = true, dead_letter_exchange = \"d\" }")),
            at(13) + "link[0].rabbitmq.dead_letter_exchange: set when colod declares the queue (passive = false)");
  EXPECT_EQ(error(link("rabbitmq = { server = \"mq\", window = 0 }")).rfind(at(13) + "link[0].rabbitmq.window: ", 0),
            0u);
  Lines both = link("rabbitmq = { server = \"mq\" }");
  both.push_back("kafka = { cluster = \"dc1\" }");
  EXPECT_EQ(error(both), at(13) + "link[0].rabbitmq: a link joins one system: kafka or rabbitmq, not both");
}

TEST_F(LoadConfig, acceptsEndpointsOfEveryForm) {
  auto sut = load({"[node]", "name = \"alpha\"", "listen = \"tcp://[::1]:65535\"",  //
                   "[[peer]]", "name = \"b\"", "endpoint = \"tcp://db-1.example:1\"",  //
                   "[[peer]]", "name = \"c\"", "endpoint = \"ipc://relative.sock\""});

  ASSERT_TRUE(sut.has_value()) << sut.error().message;
  EXPECT_EQ(sut->listen, "tcp://[::1]:65535");
  EXPECT_EQ(sut->peers[0].endpoint, "tcp://db-1.example:1");
  EXPECT_EQ(sut->peers[1].endpoint, "ipc://relative.sock");
}

// ------------------------------------------------------ reading the file

TEST_F(LoadConfig, reportsAMissingFileAsNotFound) {
  const std::string path = dir_ + "/absent.toml";

  auto sut = load_config(path);

  ASSERT_FALSE(sut.has_value());
  EXPECT_EQ(sut.error().code, Errc::not_found);
  EXPECT_EQ(sut.error().message, path + ": cannot read: No such file or directory");
}

TEST_F(LoadConfig, refusesADirectory) {
  auto sut = load_config(dir_);

  ASSERT_FALSE(sut.has_value());
  EXPECT_EQ(sut.error().code, Errc::invalid_argument);
  EXPECT_EQ(sut.error().message, dir_ + ": cannot read: not a regular file");
}

TEST_F(LoadConfig, reportsTheLineOfATomlSyntaxError) {
  const std::string message = error({"[node]", "name = \"alpha\"", "listen = ", "[limits]"});

  EXPECT_EQ(message.rfind(at(3), 0), 0u) << message;  // starts with PATH:3:
}

TEST_F(LoadConfig, reportsAKeyGivenTwiceAsATomlError) {
  const std::string message = error(node_and({"name = \"beta\""}));

  EXPECT_EQ(message.rfind(at(4), 0), 0u) << message;
  EXPECT_NE(message.find("'name'"), std::string::npos) << message;
}

// --------------------------------------------------- unknown keys, types

TEST_F(LoadConfig, namesAnUnknownKeyAndItsTable) {
  EXPECT_EQ(error({"[node]", "name = \"alpha\"", "lisen = \"tcp://127.0.0.1:7100\""}),
            at(3) + "node.lisen: unknown key 'lisen' in [node] (known: name, namespace, listen)");
}

TEST_F(LoadConfig, namesTheEarliestOfSeveralUnknownKeys) {
  // toml++ keeps keys sorted; the message must follow the file.
  EXPECT_EQ(error(node_and({"[limits]", "zz = 1", "aa = 2"})),
            at(5) + "limits.zz: unknown key 'zz' in [limits] (known: max_frame, credit, credit_bytes, heartbeat_ms)");
}

TEST_F(LoadConfig, namesAnUnknownKeyInAPeer) {
  EXPECT_EQ(error(node_and({"[[peer]]", "name = \"beta\"", "endpoint = \"tcp://b:1\"", "pubkey = \"x\""})),
            at(7) + "peer[0].pubkey: unknown key 'pubkey' in [[peer]] (known: name, endpoint, public_key)");
}

TEST_F(LoadConfig, namesAnUnknownTable) {
  EXPECT_EQ(error(node_and({"[limit]", "credit = 1"})), at(4) + "limit: unknown table [limit]");
  EXPECT_EQ(error(node_and({"[[peers]]", "name = \"beta\""})), at(4) + "peers: unknown table [[peers]]");
}

TEST_F(LoadConfig, namesAKeyOutsideAnyTable) {
  EXPECT_EQ(error({"name = \"alpha\"", "[node]", "name = \"alpha\"", "listen = \"tcp://127.0.0.1:1\""}),
            at(1) + "name: unknown key 'name' in the top level, before any [table] (known: node, security, "
                    "control, metrics, limits, log, peer, topic, queue, locks, lock_backend, kafka, rabbitmq, link)");
}

TEST_F(LoadConfig, refusesASingleBracketPeerTable) {
  EXPECT_EQ(error(node_and({"[peer]", "name = \"beta\""})),
            at(4) + "peer: expected [[peer]] tables, found a table (write [[peer]], with two brackets)");
}

TEST_F(LoadConfig, namesTheExpectedAndTheFoundType) {
  EXPECT_EQ(error({"[node]", "name = 7", "listen = \"tcp://127.0.0.1:1\""}),
            at(2) + "node.name: expected a string, found an integer");
  EXPECT_EQ(error(node_and({"[metrics]", "port = \"9464\""})),
            at(5) + "metrics.port: expected an integer, found a string");
  EXPECT_EQ(error(node_and({"[limits]", "credit = 1.5"})),
            at(5) + "limits.credit: expected an integer, found a floating-point number");
  EXPECT_EQ(error({"log = \"info\"", "[node]", "name = \"alpha\"", "listen = \"tcp://127.0.0.1:1\""}),
            at(1) + "log: expected a table [log], found a string");
}

// ----------------------------------------------------------------- [node]

TEST_F(LoadConfig, reportsAMissingNodeNameAtItsTable) {
  EXPECT_EQ(error({"# colod", "[node]", "listen = \"tcp://127.0.0.1:1\""}), at(2) + "node.name: missing");
}

TEST_F(LoadConfig, reportsAMissingNodeTableWithoutALine) {
  EXPECT_EQ(error({"[limits]", "credit = 1"}), path_ + ": node.name: missing (the file has no [node] table)");
}

TEST_F(LoadConfig, reportsAMissingListen) {
  EXPECT_EQ(error({"[node]", "name = \"alpha\""}), at(1) + "node.listen: missing");
}

TEST_F(LoadConfig, refusesABadNodeName) {
  EXPECT_EQ(error({"[node]", "name = \"al pha\"", "listen = \"tcp://127.0.0.1:1\""}),
            at(2) + "node.name: 'al pha' is not 1-64 bytes of A-Z a-z 0-9 _ - .");
  EXPECT_EQ(error({"[node]", "name = \"a/b\"", "listen = \"tcp://127.0.0.1:1\""}),
            at(2) + "node.name: 'a/b' is not 1-64 bytes of A-Z a-z 0-9 _ - .");
  EXPECT_EQ(error({"[node]", "name = \"" + std::string(65, 'n') + "\"", "listen = \"tcp://127.0.0.1:1\""}),
            at(2) + "node.name: '" + std::string(65, 'n') + "' is not 1-64 bytes of A-Z a-z 0-9 _ - .");
  EXPECT_TRUE(load({"[node]", "name = \"" + std::string(64, 'n') + "\"", "listen = \"tcp://127.0.0.1:1\""}).has_value());
}

TEST_F(LoadConfig, refusesABadNamespace) {
  const std::string message = error({"[node]", "name = \"alpha\"", "namespace = \"a.b\"", "listen = \"tcp://127.0.0.1:1\""});

  EXPECT_EQ(message.rfind(at(3) + "node.namespace: invalid namespace 'a.b'", 0), 0u) << message;
}

TEST_F(LoadConfig, refusesAnEndpointOfAnotherShape) {
  EXPECT_EQ(error({"[node]", "name = \"alpha\"", "listen = \"tcp//x\""}),
            at(3) + "node.listen: 'tcp//x' is not tcp://HOST:PORT or ipc://PATH");
  EXPECT_EQ(error(node_and({"[[peer]]", "name = \"beta\"", "endpoint = \"tcp//x\""})),
            at(6) + "peer[0].endpoint: 'tcp//x' is not tcp://HOST:PORT or ipc://PATH");
  EXPECT_EQ(error({"[node]", "name = \"alpha\"", "listen = \"tcp://host\""}),
            at(3) + "node.listen: 'tcp://host' is not tcp://HOST:PORT or ipc://PATH (no :PORT)");
  EXPECT_EQ(error({"[node]", "name = \"alpha\"", "listen = \"tcp://:7100\""}),
            at(3) + "node.listen: 'tcp://:7100' is not tcp://HOST:PORT or ipc://PATH (the host is empty)");
  EXPECT_EQ(error({"[node]", "name = \"alpha\"", "listen = \"ipc://\""}),
            at(3) + "node.listen: 'ipc://' is not tcp://HOST:PORT or ipc://PATH (the path is empty)");
  EXPECT_EQ(error({"[node]", "name = \"alpha\"", "listen = \"udp://a:1\""}),
            at(3) + "node.listen: 'udp://a:1' is not tcp://HOST:PORT or ipc://PATH");
}

TEST_F(LoadConfig, refusesAPortOutside1To65535) {
  EXPECT_EQ(error({"[node]", "name = \"alpha\"", "listen = \"tcp://127.0.0.1:0\""}),
            at(3) + "node.listen: port '0' of 'tcp://127.0.0.1:0' is not 1-65535");
  EXPECT_EQ(error({"[node]", "name = \"alpha\"", "listen = \"tcp://127.0.0.1:65536\""}),
            at(3) + "node.listen: port '65536' of 'tcp://127.0.0.1:65536' is not 1-65535");
  EXPECT_EQ(error(node_and({"[[peer]]", "name = \"beta\"", "endpoint = \"tcp://b:71o1\""})),
            at(6) + "peer[0].endpoint: port '71o1' of 'tcp://b:71o1' is not 1-65535");
  EXPECT_EQ(error({"[node]", "name = \"alpha\"", "listen = \"tcp://a:\""}),
            at(3) + "node.listen: port '' of 'tcp://a:' is not 1-65535");
}

TEST_F(LoadConfig, refusesAPeerEndpointOnEveryInterface) {
  EXPECT_EQ(error(node_and({"[[peer]]", "name = \"beta\"", "endpoint = \"tcp://*:7101\""})),
            at(6) + "peer[0].endpoint: 'tcp://*:7101': a peer needs a host to connect to; '*' is for listen");
}

// Secure by default: without CURVE, a listen endpoint other hosts can reach
// is refused unless the file says `insecure = true`.
TEST_F(LoadConfig, refusesAListenEndpointOtherHostsReachWithoutCurveUnlessInsecure) {
  const std::string refused =
      " is reachable from other hosts, and CURVE is off: anyone who reaches it could join as a peer. Set "
      "[security] secret_key_file (keys: colod --keygen), or listen on loopback, or set [security] insecure = true "
      "on a network you trust (docs/security.md)";
  EXPECT_EQ(error({"[node]", "name = \"alpha\"", "listen = \"tcp://*:7100\""}),
            at(3) + "node.listen: 'tcp://*:7100'" + refused);
  EXPECT_EQ(error({"[node]", "name = \"alpha\"", "listen = \"tcp://10.0.0.1:7100\"", "[security]",
                   "insecure = false"}),
            at(3) + "node.listen: 'tcp://10.0.0.1:7100'" + refused);

  auto insecure = load({"[node]", "name = \"alpha\"", "listen = \"tcp://*:7100\"", "[security]", "insecure = true"});
  auto loopback = load({"[node]", "name = \"alpha\"", "listen = \"tcp://127.0.0.1:7100\""});
  auto with_curve = load(Lines{"[node]", "name = \"alpha\"", "listen = \"tcp://*:7100\"", curve_on()[0], curve_on()[1]});

  ASSERT_TRUE(insecure.has_value()) << insecure.error().message;
  EXPECT_TRUE(insecure->insecure);
  ASSERT_TRUE(loopback.has_value()) << loopback.error().message;
  EXPECT_FALSE(loopback->insecure);
  ASSERT_TRUE(with_curve.has_value()) << with_curve.error().message;
  EXPECT_FALSE(with_curve->insecure);
}

// What --check-config used to let through and colod then failed on, or
// livelocked with, at run time.
TEST_F(LoadConfig, refusesEndpointsThatCanOnlyFailAtRunTime) {
  const std::string long_ipc = "ipc:///" + std::string(107, 'p');
  EXPECT_EQ(error({"[node]", "name = \"alpha\"", "listen = \"" + long_ipc + "\""}),
            at(3) + "node.listen: '" + long_ipc.substr(0, 100) + "...': its path is 108 bytes; a Unix socket's "
                    "path has at most 107");
  EXPECT_EQ(error(node_and({"[[peer]]", "name = \"beta\"", "endpoint = \"tcp://127.0.0.1:7100\""})),
            at(6) + "peer[0].endpoint: 'tcp://127.0.0.1:7100' is this node's own listen endpoint (node.listen = "
                    "'tcp://127.0.0.1:7100')");
  EXPECT_EQ(error({"[node]", "name = \"alpha\"", "listen = \"tcp://*:7100\"", "[security]", "insecure = true",
                   "[[peer]]", "name = \"beta\"", "endpoint = \"tcp://localhost:7100\""}),
            at(8) + "peer[0].endpoint: 'tcp://localhost:7100' is this node's own listen endpoint (node.listen = "
                    "'tcp://*:7100')");
  EXPECT_EQ(error(node_and({"[[peer]]", "name = \"beta\"", "endpoint = \"tcp://10.0.0.2:7100\"",  //
                            "[[peer]]", "name = \"gamma\"", "endpoint = \"tcp://10.0.0.2:7100\""})),
            at(9) + "peer[1].endpoint: 'tcp://10.0.0.2:7100' is already the endpoint of peer[0].endpoint (line 6)");
}

TEST_F(LoadConfig, refusesLockBackendEndpointsWithoutAHostAndPortEach) {
  EXPECT_EQ(error(node_and({"[[lock_backend]]", "kind = \"zookeeper\"", "endpoints = \",,,:\""})),
            at(6) + "lock_backend[0].endpoints: ',,,:' has an empty HOST:PORT (between commas, or at an end)");
  EXPECT_EQ(error(node_and({"[[lock_backend]]", "kind = \"zookeeper\"", "endpoints = \"a:1,b\""})),
            at(6) + "lock_backend[0].endpoints: 'b' is not HOST:PORT (no :PORT) (in 'a:1,b')");
  EXPECT_EQ(error(node_and({"[[lock_backend]]", "kind = \"redis\"", "endpoints = \"a:1,b:2\""})),
            at(6) + "lock_backend[0].endpoints: 'a:1,b:2' is not one HOST:PORT");
  EXPECT_EQ(error(node_and({"[[lock_backend]]", "kind = \"etcd\"", "endpoints = \"http://a:0\""})),
            at(6) + "lock_backend[0].endpoints: 'a:0': port '0' is not 1-65535 (in 'a:0')");

  auto chroot = load(node_and({"[[lock_backend]]", "kind = \"zookeeper\"", "endpoints = \"a:2181,b:2181/colo\""}));
  ASSERT_TRUE(chroot.has_value()) << chroot.error().message;
  EXPECT_EQ(chroot->lock_backends[0].endpoints, "a:2181,b:2181/colo");
}

// A message larger than a frame may carry would drop the connection at the
// receiver, and be sent again forever: refused when the file is read.
TEST_F(LoadConfig, refusesAMaxMessageThatDoesNotFitInAFrame) {
  EXPECT_EQ(error(node_and({"[limits]", "max_frame = 65536",  //
                            "[[topic]]", "name = \"t\"", "max_message = 65536"})),
            at(8) + "topic[0].max_message: 65536 bytes do not fit in a federation frame of [limits] max_frame = "
                    "65536 bytes (a frame adds up to 512): raise max_frame to at least 66048, or lower max_message");
  EXPECT_EQ(error(node_and({"[limits]", "max_frame = 65536",  //
                            "[[queue]]", "name = \"q\"", "home = \"alpha\"", "max_message = 65025"})),
            at(9) + "queue[0].max_message: 65025 bytes do not fit in a federation frame of [limits] max_frame = "
                    "65536 bytes (a frame adds up to 512): raise max_frame to at least 65537, or lower max_message");

  auto fits = load(node_and({"[limits]", "max_frame = 65536", "[[topic]]", "name = \"t\"", "max_message = 65024"}));
  ASSERT_TRUE(fits.has_value()) << fits.error().message;
  EXPECT_EQ(fits->topics[0].max_message, 65024u);
}

// ------------------------------------------------ [control] .. [log]

TEST_F(LoadConfig, refusesARelativeOrTooLongControlSocket) {
  EXPECT_EQ(error(node_and({"[control]", "socket = \"run/colod.sock\""})),
            at(5) + "control.socket: 'run/colod.sock' is not an absolute path of at most 107 bytes");
  const std::string long_path = "/" + std::string(107, 's');
  EXPECT_EQ(error(node_and({"[control]", "socket = \"" + long_path + "\""})),
            at(5) + "control.socket: '" + long_path.substr(0, 100) +
                "...' is not an absolute path of at most 107 bytes");
}

// colod never replaces another file with its socket, and a directory is
// not a socket's path.
TEST_F(LoadConfig, refusesAControlSocketPathThatIsADirectoryOrAnotherFile) {
  const std::string file = write("notes.txt", "keep me\n");
  EXPECT_EQ(error(node_and({"[control]", "socket = \"" + file + "\""})),
            at(5) + "control.socket: '" + file + "' exists and is not a socket: colod never replaces another file");
  EXPECT_EQ(error(node_and({"[control]", "socket = \"/\""})),
            at(5) + "control.socket: '/' names a directory; give the socket's file (e.g. /run/colo/NS/colod.sock)");
  EXPECT_EQ(error(node_and({"[control]", "socket = \"" + dir_ + "/..\""})),
            at(5) + "control.socket: '" + dir_ + "/..' names a directory; give the socket's file (e.g. "
                    "/run/colo/NS/colod.sock)");
  std::ifstream kept(file);
  std::string content;
  std::getline(kept, content);
  EXPECT_EQ(content, "keep me");
}

TEST_F(LoadConfig, refusesMetricsOutOfRange) {
  EXPECT_EQ(error(node_and({"[metrics]", "port = 65536"})), at(5) + "metrics.port: 65536 is outside 0..65535");
  EXPECT_EQ(error(node_and({"[metrics]", "address = \"localhost\""})),
            at(5) + "metrics.address: 'localhost' is not an IPv4 or IPv6 address");
}

TEST_F(LoadConfig, refusesLimitsOutOfRange) {
  EXPECT_EQ(error(node_and({"[limits]", "max_frame = 1023"})),
            at(5) + "limits.max_frame: 1023 is outside 1024..1073741824");
  EXPECT_EQ(error(node_and({"[limits]", "max_frame = 1073741825"})),
            at(5) + "limits.max_frame: 1073741825 is outside 1024..1073741824");
  EXPECT_EQ(error(node_and({"[limits]", "credit = 0"})), at(5) + "limits.credit: 0 is outside 1..1000000");
  EXPECT_EQ(error(node_and({"[limits]", "credit_bytes = 4294967297"})),
            at(5) + "limits.credit_bytes: 4294967297 is outside 0..4294967296");
  EXPECT_EQ(error(node_and({"[limits]", "credit_bytes = -1"})), at(5) + "limits.credit_bytes: -1 is outside 0..4294967296");
  EXPECT_EQ(error(node_and({"[limits]", "heartbeat_ms = 49"})), at(5) + "limits.heartbeat_ms: 49 is outside 50..60000");
  EXPECT_EQ(error(node_and({"[limits]", "heartbeat_ms = -1"})), at(5) + "limits.heartbeat_ms: -1 is outside 50..60000");
}

TEST_F(LoadConfig, refusesAnUnknownLogLevel) {
  EXPECT_EQ(error(node_and({"[log]", "level = \"verbose\""})),
            at(5) + "log.level: 'verbose' is not debug, info, warn or error");
  EXPECT_EQ(error(node_and({"[log]", "level = \"INFO\""})),
            at(5) + "log.level: 'INFO' is not debug, info, warn or error");
}

TEST_F(LoadConfig, readsEveryLogLevel) {
  for (const LogLevel level : {LogLevel::debug, LogLevel::info, LogLevel::warn, LogLevel::error}) {
    auto sut = load(node_and({"[log]", std::string("level = \"") + log_level_name(level) + "\""}));
    ASSERT_TRUE(sut.has_value()) << sut.error().message;
    EXPECT_EQ(sut->log_level, level);
  }
}

// ---------------------------------------------------------------- [[peer]]

TEST_F(LoadConfig, refusesAPeerListedTwice) {
  EXPECT_EQ(error(node_and({"[[peer]]", "name = \"beta\"", "endpoint = \"tcp://b:1\"",  //
                            "[[peer]]", "name = \"beta\"", "endpoint = \"tcp://c:1\""})),
            at(8) + "peer[1].name: 'beta' is already the name of peer[0].name (line 5)");
}

TEST_F(LoadConfig, refusesAPeerNamedLikeThisNode) {
  EXPECT_EQ(error(node_and({"[[peer]]", "name = \"alpha\"", "endpoint = \"tcp://b:1\""})),
            at(5) + "peer[0].name: 'alpha' is this node's own name (node.name)");
}

TEST_F(LoadConfig, refusesABadPeerName) {
  EXPECT_EQ(error(node_and({"[[peer]]", "name = \"\"", "endpoint = \"tcp://b:1\""})),
            at(5) + "peer[0].name: '' is not 1-64 bytes of A-Z a-z 0-9 _ - .");
}

TEST_F(LoadConfig, reportsAMissingPeerKeyAtItsTable) {
  EXPECT_EQ(error(node_and({"[[peer]]", "name = \"beta\"", "endpoint = \"tcp://b:1\"", "[[peer]]", "name = \"c\""})),
            at(7) + "peer[1].endpoint: missing");
}

// ------------------------------------------------------------------- CURVE

TEST_F(LoadConfig, requiresEveryPeerKeyWhenCurveIsOn) {
  Lines lines = node_and(curve_on());
  lines.insert(lines.end(), {"[[peer]]", "name = \"beta\"", "endpoint = \"tcp://b:1\""});

  EXPECT_EQ(error(lines), at(6) + "peer[0].public_key: missing (CURVE is on: security.secret_key_file is set, so "
                                  "every peer needs its key)");
}

TEST_F(LoadConfig, refusesPeerKeysWhenCurveIsOff) {
  EXPECT_EQ(error(node_and({"[[peer]]", "name = \"beta\"", "endpoint = \"tcp://b:1\"",
                            "public_key = \"" + kKeyBeta + "\""})),
            at(7) + "peer[0].public_key: set, but security.secret_key_file is not: CURVE needs our secret key too (or "
                    "remove the public keys to run without CURVE)");
}

TEST_F(LoadConfig, refusesAPublicKeyThatIsNotZ85) {
  auto with_key = [&](const std::string& key) {
    Lines lines = node_and(curve_on());
    lines.insert(lines.end(),
                 {"[[peer]]", "name = \"beta\"", "endpoint = \"tcp://b:1\"", "public_key = \"" + key + "\""});
    return error(lines);
  };
  const std::string what = "' is not a CURVE public key (40 characters of the Z85 alphabet)";

  const std::string short_key = kKeyBeta.substr(0, 39);
  EXPECT_EQ(with_key(short_key), at(9) + "peer[0].public_key: '" + short_key + what);
  const std::string bad_char = kKeyBeta.substr(0, 39) + ",";  // ',' is not in the alphabet
  EXPECT_EQ(with_key(bad_char), at(9) + "peer[0].public_key: '" + bad_char + what);
  const std::string overflow(40, '#');  // "#####" is 85^5 - 1, above 2^32 - 1
  EXPECT_EQ(with_key(overflow), at(9) + "peer[0].public_key: '" + overflow + what);
}

TEST_F(LoadConfig, acceptsKeysMadeByLibzmq) {
  auto ours = generate_keypair();
  auto theirs = generate_keypair();
  if (!ours || !theirs) GTEST_SKIP() << "this libzmq has no CURVE";
  Lines lines = node_and(curve_on(ours->secret_key + "\n"));
  lines.insert(lines.end(),
               {"[[peer]]", "name = \"beta\"", "endpoint = \"tcp://b:1\"",
                "public_key = \"" + theirs->public_key + "\""});

  auto sut = load(lines);

  ASSERT_TRUE(sut.has_value()) << sut.error().message;
  EXPECT_EQ(sut->peers[0].public_key, theirs->public_key);
}

TEST_F(LoadConfig, refusesAMissingSecretKeyFile) {
  const std::string key_file = dir_ + "/absent.key";

  EXPECT_EQ(error(node_and({"[security]", "secret_key_file = \"" + key_file + "\""})),
            at(5) + "security.secret_key_file: cannot read '" + key_file + "': No such file or directory");
}

TEST_F(LoadConfig, refusesASecretKeyFileWithoutAKey) {
  const std::string what = "' does not hold a CURVE secret key (40 characters of the Z85 alphabet; make a key pair "
                           "with colod --keygen --out PREFIX)";
  const std::string key_file = dir_ + "/alpha.key";

  EXPECT_EQ(error(node_and(curve_on(kSecret.substr(1) + "\n"))),
            at(5) + "security.secret_key_file: '" + key_file + what);
  EXPECT_EQ(error(node_and(curve_on(kSecret + " " + kSecret + "\n"))),
            at(5) + "security.secret_key_file: '" + key_file + what);
  EXPECT_EQ(error(node_and(curve_on(""))), at(5) + "security.secret_key_file: '" + key_file + what);
  EXPECT_EQ(error(node_and({"[security]", "secret_key_file = \"" + dir_ + "\""})),
            at(5) + "security.secret_key_file: '" + dir_ + "' is not a regular file");
}

TEST_F(LoadConfig, readsARelativeSecretKeyFileFromTheConfigDirectory) {
  write("alpha.key", kSecret + "\n");

  auto sut = load(node_and({"[security]", "secret_key_file = \"alpha.key\""}));

  ASSERT_TRUE(sut.has_value()) << sut.error().message;
  EXPECT_EQ(sut->secret_key_file, dir_ + "/alpha.key");
}

// --------------------------------------------------- [[topic]], [[queue]]

TEST_F(LoadConfig, refusesBadObjectNames) {
  const std::string topic = error(node_and({"[[topic]]", "name = \"/prices\""}));
  EXPECT_EQ(topic.rfind(at(5) + "topic[0].name: invalid object name '/prices': it starts or ends with '/'", 0), 0u)
      << topic;
  const std::string queue = error(node_and({"[[queue]]", "name = \"a//b\"", "home = \"alpha\""}));
  EXPECT_EQ(queue.rfind(at(5) + "queue[0].name: invalid object name 'a//b'", 0), 0u) << queue;
  EXPECT_EQ(error(node_and({"[[topic]]", "capacity = 4096"})), at(4) + "topic[0].name: missing");
}

TEST_F(LoadConfig, refusesATopicDeclaredTwice) {
  EXPECT_EQ(error(node_and({"[[topic]]", "name = \"prices\"", "[[topic]]", "name = \"prices\""})),
            at(7) + "topic[1].name: 'prices' is already declared as topic[0].name (line 5)");
}

TEST_F(LoadConfig, refusesANameUsedForATopicAndAQueue) {
  EXPECT_EQ(error(node_and({"[[topic]]", "name = \"jobs\"", "[[queue]]", "name = \"jobs\"", "home = \"alpha\""})),
            at(7) + "queue[0].name: 'jobs' is already declared as topic[0].name (line 5)");
  EXPECT_EQ(error(node_and({"[[queue]]", "name = \"jobs\"", "home = \"alpha\"", "[[queue]]", "name = \"jobs\"",
                            "home = \"alpha\""})),
            at(8) + "queue[1].name: 'jobs' is already declared as queue[0].name (line 5)");
}

TEST_F(LoadConfig, refusesAQueueHomeThatIsNoNodeOfTheCluster) {
  EXPECT_EQ(error(node_and({"[[peer]]", "name = \"beta\"", "endpoint = \"tcp://b:1\"",  //
                            "[[queue]]", "name = \"jobs\"", "home = \"gamma\""})),
            at(9) + "queue[0].home: 'gamma' is neither this node nor one of its peers ('alpha', 'beta')");
  EXPECT_EQ(error(node_and({"[[queue]]", "name = \"jobs\""})), at(4) + "queue[0].home: missing");
  EXPECT_TRUE(load(node_and({"[[peer]]", "name = \"beta\"", "endpoint = \"tcp://b:1\"",  //
                             "[[queue]]", "name = \"jobs\"", "home = \"beta\""}))
                  .has_value());
}

TEST_F(LoadConfig, refusesACapacityThatIsNotAPowerOfTwoInRange) {
  EXPECT_EQ(error(node_and({"[[topic]]", "name = \"prices\"", "capacity = 1000000"})),
            at(6) + "topic[0].capacity: 1000000 is not a power of two");
  EXPECT_EQ(error(node_and({"[[topic]]", "name = \"prices\"", "capacity = 2048"})),
            at(6) + "topic[0].capacity: 2048 is outside 4096..17179869184");
  EXPECT_EQ(error(node_and({"[[queue]]", "name = \"jobs\"", "home = \"alpha\"", "capacity = 34359738368"})),
            at(7) + "queue[0].capacity: 34359738368 is outside 4096..17179869184");
  EXPECT_TRUE(load(node_and({"[[topic]]", "name = \"big\"", "capacity = 17179869184"})).has_value());
}

TEST_F(LoadConfig, refusesAMaxMessageThatDoesNotFitTwice) {
  EXPECT_EQ(error(node_and({"[[topic]]", "name = \"prices\"", "capacity = 4096", "max_message = 2017"})),
            at(7) + "topic[0].max_message: 2017 bytes do not fit twice in a ring of 4096 bytes (at most 2016; raise "
                    "capacity or lower max_message)");
  EXPECT_EQ(error(node_and({"[[queue]]", "name = \"jobs\"", "home = \"alpha\"", "max_message = 1048576"})),
            at(7) + "queue[0].max_message: 1048576 bytes do not fit twice in a ring of 1048576 bytes (at most "
                    "524256; raise capacity or lower max_message)");
}

TEST_F(LoadConfig, blamesTheCapacityWhenTheDefaultMaxMessageDoesNotFit) {
  EXPECT_EQ(error(node_and({"[[topic]]", "name = \"prices\"", "capacity = 65536"})),
            at(6) + "topic[0].capacity: the default max_message of 65536 bytes do not fit twice in a ring of 65536 "
                    "bytes (at most 32736; raise capacity or lower max_message)");
}

TEST_F(LoadConfig, refusesAnEmptyMaxMessage) {
  EXPECT_EQ(error(node_and({"[[topic]]", "name = \"prices\"", "max_message = 0"})),
            at(6) + "topic[0].max_message: 0 is outside 1..2147483583");
}

TEST_F(LoadConfig, refusesHistoryAndBackpressureOutOfRange) {
  EXPECT_EQ(error(node_and({"[[topic]]", "name = \"prices\"", "history = 4294967296"})),
            at(6) + "topic[0].history: 4294967296 is outside 0..4294967295");
  EXPECT_EQ(error(node_and({"[[topic]]", "name = \"prices\"", "backpressure = \"drop\""})),
            at(6) + "topic[0].backpressure: 'drop' is not block or lossy");
}

TEST_F(LoadConfig, refusesQueueAcksThatAreNoBooleanAndMaxDeliveriesOutOfRange) {
  EXPECT_EQ(error(node_and({"[[queue]]", "name = \"jobs\"", "home = \"alpha\"", "acks = \"yes\""})),
            at(7) + "queue[0].acks: expected true or false, found a string");
  EXPECT_EQ(error(node_and({"[[queue]]", "name = \"jobs\"", "home = \"alpha\"", "max_deliveries = 0"})),
            at(7) + "queue[0].max_deliveries: 0 is outside 1..255");
}

// ------------------------------------------------------------- the helpers

// What a user without root gets: $XDG_RUNTIME_DIR, else /tmp/colo-<uid>.
// 0 if both are as documented, else which one is not.
int check_non_root_sockets() {
  ::setenv("XDG_RUNTIME_DIR", "/run/user/4242", 1);
  if (default_control_socket("eu") != "/run/user/4242/colo/eu/colod.sock") return 1;
  ::unsetenv("XDG_RUNTIME_DIR");
  if (default_control_socket("eu") != "/tmp/colo-" + std::to_string(::geteuid()) + "/eu/colod.sock") return 2;
  return 0;
}

TEST(DefaultControlSocket, isUnderRunColoForRoot) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  EXPECT_EQ(default_control_socket("eu"), "/run/colo/eu/colod.sock");
}

TEST(DefaultControlSocket, isUnderTheRuntimeDirectoryElseTmpForOtherUsers) {
  if (::geteuid() != 0) {
    const char* saved = std::getenv("XDG_RUNTIME_DIR");
    const std::string restore = saved != nullptr ? saved : "";
    EXPECT_EQ(check_non_root_sockets(), 0);
    if (saved != nullptr) ::setenv("XDG_RUNTIME_DIR", restore.c_str(), 1);
    return;
  }
  // As root: in a child that becomes nobody (65534), so that the environment
  // and the identity of this process stay as they are.
  const pid_t child = ::fork();
  ASSERT_GE(child, 0) << std::strerror(errno);
  if (child == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(3);
    ::_exit(check_non_root_sockets());
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: the $XDG_RUNTIME_DIR path is wrong, 2: the /tmp/colo-<uid> one, "
                                       "3: cannot become nobody";
}

TEST(LogLevelName, namesEachLevelAsTheConfigWritesIt) {
  EXPECT_STREQ(log_level_name(LogLevel::debug), "debug");
  EXPECT_STREQ(log_level_name(LogLevel::info), "info");
  EXPECT_STREQ(log_level_name(LogLevel::warn), "warn");
  EXPECT_STREQ(log_level_name(LogLevel::error), "error");
}

}  // namespace
}  // namespace colo::bridge
