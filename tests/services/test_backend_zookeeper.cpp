// tests/services/test_backend_zookeeper.cpp — the ZooKeeper lock backend
// (bridge/backends/zookeeper.cpp) against a real server.
//
// The server's address comes in COLO_ZOOKEEPER (tests/services/services.sh
// env); without it every test skips, unless COLO_REQUIRE_SERVICES=1, when
// they fail. The interop test also needs COLO_HOLD_LOCK (interop/hold_lock.py,
// which takes the same lock with kazoo). Lock names are unique per run, so
// runs do not see each other's queues.
//
// A few checks look at the server directly through the C client: the node
// layout that kazoo relies on, and ending a session from outside.

// libzookeeper_mt's synchronous calls are declared only under THREADED (the
// backend's build sets it; this test's does not).
#ifndef THREADED
#define THREADED
#endif
#include <zookeeper/zookeeper.h>

#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "backends/backend.hpp"
#include "colo/internal/clock.hpp"

extern char** environ;

namespace colo::bridge {
// Defined in backends/zookeeper.cpp, for tests only.
bool zookeeper_client_id_for_testing(LockBackend& backend, clientid_t* out);
}  // namespace colo::bridge

namespace {

using colo::bridge::Acquire;
using colo::bridge::BackendLock;
using colo::bridge::BackendSettings;
using colo::bridge::LockBackend;
using colo::bridge::Renewal;
using namespace std::chrono_literals;

constexpr std::uint64_t kMs = 1'000'000;

std::uint64_t now_ns() { return colo::internal::monotonic_ns(); }
std::uint64_t in_ms(std::uint64_t ms) { return now_ns() + ms * kMs; }

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

bool services_required() { return env("COLO_REQUIRE_SERVICES") == "1"; }

// Skips (or fails, when services are required) without COLO_ZOOKEEPER.
#define NEED_SERVER()                                                                              \
  do {                                                                                             \
    if (endpoint().empty()) {                                                                      \
      if (services_required()) FAIL() << "COLO_ZOOKEEPER is not set and COLO_REQUIRE_SERVICES=1"; \
      GTEST_SKIP() << "COLO_ZOOKEEPER is not set (tests/services/services.sh env)";                \
    }                                                                                              \
  } while (0)

std::string endpoint() { return env("COLO_ZOOKEEPER"); }

// Letters, digits, '.', '_', '-': valid for colo and for hold_lock.py.
std::string unique_name(const std::string& what) {
  static std::atomic<int> counter{0};
  return "zk-test-" + std::to_string(getpid()) + "-" + std::to_string(counter++) + "-" + what;
}

BackendSettings settings(std::chrono::milliseconds lease = 3000ms) {
  BackendSettings s;
  s.kind = "zookeeper";
  s.endpoints = endpoint();
  s.lease = lease;
  s.op_timeout = 2000ms;
  return s;
}

std::unique_ptr<LockBackend> open(const BackendSettings& s) {
  auto r = colo::bridge::open_zookeeper(s);
  if (!r) {
    ADD_FAILURE() << r.error().message;
    return nullptr;
  }
  return std::move(r.value());
}

const char* status_name(Acquire::Status s) {
  switch (s) {
    case Acquire::Status::held: return "held";
    case Acquire::Status::waiting: return "waiting";
    case Acquire::Status::failed: return "failed";
  }
  return "?";
}

// "<32 lowercase hex>__lock__<10 digits>", as kazoo names its nodes. (No
// std::regex: GCC 12 warns inside it under -fsanitize, and -Werror is on.)
bool is_kazoo_node_name(const std::string& n) {
  if (n.size() != 32 + 8 + 10 || n.compare(32, 8, "__lock__") != 0) return false;
  for (std::size_t i = 0; i < 32; ++i) {
    if (!((n[i] >= '0' && n[i] <= '9') || (n[i] >= 'a' && n[i] <= 'f'))) return false;
  }
  for (std::size_t i = 40; i < n.size(); ++i) {
    if (n[i] < '0' || n[i] > '9') return false;
  }
  return true;
}

// A plain session of our own, for looking at the server and for attaching to
// the backend's session.
class RawClient {
 public:
  explicit RawClient(const clientid_t* id = nullptr) {
    zh_ = zookeeper_init(endpoint().c_str(), &RawClient::on_event, 3000, id, this, 0);
    if (zh_ == nullptr) return;
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, 5s, [&] { return connected_ || ended_; });
  }
  ~RawClient() { close(); }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  bool connected() {
    std::lock_guard guard(mu_);
    return zh_ != nullptr && connected_;
  }
  void close() {
    if (zh_ != nullptr) zookeeper_close(zh_);
    zh_ = nullptr;
  }
  std::vector<std::string> children(const std::string& path, int* rc_out = nullptr) {
    String_vector v{};
    const int rc = zoo_get_children(zh_, path.c_str(), 0, &v);
    if (rc_out != nullptr) *rc_out = rc;
    std::vector<std::string> out;
    if (rc == ZOK) {
      for (int i = 0; i < v.count; ++i) out.emplace_back(v.data[i]);
      deallocate_String_vector(&v);
    }
    return out;
  }
  std::string data(const std::string& path) {
    char buf[512];
    int len = sizeof buf;
    if (zoo_get(zh_, path.c_str(), 0, buf, &len, nullptr) != ZOK || len < 0) return "<none>";
    return std::string(buf, static_cast<std::size_t>(len));
  }

 private:
  static void on_event(zhandle_t*, int type, int state, const char*, void* ctx) {
    auto* self = static_cast<RawClient*>(ctx);
    if (type != ZOO_SESSION_EVENT) return;
    std::lock_guard guard(self->mu_);
    if (state == ZOO_CONNECTED_STATE) self->connected_ = true;
    if (state == ZOO_EXPIRED_SESSION_STATE || state == ZOO_AUTH_FAILED_STATE) self->ended_ = true;
    self->cv_.notify_all();
  }
  zhandle_t* zh_ = nullptr;
  std::mutex mu_;
  std::condition_variable cv_;
  bool connected_ = false;
  bool ended_ = false;
};

// hold_lock.py as a child process, its stdout read line by line.
class Script {
 public:
  explicit Script(const std::vector<std::string>& args) {
    int fds[2];
    if (pipe(fds) != 0) return;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, fds[0]);
    posix_spawn_file_actions_addclose(&actions, fds[1]);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    if (posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&actions);
    ::close(fds[1]);
    fd_ = fds[0];
  }
  ~Script() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
    if (fd_ >= 0) ::close(fd_);
  }
  Script(const Script&) = delete;
  Script& operator=(const Script&) = delete;

  bool started() const { return pid_ > 0; }
  // The next line of output, or "<timeout>" / "<eof>".
  std::string line(std::uint64_t deadline) {
    for (;;) {
      if (const auto nl = buf_.find('\n'); nl != std::string::npos) {
        std::string l = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return l;
      }
      const std::uint64_t now = now_ns();
      if (now >= deadline) return "<timeout>";
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>((deadline - now) / kMs) + 1) <= 0) continue;
      char chunk[256];
      const ssize_t n = read(fd_, chunk, sizeof chunk);
      if (n <= 0) return "<eof>";
      buf_.append(chunk, static_cast<std::size_t>(n));
    }
  }
  // The exit status, or -1 if it is still running at the deadline.
  int exit_status(std::uint64_t deadline) {
    while (now_ns() < deadline) {
      int status = 0;
      const pid_t r = waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(20ms);
    }
    return -1;
  }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
  std::string buf_;
};


// A TCP relay between the backend and the server that can be cut: while
// frozen it forwards nothing (the backend hears nothing, as in a network
// partition) and drops new connections.
class Proxy {
 public:
  Proxy() {
    const std::string up = endpoint();
    const auto colon = up.rfind(':');
    upstream_.sin_family = AF_INET;
    upstream_.sin_port = htons(static_cast<std::uint16_t>(std::stoi(up.substr(colon + 1))));
    if (colon == std::string::npos || inet_pton(AF_INET, up.substr(0, colon).c_str(), &upstream_.sin_addr) != 1) return;
    listen_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (bind(listen_, reinterpret_cast<sockaddr*>(&addr), len) != 0 || listen(listen_, 16) != 0 ||
        getsockname(listen_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      return;
    }
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { run(); });
  }
  ~Proxy() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    for (const auto& [a, b] : pairs_) {
      ::close(a);
      ::close(b);
    }
    if (listen_ >= 0) ::close(listen_);
  }
  Proxy(const Proxy&) = delete;
  Proxy& operator=(const Proxy&) = delete;

  bool ok() const { return port_ != 0; }
  std::string endpoint_string() const { return "127.0.0.1:" + std::to_string(port_); }
  void freeze(bool on) { frozen_ = on; }

 private:
  void run() {
    while (!stop_) {
      std::vector<pollfd> fds{{listen_, POLLIN, 0}};
      const bool frozen = frozen_;
      if (!frozen) {
        for (const auto& [a, b] : pairs_) {
          fds.push_back({a, POLLIN, 0});
          fds.push_back({b, POLLIN, 0});
        }
      }
      if (poll(fds.data(), fds.size(), 20) <= 0) continue;
      if (fds[0].revents & POLLIN) {
        const int client = accept(listen_, nullptr, nullptr);
        if (client >= 0 && frozen) {
          ::close(client);
        } else if (client >= 0) {
          const int server = socket(AF_INET, SOCK_STREAM, 0);
          if (connect(server, reinterpret_cast<const sockaddr*>(&upstream_), sizeof upstream_) == 0) {
            pairs_.emplace_back(client, server);
          } else {
            ::close(client);
            ::close(server);
          }
        }
      }
      std::vector<bool> dead(pairs_.size(), false);
      for (std::size_t i = 1; i < fds.size(); ++i) {
        if (fds[i].revents == 0) continue;
        const auto& [client, server] = pairs_[(i - 1) / 2];
        const int from = fds[i].fd;
        const int to = from == client ? server : client;
        char buf[65536];
        const ssize_t n = read(from, buf, sizeof buf);
        // Loopback and small messages: a write is whole or the peer is gone.
        if (n <= 0 || write(to, buf, static_cast<std::size_t>(n)) != n) dead[(i - 1) / 2] = true;
      }
      for (std::size_t i = dead.size(); i-- > 0;) {
        if (!dead[i]) continue;
        ::close(pairs_[i].first);
        ::close(pairs_[i].second);
        pairs_.erase(pairs_.begin() + static_cast<std::ptrdiff_t>(i));
      }
    }
  }

  sockaddr_in upstream_{};
  int listen_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> frozen_{false};
  std::atomic<bool> stop_{false};
  std::vector<std::pair<int, int>> pairs_;  // (client, server); the relay thread's only
  std::thread thread_;
};
// ---------------------------------------------------------------------------

TEST(ZooKeeperBackend, BadSettingsAreInvalidArguments) {
  BackendSettings s = settings();
  s.endpoints = "127.0.0.1:21810";  // not contacted: settings are checked first
  auto expect_invalid = [](const BackendSettings& bad, const char* what) {
    auto r = colo::bridge::open_zookeeper(bad);
    ASSERT_FALSE(r) << what;
    EXPECT_EQ(r.error().code, colo::Errc::invalid_argument) << what << ": " << r.error().message;
    EXPECT_FALSE(r.error().message.empty());
  };
  auto b = s;
  b.endpoints = "";
  expect_invalid(b, "empty endpoints");
  b = s;
  b.endpoints = "localhost";
  expect_invalid(b, "no port");
  b = s;
  b.endpoints = "127.0.0.1:21810,";
  expect_invalid(b, "trailing comma");
  b = s;
  b.endpoints = "127.0.0.1:99999";
  expect_invalid(b, "port out of range");
  b = s;
  b.endpoints = "127.0.0.1:21810/chroot";
  expect_invalid(b, "chroot");
  b = s;
  b.lease = 0ms;
  expect_invalid(b, "lease 0");
  b = s;
  b.lease = 60000ms;
  expect_invalid(b, "lease above the server's range");
  b = s;
  b.op_timeout = 0ms;
  expect_invalid(b, "op_timeout 0");
  b = s;
  b.root = "colo/locks";
  expect_invalid(b, "relative root");
  b = s;
  b.root = "/colo//locks";
  expect_invalid(b, "empty root component");
}

TEST(ZooKeeperBackend, UnreachableServerFailsWithinOpTimeoutNamingIt) {
  BackendSettings s = settings();
  s.endpoints = "127.0.0.1:1";
  s.op_timeout = 500ms;
  const std::uint64_t start = now_ns();
  auto r = colo::bridge::open_zookeeper(s);
  const std::uint64_t took = now_ns() - start;
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("127.0.0.1:1"), std::string::npos) << r.error().message;
  EXPECT_GE(took, 450 * kMs);
  EXPECT_LT(took, 1500 * kMs) << "took " << took / kMs << " ms";
}

TEST(ZooKeeperBackend, NodeLayoutIsKazoos) {
  NEED_SERVER();
  auto backend = open(settings());
  ASSERT_TRUE(backend);
  EXPECT_STREQ(backend->kind(), "zookeeper");
  const std::string name = unique_name("layout") + "/nested/lock";
  auto lock = backend->lock(name);
  const Acquire a = lock->acquire(in_ms(5000));
  ASSERT_EQ(a.status, Acquire::Status::held) << a.detail;
  EXPECT_GE(a.epoch, 1u);

  RawClient raw;
  ASSERT_TRUE(raw.connected());
  const std::string dir = "/colo/locks/" + name;
  const auto kids = raw.children(dir);
  ASSERT_EQ(kids.size(), 1u);
  EXPECT_TRUE(is_kazoo_node_name(kids[0])) << kids[0];
  EXPECT_EQ(std::stoull(kids[0].substr(kids[0].size() - 10)) + 1, a.epoch);
  const std::string data = raw.data(dir + "/" + kids[0]);
  EXPECT_TRUE(data.ends_with(":" + std::to_string(getpid()))) << data;

  lock->release();
  EXPECT_TRUE(raw.children(dir).empty());
  lock->release();  // idempotent
}

TEST(ZooKeeperBackend, HeldAcquireAgainAndRenew) {
  NEED_SERVER();
  auto backend = open(settings(3000ms));
  ASSERT_TRUE(backend);
  auto lock = backend->lock(unique_name("renew"));
  EXPECT_EQ(lock->renew().status, Renewal::Status::lost);  // not held yet
  const Acquire a = lock->acquire(0);  // a deadline in the past still tries once
  ASSERT_EQ(a.status, Acquire::Status::held) << a.detail;
  const std::uint64_t now = now_ns();
  EXPECT_GT(a.valid_until_ns, now);
  EXPECT_LE(a.valid_until_ns, now + 1000 * kMs);  // timeout/3 of 3 s

  const Acquire again = lock->acquire(0);
  EXPECT_EQ(again.status, Acquire::Status::held);
  EXPECT_EQ(again.epoch, a.epoch);

  for (int i = 0; i < 30; ++i) {  // 1.5 s: crosses a confirmation round trip
    const Renewal r = lock->renew();
    ASSERT_EQ(r.status, Renewal::Status::held) << r.detail;
    EXPECT_GT(r.valid_until_ns, now_ns());
    EXPECT_LE(r.valid_until_ns, now_ns() + 1000 * kMs);
    std::this_thread::sleep_for(50ms);
  }
  lock->release();
  EXPECT_EQ(lock->renew().status, Renewal::Status::lost);
}

TEST(ZooKeeperBackend, TwoSessionsExcludeEachOther) {
  NEED_SERVER();
  const std::string name = unique_name("contend");
  constexpr int kRounds = 200;
  long counter = 0;  // not atomic: the lock is what protects it
  std::atomic<bool> inside{false};
  std::atomic<int> overlaps{0};
  std::vector<std::uint64_t> epochs;  // grant order; written under the lock
  std::vector<int> grants(2, 0);
  std::vector<std::string> errors(2);

  auto run = [&](int who) {
    auto backend = open(settings());
    if (!backend) return;
    auto lock = backend->lock(name);
    for (int i = 0; i < kRounds; ++i) {
      const Acquire a = lock->acquire(in_ms(20000));
      if (a.status != Acquire::Status::held) {
        errors[static_cast<std::size_t>(who)] = std::string(status_name(a.status)) + ": " + a.detail;
        return;
      }
      if (inside.exchange(true)) ++overlaps;
      epochs.push_back(a.epoch);
      ++counter;
      ++grants[static_cast<std::size_t>(who)];
      inside.store(false);
      lock->release();
    }
  };
  std::thread a(run, 0);
  std::thread b(run, 1);
  a.join();
  b.join();
  EXPECT_EQ(errors[0], "");
  EXPECT_EQ(errors[1], "");
  EXPECT_EQ(overlaps.load(), 0);
  EXPECT_EQ(counter, 2 * kRounds);
  EXPECT_EQ(grants[0], kRounds);
  EXPECT_EQ(grants[1], kRounds);
  ASSERT_EQ(epochs.size(), static_cast<std::size_t>(2 * kRounds));
  for (std::size_t i = 1; i < epochs.size(); ++i) {
    ASSERT_LT(epochs[i - 1], epochs[i]) << "grant " << i;
  }
}

TEST(ZooKeeperBackend, WaitersAreServedInQueueOrder) {
  NEED_SERVER();
  const std::string name = unique_name("fifo");
  auto ba = open(settings());
  auto bb = open(settings());
  auto bc = open(settings());
  auto bd = open(settings());
  ASSERT_TRUE(ba && bb && bc && bd);
  auto a = ba->lock(name);
  auto b = bb->lock(name);
  auto c = bc->lock(name);
  auto d = bd->lock(name);

  const Acquire ga = a->acquire(in_ms(5000));
  ASSERT_EQ(ga.status, Acquire::Status::held) << ga.detail;
  const std::uint64_t start = now_ns();
  EXPECT_EQ(b->acquire(in_ms(200)).status, Acquire::Status::waiting);
  EXPECT_GE(now_ns() - start, 190 * kMs);  // it waited until the deadline

  // C, then D, queue behind B, each in its own thread.
  std::mutex m;
  std::vector<char> order;
  Acquire gb, gc, gd;
  auto waiter = [&](BackendLock& lock, Acquire& out, char who) {
    out = lock.acquire(in_ms(15000));
    std::lock_guard guard(m);
    order.push_back(who);
  };
  std::thread tc(waiter, std::ref(*c), std::ref(gc), 'C');
  std::this_thread::sleep_for(300ms);  // C's node exists before D's
  std::thread td(waiter, std::ref(*d), std::ref(gd), 'D');
  std::this_thread::sleep_for(300ms);
  // B comes back after its deadline: its place is still first in line.
  std::thread tb(waiter, std::ref(*b), std::ref(gb), 'B');
  std::this_thread::sleep_for(200ms);
  {
    std::lock_guard guard(m);
    EXPECT_TRUE(order.empty());
  }
  a->release();
  tb.join();
  ASSERT_EQ(gb.status, Acquire::Status::held) << gb.detail;
  std::this_thread::sleep_for(300ms);
  {
    std::lock_guard guard(m);
    EXPECT_EQ(order, std::vector<char>({'B'}));
  }
  b->release();
  tc.join();
  ASSERT_EQ(gc.status, Acquire::Status::held) << gc.detail;
  std::this_thread::sleep_for(100ms);
  {
    std::lock_guard guard(m);
    EXPECT_EQ(order, std::vector<char>({'B', 'C'}));
  }
  c->release();
  td.join();
  ASSERT_EQ(gd.status, Acquire::Status::held) << gd.detail;
  d->release();
  EXPECT_LT(ga.epoch, gb.epoch);
  EXPECT_LT(gb.epoch, gc.epoch);
  EXPECT_LT(gc.epoch, gd.epoch);
  EXPECT_EQ(order, std::vector<char>({'B', 'C', 'D'}));
}

TEST(ZooKeeperBackend, TwoLocksOfOneSessionExcludeEachOther) {
  NEED_SERVER();
  auto backend = open(settings());
  ASSERT_TRUE(backend);
  const std::string name = unique_name("same-session");
  auto one = backend->lock(name);
  auto two = backend->lock(name);
  const Acquire g1 = one->acquire(in_ms(5000));
  ASSERT_EQ(g1.status, Acquire::Status::held) << g1.detail;
  EXPECT_EQ(two->acquire(in_ms(100)).status, Acquire::Status::waiting);
  std::thread t([&] {
    std::this_thread::sleep_for(100ms);
    one->release();
  });
  const Acquire g2 = two->acquire(in_ms(5000));
  t.join();
  ASSERT_EQ(g2.status, Acquire::Status::held) << g2.detail;
  EXPECT_GT(g2.epoch, g1.epoch);
  two->release();
}

TEST(ZooKeeperBackend, ReleasingAWaiterLeavesTheQueue) {
  NEED_SERVER();
  const std::string name = unique_name("leave");
  auto ba = open(settings());
  auto bb = open(settings());
  auto bc = open(settings());
  ASSERT_TRUE(ba && bb && bc);
  auto a = ba->lock(name);
  auto b = bb->lock(name);
  auto c = bc->lock(name);
  ASSERT_EQ(a->acquire(in_ms(5000)).status, Acquire::Status::held);
  ASSERT_EQ(b->acquire(in_ms(100)).status, Acquire::Status::waiting);
  ASSERT_EQ(c->acquire(in_ms(100)).status, Acquire::Status::waiting);

  RawClient raw;
  ASSERT_TRUE(raw.connected());
  const std::string dir = "/colo/locks/" + name;
  EXPECT_EQ(raw.children(dir).size(), 3u);
  b->release();
  EXPECT_EQ(raw.children(dir).size(), 2u);  // B's node is gone when release() returns
  b->release();                             // idempotent
  EXPECT_EQ(raw.children(dir).size(), 2u);

  // C was watching B's node; it must now be next after A.
  std::thread t([&] {
    std::this_thread::sleep_for(100ms);
    a->release();
  });
  const std::uint64_t start = now_ns();
  const Acquire gc = c->acquire(in_ms(5000));
  t.join();
  ASSERT_EQ(gc.status, Acquire::Status::held) << gc.detail;
  EXPECT_LT(now_ns() - start, 2000 * kMs);
  c->release();
  EXPECT_TRUE(raw.children(dir).empty());

  // A released waiter can queue again.
  const Acquire gb = b->acquire(in_ms(5000));
  EXPECT_EQ(gb.status, Acquire::Status::held) << gb.detail;
  EXPECT_GT(gb.epoch, gc.epoch);
}

TEST(ZooKeeperBackend, KazooAndColoExcludeEachOther) {
  NEED_SERVER();
  const std::string script = env("COLO_HOLD_LOCK");
  if (script.empty()) {
    if (services_required()) FAIL() << "COLO_HOLD_LOCK is not set and COLO_REQUIRE_SERVICES=1";
    GTEST_SKIP() << "COLO_HOLD_LOCK (tests/services/interop/hold_lock.py) is not set";
  }
  const std::string name = unique_name("kazoo");
  auto backend = open(settings());
  ASSERT_TRUE(backend);
  auto lock = backend->lock(name);

  {  // kazoo holds: colo waits, then gets it once kazoo lets go
    Script holder({script, "--backend", "zookeeper", "--name", name, "--hold", "1.5", "--endpoint", endpoint()});
    ASSERT_TRUE(holder.started());
    ASSERT_EQ(holder.line(in_ms(15000)), "acquired");
    EXPECT_EQ(lock->acquire(in_ms(300)).status, Acquire::Status::waiting);
    const Acquire g = lock->acquire(in_ms(10000));
    ASSERT_EQ(g.status, Acquire::Status::held) << g.detail;
    EXPECT_EQ(holder.line(in_ms(5000)), "released");
    EXPECT_EQ(holder.exit_status(in_ms(5000)), 0);
  }
  {  // colo holds: kazoo cannot get it
    Script taker({script, "--backend", "zookeeper", "--name", name, "--try-acquire", "1", "--endpoint", endpoint()});
    ASSERT_TRUE(taker.started());
    EXPECT_EQ(taker.line(in_ms(15000)), "busy");
    EXPECT_EQ(taker.exit_status(in_ms(5000)), 3);
  }
  ASSERT_EQ(lock->renew().status, Renewal::Status::held);
  lock->release();
  {  // colo let go: kazoo gets it at once
    Script taker({script, "--backend", "zookeeper", "--name", name, "--try-acquire", "1", "--endpoint", endpoint()});
    ASSERT_TRUE(taker.started());
    EXPECT_EQ(taker.line(in_ms(15000)), "acquired");
    EXPECT_EQ(taker.line(in_ms(5000)), "released");
    EXPECT_EQ(taker.exit_status(in_ms(5000)), 0);
  }
}

TEST(ZooKeeperBackend, ExpiredSessionIsLostThenReplaced) {
  NEED_SERVER();
  const std::string name = unique_name("expire");
  auto backend = open(settings(2000ms));
  auto other = open(settings(2000ms));
  ASSERT_TRUE(backend && other);
  auto lock = backend->lock(name);
  const Acquire first = lock->acquire(in_ms(5000));
  ASSERT_EQ(first.status, Acquire::Status::held) << first.detail;
  ASSERT_EQ(lock->renew().status, Renewal::Status::held);

  // Attach to the backend's session from a second connection and close it
  // there: the server ends the session and deletes its nodes. The attach
  // takes the session's connection away from the backend, whose client
  // reconnects at once and may take it back before our close is sent; then
  // the close is not sent at all (the intruder is no longer connected).
  // Hence another try each second until the intruder finds the session gone.
  clientid_t id{};
  ASSERT_TRUE(colo::bridge::zookeeper_client_id_for_testing(*backend, &id));
  Renewal r;
  int attempts = 0;
  bool ended = false;  // an intruder found the session already over
  const std::uint64_t start = now_ns();
  std::uint64_t next_attempt = start;
  while (now_ns() - start < 8000 * kMs) {
    if (!ended && now_ns() >= next_attempt) {
      RawClient intruder(&id);
      ended = !intruder.connected();
      attempts += ended ? 0 : 1;
      next_attempt = now_ns() + 1000 * kMs;
    }
    r = lock->renew();
    if (r.status == Renewal::Status::lost) break;
    if (r.status == Renewal::Status::held) {
      EXPECT_GT(r.valid_until_ns, now_ns());
    }
    std::this_thread::sleep_for(50ms);
  }
  const std::uint64_t took = now_ns() - start;
  ASSERT_EQ(r.status, Renewal::Status::lost) << r.detail;
  EXPECT_GE(attempts, 1);
  EXPECT_LT(took, 5000 * kMs) << "lost only after " << took / kMs << " ms";
  std::printf("renew() said lost %llu ms after the first of %d intrusion(s): %s\n",
              static_cast<unsigned long long>(took / kMs), attempts, r.detail.c_str());

  // Another session gets it, and later the first backend again (with a new
  // session), each with a greater epoch.
  auto other_lock = other->lock(name);
  const Acquire second = other_lock->acquire(in_ms(5000));
  ASSERT_EQ(second.status, Acquire::Status::held) << second.detail;
  EXPECT_GT(second.epoch, first.epoch);
  other_lock->release();

  lock->release();  // after lost: nothing to do, must not hang or fail
  const Acquire third = lock->acquire(in_ms(5000));
  ASSERT_EQ(third.status, Acquire::Status::held) << third.detail;
  EXPECT_GT(third.epoch, second.epoch);
  EXPECT_EQ(lock->renew().status, Renewal::Status::held);
  clientid_t fresh{};
  ASSERT_TRUE(colo::bridge::zookeeper_client_id_for_testing(*backend, &fresh));
  EXPECT_NE(fresh.client_id, id.client_id);
  lock->release();

  auto another = backend->lock(unique_name("after-expiry"));  // new locks use the new session too
  EXPECT_EQ(another->acquire(in_ms(5000)).status, Acquire::Status::held);
}

TEST(ZooKeeperBackend, PartitionedHolderIsUnknownThenLostBeforeAnotherGetsIt) {
  NEED_SERVER();
  Proxy proxy;
  if (!proxy.ok()) GTEST_SKIP() << "COLO_ZOOKEEPER is not an IPv4 address:port; the relay needs one";
  const std::string name = unique_name("partition");
  BackendSettings cut = settings(2000ms);
  cut.endpoints = proxy.endpoint_string();
  cut.op_timeout = 1000ms;
  auto backend = open(cut);
  auto other = open(settings(2000ms));
  ASSERT_TRUE(backend && other);
  auto lock = backend->lock(name);
  const Acquire first = lock->acquire(in_ms(5000));
  ASSERT_EQ(first.status, Acquire::Status::held) << first.detail;

  proxy.freeze(true);
  const std::uint64_t frozen_at = now_ns();
  std::atomic<std::uint64_t> granted_at{0};
  Acquire second;
  std::thread taker([&] {
    auto other_lock = other->lock(name);
    second = other_lock->acquire(in_ms(10000));
    granted_at = now_ns();
    if (second.status == Acquire::Status::held) {
      std::this_thread::sleep_for(300ms);
      other_lock->release();
    }
  });

  // held (until the client gives up on the connection), then unknown with
  // the bound it had, then lost; the bound never grows once cut off.
  std::uint64_t promised = first.valid_until_ns;
  bool saw_unknown = false;
  std::uint64_t unknown_at = 0;
  Renewal r;
  while (now_ns() - frozen_at < 8000 * kMs) {
    r = lock->renew();
    if (r.status == Renewal::Status::lost) break;
    if (r.status == Renewal::Status::unknown) {
      if (!saw_unknown) unknown_at = now_ns();
      saw_unknown = true;
      EXPECT_LE(r.valid_until_ns, promised);
    } else {
      EXPECT_FALSE(saw_unknown) << "held again while cut off";
    }
    promised = std::max(promised, r.valid_until_ns);
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(r.status, Renewal::Status::lost) << r.detail;
  EXPECT_TRUE(saw_unknown);
  taker.join();
  ASSERT_EQ(second.status, Acquire::Status::held) << second.detail;
  EXPECT_GT(second.epoch, first.epoch);
  // The safety property: what we promised the holder ended before anyone
  // else was granted the lock.
  EXPECT_LE(promised, granted_at.load()) << "promised until " << (promised - frozen_at) / kMs
                                         << " ms after the cut, granted elsewhere at "
                                         << (granted_at.load() - frozen_at) / kMs << " ms";

  std::printf("cut at 0 ms: unknown from %llu ms, promised until %llu ms, granted elsewhere at %llu ms\n",
              static_cast<unsigned long long>((unknown_at - frozen_at) / kMs),
              static_cast<unsigned long long>((promised - frozen_at) / kMs),
              static_cast<unsigned long long>((granted_at.load() - frozen_at) / kMs));

  // Reconnected: the next acquire opens a new session through the relay.
  proxy.freeze(false);
  lock->release();
  const Acquire third = lock->acquire(in_ms(8000));
  ASSERT_EQ(third.status, Acquire::Status::held) << third.detail;
  EXPECT_GT(third.epoch, second.epoch);
  lock->release();
}

TEST(ZooKeeperBackend, NamesThatLookLikeLockNodesAreRefused) {
  NEED_SERVER();
  auto backend = open(settings());
  ASSERT_TRUE(backend);
  auto lock = backend->lock(unique_name("x") + "/abc__lock__0000000001");
  const Acquire a = lock->acquire(in_ms(1000));
  EXPECT_EQ(a.status, Acquire::Status::failed);
  EXPECT_NE(a.detail.find("__lock__"), std::string::npos) << a.detail;
}

}  // namespace
