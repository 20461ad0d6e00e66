// colo-py-peer: the C++ side of the Python interop tests (tests/python/).
// The pytest tests start it with a subcommand; it uses only libcolo's API
// (and, for `keeper`, its internal API, to play colod's part). Output is
// line-based on stdout, flushed; exit 0 done, 1 a check failed, 2 usage,
// 3 a colo call failed.
//
//   lock-increment NS LOCK COUNTER LOG GO N   wait for file GO; N x {acquire; counter file += 1; append
//                                             "cpp PID TOKEN" to LOG; release}
//   lock-acquire NS LOCK                      acquire (30 s at most); print "token=T owner_died=0|1"; release
//   lock-hold NS LOCK                         acquire; print "held token=T"; hold until stdin closes; release
//   table-increment NS TABLE KEY COUNTER LOG GO N
//   table-acquire NS TABLE KEY                as the three above, on key KEY of lock table TABLE
//   table-hold NS TABLE KEY
//   publish NS NAME COUNT                     COUNT pattern messages (patterns.py) to a topic or queue
//   subscribe NS TOPIC COUNT                  print "ready"; receive COUNT messages, check each byte and the
//                                             order; print "ok COUNT" (or "bad ..." and exit 1)
//   keeper NS LOCK EPOCH                      play colod for cluster lock LOCK: grant it under EPOCH when
//                                             requested ("granted"); on the stdin line "lose", mark the lease
//                                             lost ("lost"); at EOF step down
//   table-keeper NS TABLE EPOCH               the same for the first key of cluster lock table TABLE that
//                                             asks for its cluster lock
//
// Message pattern, shared with tests/python/patterns.py: message i is
// 8 + (i * 131) % 1017 bytes: i as 8 little-endian bytes, then
// kBase[(i * 7) % 1024 ...], kBase[k] = ((k * 131 + 7) ^ (k >> 3)) & 0xff.
#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "colo/internal/clock.hpp"
#include "colo/internal/cluster_keeper.hpp"
#include "colo/node.hpp"

namespace {

using namespace std::chrono_literals;

[[noreturn]] void fail(int code, const std::string& why) {
  std::printf("%s\n", why.c_str());
  std::fflush(stdout);
  std::fprintf(stderr, "colo-py-peer[%d]: %s\n", static_cast<int>(::getpid()), why.c_str());
  std::_Exit(code);
}

template <typename T>
T value(colo::Result<T>&& r) {
  if (!r) fail(3, "error " + std::string(colo::errc_name(r.error().code)) + ": " + r.error().message);
  return std::move(r).value();
}

void say(const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

colo::Node open_node(const char* ns) {
  colo::NodeOptions options;
  options.ns = ns;
  return value(colo::Node::open(options));
}

// ---------------------------------------------------------------- pattern

const std::array<std::uint8_t, 2048>& base() {
  static const auto table = [] {
    std::array<std::uint8_t, 2048> t{};
    for (std::size_t k = 0; k < t.size(); ++k) t[k] = static_cast<std::uint8_t>(((k * 131 + 7) ^ (k >> 3)) & 0xff);
    return t;
  }();
  return table;
}

std::size_t pattern_size(std::uint64_t i) { return 8 + (i * 131) % 1017; }

void fill(std::uint64_t i, std::byte* out) {
  for (int b = 0; b < 8; ++b) out[b] = static_cast<std::byte>(i >> (8 * b));
  const std::size_t size = pattern_size(i);
  std::memcpy(out + 8, base().data() + (i * 7) % 1024, size - 8);
}

bool matches(std::uint64_t i, std::span<const std::byte> data) {
  if (data.size() != pattern_size(i)) return false;
  std::byte expected[1024];
  fill(i, expected);
  return std::memcmp(expected, data.data(), data.size()) == 0;
}

// ------------------------------------------------------------------ locks

std::uint64_t read_counter(const char* path) {
  std::ifstream in(path);
  std::uint64_t n = 0;
  in >> n;
  return n;
}

void write_counter(const char* path, std::uint64_t n) {
  std::ofstream out(path, std::ios::trunc);
  out << n << '\n';
}

// N x {acquire(); counter file += 1; append "cpp PID TOKEN" to LOG; release}.
template <typename Acquire>
int increment(const char* counter, const char* log, const char* go, std::uint64_t n, Acquire&& acquire) {
  const int log_fd = ::open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (log_fd < 0) fail(3, std::string("cannot open ") + log);
  while (::access(go, F_OK) != 0) std::this_thread::sleep_for(1ms);
  for (std::uint64_t k = 0; k < n; ++k) {
    auto guard = value(acquire());
    write_counter(counter, read_counter(counter) + 1);
    const std::string line = "cpp " + std::to_string(::getpid()) + " " + std::to_string(guard.fencing_token()) + "\n";
    if (::write(log_fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) fail(3, "log write failed");
  }
  ::close(log_fd);
  say("done");
  return 0;
}

int say_acquired(const std::optional<colo::LockGuard>& guard) {
  if (!guard) fail(1, "not acquired within 30 s");
  say("token=" + std::to_string(guard->fencing_token()) + " owner_died=" + (guard->owner_died() ? "1" : "0"));
  return 0;
}

int hold_until_eof(const colo::LockGuard& guard) {
  say("held token=" + std::to_string(guard.fencing_token()));
  std::string line;
  while (std::getline(std::cin, line)) {
  }
  return 0;
}

int lock_increment(const char* ns, const char* name, const char* counter, const char* log, const char* go,
                   std::uint64_t n) {
  auto node = open_node(ns);
  auto lock = value(node.lock(name, colo::OpenMode::open));
  return increment(counter, log, go, n, [&] { return lock.acquire(); });
}

int lock_acquire(const char* ns, const char* name) {
  auto node = open_node(ns);
  auto lock = value(node.lock(name, colo::OpenMode::open));
  return say_acquired(lock.try_acquire_for(30s));
}

int lock_hold(const char* ns, const char* name) {
  auto node = open_node(ns);
  auto lock = value(node.lock(name, colo::OpenMode::open));
  return hold_until_eof(value(lock.acquire()));
}

// ------------------------------------------------------------ lock tables

// A key and its table (which must outlive it; moving the table keeps its keys valid).
struct OpenKey {
  colo::LockTable table;
  colo::KeyLock key;
};

OpenKey open_key(colo::Node& node, const char* table, const char* key) {
  auto t = value(node.lock_table(table, colo::OpenMode::open));
  auto k = value(t.lock(key));
  return {std::move(t), std::move(k)};
}

int table_increment(const char* ns, const char* table, const char* key, const char* counter, const char* log,
                    const char* go, std::uint64_t n) {
  auto node = open_node(ns);
  auto k = open_key(node, table, key);
  return increment(counter, log, go, n, [&] { return k.key.acquire(); });
}

int table_acquire(const char* ns, const char* table, const char* key) {
  auto node = open_node(ns);
  auto k = open_key(node, table, key);
  return say_acquired(value(k.key.try_acquire_for(30s)));
}

int table_hold(const char* ns, const char* table, const char* key) {
  auto node = open_node(ns);
  auto k = open_key(node, table, key);
  return hold_until_eof(value(k.key.acquire()));
}

int keeper(const char* ns, const char* name, std::uint64_t epoch) {
  auto node = open_node(ns);
  auto k = value(colo::internal::ClusterLockKeeper::adopt(node, name));
  say("keeping");
  // Grants the cluster lock once a local acquirer asks for it.
  for (;;) {
    const std::uint32_t seen = k.signal();
    if (k.state() == colo::LeaseState::requested) break;
    k.wait(seen, 100'000'000);
  }
  k.grant_cluster(epoch, colo::internal::monotonic_ns() + 600'000'000'000ull);
  say("granted");
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line == "lose") {
      k.mark_lost();
      say("lost");
    }
  }
  k.step_down();
  return 0;
}

int table_keeper(const char* ns, const char* table, std::uint64_t epoch) {
  auto node = open_node(ns);
  auto k = value(colo::internal::ClusterTableKeeper::adopt(node, table));
  say("keeping");
  std::unique_ptr<colo::internal::ClusterHold> hold;
  while (!hold) {
    for (const std::uint64_t index : k.take_requests())
      if (!hold) hold = k.key_at(index);
    if (!hold) std::this_thread::sleep_for(1ms);
  }
  if (!hold->grant_cluster(epoch, colo::internal::monotonic_ns() + 600'000'000'000ull, 1000))
    fail(1, "the key's request was gone before the grant");
  say("granted " + hold->backend_name());
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line == "lose") {
      hold->mark_lost();
      say("lost");
    }
  }
  hold->step_down();
  k.step_down();
  return 0;
}

// ----------------------------------------------------------- topics, queues

int publish(const char* ns, const char* name, std::uint64_t count) {
  auto node = open_node(ns);
  auto info = value(node.info(name));
  std::optional<colo::Topic> topic;
  std::optional<colo::Queue> queue;
  if (info.kind == colo::ObjectKind::queue) {
    queue.emplace(value(node.queue(name, colo::OpenMode::open)));
  } else {
    topic.emplace(value(node.topic(name, colo::OpenMode::open)));
  }
  auto publisher = value(topic ? topic->publisher() : queue->producer());
  for (std::uint64_t i = 0; i < count; ++i) {
    auto loan = publisher.loan_for(static_cast<std::uint32_t>(pattern_size(i)), 30s);
    if (!loan) fail(1, "no space for message " + std::to_string(i) + " within 30 s");
    fill(i, loan->data().data());
    loan->commit();
  }
  say("published " + std::to_string(count));
  return 0;
}

int subscribe(const char* ns, const char* name, std::uint64_t count) {
  auto node = open_node(ns);
  auto topic = value(node.topic(name, colo::OpenMode::open));
  auto sub = value(topic.subscribe());
  say("ready");
  for (std::uint64_t i = 0; i < count; ++i) {
    auto m = sub.receive_for(30s);
    if (!m) fail(1, "bad: message " + std::to_string(i) + " did not come within 30 s");
    if (!matches(i, m->data()))
      fail(1, "bad: message " + std::to_string(i) + " (sequence " + std::to_string(m->sequence()) +
                  ", " + std::to_string(m->data().size()) + " bytes) differs from the pattern");
  }
  say("ok " + std::to_string(count));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string command = argc > 1 ? argv[1] : "";
  auto number = [&](int i) { return std::stoull(argv[i]); };
  if (command == "lock-increment" && argc == 8) return lock_increment(argv[2], argv[3], argv[4], argv[5], argv[6], number(7));
  if (command == "lock-acquire" && argc == 4) return lock_acquire(argv[2], argv[3]);
  if (command == "lock-hold" && argc == 4) return lock_hold(argv[2], argv[3]);
  if (command == "table-increment" && argc == 9)
    return table_increment(argv[2], argv[3], argv[4], argv[5], argv[6], argv[7], number(8));
  if (command == "table-acquire" && argc == 5) return table_acquire(argv[2], argv[3], argv[4]);
  if (command == "table-hold" && argc == 5) return table_hold(argv[2], argv[3], argv[4]);
  if (command == "table-keeper" && argc == 5) return table_keeper(argv[2], argv[3], number(4));
  if (command == "keeper" && argc == 5) return keeper(argv[2], argv[3], number(4));
  if (command == "publish" && argc == 5) return publish(argv[2], argv[3], number(4));
  if (command == "subscribe" && argc == 5) return subscribe(argv[2], argv[3], number(4));
  std::fprintf(stderr, "usage: see the comment at the top of tests/python/colo_py_peer.cpp\n");
  return 2;
}
