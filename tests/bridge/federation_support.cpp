// tests/bridge/federation_support.cpp — see federation_support.hpp.
#include "federation_support.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <random>
#include <span>

#include "colo/channel.hpp"
#include "colo/node.hpp"

namespace colo::test {

using nlohmann::json;

std::string colod_path() {
  const char* p = std::getenv("COLOD_BIN");
  return p != nullptr ? p : "colod";
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// Checks a test message and notes (publisher, index) in `seen`; a short or
// damaged one is counted as corrupt.
void record(Seen& seen, std::span<const std::byte> d) {
  std::uint32_t pub = 0, index = 0, sum = 0;
  if (d.size() < kHeader) {
    ++seen.corrupt;
    return;
  }
  std::memcpy(&pub, d.data(), 4);
  std::memcpy(&index, d.data() + 4, 4);
  std::memcpy(&sum, d.data() + 8, 4);
  if (checksum(d.data() + kHeader, d.size() - kHeader) != sum) {
    ++seen.corrupt;
    return;
  }
  seen.by_publisher[pub].push_back(index);
}

std::uint32_t checksum(const std::byte* p, std::size_t n) {
  std::uint32_t h = 2166136261u;
  for (std::size_t i = 0; i < n; ++i) h = (h ^ static_cast<std::uint32_t>(p[i])) * 16777619u;
  return h;
}

std::vector<std::byte> make_message(std::uint32_t publisher, std::uint32_t index, std::size_t size) {
  std::vector<std::byte> m(kHeader + size);
  for (std::size_t i = 0; i < size; ++i) m[kHeader + i] = static_cast<std::byte>((index * 31 + i * 7 + publisher) & 0xff);
  const std::uint32_t sum = checksum(m.data() + kHeader, size);
  std::memcpy(m.data(), &publisher, 4);
  std::memcpy(m.data() + 4, &index, 4);
  std::memcpy(m.data() + 8, &sum, 4);
  return m;
}

void Federation::SetUp() {
  char tmpl[] = "/tmp/colo-bridge-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  dir_ = tmpl;
}

void Federation::TearDown() {
  if (HasFailure())
    for (auto& h : hosts_)
      if (h.colod) std::cerr << "---- colod " << h.name << " (" << h.ns << ") stderr:\n" << h.colod->err() << '\n';
  stop_ = true;  // threads still running after a failed assertion end now
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  for (auto& h : hosts_) {
    if (h.colod) h.colod->kill(SIGKILL);
    remove_namespace_files(h.ns);
  }
  if (!dir_.empty()) (void)std::system(("rm -rf " + dir_).c_str());
}

Host& Federation::add_host(const std::string& name) {
  Host h;
  h.name = name;
  h.ns = unique_namespace();
  h.port = free_port();
  // Files by position: two hosts may claim the same node name (the impostor test).
  const std::string stem = dir_ + "/" + std::to_string(hosts_.size()) + "-" + name;
  h.config_path = stem + ".toml";
  h.control = stem + ".sock";
  hosts_.push_back(std::move(h));
  return hosts_.back();
}

void Federation::write_configs(const std::vector<std::string>& topics, bool curve, const std::string& extra_topic_keys) {
  for (auto& h : hosts_) {
    std::ofstream f(h.config_path);
    f << "[node]\nname = \"" << h.name << "\"\nnamespace = \"" << h.ns << "\"\nlisten = \"" << h.endpoint()
      << "\"\n[control]\nsocket = \"" << h.control << "\"\n[limits]\nheartbeat_ms = 100\nmax_frame = 1048576\n";
    if (curve) {
      const std::string key_path = h.config_path + ".key";
      std::ofstream(key_path) << h.secret_key << "\n";
      f << "[security]\nsecret_key_file = \"" << key_path << "\"\n";
    } else if (h.address != "127.0.0.1") {
      f << "[security]\ninsecure = true\n";  // a test network of its own (bridge-netns)
    }
    for (const auto& p : hosts_) {
      if (p.name == h.name) continue;
      f << "[[peer]]\nname = \"" << p.name << "\"\nendpoint = \"" << p.endpoint() << "\"\n";
      if (curve) f << "public_key = \"" << p.public_key << "\"\n";
    }
    for (const auto& t : topics) f << "[[topic]]\nname = \"" << t << "\"\n" << extra_topic_keys;
  }
}

void Federation::start(Host& h) {
  std::vector<std::string> argv = h.launcher;
  for (const auto& a : {colod_path(), std::string("--config"), h.config_path}) argv.push_back(a);
  h.colod.emplace(Process::spawn(argv));
}

json Federation::peers(const Host& h) {
  // 5 s: an ASan build on a loaded machine may take more than 1 s to answer.
  const auto r = run({colo_path(), "--ns", h.ns, "peers", "--json", "--socket", h.control, "--timeout", "5"});
  if (!r.exited || r.exit_code != 0) return json();
  try {
    return json::parse(r.out);
  } catch (const json::exception&) {
    return json();
  }
}

json Federation::peer_of(const Host& h, const std::string& name) {
  const json j = peers(h);
  if (!j.is_object()) return json();
  for (const auto& p : j["peers"])
    if (p["name"] == name) return p;
  return json();
}

bool Federation::all_connected(const Host& h) {
  const json j = peers(h);
  if (!j.is_object()) return false;
  for (const auto& p : j["peers"])
    if (!p["connected"].get<bool>()) return false;
  return true;
}

::testing::AssertionResult Federation::all_hosts_connected() {
  for (auto& h : hosts_)
    if (!wait_until([&] { return all_connected(h); }, 20s, 50ms))
      return ::testing::AssertionFailure() << h.name << " not connected to all peers; colod stderr:\n"
                                           << (h.colod ? h.colod->err() : "");
  return ::testing::AssertionSuccess();
}

std::thread& Federation::subscriber(const Host& h, std::uint64_t expected, Seen& seen, std::atomic<bool>& ready,
                                    std::atomic<bool>& stop) {
  return threads_.emplace_back([ns = h.ns, expected, &seen, &ready, &stop, this] {
    auto node = Node::open(node_options(ns)).value();
    auto topic = node.topic("prices", OpenMode::open).value();
    auto sub = topic.subscribe().value();
    ready = true;
    while (seen.total < expected && !stop.load() && !stop_.load()) {
      auto m = sub.receive_for(50ms);
      if (!m) continue;
      record(seen, m->data());
      ++seen.total;
    }
  });
}

std::thread& Federation::publisher(const Host& h, std::uint32_t id, std::uint32_t count, std::chrono::microseconds pause) {
  return threads_.emplace_back([ns = h.ns, id, count, pause, this] {
    auto node = Node::open(node_options(ns)).value();
    auto topic = node.topic("prices", OpenMode::open).value();
    auto pub = topic.publisher().value();
    std::mt19937 rng(id);
    for (std::uint32_t i = 0; i < count; ++i) {
      const auto m = make_message(id, i, rng() % 201);
      while (pub.publish(m, 100ms) != SendStatus::ok) {
        ++publish_timeouts_;
        if (stop_.load()) return;
      }
      if (pause.count() > 0 && i % 100 == 0) std::this_thread::sleep_for(pause);
    }
  });
}

::testing::AssertionResult Federation::arrive_in_order(const Host& from, const Host& to, std::uint32_t id,
                                                      std::uint32_t count) {
  Seen seen;
  std::atomic<bool> ready{false}, stop{false};
  auto& sub = subscriber(to, count, seen, ready, stop);
  if (!wait_until([&] { return ready.load(); }, 10s)) {
    stop = true;
    sub.join();
    return ::testing::AssertionFailure() << "no subscriber on " << to.name;
  }
  publisher(from, id, count).join();
  const bool all = wait_until([&] { return seen.total >= count; }, 20s, 20ms);
  stop = true;
  sub.join();
  if (!all) return ::testing::AssertionFailure() << to.name << " got " << seen.total << " of " << count;
  return exactly_in_order(seen.by_publisher[id], count);
}

void Federation::queue_consumer(const Host& h, Seen& seen, std::atomic<std::uint64_t>& consumed,
                                std::uint64_t total, std::atomic<int>& ready) {
  threads_.emplace_back([ns = h.ns, &seen, &consumed, total, &ready, this] {
    auto node = Node::open(node_options(ns)).value();
    auto queue = node.queue("jobs", OpenMode::open).value();
    auto consumer = queue.consumer().value();
    ++ready;
    while (consumed.load() < total && !stop_.load()) {
      auto m = consumer.receive_for(20ms);
      if (!m) continue;
      record(seen, m->data());
      ++seen.total;
      ++consumed;
      m->release();
      std::this_thread::sleep_for(20us);  // the work
    }
  });
}

void Federation::queue_producer(const Host& h, std::uint32_t id, std::uint32_t count) {
  threads_.emplace_back([ns = h.ns, id, count, this] {
    auto node = Node::open(node_options(ns)).value();
    auto queue = node.queue("jobs", OpenMode::open).value();
    auto producer = queue.producer().value();
    std::mt19937 rng(id);
    for (std::uint32_t i = 0; i < count; ++i) {
      const auto m = make_message(id, i, rng() % 201);
      while (producer.publish(m, 100ms) != SendStatus::ok)
        if (stop_.load()) return;
    }
  });
}

void Federation::add_queue_to_configs(const std::string& home) {
  for (auto& h : hosts_)
    std::ofstream(h.config_path, std::ios::app)
        << "[[queue]]\nname = \"jobs\"\nhome = \"" << home << "\"\ncapacity = 8388608\n";
}

::testing::AssertionResult exactly_in_order(const std::vector<std::uint32_t>& got, std::uint32_t n) {
  if (got.size() != n) return ::testing::AssertionFailure() << got.size() << " messages, expected " << n;
  for (std::uint32_t i = 0; i < n; ++i)
    if (got[i] != i) return ::testing::AssertionFailure() << "position " << i << " holds index " << got[i];
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult increasing_with_holes(const std::vector<std::uint32_t>& got, std::uint32_t n,
                                                 std::uint64_t& holes) {
  holes = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (got[i] >= n) return ::testing::AssertionFailure() << "position " << i << " holds index " << got[i] << " >= " << n;
    if (i > 0 && got[i] <= got[i - 1])
      return ::testing::AssertionFailure() << "duplicate or reordering at position " << i << ": index " << got[i]
                                           << " after " << got[i - 1];
    if (i > 0) holes += got[i] - got[i - 1] - 1;
  }
  holes = got.empty() ? n : holes + got.front() + (n - 1 - got.back());
  return ::testing::AssertionSuccess();
}

}  // namespace colo::test
