// tests/bridge/federation_support.hpp — what the `bridge` suite's federation
// tests share: hosts (a colod with its own colo namespace standing for a
// host), their config files, `colo peers --json`, and publisher and
// subscriber threads that use libcolo on a host's namespace directly.
//
// Test messages: [publisher u32][index u32][checksum u32][pad u32][payload],
// so a subscriber can tell who sent a message, which one it is, and whether
// it arrived intact.
#pragma once

#include <gtest/gtest.h>

#include <atomic>     // stop flags shared with the threads
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>      // hosts and threads: references handed out stay valid
#include <map>
#include <nlohmann/json.hpp>  // `colo peers --json`
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "support.hpp"  // Process, wait_until, unique namespaces

namespace colo::test {

std::string colod_path();  // COLOD_BIN, else "colod" (found through PATH by nobody: set it)

// A free TCP port on 127.0.0.1 (bound then released: good enough on a test machine).
int free_port();

constexpr std::size_t kHeader = 16;  // publisher, index, checksum, pad
std::uint32_t checksum(const std::byte* p, std::size_t n);  // FNV-1a
std::vector<std::byte> make_message(std::uint32_t publisher, std::uint32_t index, std::size_t size);

struct Host {
  std::string name, ns, config_path, control;
  std::string address = "127.0.0.1";  // where it listens, and where its peers reach it
  int port = 0;
  std::vector<std::string> launcher;  // put before colod's command line (e.g. `ip netns exec NAME`)
  std::string public_key, secret_key;  // CURVE, when on
  std::optional<Process> colod;
  std::string endpoint() const { return "tcp://" + address + ":" + std::to_string(port); }
};

// What one subscriber saw: per publisher, the indexes in arrival order.
struct Seen {
  std::map<std::uint32_t, std::vector<std::uint32_t>> by_publisher;
  std::uint64_t total = 0, corrupt = 0;
};

// Fixture: hosts in a temporary directory; TearDown prints the colods'
// stderr if the test failed, stops the threads, kills the colods and
// removes every file (segments included).
class Federation : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // A host named `name` with a fresh namespace, a free port on 127.0.0.1
  // and its files in the test's directory. Change address, port or launcher
  // before write_configs.
  Host& add_host(const std::string& name);

  // Writes each host's config: every other host is a peer, `topics` are
  // cluster topics (each followed by `extra_topic_keys`), heartbeat 100 ms.
  void write_configs(const std::vector<std::string>& topics, bool curve, const std::string& extra_topic_keys = "");

  void start(Host& h);  // spawns h.launcher + colod --config

  // `colo peers --json` of `h`; a null json if colod did not answer.
  nlohmann::json peers(const Host& h);
  // The entry of peer `name` in peers(h); a null json if absent.
  nlohmann::json peer_of(const Host& h, const std::string& name);
  bool all_connected(const Host& h);  // every peer of `h` connected (hellos both ways)?
  ::testing::AssertionResult all_hosts_connected();

  // A thread that subscribes to "prices" on `h` and records everything until
  // `expected` messages or `stop`. Started threads are joined by TearDown
  // (after stop_) if the test ends early.
  std::thread& subscriber(const Host& h, std::uint64_t expected, Seen& seen, std::atomic<bool>& ready,
                          std::atomic<bool>& stop);

  // Publishes `count` messages as publisher `id` on `h`'s "prices", sizes 0..200
  // bytes of payload, sleeping `pause` after every 100th. A publish that
  // times out (100 ms: writers held back) is counted in publish_timeouts_
  // and tried again.
  std::thread& publisher(const Host& h, std::uint32_t id, std::uint32_t count,
                         std::chrono::microseconds pause = std::chrono::microseconds(0));

  // A subscriber on `to`, then `count` messages published on `from` as
  // publisher `id`: every one arrives at `to`, in order, within 20 s.
  ::testing::AssertionResult arrive_in_order(const Host& from, const Host& to, std::uint32_t id, std::uint32_t count);

  // Cluster queue "jobs": a consumer thread on `h` that records what it
  // takes until `consumed` (all hosts together) reaches `total`, spending
  // ~20 us per message as work (without it the home's own consumer would
  // take everything before a peer asks).
  void queue_consumer(const Host& h, Seen& seen, std::atomic<std::uint64_t>& consumed, std::uint64_t total,
                      std::atomic<int>& ready);
  // Produces `count` messages as producer `id` into `h`'s "jobs".
  void queue_producer(const Host& h, std::uint32_t id, std::uint32_t count);
  // Appends a cluster queue "jobs" (8 MiB ring) with that home to every config.
  void add_queue_to_configs(const std::string& home);

  std::string dir_;
  std::deque<Host> hosts_;
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> publish_timeouts_{0};
  std::deque<std::thread> threads_;  // deque: references handed out stay valid
};

// Every index 0..n-1 exactly once, in order.
::testing::AssertionResult exactly_in_order(const std::vector<std::uint32_t>& got, std::uint32_t n);

// Indexes strictly increasing (no duplicate, no reordering) and within
// 0..n-1; on success `holes` is how many of 0..n-1 are missing.
::testing::AssertionResult increasing_with_holes(const std::vector<std::uint32_t>& got, std::uint32_t n,
                                                 std::uint64_t& holes);

}  // namespace colo::test
