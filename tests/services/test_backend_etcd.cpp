// tests/services/test_backend_etcd.cpp — the etcd lock backend against a real
// etcd (tests/services/services.sh; address in COLO_ETCD), straight through
// bridge/backends/backend.hpp: mutual exclusion and epochs, FIFO order,
// exclusion with `etcdctl lock` (interop/hold_lock.py), lease loss, an
// unreachable server, bad settings, and leaving the queue.
//
// Without COLO_ETCD each test skips, unless COLO_REQUIRE_SERVICES=1, when it
// fails. Lock names are unique per run, so runs never see each other's keys.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "backends/backend.hpp"
#include "colo/internal/clock.hpp"

extern char** environ;

namespace colo::bridge {
namespace {

using namespace std::chrono_literals;

constexpr std::uint64_t kMs = 1'000'000;

std::uint64_t now_ns() { return internal::monotonic_ns(); }
std::uint64_t in_ms(std::uint64_t ms) { return now_ns() + ms * kMs; }

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? std::string{} : std::string(v);
}

#define REQUIRE_ETCD()                                                                   \
  do {                                                                                   \
    if (env("COLO_ETCD").empty()) {                                                      \
      if (env("COLO_REQUIRE_SERVICES") == "1") FAIL() << "COLO_ETCD is not set";         \
      GTEST_SKIP() << "COLO_ETCD is not set (tests/services/services.sh start etcd)";    \
    }                                                                                    \
  } while (0)

// Unique per run and per call; hold_lock.py's alphabet ([A-Za-z0-9._-]).
std::string unique_name(const std::string& tag) {
  static std::atomic<int> counter{0};
  return "t-" + std::to_string(::getpid()) + "-" + std::to_string(now_ns() % 1'000'000'000'000) + "-" + tag +
         "-" + std::to_string(counter++);
}

BackendSettings settings() {
  BackendSettings s;
  s.kind = "etcd";
  s.endpoints = env("COLO_ETCD");
  s.lease = 3000ms;
  s.op_timeout = 2000ms;
  return s;
}

std::unique_ptr<LockBackend> open_session() {
  auto backend = open_backend(settings());
  EXPECT_TRUE(backend) << (backend ? "" : backend.error().message);
  return backend ? std::move(backend).value() : nullptr;
}

// Runs a shell command; returns its exit status and standard output.
int run(const std::string& command, std::string* out = nullptr) {
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return -1;
  std::string text;
  char buf[512];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) text.append(buf, n);
  const int status = ::pclose(pipe);
  if (out != nullptr) *out = text;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string etcdctl(const std::string& args) {
  return "ETCDCTL_API=3 etcdctl --endpoints " + env("COLO_ETCD") + " " + args;
}

// The keys under colo/locks/NAME/, as etcdctl sees them.
std::vector<std::string> lock_keys(const std::string& name) {
  std::string out;
  EXPECT_EQ(run(etcdctl("get --prefix --keys-only colo/locks/" + name + "/"), &out), 0);
  std::vector<std::string> keys;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty()) keys.push_back(line);
  }
  return keys;
}

// A child process with its standard output on a pipe, read line by line.
class Child {
 public:
  explicit Child(const std::vector<std::string>& argv) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return;
    posix_spawn_file_actions_t actions;
    ::posix_spawn_file_actions_init(&actions);
    ::posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    if (::posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ) != 0) pid_ = -1;
    ::posix_spawn_file_actions_destroy(&actions);
    ::close(fds[1]);
    out_ = fds[0];
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGTERM);
      (void)wait_exit();
    }
    if (out_ >= 0) ::close(out_);
  }

  bool started() const { return pid_ > 0; }

  // The next line of output, or "" at the deadline or at end of output.
  std::string read_line(std::uint64_t deadline_ns) {
    for (;;) {
      if (const auto nl = buffer_.find('\n'); nl != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        return line;
      }
      const std::uint64_t now = now_ns();
      if (now >= deadline_ns) return {};
      pollfd p{out_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>((deadline_ns - now) / kMs) + 1) <= 0) continue;
      char buf[256];
      const ssize_t n = ::read(out_, buf, sizeof buf);
      if (n <= 0) return {};
      buffer_.append(buf, static_cast<std::size_t>(n));
    }
  }

  int wait_exit() {
    int status = 0;
    if (::waitpid(pid_, &status, 0) != pid_) return -1;
    reaped_ = true;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  bool reaped_ = false;
  std::string buffer_;
};

// 1. Two sessions, two threads: exclusion, and epochs in grant order.
TEST(EtcdBackend, MutualExclusionAndEpochs) {
  REQUIRE_ETCD();
  const std::string name = unique_name("mutex");
  auto a = open_session();
  auto b = open_session();
  ASSERT_TRUE(a && b);
  constexpr int kRounds = 200;
  long counter = 0;  // not atomic on purpose: the lock protects it
  std::atomic<bool> inside{false};
  std::atomic<int> overlaps{0};
  std::atomic<int> failures{0};
  std::vector<std::uint64_t> epochs;  // in grant order (appended under the lock)
  std::vector<int> who;
  auto worker = [&](LockBackend& backend, int id) {
    auto lock = backend.lock(name);
    for (int i = 0; i < kRounds; ++i) {
      const Acquire got = lock->acquire(in_ms(20'000));
      if (got.status != Acquire::Status::held) {
        ++failures;
        ADD_FAILURE() << "acquire: " << static_cast<int>(got.status) << " " << got.detail;
        return;
      }
      if (inside.exchange(true)) ++overlaps;
      ++counter;
      epochs.push_back(got.epoch);
      who.push_back(id);
      inside.store(false);
      lock->release();
    }
  };
  std::thread t1(worker, std::ref(*a), 1);
  std::thread t2(worker, std::ref(*b), 2);
  t1.join();
  t2.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(overlaps.load(), 0);
  EXPECT_EQ(counter, 2 * kRounds);
  ASSERT_EQ(epochs.size(), 2u * kRounds);
  for (std::size_t i = 1; i < epochs.size(); ++i) {
    ASSERT_LT(epochs[i - 1], epochs[i]) << "grant " << i;
  }
  EXPECT_GE(epochs.front(), 1u);
  EXPECT_LT(epochs.back(), std::uint64_t{1} << 44);
  EXPECT_EQ(std::count(who.begin(), who.end(), 1), kRounds);
  EXPECT_EQ(std::count(who.begin(), who.end(), 2), kRounds);
  EXPECT_TRUE(lock_keys(name).empty());
}

// 2. First come, first served; a waiter keeps its place across acquire calls.
TEST(EtcdBackend, FifoAndQueuePlaceKept) {
  REQUIRE_ETCD();
  const std::string name = unique_name("fifo");
  auto sa = open_session();
  auto sb = open_session();
  auto sc = open_session();
  ASSERT_TRUE(sa && sb && sc);
  auto a = sa->lock(name);
  auto b = sb->lock(name);
  auto c = sc->lock(name);

  const Acquire ga = a->acquire(in_ms(5000));
  ASSERT_EQ(ga.status, Acquire::Status::held) << ga.detail;
  EXPECT_GT(ga.valid_until_ns, now_ns());
  const Acquire again = a->acquire(in_ms(5000));  // held already: the same grant
  EXPECT_EQ(again.status, Acquire::Status::held);
  EXPECT_EQ(again.epoch, ga.epoch);

  const std::uint64_t t0 = now_ns();
  const Acquire wb = b->acquire(in_ms(200));
  EXPECT_EQ(wb.status, Acquire::Status::waiting) << wb.detail;
  EXPECT_GE(now_ns() - t0, 190 * kMs);
  EXPECT_NE(wb.detail.find("colo/locks/" + name + "/"), std::string::npos) << wb.detail;  // whom it waits for
  EXPECT_EQ(lock_keys(name).size(), 2u);  // B's key stays: its place in the queue

  std::atomic<bool> c_done{false};
  Acquire gc;
  std::thread tc([&] {
    gc = c->acquire(in_ms(15'000));
    c_done = true;
  });
  for (int i = 0; i < 200 && lock_keys(name).size() < 3; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(lock_keys(name).size(), 3u);  // C queued behind B

  const Acquire wb2 = b->acquire(in_ms(200));  // continues, does not requeue
  EXPECT_EQ(wb2.status, Acquire::Status::waiting) << wb2.detail;

  a->release();
  const Acquire gb = b->acquire(in_ms(5000));
  ASSERT_EQ(gb.status, Acquire::Status::held) << gb.detail;
  std::this_thread::sleep_for(200ms);
  EXPECT_FALSE(c_done.load()) << "C got the lock while B held it";
  EXPECT_EQ(b->renew().status, Renewal::Status::held);

  b->release();
  tc.join();
  ASSERT_EQ(gc.status, Acquire::Status::held) << gc.detail;
  EXPECT_LT(ga.epoch, gb.epoch);
  EXPECT_LT(gb.epoch, gc.epoch);
  c->release();
  EXPECT_EQ(b->renew().status, Renewal::Status::lost);  // not held
}

// 3. colo and `etcdctl lock` exclude each other on the same name.
TEST(EtcdBackend, InteropWithEtcdctl) {
  REQUIRE_ETCD();
  const std::string script = env("COLO_HOLD_LOCK");
  if (script.empty()) GTEST_SKIP() << "COLO_HOLD_LOCK is not set";
  const std::string name = unique_name("interop");
  auto session = open_session();
  ASSERT_TRUE(session);
  auto lock = session->lock(name);

  {
    Child holder({script, "--backend", "etcd", "--name", name, "--hold", "1.5", "--endpoint", env("COLO_ETCD")});
    ASSERT_TRUE(holder.started());
    ASSERT_EQ(holder.read_line(in_ms(10'000)), "acquired");
    const Acquire w = lock->acquire(in_ms(300));
    EXPECT_EQ(w.status, Acquire::Status::waiting) << w.detail;
    ASSERT_EQ(holder.read_line(in_ms(10'000)), "released");
    const Acquire g = lock->acquire(in_ms(5000));
    ASSERT_EQ(g.status, Acquire::Status::held) << g.detail;
    EXPECT_EQ(holder.wait_exit(), 0);
  }
  {
    // While colo holds it, etcdctl cannot get it (its timeout starts 1 s
    // after launch, see tests/services/README.md).
    Child taker({script, "--backend", "etcd", "--name", name, "--try-acquire", "1", "--endpoint", env("COLO_ETCD")});
    ASSERT_TRUE(taker.started());
    EXPECT_EQ(taker.read_line(in_ms(10'000)), "busy");
    EXPECT_EQ(taker.wait_exit(), 3);
  }
  EXPECT_EQ(lock->renew().status, Renewal::Status::held);
  lock->release();
  EXPECT_TRUE(lock_keys(name).empty());
}

// 4. The lease revoked from outside: the hold is lost, others get the lock,
// and the session carries on with a new lease.
TEST(EtcdBackend, LeaseLoss) {
  REQUIRE_ETCD();
  const std::string name = unique_name("lease");
  auto s1 = open_session();
  auto s2 = open_session();
  ASSERT_TRUE(s1 && s2);
  auto l1 = s1->lock(name);
  const Acquire g1 = l1->acquire(in_ms(5000));
  ASSERT_EQ(g1.status, Acquire::Status::held) << g1.detail;
  EXPECT_EQ(l1->renew().status, Renewal::Status::held);

  const auto keys = lock_keys(name);
  ASSERT_EQ(keys.size(), 1u);
  const std::string lease_hex = keys[0].substr(keys[0].rfind('/') + 1);
  std::string out;
  ASSERT_EQ(run(etcdctl("lease revoke " + lease_hex), &out), 0) << out;

  const std::uint64_t revoked = now_ns();
  Renewal r;
  while (now_ns() - revoked < 2500 * kMs) {
    r = l1->renew();
    if (r.status == Renewal::Status::lost) break;
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_EQ(r.status, Renewal::Status::lost) << r.detail;
  EXPECT_LT(now_ns() - revoked, 2100 * kMs);

  auto l2 = s2->lock(name);
  const Acquire g2 = l2->acquire(in_ms(5000));
  ASSERT_EQ(g2.status, Acquire::Status::held) << g2.detail;
  EXPECT_GT(g2.epoch, g1.epoch);
  l2->release();

  const Acquire g3 = l1->acquire(in_ms(5000));
  ASSERT_EQ(g3.status, Acquire::Status::held) << g3.detail;
  EXPECT_GT(g3.epoch, g2.epoch);
  const auto now_keys = lock_keys(name);
  ASSERT_EQ(now_keys.size(), 1u);
  EXPECT_NE(now_keys[0], keys[0]);  // on a new lease
  EXPECT_EQ(l1->renew().status, Renewal::Status::held);

  // Closing the session revokes its lease: the key goes at once.
  l1.reset();
  EXPECT_TRUE(lock_keys(name).empty());
  auto l3 = s1->lock(name);
  ASSERT_EQ(l3->acquire(in_ms(5000)).status, Acquire::Status::held);
  s1.reset();
  EXPECT_TRUE(lock_keys(name).empty());
}

// 5. An unreachable server and bad settings.
TEST(EtcdBackend, UnreachableAndBadSettings) {
  BackendSettings s = settings();
  s.endpoints = "http://127.0.0.1:1";
  s.op_timeout = 500ms;
  const std::uint64_t t0 = now_ns();
  auto none = open_backend(s);
  ASSERT_FALSE(none);
  EXPECT_LT(now_ns() - t0, 1000 * kMs);
  EXPECT_NE(none.error().message.find("http://127.0.0.1:1"), std::string::npos) << none.error().message;

  for (const char* bad : {"", "https://127.0.0.1:23790", "127.0.0.1:23790", "http://127.0.0.1",
                          "http://127.0.0.1:0", "http://a:1,http://b:2"}) {
    s = settings();
    s.endpoints = bad;
    auto r = open_backend(s);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, Errc::invalid_argument) << bad;
    EXPECT_FALSE(r.error().message.empty());
  }
  s = settings();
  s.endpoints = "http://127.0.0.1:23790";  // never contacted: the settings are refused first
  s.lease = 0ms;
  auto r = open_backend(s);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::invalid_argument);
  s.lease = 999ms;
  EXPECT_FALSE(open_backend(s));
  s.lease = 3000ms;
  s.op_timeout = 0ms;
  r = open_backend(s);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Errc::invalid_argument);
}

// A server that accepts connections and never answers: still bounded.
TEST(EtcdBackend, SilentServerBoundedByOpTimeout) {
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(listener, 4), 0);  // the kernel completes connects; no one reads
  ASSERT_EQ(::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  BackendSettings s = settings();
  s.endpoints = "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  s.op_timeout = 500ms;
  const std::uint64_t t0 = now_ns();
  auto none = open_backend(s);
  const std::uint64_t took = now_ns() - t0;
  ::close(listener);
  ASSERT_FALSE(none);
  EXPECT_GE(took, 450 * kMs);
  EXPECT_LT(took, 1500 * kMs);
  EXPECT_NE(none.error().message.find(s.endpoints), std::string::npos) << none.error().message;
}

// A lease revoked from outside, then an acquire before the keep-alive thread
// noticed: the put is refused ("lease not found") and a new lease serves.
TEST(EtcdBackend, AcquireRightAfterRevoke) {
  REQUIRE_ETCD();
  const std::string first = unique_name("revoked");
  const std::string second = unique_name("fresh");
  auto session = open_session();
  ASSERT_TRUE(session);
  auto held = session->lock(first);
  ASSERT_EQ(held->acquire(in_ms(5000)).status, Acquire::Status::held);
  const auto keys = lock_keys(first);
  ASSERT_EQ(keys.size(), 1u);
  std::string out;
  ASSERT_EQ(run(etcdctl("lease revoke " + keys[0].substr(keys[0].rfind('/') + 1)), &out), 0) << out;

  auto other = session->lock(second);
  const Acquire g = other->acquire(in_ms(5000));
  ASSERT_EQ(g.status, Acquire::Status::held) << g.detail;
  const auto fresh = lock_keys(second);
  ASSERT_EQ(fresh.size(), 1u);
  EXPECT_NE(fresh[0].substr(fresh[0].rfind('/') + 1), keys[0].substr(keys[0].rfind('/') + 1));
  EXPECT_EQ(held->renew().status, Renewal::Status::lost);  // its lease is gone for sure now
  EXPECT_EQ(other->renew().status, Renewal::Status::held);
  other->release();
  held->release();
  EXPECT_TRUE(lock_keys(second).empty());
}

// 6. release() of a waiting lock leaves the queue (no one waits behind a
// ghost), and is idempotent; a second lock object for one name is refused.
TEST(EtcdBackend, ReleaseWhileWaiting) {
  REQUIRE_ETCD();
  const std::string name = unique_name("leave");
  auto sa = open_session();
  auto sb = open_session();
  auto sc = open_session();
  ASSERT_TRUE(sa && sb && sc);
  auto a = sa->lock(name);
  auto b = sb->lock(name);
  auto c = sc->lock(name);
  ASSERT_EQ(a->acquire(in_ms(5000)).status, Acquire::Status::held);
  ASSERT_EQ(b->acquire(in_ms(100)).status, Acquire::Status::waiting);

  std::atomic<bool> c_done{false};
  Acquire gc;
  std::thread tc([&] {
    gc = c->acquire(in_ms(15'000));
    c_done = true;
  });
  for (int i = 0; i < 200 && lock_keys(name).size() < 3; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(lock_keys(name).size(), 3u);

  b->release();
  EXPECT_EQ(lock_keys(name).size(), 2u);
  b->release();  // idempotent
  EXPECT_EQ(lock_keys(name).size(), 2u);
  EXPECT_EQ(b->renew().status, Renewal::Status::lost);

  auto dup = sa->lock(name);  // same session, same name: one key per lease and name
  const Acquire d = dup->acquire(in_ms(100));
  EXPECT_EQ(d.status, Acquire::Status::failed);
  EXPECT_FALSE(d.detail.empty());
  dup.reset();

  const std::uint64_t t0 = now_ns();
  a->release();
  tc.join();
  ASSERT_EQ(gc.status, Acquire::Status::held) << gc.detail;
  EXPECT_LT(now_ns() - t0, 1000 * kMs);
  c->release();
  a->release();  // released already: nothing to do
  EXPECT_TRUE(lock_keys(name).empty());
}

}  // namespace
}  // namespace colo::bridge
