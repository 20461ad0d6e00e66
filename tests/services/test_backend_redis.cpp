// tests/services/test_backend_redis.cpp — the Redis lock backend
// (bridge/backends/redis.cpp) against a real server, redis-py's Lock through
// interop/hold_lock.py, and a fake server for replies a real one never sends.
//
// The server comes from COLO_REDIS (tests/services/services.sh env); without
// it the tests that need it skip, or fail under COLO_REQUIRE_SERVICES=1.
// Lock names are unique per run ("t<pid>-<n>-<what>"), so reruns against the
// same server do not collide; they use only [A-Za-z0-9._-], as hold_lock.py
// requires.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "backends/backend.hpp"
#include "colo/internal/clock.hpp"

extern char** environ;

namespace colo {
inline void PrintTo(Errc code, std::ostream* os) { *os << "Errc::" << errc_name(code); }
}  // namespace colo

namespace colo::bridge {
inline void PrintTo(Acquire::Status s, std::ostream* os) {
  *os << (s == Acquire::Status::held ? "held" : s == Acquire::Status::waiting ? "waiting" : "failed");
}
inline void PrintTo(Renewal::Status s, std::ostream* os) {
  *os << (s == Renewal::Status::held ? "held" : s == Renewal::Status::lost ? "lost" : "unknown");
}
}  // namespace colo::bridge

namespace {

using namespace std::chrono_literals;
using colo::Errc;
using colo::bridge::Acquire;
using colo::bridge::BackendLock;
using colo::bridge::BackendSettings;
using colo::bridge::LockBackend;
using colo::bridge::Renewal;
using std::chrono::milliseconds;

// As colod does (bridge/main.cpp): hiredis writes with write(2).
[[maybe_unused]] const bool sigpipe_ignored = (::signal(SIGPIPE, SIG_IGN), true);

std::uint64_t now_ns() { return colo::internal::monotonic_ns(); }
std::uint64_t in(milliseconds d) { return now_ns() + static_cast<std::uint64_t>(d.count()) * 1'000'000u; }
double ms_since(std::uint64_t t) { return static_cast<double>(now_ns() - t) / 1e6; }

std::string env(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

std::string unique_name(const std::string& what) {
  static std::atomic<int> counter{0};
  return "t" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" + what;
}

std::string lock_key(const std::string& name) { return "colo:lock:" + name; }

// A plain hiredis connection, to look at and tamper with keys from outside.
class RawClient {
 public:
  explicit RawClient(const std::string& endpoint) {
    const auto colon = endpoint.rfind(':');
    context_ = redisConnectWithTimeout(endpoint.substr(0, colon).c_str(), std::atoi(endpoint.c_str() + colon + 1),
                                       timeval{2, 0});
    if (!context_ || context_->err) ADD_FAILURE() << "cannot connect to " << endpoint;
  }
  ~RawClient() { redisFree(context_); }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  // The reply as text: a string or status as it is, an integer in decimal,
  // nil as nullopt.
  std::optional<std::string> run(std::initializer_list<std::string> args) {
    std::vector<const char*> argv;
    std::vector<std::size_t> lengths;
    for (const std::string& arg : args) {
      argv.push_back(arg.data());
      lengths.push_back(arg.size());
    }
    auto* reply = static_cast<redisReply*>(redisCommandArgv(context_, static_cast<int>(argv.size()), argv.data(), lengths.data()));
    if (!reply) {
      ADD_FAILURE() << "redis: " << context_->errstr;
      return std::nullopt;
    }
    std::optional<std::string> text;
    if (reply->type == REDIS_REPLY_INTEGER) text = std::to_string(reply->integer);
    if (reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_STATUS) text = std::string(reply->str, reply->len);
    if (reply->type == REDIS_REPLY_ERROR) ADD_FAILURE() << "redis: " << reply->str;
    freeReplyObject(reply);
    return text;
  }
  std::optional<std::string> get(const std::string& key) { return run({"GET", key}); }

 private:
  redisContext* context_ = nullptr;
};

// hold_lock.py (COLO_HOLD_LOCK), run as it is (#!/usr/bin/python3), with its
// stdout and stderr on one pipe; killed (SIGTERM) if still running at the end.
class Script {
 public:
  explicit Script(const std::vector<std::string>& args) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
      ADD_FAILURE() << "pipe2: " << std::strerror(errno);
      return;
    }
    out_ = fds[0];
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
    posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
    std::vector<char*> argv;
    for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);
    const int rc = ::posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(fds[1]);
    if (rc != 0) {
      ADD_FAILURE() << "cannot run " << args[0] << ": " << std::strerror(rc);
      pid_ = -1;
    }
  }
  ~Script() {
    if (pid_ > 0 && !wait(0ms)) {
      ::kill(pid_, SIGTERM);
      if (!wait(5s)) {
        ::kill(pid_, SIGKILL);
        wait(5s);
      }
    }
    if (out_ >= 0) ::close(out_);
  }
  Script(const Script&) = delete;
  Script& operator=(const Script&) = delete;

  // The next line of stdout that is not a diagnostic ("hold_lock: ..."), or
  // nullopt after `timeout` or at the end of output.
  std::optional<std::string> word(milliseconds timeout) {
    const std::uint64_t deadline = in(timeout);
    for (;;) {
      std::size_t newline;
      while ((newline = buffer_.find('\n')) != std::string::npos) {
        std::string line = buffer_.substr(0, newline);
        buffer_.erase(0, newline + 1);
        output_.push_back(line);
        if (line.rfind("hold_lock:", 0) != 0) return line;
      }
      const std::uint64_t now = now_ns();
      if (out_ < 0 || now >= deadline) return std::nullopt;
      pollfd pfd{out_, POLLIN, 0};
      if (::poll(&pfd, 1, static_cast<int>((deadline - now) / 1'000'000u) + 1) <= 0) continue;
      char chunk[512];
      const ssize_t n = ::read(out_, chunk, sizeof chunk);
      if (n <= 0) return std::nullopt;
      buffer_.append(chunk, static_cast<std::size_t>(n));
    }
  }

  // The exit status (-signal if killed), or nullopt if still running after `timeout`.
  std::optional<int> wait(milliseconds timeout) {
    if (status_) return status_;
    const std::uint64_t deadline = in(timeout);
    for (;;) {
      int status = 0;
      if (pid_ > 0 && ::waitpid(pid_, &status, WNOHANG) == pid_) {
        status_ = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
        return status_;
      }
      if (pid_ <= 0 || now_ns() >= deadline) return std::nullopt;
      std::this_thread::sleep_for(10ms);
    }
  }

  // Every line read so far, for failure messages.
  std::string output() const {
    std::string all;
    for (const std::string& line : output_) all += "  " + line + "\n";
    return all;
  }

  // The number in the diagnostic "hold_lock: <stamp> at N ns" (--verbose).
  std::optional<std::uint64_t> stamp(const std::string& stamp) const {
    const std::string prefix = "hold_lock: " + stamp + " at ";
    for (const std::string& line : output_) {
      if (line.rfind(prefix, 0) == 0) return std::stoull(line.substr(prefix.size()));
    }
    return std::nullopt;
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  std::string buffer_;
  std::vector<std::string> output_;
  std::optional<int> status_;
};

// Replies a real Redis never sends: answers each command it reads with the
// next canned reply ("" = no answer at all). One client at a time; a new
// connection replaces the old one.
class FakeRedis {
 public:
  explicit FakeRedis(std::vector<std::string> replies) : replies_(replies.begin(), replies.end()) {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t size = sizeof address;
    if (::bind(listener_, reinterpret_cast<sockaddr*>(&address), size) != 0 || ::listen(listener_, 4) != 0 ||
        ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &size) != 0) {
      ADD_FAILURE() << "fake redis: " << std::strerror(errno);
    }
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~FakeRedis() {
    stop_ = true;
    thread_.join();
    ::close(listener_);
  }
  FakeRedis(const FakeRedis&) = delete;
  FakeRedis& operator=(const FakeRedis&) = delete;

  std::string endpoint() const { return "127.0.0.1:" + std::to_string(port_); }
  std::size_t unanswered() {
    std::lock_guard guard(mutex_);
    return replies_.size();
  }

 private:
  void serve() {
    int client = -1;
    while (!stop_) {
      pollfd fds[2] = {{listener_, POLLIN, 0}, {client, POLLIN, 0}};
      if (::poll(fds, client >= 0 ? 2 : 1, 20) <= 0) continue;
      if (fds[0].revents & POLLIN) {
        const int fresh = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fresh >= 0) {
          if (client >= 0) ::close(client);
          client = fresh;
          continue;
        }
      }
      if (client < 0 || !(fds[1].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char request[4096];
      if (::read(client, request, sizeof request) <= 0) {
        ::close(client);
        client = -1;
        continue;
      }
      std::string reply;
      {
        std::lock_guard guard(mutex_);
        if (!replies_.empty()) {
          reply = replies_.front();
          replies_.pop_front();
        }
      }
      if (!reply.empty() && ::write(client, reply.data(), reply.size()) < 0) ADD_FAILURE() << "fake redis: write failed";
    }
    if (client >= 0) ::close(client);
  }

  int listener_ = -1;
  int port_ = 0;
  std::mutex mutex_;
  std::deque<std::string> replies_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

BackendSettings settings_for(const std::string& endpoint, milliseconds lease = 2000ms) {
  BackendSettings settings;
  settings.kind = "redis";
  settings.endpoints = endpoint;
  settings.lease = lease;
  settings.op_timeout = 2000ms;
  settings.poll = 5ms;
  return settings;
}

std::unique_ptr<LockBackend> open_or_fail(const BackendSettings& settings) {
  auto backend = colo::bridge::open_redis(settings);
  if (!backend) {
    ADD_FAILURE() << backend.error().message;
    return nullptr;
  }
  return std::move(backend).value();
}

// The tests that need the server: skipped without COLO_REDIS, failed if it
// is missing under COLO_REQUIRE_SERVICES=1.
class RedisBackend : public ::testing::Test {
 protected:
  void SetUp() override {
    endpoint_ = env("COLO_REDIS");
    if (endpoint_.empty()) {
      if (env("COLO_REQUIRE_SERVICES") == "1") FAIL() << "COLO_REDIS is not set, and COLO_REQUIRE_SERVICES=1";
      GTEST_SKIP() << "COLO_REDIS is not set (eval \"$(tests/services/services.sh env)\")";
    }
  }
  BackendSettings settings(milliseconds lease = 2000ms) const { return settings_for(endpoint_, lease); }
  std::unique_ptr<LockBackend> open(milliseconds lease = 2000ms) const { return open_or_fail(settings(lease)); }

  std::string endpoint_;
};

TEST_F(RedisBackend, TwoSessionsContendingExcludeEachOther) {
  constexpr int kRounds = 200;
  auto first = open();
  auto second = open();
  ASSERT_TRUE(first && second);
  const std::string name = unique_name("contend");

  long counter = 0;  // not atomic on purpose: only the lock protects it
  std::atomic<bool> inside{false};
  std::atomic<int> overlaps{0};
  std::vector<std::pair<int, std::uint64_t>> grants;  // (session, epoch) in grant order, under the lock
  grants.reserve(2 * kRounds);

  const auto contend = [&](LockBackend& backend, int session) {
    auto lock = backend.lock(name);
    for (int i = 0; i < kRounds; ++i) {
      const Acquire got = lock->acquire(in(10s));
      if (got.status != Acquire::Status::held) {
        ADD_FAILURE() << "session " << session << " round " << i << ": " << got.detail;
        return;
      }
      if (inside.exchange(true)) ++overlaps;
      ++counter;
      grants.emplace_back(session, got.epoch);
      inside = false;
      lock->release();
    }
  };
  std::thread a(contend, std::ref(*first), 0);
  std::thread b(contend, std::ref(*second), 1);
  a.join();
  b.join();

  EXPECT_EQ(overlaps.load(), 0);
  EXPECT_EQ(counter, 2 * kRounds);
  ASSERT_EQ(grants.size(), 2u * kRounds);
  for (std::size_t i = 1; i < grants.size(); ++i) {
    ASSERT_GT(grants[i].second, grants[i - 1].second) << "grant " << i;
  }
  EXPECT_EQ(std::count_if(grants.begin(), grants.end(), [](const auto& g) { return g.first == 0; }), kRounds);
  EXPECT_EQ(std::count_if(grants.begin(), grants.end(), [](const auto& g) { return g.first == 1; }), kRounds);
}

TEST_F(RedisBackend, HeldLockBlocksAnotherSessionUntilReleased) {
  auto first = open();
  auto second = open();
  ASSERT_TRUE(first && second);
  const std::string name = unique_name("block");
  auto holder = first->lock(name);
  auto waiter = second->lock(name);

  const std::uint64_t before = now_ns();
  const Acquire held = holder->acquire(in(2s));
  const std::uint64_t after = now_ns();
  ASSERT_EQ(held.status, Acquire::Status::held) << held.detail;
  EXPECT_GE(held.epoch, 1u);
  // 90% of the 2 s lease, from a moment during the call.
  EXPECT_GE(held.valid_until_ns, before + 1'800'000'000u);
  EXPECT_LE(held.valid_until_ns, after + 1'800'000'000u);

  // Not due yet: the same bound, no request. Held again: the same grant.
  const Renewal early = holder->renew();
  EXPECT_EQ(early.status, Renewal::Status::held);
  EXPECT_EQ(early.valid_until_ns, held.valid_until_ns);
  const Acquire again = holder->acquire(in(0ms));
  EXPECT_EQ(again.status, Acquire::Status::held);
  EXPECT_EQ(again.epoch, held.epoch);

  std::uint64_t start = now_ns();
  Acquire blocked = waiter->acquire(in(300ms));
  EXPECT_EQ(blocked.status, Acquire::Status::waiting) << blocked.detail;
  EXPECT_GE(ms_since(start), 300.0);
  EXPECT_LT(ms_since(start), 1000.0);

  // A deadline already passed: exactly one try.
  start = now_ns();
  blocked = waiter->acquire(0);
  EXPECT_EQ(blocked.status, Acquire::Status::waiting) << blocked.detail;
  EXPECT_LT(ms_since(start), 100.0);

  holder->release();
  const Acquire next = waiter->acquire(in(2s));
  ASSERT_EQ(next.status, Acquire::Status::held) << next.detail;
  EXPECT_GT(next.epoch, held.epoch);
  waiter->release();
}

TEST_F(RedisBackend, ExcludesRedisPyLockBothWays) {
  const std::string script = env("COLO_HOLD_LOCK");
  if (script.empty()) {
    if (env("COLO_REQUIRE_SERVICES") == "1") FAIL() << "COLO_HOLD_LOCK is not set, and COLO_REQUIRE_SERVICES=1";
    GTEST_SKIP() << "COLO_HOLD_LOCK is not set (tests/services/interop/hold_lock.py)";
  }
  auto backend = open();
  ASSERT_TRUE(backend);
  const std::string name = unique_name("interop");
  auto lock = backend->lock(name);

  // redis-py holds: colo waits, and gets the lock once it is released.
  {
    Script holder({script, "--backend", "redis", "--name", name, "--hold", "1.5", "--endpoint", endpoint_, "--verbose"});
    ASSERT_EQ(holder.word(10s), "acquired") << holder.output();
    const Acquire blocked = lock->acquire(in(300ms));
    EXPECT_EQ(blocked.status, Acquire::Status::waiting) << blocked.detail;
    const Acquire got = lock->acquire(in(10s));
    const std::uint64_t got_ns = now_ns();
    ASSERT_EQ(got.status, Acquire::Status::held) << got.detail;
    EXPECT_EQ(holder.word(5s), "released") << holder.output();
    EXPECT_EQ(holder.wait(5s), 0) << holder.output();
    const auto releasing = holder.stamp("releasing");
    ASSERT_TRUE(releasing) << holder.output();
    EXPECT_GT(got_ns, *releasing) << "colo got the lock before redis-py let it go";
  }

  // colo holds: redis-py does not get it.
  {
    Script contender({script, "--backend", "redis", "--name", name, "--try-acquire", "1", "--endpoint", endpoint_});
    EXPECT_EQ(contender.word(10s), "busy") << contender.output();
    EXPECT_EQ(contender.wait(10s), 3) << contender.output();
  }
  EXPECT_EQ(lock->renew().status, Renewal::Status::held);
  lock->release();
}

TEST_F(RedisBackend, RenewReportsALockTakenFromOutsideAndReleaseSparesTheNewHolder) {
  constexpr auto kLease = 600ms;
  auto first = open(kLease);
  auto second = open(kLease);
  ASSERT_TRUE(first && second);
  RawClient raw(endpoint_);
  const std::string name = unique_name("lost");
  auto victim = first->lock(name);
  auto taker = second->lock(name);

  const std::uint64_t start = now_ns();
  const Acquire held = victim->acquire(in(2s));
  ASSERT_EQ(held.status, Acquire::Status::held) << held.detail;
  EXPECT_EQ(raw.run({"DEL", lock_key(name)}), "1");
  const Acquire taken = taker->acquire(in(2s));
  ASSERT_EQ(taken.status, Acquire::Status::held) << taken.detail;
  EXPECT_GT(taken.epoch, held.epoch);

  // Past lease/3 (200 ms), so the renewal is due and asks the server.
  const std::chrono::nanoseconds elapsed(now_ns() - start);
  if (elapsed < 250ms) std::this_thread::sleep_for(250ms - elapsed);
  const Renewal renewal = victim->renew();
  EXPECT_EQ(renewal.status, Renewal::Status::lost) << renewal.detail;
  EXPECT_EQ(victim->renew().status, Renewal::Status::lost);

  victim->release();
  EXPECT_TRUE(raw.get(lock_key(name)).has_value()) << "release deleted the other holder's key";
  EXPECT_EQ(taker->renew().status, Renewal::Status::held);
  taker->release();
  EXPECT_FALSE(raw.get(lock_key(name)).has_value());
}

TEST_F(RedisBackend, AnUnrenewedLeaseExpiresAndTheLockMovesOn) {
  auto short_lived = open(500ms);
  auto other = open();
  ASSERT_TRUE(short_lived && other);
  RawClient raw(endpoint_);
  const std::string name = unique_name("expiry");
  auto abandoned = short_lived->lock(name);
  auto next = other->lock(name);

  const std::uint64_t start = now_ns();
  const Acquire first = abandoned->acquire(in(2s));
  ASSERT_EQ(first.status, Acquire::Status::held) << first.detail;
  EXPECT_LE(first.valid_until_ns, now_ns() + 450'000'000u);  // 90% of 500 ms

  const Acquire second = next->acquire(in(3s));
  ASSERT_EQ(second.status, Acquire::Status::held) << second.detail;
  EXPECT_GE(ms_since(start), 450.0);
  EXPECT_LE(ms_since(start), 1500.0);
  EXPECT_GT(second.epoch, first.epoch);

  // Its valid_until has passed: lost, without asking; releasing spares the key.
  EXPECT_EQ(abandoned->renew().status, Renewal::Status::lost);
  abandoned->release();
  EXPECT_TRUE(raw.get(lock_key(name)).has_value());
  next->release();
}

TEST(RedisBackendSettings, UnreachableServerAndBadSettingsAreErrors) {
  BackendSettings settings = settings_for("127.0.0.1:1");
  settings.op_timeout = 1000ms;
  auto closed = colo::bridge::open_redis(settings);
  ASSERT_FALSE(closed);
  EXPECT_TRUE(closed.error().code == Errc::system || closed.error().code == Errc::timed_out) << closed.error().message;
  EXPECT_NE(closed.error().message.find("redis at 127.0.0.1:1: "), std::string::npos) << closed.error().message;

  for (const std::string bad : {"", "nohost", "127.0.0.1:99999", "a:b:c", ":6379", "localhost:", "127.0.0.1:0",
                                "127.0.0.1:63x", "127.0.0.1:-1", "bad host:6379"}) {
    auto result = colo::bridge::open_redis(settings_for(bad));
    ASSERT_FALSE(result) << "'" << bad << "'";
    EXPECT_EQ(result.error().code, Errc::invalid_argument) << result.error().message;
    EXPECT_NE(result.error().message.find("'" + bad + "'"), std::string::npos) << result.error().message;
  }

  // Checked before connecting (the endpoint is the closed port).
  const auto expect_invalid = [](BackendSettings s) {
    auto result = colo::bridge::open_backend(s);
    ASSERT_FALSE(result);
    EXPECT_EQ(result.error().code, Errc::invalid_argument) << result.error().message;
  };
  settings.lease = 0ms;
  expect_invalid(settings);
  settings.lease = 99ms;
  expect_invalid(settings);
  settings.lease = 2000ms;
  settings.op_timeout = 0ms;
  expect_invalid(settings);
  settings.op_timeout = 1000ms;
  settings.poll = 0ms;
  expect_invalid(settings);
}

TEST_F(RedisBackend, ReleasingAWaiterIsHarmlessAndIdempotent) {
  auto first = open();
  auto second = open();
  ASSERT_TRUE(first && second);
  RawClient raw(endpoint_);
  const std::string name = unique_name("waiter");
  auto holder = first->lock(name);
  auto waiter = second->lock(name);

  const Acquire held = holder->acquire(0);  // free: the one try gets it
  ASSERT_EQ(held.status, Acquire::Status::held) << held.detail;
  const auto token = raw.get(lock_key(name));
  ASSERT_TRUE(token);
  EXPECT_EQ(waiter->acquire(in(50ms)).status, Acquire::Status::waiting);
  waiter->release();
  waiter->release();
  EXPECT_EQ(waiter->renew().status, Renewal::Status::lost);  // not held
  EXPECT_EQ(raw.get(lock_key(name)), token);
  EXPECT_EQ(holder->renew().status, Renewal::Status::held);

  holder->release();
  holder->release();
  EXPECT_FALSE(raw.get(lock_key(name)).has_value());
  const Acquire got = waiter->acquire(in(2s));
  ASSERT_EQ(got.status, Acquire::Status::held) << got.detail;
  EXPECT_GT(got.epoch, held.epoch);
  waiter->release();
  const Acquire again = waiter->acquire(in(2s));
  ASSERT_EQ(again.status, Acquire::Status::held) << again.detail;
  EXPECT_GT(again.epoch, got.epoch);
  waiter->release();
}

TEST_F(RedisBackend, KeysFollowTheRecipe) {
  RawClient raw(endpoint_);
  const std::string name = unique_name("recipe");
  {
    auto backend = colo::bridge::open_backend(settings());
    ASSERT_TRUE(backend) << backend.error().message;
    EXPECT_STREQ((*backend)->kind(), "redis");
    auto lock = (*backend)->lock(name);
    const Acquire held = lock->acquire(in(2s));
    ASSERT_EQ(held.status, Acquire::Status::held) << held.detail;
    const auto token = raw.get("colo:lock:" + name);
    ASSERT_TRUE(token);
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    EXPECT_EQ(token->rfind(std::string(host) + ":" + std::to_string(::getpid()) + ":", 0), 0u) << *token;
    const std::string random = token->substr(token->rfind(':') + 1);
    EXPECT_EQ(random.size(), 32u);
    EXPECT_EQ(random.find_first_not_of("0123456789abcdef"), std::string::npos) << *token;
    EXPECT_EQ(raw.get("colo:fence:" + name), std::to_string(held.epoch));
    const long pttl = std::stol(raw.run({"PTTL", "colo:lock:" + name}).value_or("-9"));
    EXPECT_GT(pttl, 0);
    EXPECT_LE(pttl, 2000);
  }  // the lock's destructor releases
  EXPECT_FALSE(raw.get("colo:lock:" + name).has_value());

  // Other roots: "...lock:" becomes "...fence:"; otherwise "fence:" is appended.
  const std::vector<std::pair<std::string, std::string>> roots = {{"colo-test:lock:", "colo-test:fence:"},
                                                                  {"colo-test/", "colo-test/fence:"}};
  for (const auto& [root, fence] : roots) {
    BackendSettings s = settings();
    s.root = root;
    auto backend = open_or_fail(s);
    ASSERT_TRUE(backend);
    auto lock = backend->lock(name);
    const Acquire held = lock->acquire(in(2s));
    ASSERT_EQ(held.status, Acquire::Status::held) << held.detail;
    EXPECT_TRUE(raw.get(root + name).has_value()) << root;
    EXPECT_EQ(raw.get(fence + name), std::to_string(held.epoch)) << root;
    lock->release();
    EXPECT_FALSE(raw.get(root + name).has_value()) << root;
  }
}

TEST_F(RedisBackend, ABrokenFenceCounterFailsTheAcquireAndLeavesNoKey) {
  auto backend = open();
  ASSERT_TRUE(backend);
  RawClient raw(endpoint_);
  const std::string name = unique_name("fence");
  auto lock = backend->lock(name);

  EXPECT_EQ(raw.run({"SET", "colo:fence:" + name, "not a number"}), "OK");
  Acquire got = lock->acquire(in(2s));
  EXPECT_EQ(got.status, Acquire::Status::failed);
  EXPECT_NE(got.detail.find("redis at " + endpoint_), std::string::npos) << got.detail;
  EXPECT_FALSE(raw.get(lock_key(name)).has_value());

  // INCR would give 2^44, past what a fencing token can carry.
  EXPECT_EQ(raw.run({"SET", "colo:fence:" + name, std::to_string((std::uint64_t{1} << 44) - 1)}), "OK");
  got = lock->acquire(in(2s));
  EXPECT_EQ(got.status, Acquire::Status::failed);
  EXPECT_NE(got.detail.find("outside"), std::string::npos) << got.detail;
  EXPECT_FALSE(raw.get(lock_key(name)).has_value());

  EXPECT_EQ(raw.run({"SET", "colo:fence:" + name, "41"}), "OK");
  got = lock->acquire(in(2s));
  ASSERT_EQ(got.status, Acquire::Status::held) << got.detail;
  EXPECT_EQ(got.epoch, 42u);
  lock->release();
}

// Replies no real server sends, and one that does not answer: never a crash;
// renew() says unknown (keeping its bound) until an answer says otherwise.
TEST(RedisBackendFake, UntrustedRepliesAndSilence) {
  FakeRedis fake({
      "+PONG\r\n",                  // open_redis's PING
      "$5\r\nhello\r\n",            // acquire: a string instead of an epoch -> failed
      ":0\r\n",                     // acquire: withdraw the uncertain claim first
      ":17592186044416\r\n",        // ... then an epoch of 2^44 -> failed
      ":1\r\n",                     // ... after giving the key back
      ":7\r\n",                     // acquire: epoch 7
      "",                           // renew: silence -> unknown (timed out)
      ":1\r\n",                     // renew on a new connection: held
      "!garbage\r\n",               // renew: protocol error -> unknown
      ":0\r\n",                     // renew: lost
      ":0\r\n",                     // release: withdraw (not ours any more)
  });
  BackendSettings settings = settings_for(fake.endpoint(), 300ms);
  settings.op_timeout = 100ms;
  auto backend = open_or_fail(settings);
  ASSERT_TRUE(backend);
  auto lock = backend->lock("fake");

  Acquire got = lock->acquire(in(1s));
  EXPECT_EQ(got.status, Acquire::Status::failed);
  EXPECT_NE(got.detail.find("unexpected reply: a string 'hello'"), std::string::npos) << got.detail;
  got = lock->acquire(in(1s));
  EXPECT_EQ(got.status, Acquire::Status::failed);
  EXPECT_NE(got.detail.find("outside"), std::string::npos) << got.detail;
  got = lock->acquire(in(1s));
  ASSERT_EQ(got.status, Acquire::Status::held) << got.detail;
  EXPECT_EQ(got.epoch, 7u);

  std::this_thread::sleep_for(110ms);  // past lease/3
  Renewal renewal = lock->renew();
  EXPECT_EQ(renewal.status, Renewal::Status::unknown);
  EXPECT_EQ(renewal.valid_until_ns, got.valid_until_ns);
  EXPECT_NE(renewal.detail.find("no answer within 100 ms"), std::string::npos) << renewal.detail;
  renewal = lock->renew();
  EXPECT_EQ(renewal.status, Renewal::Status::held) << renewal.detail;
  EXPECT_GT(renewal.valid_until_ns, got.valid_until_ns);

  std::this_thread::sleep_for(110ms);
  renewal = lock->renew();
  EXPECT_EQ(renewal.status, Renewal::Status::unknown);
  EXPECT_NE(renewal.detail.find("redis at " + fake.endpoint()), std::string::npos) << renewal.detail;
  renewal = lock->renew();
  EXPECT_EQ(renewal.status, Renewal::Status::lost) << renewal.detail;
  lock->release();
  EXPECT_EQ(fake.unanswered(), 0u);
}

TEST(RedisBackendFake, APingAnsweredWithAnErrorIsAnError) {
  FakeRedis fake({"-NOAUTH Authentication required.\r\n"});
  auto backend = colo::bridge::open_redis(settings_for(fake.endpoint()));
  ASSERT_FALSE(backend);
  EXPECT_NE(backend.error().message.find("NOAUTH"), std::string::npos) << backend.error().message;
  EXPECT_NE(backend.error().message.find("redis at " + fake.endpoint()), std::string::npos) << backend.error().message;
}

}  // namespace
