// bridge/backends/zookeeper.cpp — the ZooKeeper lock backend: kazoo's Lock
// recipe over the ZooKeeper C client (libzookeeper-mt).
//
// The recipe (tests/services/README.md has it as observed with kazoo 2.8):
//
//   - A lock named NAME lives in the persistent znode DIR = ROOT/NAME (ROOT is
//     "/colo/locks" unless configured; NAME may contain '/', so DIR may be
//     nested). DIR and its ancestors are created on first use, empty, with
//     OPEN_ACL_UNSAFE, and never deleted — like kazoo's ensure_path.
//   - A contender creates the EPHEMERAL_SEQUENTIAL child
//     DIR/<32 random hex>__lock__; the server appends a 10-digit sequence
//     taken from DIR's child counter. The data names the process
//     ("colod:HOST:PID"). The random prefix lets us find our node again when
//     the connection drops before the create's reply arrives.
//   - The owner is the child with the lowest sequence among the children
//     named "...__lock__NNNNNNNNNN"; other names are ignored. A waiter watches
//     only its predecessor (the next lower sequence: no herd when the owner
//     leaves) and looks again when that node goes away.
//   - Release, or giving up a place in the queue, deletes the node. A session
//     that ends (closed, or expired by the server) takes its nodes with it.
//
// Grant epoch = our sequence + 1. DIR's counter only grows (each create or
// delete of a child bumps it), kazoo's creates included, so epochs grow
// across all grants of the lock as long as DIR itself is never deleted (an
// operator deleting DIR restarts the count). ZooKeeper keeps the counter in
// a signed 32-bit int: after 2^31 children changes the sequences go
// negative, which this parser (like kazoo's sort) does not order; a lock
// would need decades of continuous handoffs to get there.
//
// Validity: the server expires a session `timeout` (negotiated at connect)
// after it last heard from the client, and the client library pings every
// timeout/3. We confirm our node with a round trip at least every
// timeout/3 while held; from a request sent at time S that was answered,
// the session (and so our ephemeral node) lives at least until S + timeout.
// We promise valid_until = min(now, S + timeout/3) + timeout/3 <= S + 2/3
// timeout, which leaves a third of the timeout for clock-rate and server
// tick rounding. This holds even if this process was paused: after a pause
// `now` is past the next check, so renew() does the round trip first.
//
// Sessions: one ZooKeeper session (zhandle_t) per LockBackend, shared by its
// locks. Once the server expires it (or it has been disconnected for a whole
// timeout, after which the server, if it is up, has expired it), it is dead
// for good: its locks report `lost`, and the next acquire() on any of them
// opens a new session.
//
// Requests: we use the asynchronous API and wait for each reply ourselves,
// bounded by op_timeout, because the synchronous calls of the C client only
// return when the client gives up on the connection (2/3 of the session
// timeout, up to 20 s), and release() and acquire() must be bounded. A reply
// that comes after we stopped waiting is still received (the request object
// stays with the session until then). A node we may have left behind — a
// delete that got no answer, a create whose outcome is unknown when acquire()
// fails — goes to the session's janitor, which deletes it now and again after
// each reconnection, so that a lock is never stuck behind a node nobody
// waits for while our session lives on.
#include <zookeeper/zookeeper.h>

#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "backends/backend.hpp"
#include "colo/internal/clock.hpp"
#include "colo/names.hpp"

namespace colo::bridge {

// Test hook, declared by tests/services/test_backend_zookeeper.cpp and by no
// header: the id and password of `backend`'s current session, so that a test
// can end that session from another connection (ZooKeeper's own testing
// technique). False if `backend` is not a ZooKeeper backend.
bool zookeeper_client_id_for_testing(LockBackend& backend, clientid_t* out);

namespace {

using Ns = std::uint64_t;
constexpr Ns kNsPerMs = 1'000'000;

constexpr std::string_view kDefaultRoot = "/colo/locks";
constexpr std::string_view kLockTag = "__lock__";  // kazoo's node name marker
constexpr std::size_t kSequenceDigits = 10;
constexpr std::size_t kPrefixChars = 32;
// ZooKeeper's session timeout bounds are the server's minSessionTimeout and
// maxSessionTimeout (by default 2 and 20 ticks; colo's test server:
// tickTime 1 s, 1-30 s). We accept the span that common configurations
// grant; the server may still adjust the value, and we use what it grants.
constexpr std::int64_t kMinLeaseMs = 1000;
constexpr std::int64_t kMaxLeaseMs = 30000;

// Our own result code for "no reply by the deadline": ZooKeeper's are <= 0.
constexpr int kNoAnswer = 1;

using internal::monotonic_ns;

Ns ms_to_ns(std::chrono::milliseconds ms) noexcept { return static_cast<Ns>(ms.count()) * kNsPerMs; }

// libstdc++'s steady_clock is CLOCK_MONOTONIC on Linux, and its condition
// variables wait on that clock, so our instants convert directly.
std::chrono::steady_clock::time_point to_time_point(Ns ns) noexcept {
  constexpr Ns kFar = static_cast<Ns>(std::numeric_limits<std::int64_t>::max() / 2);
  return std::chrono::steady_clock::time_point(std::chrono::nanoseconds(static_cast<std::int64_t>(std::min(ns, kFar))));
}

std::string describe(int rc) {
  if (rc == kNoAnswer) return "no reply within op_timeout";
  const char* text = zerror(rc);
  return std::string(text != nullptr ? text : "unknown error") + " (" + std::to_string(rc) + ")";
}

// The connection dropped or the request got no reply: the session may well
// live on, and a retry after reconnecting may succeed.
bool transient(int rc) noexcept {
  return rc == ZCONNECTIONLOSS || rc == ZOPERATIONTIMEOUT || rc == ZSESSIONMOVED || rc == kNoAnswer;
}

// The session is over: its ephemeral nodes are gone or going.
bool session_over(int rc) noexcept {
  return rc == ZSESSIONEXPIRED || rc == ZINVALIDSTATE || rc == ZCLOSING || rc == ZAUTHFAILED;
}

// The sequence of a lock node "<anything>__lock__NNNNNNNNNN" (kazoo's
// pattern), or nothing for any other name. Names come from the server and
// from other clients: parsed strictly. Negative sequences (counter overflow)
// are not accepted.
std::optional<std::uint32_t> lock_sequence(std::string_view name) noexcept {
  if (name.size() < kLockTag.size() + kSequenceDigits) return std::nullopt;
  const std::string_view digits = name.substr(name.size() - kSequenceDigits);
  if (name.substr(name.size() - kSequenceDigits - kLockTag.size(), kLockTag.size()) != kLockTag) return std::nullopt;
  std::uint64_t value = 0;
  for (const char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<std::uint64_t>(c - '0');
  }
  if (value > static_cast<std::uint64_t>(std::numeric_limits<std::int32_t>::max())) return std::nullopt;
  return static_cast<std::uint32_t>(value);
}

// True if `name` is one of our nodes for `prefix`: "<prefix>__lock__N{10}".
bool is_node_of(std::string_view name, std::string_view prefix) noexcept {
  return name.size() == prefix.size() + kLockTag.size() + kSequenceDigits && name.substr(0, prefix.size()) == prefix &&
         lock_sequence(name).has_value();
}

// 128 random bits as 32 lowercase hex digits, shaped like a uuid4 (kazoo
// uses uuid4().hex), so that nodes look alike whoever made them.
std::string random_prefix() {
  unsigned char bytes[16];
  std::size_t got = 0;
  while (got < sizeof bytes) {
    const ssize_t n = getrandom(bytes + got, sizeof bytes - got, 0);
    if (n > 0) {
      got += static_cast<std::size_t>(n);
    } else if (n < 0 && errno != EINTR) {
      break;
    }
  }
  if (got < sizeof bytes) {  // getrandom unavailable: random_device still reads the kernel's pool
    std::random_device device;
    for (auto& b : bytes) b = static_cast<unsigned char>(device());
  }
  bytes[6] = static_cast<unsigned char>((bytes[6] & 0x0f) | 0x40);
  bytes[8] = static_cast<unsigned char>((bytes[8] & 0x3f) | 0x80);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(kPrefixChars);
  for (const unsigned char b : bytes) {
    out += kHex[b >> 4];
    out += kHex[b & 0x0f];
  }
  return out;
}

// What our nodes carry as data: which process made them ("colod:HOST:PID"),
// for an operator looking at the queue. Like kazoo's identifier.
std::string process_identity() {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "unknown-host");
  const char* program = program_invocation_short_name;
  return std::string(program != nullptr && *program != '\0' ? program : "colo") + ":" + host + ":" +
         std::to_string(getpid());
}

// ---------------------------------------------------------------------------
// Settings

Error bad_setting(const std::string& why) {
  return Error{Errc::invalid_argument, "ZooKeeper lock backend: " + why};
}

Result<void> check_endpoint(std::string_view e, std::string_view all) {
  const std::string where = "endpoint '" + std::string(e) + "' in '" + std::string(all) + "'";
  std::string_view host;
  std::string_view port;
  if (!e.empty() && e.front() == '[') {  // [IPv6]:port
    const auto close = e.find("]:");
    if (close == std::string_view::npos) return bad_setting(where + " is not [address]:port");
    host = e.substr(1, close - 1);
    port = e.substr(close + 2);
  } else {
    const auto colon = e.rfind(':');
    if (colon == std::string_view::npos) return bad_setting(where + " has no ':port' (expected host:port[,host:port...])");
    host = e.substr(0, colon);
    port = e.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) return bad_setting(where + ": write an IPv6 address as [address]:port");
  }
  if (host.empty()) return bad_setting(where + " has no host");
  for (const char c : host) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= ' ' || u >= 0x7f || c == '/' || c == ',') {
      return bad_setting(where + " has a character that cannot be in a host name (a chroot suffix is not supported)");
    }
  }
  if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      std::stoi(std::string(port)) < 1 || std::stoi(std::string(port)) > 65535) {
    return bad_setting(where + " has no valid port (1-65535)");
  }
  return Ok{};
}

Result<void> check_settings(const BackendSettings& s) {
  if (s.endpoints.empty()) return bad_setting("no endpoints given (expected host:port[,host:port...])");
  for (std::size_t start = 0;;) {
    const auto comma = s.endpoints.find(',', start);
    const std::string_view one = std::string_view(s.endpoints).substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (auto ok = check_endpoint(one, s.endpoints); !ok) return std::move(ok).error();
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (s.lease.count() < kMinLeaseMs || s.lease.count() > kMaxLeaseMs) {
    return bad_setting("lease " + std::to_string(s.lease.count()) + " ms is outside " + std::to_string(kMinLeaseMs) + "-" +
                       std::to_string(kMaxLeaseMs) +
                       " ms (it is the ZooKeeper session timeout, which the server bounds by its minSessionTimeout and "
                       "maxSessionTimeout, by default 2 and 20 times tickTime)");
  }
  if (s.op_timeout.count() <= 0) {
    return bad_setting("op_timeout " + std::to_string(s.op_timeout.count()) + " ms must be positive");
  }
  if (!s.root.empty()) {
    const std::string& r = s.root;
    if (r.front() != '/' || r.size() < 2 || r.back() == '/') {
      return bad_setting("root '" + r + "' must be an absolute znode path such as /colo/locks, without a trailing '/'");
    }
    for (std::size_t start = 1; start <= r.size();) {
      auto end = r.find('/', start);
      if (end == std::string::npos) end = r.size();
      const std::string_view part = std::string_view(r).substr(start, end - start);
      if (part.empty() || part == "." || part == "..") {
        return bad_setting("root '" + r + "' has an empty, '.' or '..' component");
      }
      if (std::any_of(part.begin(), part.end(), [](char c) { return static_cast<unsigned char>(c) < ' ' || c == 0x7f; })) {
        return bad_setting("root '" + r + "' has a control character");
      }
      start = end + 1;
    }
  }
  return Ok{};
}

// The C client logs every connection event at INFO, and at ERROR every
// failed connection attempt — about 20 a second while a server is down. Keep
// its errors only (the level is process-wide in the library), and let one
// line through per kLogEveryNs, with a count of those held back, so that an
// outage shows in colod's log without flooding it.
constexpr Ns kLogEveryNs = 5'000'000'000;

void quiet_client_log() {
  static std::once_flag once;
  std::call_once(once, [] { zoo_set_debug_level(ZOO_LOG_LEVEL_ERROR); });
}

void client_log(const char* message) noexcept {
  static std::mutex mu;
  static Ns last = 0;
  static unsigned long held_back = 0;
  std::lock_guard guard(mu);
  const Ns now = monotonic_ns();
  if (last != 0 && now - last < kLogEveryNs) {
    ++held_back;
    return;
  }
  last = now;
  if (held_back > 0) {
    std::fprintf(stderr, "zookeeper client: %s (and %lu similar messages in the last %llu s)\n", message, held_back,
                 static_cast<unsigned long long>(kLogEveryNs / 1'000'000'000));
  } else {
    std::fprintf(stderr, "zookeeper client: %s\n", message);
  }
  held_back = 0;
}

// ---------------------------------------------------------------------------
// Session: one zhandle_t, the replies and watch events it delivers, and the
// janitor for nodes that must go.

class Session;

// One request in flight. Owned by the Session until its reply is delivered
// (so that a late reply finds it), and by the thread waiting for it.
struct Call {
  Session* session = nullptr;
  bool done = false;  // under Session::mu_, like the results
  int rc = kNoAnswer;
  std::string created;             // create: the path the server gave the node
  std::vector<std::string> names;  // get_children
  std::condition_variable cv;
  std::function<void(const Call&)> then;  // janitor requests: runs on the client's completion thread
};

// Counts outstanding janitor deletions for one release().
struct Signal {
  int pending = 0;
  std::condition_variable cv;
};

// A node to delete: by name, or every "<prefix>__lock__N" child of `dir`
// (a create whose outcome we never learnt).
struct Doomed {
  std::string dir;
  std::string name;
  bool by_prefix = false;
  bool in_flight = false;
  std::shared_ptr<Signal> signal;
};

class Waiter;

class Session {
 public:
  static Result<std::shared_ptr<Session>> open(const std::string& endpoints, std::chrono::milliseconds lease,
                                               std::chrono::milliseconds op_timeout);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const std::string& endpoints() const noexcept { return endpoints_; }
  Ns timeout_ns() const noexcept { return timeout_ns_.load(std::memory_order_relaxed); }
  bool connected() noexcept;
  // Expired, refused, or disconnected for a whole timeout. Once true, stays true.
  bool dead() noexcept;
  clientid_t client_id() const noexcept { return *zoo_client_id(zh_); }

  // Each request returns ZooKeeper's result code, or kNoAnswer if no reply
  // came by `deadline`.
  int create(const std::string& path, std::string_view data, int mode, std::string* created, Ns deadline);
  int get_children(const std::string& path, std::vector<std::string>* names, Ns deadline);
  int exists(const std::string& path, Ns deadline);
  // Reads `path` and leaves a watch on it (ZOK only: no watch is left on a
  // missing node); its event wakes the Waiters registered for `path`.
  int watch(const std::string& path, Ns deadline);

  // Hands `dir`/`name` (or, by_prefix, every node of prefix `name` in `dir`)
  // to the janitor. wait() on the result until the deletion is confirmed.
  std::shared_ptr<Signal> doom(std::string dir, std::string name, bool by_prefix);
  bool wait(Signal& signal, Ns deadline);

 private:
  friend class Waiter;
  explicit Session(std::string endpoints, std::chrono::milliseconds lease)
      : endpoints_(std::move(endpoints)), timeout_ns_(ms_to_ns(lease)) {}

  static void on_watch(zhandle_t* zh, int type, int state, const char* path, void* context) noexcept;
  static void on_void(int rc, const void* data) noexcept;
  static void on_string(int rc, const char* value, const void* data) noexcept;
  static void on_strings(int rc, const String_vector* strings, const void* data) noexcept;
  static void on_data(int rc, const char* value, int length, const Stat* stat, const void* data) noexcept;
  static void on_stat(int rc, const Stat* stat, const void* data) noexcept;

  template <typename Fill>
  static void complete(const void* data, int rc, Fill&& fill) noexcept;
  template <typename Issue>
  std::shared_ptr<Call> submit(Issue&& issue, std::function<void(const Call&)> then = {});
  int wait(Call& call, Ns deadline);

  void kick() noexcept;  // sends the janitor's requests (when connected)
  void janitor_deleted(std::uint64_t id, int rc) noexcept;
  void janitor_listed(std::uint64_t id, const Call& call) noexcept;
  void resolve_locked(std::map<std::uint64_t, Doomed>::iterator it);
  void mark_dead_locked();
  void notify_state_locked();

  zhandle_t* zh_ = nullptr;
  const std::string endpoints_;
  std::atomic<Ns> timeout_ns_;  // negotiated at connect

  std::mutex mu_;  // everything below
  std::condition_variable state_cv_;
  bool connected_ = false;
  bool dead_ = false;
  bool closing_ = false;
  Ns disconnected_since_ = 0;
  std::uint64_t state_gen_ = 0;  // bumped on every session state change
  std::list<Waiter*> waiters_;
  std::unordered_map<const Call*, std::shared_ptr<Call>> calls_;
  std::map<std::uint64_t, Doomed> doomed_;
  std::uint64_t next_doom_ = 0;
};

// A thread's wait for a watch event on one path, or for any change of the
// session's state (path empty: the state only). Registered for its lifetime;
// register before sending the request that sets the watch, so that no event
// can slip between the reply and the wait.
class Waiter {
 public:
  Waiter(Session& session, std::string path) : s_(session), path_(std::move(path)) {
    std::lock_guard guard(s_.mu_);
    seen_gen_ = s_.state_gen_;
    s_.waiters_.push_back(this);
  }
  ~Waiter() {
    std::lock_guard guard(s_.mu_);
    s_.waiters_.remove(this);
  }
  Waiter(const Waiter&) = delete;
  Waiter& operator=(const Waiter&) = delete;

  // True when woken by an event since registration or the previous wait();
  // false at the deadline.
  bool wait(Ns deadline) {
    std::unique_lock lock(s_.mu_);
    const auto until = to_time_point(deadline);
    while (!fired_ && s_.state_gen_ == seen_gen_) {
      if (cv_.wait_until(lock, until) == std::cv_status::timeout && !fired_ && s_.state_gen_ == seen_gen_) return false;
    }
    fired_ = false;
    seen_gen_ = s_.state_gen_;
    return true;
  }

 private:
  friend class Session;
  Session& s_;
  const std::string path_;
  bool fired_ = false;
  std::uint64_t seen_gen_ = 0;
  std::condition_variable cv_;
};

Result<std::shared_ptr<Session>> Session::open(const std::string& endpoints, std::chrono::milliseconds lease,
                                               std::chrono::milliseconds op_timeout) {
  std::shared_ptr<Session> s(new Session(endpoints, lease));
  errno = 0;
  // The watcher's context is the Session: it outlives the handle, which
  // ~Session closes (joining the client's threads) before anything else.
  s->zh_ = zookeeper_init2(endpoints.c_str(), &Session::on_watch, static_cast<int>(lease.count()), nullptr, s.get(), 0,
                           &client_log);
  if (s->zh_ == nullptr) {
    const int err = errno;
    return Error{Errc::system, "cannot start a ZooKeeper client for " + endpoints + ": " +
                                   (err != 0 ? std::strerror(err) : "zookeeper_init failed") +
                                   " (are the endpoints resolvable host:port pairs?)"};
  }
  bool connected = false;
  bool refused = false;
  {
    std::unique_lock lock(s->mu_);
    s->state_cv_.wait_until(lock, to_time_point(monotonic_ns() + ms_to_ns(op_timeout)),
                            [&] { return s->connected_ || s->dead_; });
    connected = s->connected_ && !s->dead_;
    refused = s->dead_;
  }
  if (connected) return s;
  s.reset();  // closes the handle; it never had a session
  const std::string cause = refused ? "the server refused the session (authentication failed or session expired)"
                                    : "no session was established (is the server running and reachable?)";
  return Error{Errc::timed_out, "cannot connect to ZooKeeper at " + endpoints + " within " +
                                    std::to_string(op_timeout.count()) + " ms: " + cause};
}

Session::~Session() {
  if (zh_ == nullptr) return;
  {
    std::lock_guard guard(mu_);
    closing_ = true;  // no more janitor requests from completions that run during the close
  }
  // Closing a live session makes the server delete its ephemeral nodes now
  // rather than at expiry. No callback runs after this returns.
  zookeeper_close(zh_);
  zh_ = nullptr;
}

bool Session::connected() noexcept {
  if (dead()) return false;
  // zoo_state is the I/O thread's view, fresher than our copy from events.
  return zoo_state(zh_) == ZOO_CONNECTED_STATE;
}

bool Session::dead() noexcept {
  const int state = zoo_state(zh_);
  std::lock_guard guard(mu_);
  if (!dead_) {
    if (state == ZOO_EXPIRED_SESSION_STATE || state == ZOO_AUTH_FAILED_STATE) {
      mark_dead_locked();
    } else if (!connected_ && disconnected_since_ != 0 && monotonic_ns() - disconnected_since_ >= timeout_ns()) {
      // The client only learns of expiry from a server it reaches again; if
      // it reaches none, a whole timeout of silence means the server (if
      // up) has expired us. Declaring it early is the safe direction: our
      // nodes are merely left to the server's expiry.
      mark_dead_locked();
    }
  }
  return dead_;
}

void Session::mark_dead_locked() {
  dead_ = true;
  connected_ = false;
  // The server deletes the session's nodes: nothing left for the janitor.
  while (!doomed_.empty()) resolve_locked(doomed_.begin());
  notify_state_locked();
}

void Session::notify_state_locked() {
  ++state_gen_;
  for (Waiter* w : waiters_) w->cv_.notify_all();
  state_cv_.notify_all();
}

void Session::on_watch(zhandle_t* zh, int type, int state, const char* path, void* context) noexcept {
  auto* s = static_cast<Session*>(context);
  if (s == nullptr) return;
  bool reconnected = false;
  {
    std::lock_guard guard(s->mu_);
    if (type == ZOO_SESSION_EVENT) {
      if (s->dead_) return;
      if (state == ZOO_CONNECTED_STATE) {
        reconnected = !s->connected_;
        s->connected_ = true;
        const int negotiated = zoo_recv_timeout(zh);
        if (negotiated > 0) s->timeout_ns_.store(static_cast<Ns>(negotiated) * kNsPerMs, std::memory_order_relaxed);
        s->notify_state_locked();
      } else if (state == ZOO_EXPIRED_SESSION_STATE || state == ZOO_AUTH_FAILED_STATE) {
        s->mark_dead_locked();
      } else {  // connecting, associating, read-only (we never ask for it)
        if (s->connected_) s->disconnected_since_ = monotonic_ns();
        s->connected_ = false;
        s->notify_state_locked();
      }
    } else if (path != nullptr) {  // deleted, changed, created, or "no longer watching"
      for (Waiter* w : s->waiters_) {
        if (w->path_ == path) {
          w->fired_ = true;
          w->cv_.notify_all();
        }
      }
    }
  }
  if (reconnected) s->kick();  // deletions that failed with the old connection
}

template <typename Fill>
void Session::complete(const void* data, int rc, Fill&& fill) noexcept {
  // A Call stays in calls_ until its reply is delivered here, so `data` is
  // alive even if its thread stopped waiting.
  auto* key = static_cast<const Call*>(data);
  Session* s = key->session;
  std::shared_ptr<Call> call;
  {
    std::lock_guard guard(s->mu_);
    const auto it = s->calls_.find(key);
    if (it == s->calls_.end()) return;
    call = std::move(it->second);
    s->calls_.erase(it);
    call->rc = rc;
    if (rc == ZOK) {
      try {
        fill(*call);
      } catch (...) {  // out of memory: report it rather than unwind through C
        call->rc = ZSYSTEMERROR;
      }
    }
    call->done = true;
    call->cv.notify_all();
  }
  if (call->then) {
    try {
      call->then(*call);
    } catch (...) {
    }
  }
}

void Session::on_void(int rc, const void* data) noexcept {
  complete(data, rc, [](Call&) {});
}

void Session::on_string(int rc, const char* value, const void* data) noexcept {
  complete(data, rc, [&](Call& c) { c.created = value != nullptr ? value : ""; });
}

void Session::on_strings(int rc, const String_vector* strings, const void* data) noexcept {
  complete(data, rc, [&](Call& c) {
    if (strings == nullptr || strings->count < 0) return;
    c.names.reserve(static_cast<std::size_t>(strings->count));
    for (std::int32_t i = 0; i < strings->count; ++i) {
      if (strings->data[i] != nullptr) c.names.emplace_back(strings->data[i]);
    }
  });
}

void Session::on_data(int rc, const char*, int, const Stat*, const void* data) noexcept {
  complete(data, rc, [](Call&) {});
}

void Session::on_stat(int rc, const Stat*, const void* data) noexcept {
  complete(data, rc, [](Call&) {});
}

template <typename Issue>
std::shared_ptr<Call> Session::submit(Issue&& issue, std::function<void(const Call&)> then) {
  auto call = std::make_shared<Call>();
  call->session = this;
  call->then = std::move(then);
  {
    std::lock_guard guard(mu_);
    if (closing_) {
      call->done = true;
      call->rc = ZCLOSING;
      return call;
    }
    calls_.emplace(call.get(), call);
  }
  const int rc = issue(zh_, static_cast<const void*>(call.get()));
  if (rc != ZOK) {  // not sent: no reply will come
    {
      std::lock_guard guard(mu_);
      calls_.erase(call.get());
      call->done = true;
      call->rc = rc;
    }
    if (call->then) call->then(*call);
  }
  return call;
}

int Session::wait(Call& call, Ns deadline) {
  std::unique_lock lock(mu_);
  const auto until = to_time_point(deadline);
  while (!call.done) {
    if (call.cv.wait_until(lock, until) == std::cv_status::timeout && !call.done) return kNoAnswer;
  }
  return call.rc;
}

int Session::create(const std::string& path, std::string_view data, int mode, std::string* created, Ns deadline) {
  auto call = submit([&](zhandle_t* zh, const void* c) {
    return zoo_acreate(zh, path.c_str(), data.data(), static_cast<int>(data.size()), &ZOO_OPEN_ACL_UNSAFE, mode,
                       &Session::on_string, c);
  });
  const int rc = wait(*call, deadline);
  if (rc == ZOK && created != nullptr) *created = call->created;  // written before `done`, under mu_
  return rc;
}

int Session::get_children(const std::string& path, std::vector<std::string>* names, Ns deadline) {
  auto call = submit([&](zhandle_t* zh, const void* c) {
    return zoo_aget_children(zh, path.c_str(), 0, &Session::on_strings, c);
  });
  const int rc = wait(*call, deadline);
  if (rc == ZOK) *names = std::move(call->names);
  return rc;
}

int Session::exists(const std::string& path, Ns deadline) {
  auto call = submit([&](zhandle_t* zh, const void* c) { return zoo_aexists(zh, path.c_str(), 0, &Session::on_stat, c); });
  return wait(*call, deadline);
}

int Session::watch(const std::string& path, Ns deadline) {
  // A data watch, as kazoo's get(): on a missing node it is not left behind
  // (an exists watch would be, for a sequence name that never comes back).
  // The client keeps one registration per (path, watcher, context), so
  // repeating this while waiting in slices does not pile them up.
  auto call = submit([&](zhandle_t* zh, const void* c) {
    return zoo_awget(zh, path.c_str(), &Session::on_watch, this, &Session::on_data, c);
  });
  return wait(*call, deadline);
}

std::shared_ptr<Signal> Session::doom(std::string dir, std::string name, bool by_prefix) {
  auto signal = std::make_shared<Signal>();
  {
    std::lock_guard guard(mu_);
    if (dead_ || closing_) return signal;  // the session's end takes the node
    signal->pending = 1;
    doomed_.emplace(next_doom_++, Doomed{std::move(dir), std::move(name), by_prefix, false, signal});
  }
  kick();
  return signal;
}

bool Session::wait(Signal& signal, Ns deadline) {
  std::unique_lock lock(mu_);
  return signal.cv.wait_until(lock, to_time_point(deadline), [&] { return signal.pending == 0; });
}

void Session::resolve_locked(std::map<std::uint64_t, Doomed>::iterator it) {
  if (--it->second.signal->pending == 0) it->second.signal->cv.notify_all();
  doomed_.erase(it);
}

void Session::kick() noexcept {
  try {
    std::vector<std::pair<std::uint64_t, Doomed>> todo;
    {
      std::lock_guard guard(mu_);
      // Not connected: the next connected event kicks again.
      if (dead_ || closing_ || zoo_state(zh_) != ZOO_CONNECTED_STATE) return;
      for (auto& [id, d] : doomed_) {
        if (d.in_flight) continue;
        d.in_flight = true;
        todo.emplace_back(id, d);
      }
    }
    // Not a structured binding: clang 14 (the fuzz build) cannot capture one in a lambda.
    for (const auto& item : todo) {
      const std::uint64_t id = item.first;
      const Doomed& d = item.second;
      if (d.by_prefix) {
        submit([&](zhandle_t* zh, const void* c) { return zoo_aget_children(zh, d.dir.c_str(), 0, &Session::on_strings, c); },
               [this, id = id](const Call& c) { janitor_listed(id, c); });
      } else {
        const std::string path = d.dir + "/" + d.name;
        submit([&](zhandle_t* zh, const void* c) { return zoo_adelete(zh, path.c_str(), -1, &Session::on_void, c); },
               [this, id = id](const Call& c) { janitor_deleted(id, c.rc); });
      }
    }
  } catch (...) {  // out of memory: the next reconnection tries again
  }
}

void Session::janitor_deleted(std::uint64_t id, int rc) noexcept {
  std::lock_guard guard(mu_);
  const auto it = doomed_.find(id);
  if (it == doomed_.end()) return;
  if (rc == ZCONNECTIONLOSS) {  // retried when connected again
    it->second.in_flight = false;
    return;
  }
  // ZOK or ZNONODE: gone. Anything else (no permission, a closing or expired
  // session): nothing more to do from here; the session's end removes it.
  resolve_locked(it);
}

void Session::janitor_listed(std::uint64_t id, const Call& call) noexcept {
  bool more = false;
  try {
    std::lock_guard guard(mu_);
    const auto it = doomed_.find(id);
    if (it == doomed_.end()) return;
    if (call.rc == ZCONNECTIONLOSS) {
      it->second.in_flight = false;
      return;
    }
    if (call.rc == ZOK) {
      for (const auto& name : call.names) {
        if (!is_node_of(name, it->second.name)) continue;
        ++it->second.signal->pending;
        doomed_.emplace(next_doom_++, Doomed{it->second.dir, name, false, false, it->second.signal});
        more = true;
      }
    }
    resolve_locked(it);
  } catch (...) {
  }
  if (more) kick();
}

// ---------------------------------------------------------------------------
// The backend and its locks

// What a LockBackend and its locks share; the locks may outlive the backend.
struct Core {
  std::string endpoints;
  std::string root;
  std::chrono::milliseconds lease;
  std::chrono::milliseconds op_timeout;
  std::string identity;

  std::mutex mu;
  std::shared_ptr<Session> session;

  // The live session, or a new one if the last one died.
  Result<std::shared_ptr<Session>> current() {
    std::lock_guard guard(mu);
    if (session && !session->dead()) return session;
    auto fresh = Session::open(endpoints, lease, op_timeout);
    if (!fresh) return std::move(fresh).error();
    session = std::move(fresh.value());  // the dead one closes when its last lock lets go
    return session;
  }
  std::shared_ptr<Session> peek() {
    std::lock_guard guard(mu);
    return session;
  }
};

class ZkLock final : public BackendLock {
 public:
  ZkLock(std::shared_ptr<Core> core, const std::string& name) : core_(std::move(core)), dir_(core_->root + "/" + name) {
    if (auto ok = validate_backend_lock_name(name); !ok) {
      invalid_ = ok.error().message;
    } else {
      // A component that looks like a lock node would be taken for one
      // (with a sequence that never goes away) by us and by kazoo alike.
      for (std::size_t start = 0; start <= name.size();) {
        auto end = name.find('/', start);
        if (end == std::string::npos) end = name.size();
        if (lock_sequence(std::string_view(name).substr(start, end - start))) {
          invalid_ = "invalid lock name '" + name + "' for ZooKeeper: a component ending in __lock__ and 10 digits "
                     "would be mistaken for a lock node";
          break;
        }
        start = end + 1;
      }
    }
  }
  ~ZkLock() override { release(); }
  ZkLock(const ZkLock&) = delete;
  ZkLock& operator=(const ZkLock&) = delete;

  Acquire acquire(std::uint64_t deadline_ns) override {
    try {
      return acquire_until(deadline_ns);
    } catch (const std::exception& e) {
      return fail(std::string("internal error: ") + e.what());
    }
  }

  Renewal renew() override {
    try {
      return renew_now();
    } catch (const std::exception& e) {
      return Renewal{Renewal::Status::unknown, valid_until_, where() + ": internal error: " + e.what()};
    }
  }

  void release() noexcept override {
    try {
      if (session_ && !prefix_.empty() && !session_->dead()) {
        std::shared_ptr<Signal> signal;
        if (!node_.empty()) {
          signal = session_->doom(dir_, node_, false);
        } else if (maybe_created_) {
          signal = session_->doom(dir_, prefix_, true);
        }
        // Unconfirmed after op_timeout (server unreachable): the janitor
        // keeps trying after each reconnection, and if the session ends
        // instead, so does the node.
        if (signal) session_->wait(*signal, monotonic_ns() + ms_to_ns(core_->op_timeout));
      }
    } catch (...) {
    }
    forget_entry();
    unreachable_since_ = 0;
    session_.reset();
  }

 private:
  std::string where() const { return "ZooKeeper at " + core_->endpoints + ", lock " + dir_; }
  Ns op_ns() const noexcept { return ms_to_ns(core_->op_timeout); }

  void forget_entry() noexcept {
    prefix_.clear();
    node_.clear();
    maybe_created_ = false;
    held_ = false;
    epoch_ = 0;
  }

  // Gives up our place (the janitor deletes what may be left) and reports why.
  Acquire fail(const std::string& why) {
    try {
      if (session_ && !prefix_.empty() && !session_->dead()) {
        if (!node_.empty()) {
          session_->doom(dir_, node_, false);
        } else if (maybe_created_) {
          session_->doom(dir_, prefix_, true);
        }
      }
    } catch (...) {
    }
    forget_entry();
    unreachable_since_ = 0;
    if (session_ && session_->dead()) session_.reset();
    Acquire a;
    a.status = Acquire::Status::failed;
    a.detail = where() + ": " + why;
    return a;
  }

  Acquire waiting() const {
    Acquire a;
    a.status = Acquire::Status::waiting;
    return a;
  }

  Acquire granted(Ns valid_until) const {
    Acquire a;
    a.status = Acquire::Status::held;
    a.epoch = epoch_;
    a.valid_until_ns = valid_until;
    return a;
  }

  // How long the hold is ours from `now`: see the file header.
  Ns bound(Ns now) const noexcept {
    const Ns third = session_->timeout_ns() / 3;
    return std::min(now, confirmed_at_ + third) + third;
  }

  // After a failed request: nullopt to retry, or what acquire() returns.
  std::optional<Acquire> after_error(int rc, const char* what, Ns deadline) {
    Session& s = *session_;
    if (session_over(rc) || s.dead()) return fail(std::string("the session ended during ") + what + ": " + describe(rc));
    if (!transient(rc)) return fail(std::string(what) + " failed: " + describe(rc));
    if (rc == kNoAnswer) return fail(std::string(what) + ": the server gave no reply within " +
                                     std::to_string(core_->op_timeout.count()) + " ms");
    // Connection lost: the session (and our node) usually lives on. Wait for
    // the client to reconnect, for at most op_timeout in all (across calls).
    const Ns now = monotonic_ns();
    if (unreachable_since_ == 0) unreachable_since_ = now;
    const Ns give_up = unreachable_since_ + op_ns();
    Waiter w(s, "");
    // Already connected again: pause briefly so a flapping link cannot spin us.
    if (s.connected()) w.wait(std::min(now + 20 * kNsPerMs, std::min(give_up, deadline)));
    while (!s.connected() && !s.dead()) {
      const Ns until = std::min(give_up, deadline);
      if (!w.wait(until)) break;
    }
    if (s.dead()) return fail(std::string("the session expired during ") + what);
    if (s.connected()) return std::nullopt;
    if (monotonic_ns() >= give_up) {
      return fail("disconnected for " + std::to_string(core_->op_timeout.count()) + " ms (op_timeout) during " + what +
                  ": " + describe(rc));
    }
    return waiting();  // the caller's deadline came first; our place is kept
  }

  // Creates DIR's persistent ancestors and DIR itself, top down.
  int ensure_dir(Session& s) {
    for (std::size_t pos = 1;;) {
      pos = dir_.find('/', pos);
      const std::string path = dir_.substr(0, pos);
      const int rc = s.create(path, "", ZOO_PERSISTENT, nullptr, monotonic_ns() + op_ns());
      if (rc != ZOK && rc != ZNODEEXISTS) return rc;
      if (pos == std::string::npos) return ZOK;
      ++pos;
    }
  }

  Acquire acquire_until(Ns deadline) {
    if (!invalid_.empty()) {
      Acquire a;
      a.detail = invalid_;
      return a;
    }
    if (held_) {
      const Renewal r = renew_now();
      // unknown: ours until the previous bound at most, which is still true.
      if (r.status != Renewal::Status::lost) return granted(r.valid_until_ns);
    }
    if (session_ && session_->dead()) {  // our node, if any, ended with it
      forget_entry();
      session_.reset();
    }
    if (!session_) {
      auto s = core_->current();
      if (!s) {
        Acquire a;
        a.detail = std::move(s).error().message;
        return a;
      }
      session_ = std::move(s.value());
    }
    Session& s = *session_;

    // Set once we have looked at the queue: a pass that comes back without
    // waiting (predecessor just left, node deleted under us) still honours
    // the deadline, but even a deadline in the past gets one full look.
    bool looked = false;
    for (;;) {
      if (looked && monotonic_ns() >= deadline) return waiting();
      if (prefix_.empty()) {
        prefix_ = random_prefix();
        node_.clear();
        maybe_created_ = false;
      }
      if (node_.empty() && maybe_created_) {
        // The last create's reply never came: it may have happened. Requests
        // of one session are handled in order, so this listing sees it if so.
        std::vector<std::string> names;
        const int rc = s.get_children(dir_, &names, monotonic_ns() + op_ns());
        if (rc != ZOK && rc != ZNONODE) {
          if (auto r = after_error(rc, "listing the queue", deadline)) return *r;
          continue;
        }
        for (const auto& n : names) {
          if (is_node_of(n, prefix_)) node_ = n;
        }
        maybe_created_ = false;
      }
      if (node_.empty()) {
        maybe_created_ = true;
        std::string created;
        int rc = s.create(dir_ + "/" + prefix_ + std::string(kLockTag), core_->identity, ZOO_EPHEMERAL_SEQUENTIAL,
                          &created, monotonic_ns() + op_ns());
        if (rc == ZNONODE) {  // DIR or an ancestor is missing: first use of this name
          maybe_created_ = false;
          rc = ensure_dir(s);
          if (rc == ZOK) continue;
        }
        if (rc != ZOK) {
          if (auto r = after_error(rc, "joining the queue", deadline)) return *r;
          continue;
        }
        maybe_created_ = false;
        const auto slash = created.rfind('/');
        const std::string name = slash == std::string::npos ? created : created.substr(slash + 1);
        if (!is_node_of(name, prefix_) || created.compare(0, dir_.size() + 1, dir_ + "/") != 0) {
          node_ = name.empty() ? prefix_ : name;
          return fail("the server named our node '" + created + "', which is not of the form " + dir_ + "/" + prefix_ +
                      "__lock__NNNNNNNNNN");
        }
        node_ = name;
      }

      const Ns listed_at = monotonic_ns();
      std::vector<std::string> names;
      int rc = s.get_children(dir_, &names, listed_at + op_ns());
      if (rc == ZNONODE) {  // DIR is gone, and our node with it
        forget_entry();
        continue;
      }
      if (rc != ZOK) {
        if (auto r = after_error(rc, "listing the queue", deadline)) return *r;
        continue;
      }
      unreachable_since_ = 0;

      // Order by (sequence, name): a total order even if a hostile writer
      // made two children with one sequence.
      const std::uint32_t mine = *lock_sequence(node_);
      bool present = false;
      std::optional<std::pair<std::uint32_t, std::string_view>> predecessor;
      for (const auto& n : names) {
        const auto seq = lock_sequence(n);
        if (!seq) continue;
        if (n == node_) {
          present = true;
          continue;
        }
        const std::pair<std::uint32_t, std::string_view> key{*seq, n};
        if (key < std::pair<std::uint32_t, std::string_view>{mine, node_} && (!predecessor || *predecessor < key)) {
          predecessor = key;
        }
      }
      looked = true;
      if (!present) {  // deleted under us (an operator?): join again
        forget_entry();
        continue;
      }
      if (!predecessor) {
        held_ = true;
        epoch_ = static_cast<std::uint64_t>(mine) + 1;
        confirmed_at_ = listed_at;  // the listing was sent then, and answered
        next_check_ = listed_at + s.timeout_ns() / 3;
        valid_until_ = bound(monotonic_ns());
        return granted(valid_until_);
      }

      const std::string path = dir_ + "/" + std::string(predecessor->second);
      Waiter w(s, path);
      rc = s.watch(path, monotonic_ns() + op_ns());
      if (rc == ZNONODE) continue;  // it just left: look again
      if (rc != ZOK) {
        if (auto r = after_error(rc, "watching the predecessor", deadline)) return *r;
        continue;
      }
      if (!w.wait(deadline)) return waiting();
      // The predecessor changed or went, or the connection did: look again.
    }
  }

  Renewal renew_now() {
    if (!held_ || !session_) return Renewal{Renewal::Status::lost, 0, where() + ": not held"};
    Session& s = *session_;
    if (s.dead()) {
      forget_entry();
      return Renewal{Renewal::Status::lost, 0, where() + ": the ZooKeeper session expired"};
    }
    if (!s.connected()) {
      return Renewal{Renewal::Status::unknown, valid_until_, where() + ": disconnected, the client is reconnecting"};
    }
    const Ns now = monotonic_ns();
    if (now >= next_check_) {
      const int rc = s.exists(dir_ + "/" + node_, now + op_ns());
      if (rc == ZNONODE) {
        forget_entry();
        return Renewal{Renewal::Status::lost, 0, where() + ": our node " + node_ + " was deleted"};
      }
      if (session_over(rc) || s.dead()) {
        forget_entry();
        return Renewal{Renewal::Status::lost, 0, where() + ": the ZooKeeper session ended: " + describe(rc)};
      }
      if (rc != ZOK) {
        return Renewal{Renewal::Status::unknown, valid_until_, where() + ": checking our node: " + describe(rc)};
      }
      confirmed_at_ = now;
      next_check_ = now + s.timeout_ns() / 3;
    }
    valid_until_ = std::max(valid_until_, bound(now));
    return Renewal{Renewal::Status::held, valid_until_, {}};
  }

  const std::shared_ptr<Core> core_;
  const std::string dir_;  // ROOT/NAME: the queue's parent znode
  std::string invalid_;    // set: the name cannot be used; acquire() fails with this

  std::shared_ptr<Session> session_;  // the session our node (if any) belongs to
  std::string prefix_;                // our queue entry's random prefix; empty: not queued
  std::string node_;                  // our node's name in DIR, once known
  bool maybe_created_ = false;        // a create was sent and its outcome is unknown
  bool held_ = false;
  std::uint64_t epoch_ = 0;
  Ns confirmed_at_ = 0;    // when the last request that confirmed our node was sent
  Ns next_check_ = 0;      // renew() confirms again from then on
  Ns valid_until_ = 0;
  Ns unreachable_since_ = 0;  // since when requests fail with connection loss (0: they do not)
};

class ZkBackend final : public LockBackend {
 public:
  explicit ZkBackend(std::shared_ptr<Core> core) : core_(std::move(core)) {}
  const char* kind() const noexcept override { return "zookeeper"; }
  std::unique_ptr<BackendLock> lock(const std::string& name) override { return std::make_unique<ZkLock>(core_, name); }
  Core& core() noexcept { return *core_; }

 private:
  std::shared_ptr<Core> core_;
};

}  // namespace

Result<std::unique_ptr<LockBackend>> open_zookeeper(const BackendSettings& settings) {
  if (auto ok = check_settings(settings); !ok) return std::move(ok).error();
  quiet_client_log();
  auto core = std::make_shared<Core>();
  core->endpoints = settings.endpoints;
  core->root = settings.root.empty() ? std::string(kDefaultRoot) : settings.root;
  core->lease = settings.lease;
  core->op_timeout = settings.op_timeout;
  core->identity = process_identity();
  if (auto s = core->current(); !s) return std::move(s).error();
  return std::unique_ptr<LockBackend>(std::make_unique<ZkBackend>(std::move(core)));
}

bool zookeeper_client_id_for_testing(LockBackend& backend, clientid_t* out) {
  auto* zk = dynamic_cast<ZkBackend*>(&backend);
  if (zk == nullptr || out == nullptr) return false;
  const auto session = zk->core().peek();
  if (!session) return false;
  *out = session->client_id();
  return true;
}

}  // namespace colo::bridge
