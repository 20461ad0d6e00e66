// bridge/backends/redis.cpp — the Redis lock backend (backend.hpp).
//
// The recipe is redis-py's Lock (tests/services/README.md, "Redis"), so that
// colo and redis-py clients on the same name exclude each other:
//
//   key      root + name: "colo:lock:orders/pool" by default. Its value is our
//            token, "<hostname>:<pid>:<32 hex digits from getrandom>", new for
//            each acquisition (only the key name is shared with other
//            clients; the token just has to be unique).
//   fence    a counter beside it, "colo:fence:orders/pool" (fence_root()).
//   acquire  one EVAL: SET key token NX PX lease, and if that succeeded, INCR
//            fence, whose value is the grant epoch. One script, so no epoch
//            is taken without the hold and no hold is granted without one.
//            Redis has no queue and no notification for this recipe: a waiter
//            sends the script again every `poll` (redis-py: every 100 ms), so
//            waiters are served in no particular order.
//   renew    every lease/3 while held: compare-and-PEXPIRE (redis-py's
//            reacquire()).
//   release  compare-and-DEL (redis-py's release()): a key holding another
//            token is never deleted.
//
// Validity: valid_until_ns = CLOCK_MONOTONIC read before the request is sent
// + 90% of the lease. The server starts the key's PX when the request
// arrives, which is later, so the key lives at least "read + lease" as long
// as the two clocks run at the same rate; the 10% margin covers a difference
// in rate between this host's clock and the server's (and a server that
// expires keys slightly early).
//
// Epochs: the counter gives 1, 2, ... to the grants of colo sessions
// (redis-py clients do not touch it). It lasts as long as the server keeps
// its data: without persistence a restarted Redis forgets the counter (and
// the locks), and epochs start again from 1.
//
// Not goals: Redis Cluster (the script touches two keys, which would have to
// share a hash slot), Redlock over several servers, AUTH, TLS, IPv6 literals.
//
// hiredis writes with write(2): the process must ignore SIGPIPE (colod does,
// bridge/main.cpp), or a write on a connection the server has closed kills it.
#include <hiredis/hiredis.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "backends/backend.hpp"
#include "colo/internal/clock.hpp"

namespace colo::bridge {
namespace {

using std::chrono::milliseconds;

constexpr std::string_view kDefaultRoot = "colo:lock:";
constexpr std::uint64_t kMaxEpoch = std::uint64_t{1} << 44;  // backend.hpp: epoch < 2^44
constexpr milliseconds kMinLease{100};
// Bound on the durations, so that nanosecond arithmetic cannot overflow.
constexpr milliseconds kMaxDuration = std::chrono::hours(24);

// KEYS[1] lock key, KEYS[2] fence counter; ARGV[1] token, ARGV[2] PX in ms.
// Replies the new epoch, or nil when the key is taken. If INCR fails (the
// counter holds a non-integer), the key is deleted again and the error
// returned: Redis does not undo a script's writes when it fails.
constexpr std::string_view kAcquireScript =
    "if not redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end\n"
    "local epoch = redis.pcall('incr', KEYS[2])\n"
    "if type(epoch) == 'table' and epoch.err then redis.call('del', KEYS[1]) end\n"
    "return epoch\n";
// KEYS[1] lock key; ARGV[1] token, ARGV[2] PX in ms. 1: renewed; 0: not ours.
constexpr std::string_view kRenewScript =
    "if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end\n"
    "redis.call('pexpire', KEYS[1], ARGV[2])\n"
    "return 1\n";
// KEYS[1] lock key; ARGV[1] token. 1: deleted; 0: not ours (left alone).
constexpr std::string_view kReleaseScript =
    "if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end\n"
    "redis.call('del', KEYS[1])\n"
    "return 1\n";

using internal::monotonic_ns;

constexpr std::uint64_t to_ns(milliseconds ms) noexcept {
  return static_cast<std::uint64_t>(ms.count()) * 1'000'000u;
}

// A bound for hiredis; never zero, which would mean "no timeout" to
// SO_RCVTIMEO.
timeval to_timeval(std::uint64_t ns) noexcept {
  ns = std::max<std::uint64_t>(ns, 1'000'000u);
  return timeval{static_cast<time_t>(ns / 1'000'000'000u), static_cast<suseconds_t>(ns % 1'000'000'000u / 1000u)};
}

// The fence counter's prefix: "colo:lock:" becomes "colo:fence:"; any other
// root ending in "lock:" has that replaced by "fence:" too, and any other
// root gets "fence:" appended ("app/" gives "app/fence:NAME"). Object names
// have no ':', so no lock key can be a fence key.
std::string fence_root(std::string_view root) {
  constexpr std::string_view lock = "lock:";
  if (root.ends_with(lock)) return std::string(root.substr(0, root.size() - lock.size())) + "fence:";
  return std::string(root) + "fence:";
}

// Text from the network, fit for a message: printable ASCII, the rest as
// \xNN, at most 100 bytes.
std::string quote(const char* data, std::size_t size) {
  constexpr std::size_t kMax = 100;
  std::string out = "'";
  for (std::size_t i = 0; i < std::min(size, kMax); ++i) {
    const auto c = static_cast<unsigned char>(data[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out += static_cast<char>(c);
    } else {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\x%02x", c);
      out += escaped;
    }
  }
  out += size > kMax ? "'..." : "'";
  return out;
}

std::string describe(const redisReply& reply) {
  switch (reply.type) {
    case REDIS_REPLY_STRING: return "a string " + quote(reply.str, reply.len);
    case REDIS_REPLY_STATUS: return "a status " + quote(reply.str, reply.len);
    case REDIS_REPLY_ERROR: return "an error " + quote(reply.str, reply.len);
    case REDIS_REPLY_INTEGER: return "the integer " + std::to_string(reply.integer);
    case REDIS_REPLY_NIL: return "nil";
    case REDIS_REPLY_ARRAY: return "an array of " + std::to_string(reply.elements);
  }
  return "a reply of unknown type " + std::to_string(reply.type);
}

struct Endpoint {
  std::string host;
  int port = 0;
  std::string text;  // "host:port", for messages
};

// "host:port": a host name or IPv4 address, and a port from 1 to 65535.
Result<Endpoint> parse_endpoint(const std::string& text) {
  const auto bad = [&](const char* why) {
    return Error{Errc::invalid_argument, "bad redis endpoint '" + text + "': " + why +
                                             " (expected host:port, for example 127.0.0.1:6379)"};
  };
  const std::size_t colon = text.find(':');
  if (colon == std::string::npos) return bad("no ':port'");
  if (text.find(':', colon + 1) != std::string::npos) return bad("more than one ':'; IPv6 addresses are not supported");
  Endpoint endpoint;
  endpoint.host = text.substr(0, colon);
  const std::string_view port = std::string_view(text).substr(colon + 1);
  if (endpoint.host.empty()) return bad("no host");
  if (std::any_of(endpoint.host.begin(), endpoint.host.end(),
                  [](char c) { return static_cast<unsigned char>(c) <= ' ' || c == 0x7f; })) {
    return bad("the host contains a space or a control character");
  }
  const auto digit = [](char c) { return c >= '0' && c <= '9'; };
  if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), digit)) {
    return bad("the port is not a number from 1 to 65535");
  }
  for (char c : port) endpoint.port = endpoint.port * 10 + (c - '0');
  if (endpoint.port < 1 || endpoint.port > 65535) return bad("the port is not a number from 1 to 65535");
  endpoint.text = text;
  return endpoint;
}

Result<void> validate(const BackendSettings& settings) {
  const auto bad = [](std::string what) { return Error{Errc::invalid_argument, "redis lock backend: " + what}; };
  if (settings.lease < kMinLease || settings.lease > kMaxDuration) {
    return bad("lease is " + std::to_string(settings.lease.count()) +
               " ms; it must be from 100 ms to 24 h (it is the key's PX, renewed every third of it)");
  }
  if (settings.op_timeout <= milliseconds::zero() || settings.op_timeout > kMaxDuration) {
    return bad("op_timeout is " + std::to_string(settings.op_timeout.count()) + " ms; it must be from 1 ms to 24 h");
  }
  if (settings.poll <= milliseconds::zero() || settings.poll > kMaxDuration) {
    return bad("poll is " + std::to_string(settings.poll.count()) + " ms; it must be from 1 ms to 24 h");
  }
  return {};
}

// What a backend's locks share; immutable once built, so that lock() needs no
// mutex, and held by shared_ptr so that a lock may outlive its backend.
struct Config {
  Endpoint endpoint;
  std::string root;        // lock key prefix
  std::string fence_root;  // fence counter prefix
  std::string hostname;    // for tokens
  std::string lease_ms;    // PX argument
  std::uint64_t op_timeout_ns = 0;
  std::uint64_t poll_ns = 0;
  std::uint64_t valid_ns = 0;        // 90% of the lease (file header)
  std::uint64_t renew_every_ns = 0;  // a third of the lease, as redis-py's users do
};

struct ReplyDeleter {
  void operator()(redisReply* reply) const noexcept { freeReplyObject(reply); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyDeleter>;

struct ContextDeleter {
  void operator()(redisContext* context) const noexcept { redisFree(context); }
};

// One blocking hiredis context (not thread-safe: one per lock). After an I/O
// error the context is dropped and the next command connects again.
class Connection {
 public:
  explicit Connection(std::shared_ptr<const Config> config) : config_(std::move(config)) {}

  // Sends one command and waits for its reply, all within op_timeout
  // (connecting first when needed). An error reply is an Error too. `what`
  // and `key` name the operation in messages.
  Result<ReplyPtr> run(std::string_view what, std::string_view key, std::initializer_list<std::string_view> args) {
    const std::uint64_t deadline = monotonic_ns() + config_->op_timeout_ns;
    if (!context_) {
      const Endpoint& endpoint = config_->endpoint;
      redisContext* fresh =
          redisConnectWithTimeout(endpoint.host.c_str(), endpoint.port, to_timeval(config_->op_timeout_ns));
      const int saved_errno = errno;
      context_.reset(fresh);
      if (!context_ || context_->err) return failure("connect", {}, saved_errno);
    }
    // The rest of the op_timeout bounds the command, sending and receiving.
    const std::uint64_t now = monotonic_ns();
    if (redisSetTimeout(context_.get(), to_timeval(deadline > now ? deadline - now : 0)) != REDIS_OK) {
      return failure(what, key, errno);
    }
    constexpr std::size_t kMaxArgs = 8;
    const char* argv[kMaxArgs];
    std::size_t lengths[kMaxArgs];
    std::size_t count = 0;
    for (std::string_view arg : args) {
      if (count == kMaxArgs) return Error{Errc::system, "redis backend: too many arguments (a bug)"};
      argv[count] = arg.data();
      lengths[count] = arg.size();
      ++count;
    }
    void* raw = redisCommandArgv(context_.get(), static_cast<int>(count), argv, lengths);
    const int saved_errno = errno;
    ReplyPtr reply(static_cast<redisReply*>(raw));
    if (!reply) return failure(what, key, saved_errno);
    if (reply->type == REDIS_REPLY_ERROR) {
      return Error{Errc::system, prefix(what, key) + "the server answered " + quote(reply->str, reply->len)};
    }
    return reply;
  }

  // "redis at HOST:PORT: WHAT KEY: "
  std::string prefix(std::string_view what, std::string_view key) const {
    std::string out = "redis at " + config_->endpoint.text + ": ";
    out += what;
    if (!key.empty()) {
      out += ' ';
      out += key;
    }
    return out + ": ";
  }

 private:
  // The context failed (or could not be allocated): says why, and drops it.
  Error failure(std::string_view what, std::string_view key, int saved_errno) {
    Errc code = Errc::system;
    std::string cause;
    if (!context_) {
      cause = "out of memory";
    } else if (context_->err == REDIS_ERR_IO && (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK ||
                                                 saved_errno == ETIMEDOUT || saved_errno == EINPROGRESS)) {
      code = Errc::timed_out;
      cause = "no answer within " + std::to_string(config_->op_timeout_ns / 1'000'000u) + " ms";
    } else if (context_->err == REDIS_ERR_EOF) {
      cause = "the server closed the connection";
    } else {
      cause.assign(context_->errstr, strnlen(context_->errstr, sizeof context_->errstr));
    }
    context_.reset();
    return Error{code, prefix(what, key) + cause};
  }

  std::shared_ptr<const Config> config_;
  std::unique_ptr<redisContext, ContextDeleter> context_;
};

// "<hostname>:<pid>:<128 random bits in hex>".
std::string make_token(const std::string& hostname) {
  unsigned char bytes[16];
  if (::getrandom(bytes, sizeof bytes, 0) != static_cast<ssize_t>(sizeof bytes)) {
    // No kernel randomness (seccomp, or interrupted before the pool was
    // ready): the clock and a process-wide sequence are unique enough, since
    // hostname and pid make the token per process.
    static std::atomic<std::uint64_t> sequence{0};
    const std::uint64_t parts[2] = {monotonic_ns(), sequence.fetch_add(1, std::memory_order_relaxed)};
    std::memcpy(bytes, parts, sizeof bytes);
  }
  std::string token = hostname + ':' + std::to_string(::getpid()) + ':';
  for (unsigned char b : bytes) {
    constexpr char kHex[] = "0123456789abcdef";
    token += kHex[b >> 4];
    token += kHex[b & 0xf];
  }
  return token;
}

class RedisLock final : public BackendLock {
 public:
  RedisLock(std::shared_ptr<const Config> config, const std::string& name)
      : config_(std::move(config)),
        key_(config_->root + name),
        fence_key_(config_->fence_root + name),
        connection_(config_) {}

  ~RedisLock() override { release(); }

  Acquire acquire(std::uint64_t deadline_ns) override {
    if (state_ == State::held) {
      if (monotonic_ns() < valid_until_ns_) return granted();
      state_ = State::stale;  // lapsed unrenewed; the key may outlive valid_until a little
    }
    if (state_ == State::stale) {
      if (auto withdrawn = withdraw(); !withdrawn) return failed(withdrawn.error().message);
    }
    if (state_ == State::idle) {
      token_ = make_token(config_->hostname);
      state_ = State::waiting;
    }
    // No queue in Redis: try, sleep `poll`, try again; at least one try even
    // when the deadline has passed.
    for (;;) {
      const std::uint64_t sent_ns = monotonic_ns();
      auto reply = connection_.run("acquire", key_,
                                   {"EVAL", kAcquireScript, "2", key_, fence_key_, token_, config_->lease_ms});
      if (!reply) {
        state_ = State::stale;  // the SET may have been applied before the connection failed
        return failed(reply.error().message);
      }
      const redisReply& r = **reply;
      if (r.type == REDIS_REPLY_INTEGER) {
        if (r.integer < 1 || static_cast<std::uint64_t>(r.integer) >= kMaxEpoch) {
          // Someone set the counter: holding with an epoch out of range would
          // break fencing, so give the key back.
          const std::string message = connection_.prefix("acquire", key_) + "the fence counter " + fence_key_ +
                                      " gave " + describe(r) + ", outside 1 .. 2^44-1";
          state_ = State::stale;
          (void)withdraw();
          return failed(message);
        }
        state_ = State::held;
        epoch_ = static_cast<std::uint64_t>(r.integer);
        refreshed_ns_ = sent_ns;
        valid_until_ns_ = sent_ns + config_->valid_ns;
        return granted();
      }
      if (r.type != REDIS_REPLY_NIL) {
        state_ = State::stale;
        return failed(connection_.prefix("acquire", key_) + "unexpected reply: " + describe(r));
      }
      const std::uint64_t now = monotonic_ns();
      if (now >= deadline_ns) return Acquire{Acquire::Status::waiting, 0, 0, {}};
      std::this_thread::sleep_for(std::chrono::nanoseconds(std::min(config_->poll_ns, deadline_ns - now)));
    }
  }

  Renewal renew() override {
    if (state_ != State::held) return Renewal{Renewal::Status::lost, 0, "the lock " + key_ + " is not held"};
    const std::uint64_t now = monotonic_ns();
    if (now >= valid_until_ns_) {
      state_ = State::stale;
      return Renewal{Renewal::Status::lost, valid_until_ns_, "the lease of " + key_ + " ran out before it was renewed"};
    }
    if (now - refreshed_ns_ < config_->renew_every_ns) return Renewal{Renewal::Status::held, valid_until_ns_, {}};
    auto reply = connection_.run("renew", key_, {"EVAL", kRenewScript, "1", key_, token_, config_->lease_ms});
    if (!reply) return Renewal{Renewal::Status::unknown, valid_until_ns_, reply.error().message};
    const redisReply& r = **reply;
    if (r.type == REDIS_REPLY_INTEGER && r.integer == 1) {
      refreshed_ns_ = now;
      valid_until_ns_ = now + config_->valid_ns;
      return Renewal{Renewal::Status::held, valid_until_ns_, {}};
    }
    if (r.type == REDIS_REPLY_INTEGER && r.integer == 0) {
      state_ = State::stale;
      return Renewal{Renewal::Status::lost, valid_until_ns_,
                     connection_.prefix("renew", key_) + "the key expired or holds another token: the lock was lost"};
    }
    return Renewal{Renewal::Status::unknown, valid_until_ns_,
                   connection_.prefix("renew", key_) + "unexpected reply: " + describe(r)};
  }

  void release() noexcept override {
    try {
      if (state_ == State::held || state_ == State::stale) (void)withdraw();
    } catch (...) {
      // Only allocation can throw here; the key then expires after its PX.
    }
    // If the delete failed the key expires after its PX; waiting left nothing.
    state_ = State::idle;
    token_.clear();
  }

 private:
  enum class State {
    idle,     // no token
    waiting,  // token_ is not on the key (the last SET NX found it taken)
    held,     // token_ is on the key until valid_until_ns_ at least
    stale,    // token_ may still be on the key: lost, lapsed, or an acquire failed mid-way
  };

  // Deletes the key if it still holds token_ (compare-and-DEL), then idle.
  Result<void> withdraw() {
    auto reply = connection_.run("release", key_, {"EVAL", kReleaseScript, "1", key_, token_});
    if (!reply) return std::move(reply).error();
    if ((*reply)->type != REDIS_REPLY_INTEGER) {
      return Error{Errc::system, connection_.prefix("release", key_) + "unexpected reply: " + describe(**reply)};
    }
    state_ = State::idle;  // 1: deleted; 0: it was not ours (any more)
    token_.clear();
    return {};
  }

  Acquire granted() const { return Acquire{Acquire::Status::held, epoch_, valid_until_ns_, {}}; }
  static Acquire failed(std::string detail) { return Acquire{Acquire::Status::failed, 0, 0, std::move(detail)}; }

  std::shared_ptr<const Config> config_;
  const std::string key_;
  const std::string fence_key_;
  Connection connection_;
  State state_ = State::idle;
  std::string token_;
  std::uint64_t epoch_ = 0;
  std::uint64_t refreshed_ns_ = 0;  // when the last SET or PEXPIRE that succeeded was sent
  std::uint64_t valid_until_ns_ = 0;
};

class RedisBackend final : public LockBackend {
 public:
  explicit RedisBackend(std::shared_ptr<const Config> config) : config_(std::move(config)) {}
  const char* kind() const noexcept override { return "redis"; }
  // Thread-safe: reads only the immutable config; the lock connects on first use.
  std::unique_ptr<BackendLock> lock(const std::string& name) override {
    return std::make_unique<RedisLock>(config_, name);
  }

 private:
  std::shared_ptr<const Config> config_;
};

}  // namespace

Result<std::unique_ptr<LockBackend>> open_redis(const BackendSettings& settings) {
  if (auto valid = validate(settings); !valid) return std::move(valid).error();
  auto endpoint = parse_endpoint(settings.endpoints);
  if (!endpoint) return std::move(endpoint).error();

  auto config = std::make_shared<Config>();
  config->endpoint = std::move(endpoint).value();
  config->root = settings.root.empty() ? std::string(kDefaultRoot) : settings.root;
  config->fence_root = fence_root(config->root);
  char hostname[256] = {};
  if (::gethostname(hostname, sizeof hostname - 1) != 0 || hostname[0] == '\0') std::strcpy(hostname, "unknown-host");
  config->hostname = hostname;
  config->lease_ms = std::to_string(settings.lease.count());
  config->op_timeout_ns = to_ns(settings.op_timeout);
  config->poll_ns = to_ns(settings.poll);
  config->valid_ns = to_ns(settings.lease) / 10 * 9;
  config->renew_every_ns = to_ns(settings.lease) / 3;

  // Checks the server now, on a connection of its own that closes on return:
  // each lock connects when first used.
  Connection probe(config);
  auto pong = probe.run("PING", {}, {"PING"});
  if (!pong) return std::move(pong).error();
  const redisReply& r = **pong;
  if (r.type != REDIS_REPLY_STATUS || std::string_view(r.str, r.len) != "PONG") {
    return Error{Errc::system, probe.prefix("PING", {}) + "unexpected reply: " + describe(r)};
  }
  return std::unique_ptr<LockBackend>(std::make_unique<RedisBackend>(std::move(config)));
}

}  // namespace colo::bridge
