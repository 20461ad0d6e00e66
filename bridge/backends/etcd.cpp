// bridge/backends/etcd.cpp — the etcd lock backend, over etcd's v3 HTTP/JSON
// gateway (etcd 3.4: POST /v3/..., keys and values in base64, int64 fields as
// JSON strings).
//
// It follows clientv3's concurrency.Mutex, which is what `etcdctl lock`
// runs, so that colo and etcdctl exclude each other on the same name
// (tests/services/README.md, "etcd"):
//
//   session  one lease per LockBackend, TTL = ceil(lease / 1 s) (or what
//            etcd grants), refreshed every TTL/3 by a keep-alive thread.
//   key      ROOT/NAME/<lease id, lowercase hex>, empty value, on the lease.
//   join     Txn If CreateRevision(key) == 0
//                Then Put(key, "", lease), Range(ROOT/NAME/, by create
//                     revision ascending, limit 1)
//                Else Range(key), Range(ROOT/NAME/, ...).
//            Our create revision is myRev; it is also the grant's epoch.
//   owner    the key under ROOT/NAME/ with the lowest create revision.
//   wait     while not owner: take the newest key created before ours
//            (max_create_revision = myRev - 1, descending, limit 1), wait
//            for its deletion (a /v3/watch stream), and look again.
//   release  DeleteRange(key). The lease stays: other locks share it.
//
// When the lease is gone (revoked, or expired during a long pause), every
// key on it is gone too: each BackendLock notices by the lease generation it
// joined under, and the next acquire() runs on a new lease.
//
// Everything the server sends is untrusted: replies are parsed without
// exceptions escaping, sizes are capped, and every field is checked before
// use. Every instant is CLOCK_MONOTONIC nanoseconds (internal::monotonic_ns).
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "backends/backend.hpp"
#include "colo/internal/clock.hpp"

namespace colo::bridge {
namespace {

using json = nlohmann::json;

constexpr std::uint64_t kNsPerMs = 1'000'000;
constexpr std::uint64_t kNsPerS = 1'000'000'000;
constexpr std::uint64_t kEpochLimit = std::uint64_t{1} << 44;  // backend.hpp
// A reply larger than this is not one of ours (a range with limit 1 is a few
// hundred bytes): refuse it rather than buffer whatever a server sends.
constexpr std::size_t kMaxReply = 1 << 20;
// After a failed request, how long a loop waits before the next try: short
// enough to notice a recovered server quickly, long enough not to spin.
constexpr std::uint64_t kRetryNs = 50 * kNsPerMs;
// The keep-alive thread's retry interval after a failure, at most TTL/3.
constexpr std::uint64_t kKeepAliveRetryNs = 250 * kNsPerMs;

using internal::monotonic_ns;

std::chrono::nanoseconds ns_until(std::uint64_t until, std::uint64_t now) noexcept {
  return std::chrono::nanoseconds(until > now ? until - now : 0);
}

// --- base64 ----------------------------------------------------------------
// Written out here: the gateway wants keys and values in base64, and none of
// the libraries this project already uses offers it conveniently (Boost has
// it only in Beast's detail namespace, OpenSSL is not a dependency of ours).

constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string base64_encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    const std::uint32_t v = static_cast<std::uint32_t>(static_cast<unsigned char>(in[i])) << 16 |
                            static_cast<std::uint32_t>(static_cast<unsigned char>(in[i + 1])) << 8 |
                            static_cast<std::uint32_t>(static_cast<unsigned char>(in[i + 2]));
    out += kB64[v >> 18 & 63];
    out += kB64[v >> 12 & 63];
    out += kB64[v >> 6 & 63];
    out += kB64[v & 63];
  }
  if (const std::size_t rest = in.size() - i; rest > 0) {
    std::uint32_t v = static_cast<std::uint32_t>(static_cast<unsigned char>(in[i])) << 16;
    if (rest == 2) v |= static_cast<std::uint32_t>(static_cast<unsigned char>(in[i + 1])) << 8;
    out += kB64[v >> 18 & 63];
    out += kB64[v >> 12 & 63];
    out += rest == 2 ? kB64[v >> 6 & 63] : '=';
    out += '=';
  }
  return out;
}

// Standard alphabet, padding required (what the gateway sends); nullopt if
// malformed.
std::optional<std::string> base64_decode(std::string_view in) {
  if (in.size() % 4 != 0) return std::nullopt;
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  out.reserve(in.size() / 4 * 3);
  for (std::size_t i = 0; i < in.size(); i += 4) {
    const bool last = i + 4 == in.size();
    const int pad = last ? (in[i + 3] == '=') + (in[i + 2] == '=') : 0;
    if (pad == 1 && in[i + 2] == '=') return std::nullopt;  // "x=y=" is not padding
    std::uint32_t v = 0;
    for (int j = 0; j < 4; ++j) {
      const int d = j >= 4 - pad ? 0 : value(in[i + static_cast<std::size_t>(j)]);
      if (d < 0) return std::nullopt;
      v = v << 6 | static_cast<std::uint32_t>(d);
    }
    out += static_cast<char>(v >> 16 & 0xff);
    if (pad < 2) out += static_cast<char>(v >> 8 & 0xff);
    if (pad < 1) out += static_cast<char>(v & 0xff);
  }
  return out;
}

// The first key after every key that starts with `prefix` (etcd's range_end
// for a prefix): the last byte below 0xff incremented, the rest dropped.
std::string prefix_end(std::string prefix) {
  while (!prefix.empty()) {
    auto& last = reinterpret_cast<unsigned char&>(prefix.back());
    if (last < 0xff) {
      ++last;
      return prefix;
    }
    prefix.pop_back();
  }
  return std::string(1, '\0');  // etcd: "\0" means every key
}

std::string hex(std::uint64_t v) {
  char buf[17];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v, 16);
  (void)ec;  // 16 hex digits always fit
  return std::string(buf, end);
}

// --- JSON access that never throws -----------------------------------------

const json* member(const json* obj, const char* field) noexcept {
  if (obj == nullptr || !obj->is_object()) return nullptr;
  const auto it = obj->find(field);
  return it == obj->end() ? nullptr : &*it;
}

// An int64 field: proto3 omits zeros, so a missing field is 0; the gateway
// writes int64 as a string, a plain number is taken too. nullopt: malformed.
std::optional<std::int64_t> int_field(const json* obj, const char* field) noexcept {
  const json* v = member(obj, field);
  if (v == nullptr) return 0;
  if (v->is_number_integer()) return v->get<std::int64_t>();
  if (!v->is_string()) return std::nullopt;
  const auto* s = v->get_ptr<const std::string*>();
  std::int64_t out = 0;
  const auto [end, ec] = std::from_chars(s->data(), s->data() + s->size(), out);
  if (ec != std::errc{} || end != s->data() + s->size()) return std::nullopt;
  return out;
}

std::string string_field(const json* obj, const char* field) {
  const json* v = member(obj, field);
  return v != nullptr && v->is_string() ? v->get<std::string>() : std::string{};
}

bool bool_field(const json* obj, const char* field) noexcept {
  const json* v = member(obj, field);
  return v != nullptr && v->is_boolean() && v->get<bool>();
}

// responses[i].response_range of a Txn reply, or nullptr.
const json* txn_range(const json& body, std::size_t i) noexcept {
  const json* responses = member(&body, "responses");
  if (responses == nullptr || !responses->is_array() || responses->size() <= i) return nullptr;
  return member(&(*responses)[i], "response_range");
}

// The first key-value of a range response; nullptr when there is none.
const json* first_kv(const json* range) noexcept {
  const json* kvs = member(range, "kvs");
  if (kvs == nullptr || !kvs->is_array() || kvs->empty()) return nullptr;
  return &(*kvs)[0];
}

// --- HTTP ------------------------------------------------------------------

struct Endpoint {
  std::string text;  // as configured, for messages
  std::string host;
  int port = 0;
};

Result<Endpoint> parse_endpoint(const std::string& text) {
  auto bad = [&](const std::string& why) {
    return Error{Errc::invalid_argument, "etcd endpoint '" + text + "' " + why};
  };
  if (text.empty()) {
    return Error{Errc::invalid_argument, "no etcd endpoint given: set it to http://host:port"};
  }
  if (text.find(',') != std::string::npos) {
    return bad("lists several endpoints: give one, http://host:port (several are not supported yet)");
  }
  if (text.starts_with("https://")) {
    return bad("uses https, which the etcd backend does not support: give http://host:port "
               "(plain HTTP to etcd's gateway)");
  }
  if (!text.starts_with("http://")) return bad("has no http:// scheme: give http://host:port");
  std::string_view rest = std::string_view(text).substr(7);
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  const auto colon = rest.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return bad("is not http://host:port");
  const std::string_view host = rest.substr(0, colon);
  const std::string_view port = rest.substr(colon + 1);
  if (host.find_first_of("/[]@?#:") != std::string_view::npos) {
    return bad("is not http://host:port (no path, user or IPv6 literal; use a host name or IPv4 address)");
  }
  int number = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), number);
  if (port.empty() || ec != std::errc{} || end != port.data() + port.size() || number < 1 || number > 65535) {
    return bad("has no valid port (1 to 65535): give http://host:port");
  }
  return Endpoint{text, std::string(host), number};
}

const char* describe(httplib::Error error) noexcept {
  switch (error) {
    case httplib::Error::Connection: return "could not connect";
    case httplib::Error::ConnectionTimeout: return "connecting timed out";
    case httplib::Error::Read: return "no complete reply (connection closed or timed out)";
    case httplib::Error::Write: return "could not send the request";
    case httplib::Error::Canceled: return "the reply was refused (too large or not JSON)";
    default: return "HTTP client error";
  }
}

std::unique_ptr<httplib::Client> make_client(const Endpoint& endpoint, std::chrono::milliseconds timeout,
                                             bool keep_alive) {
  auto client = std::make_unique<httplib::Client>(endpoint.host, endpoint.port);
  client->set_connection_timeout(timeout);
  client->set_read_timeout(timeout);
  client->set_write_timeout(timeout);
  client->set_keep_alive(keep_alive);  // saves a connect per request; httplib reconnects a dead one
  client->set_tcp_nodelay(true);       // small requests: no Nagle delay
  return client;
}

// One request's outcome.
struct Reply {
  enum class Kind {
    ok,        // 200 and a JSON body
    rejected,  // the server answered 4xx: the request had no effect
    unknown,   // no usable answer (unreachable, timed out, 5xx, garbled): it may or may not have taken effect
  };
  Kind kind = Kind::unknown;
  json body;
  std::string error;  // rejected or unknown: the cause
  bool lease_not_found = false;
};

// POSTs `request` and parses the reply. Never throws for what the network
// does. `first_line`: the streaming endpoints (keep-alive) answer one JSON
// object per line.
Reply call(httplib::Client& client, const char* path, const json& request, bool first_line = false) {
  httplib::Request req;
  req.method = "POST";
  req.path = path;
  req.headers.emplace("Content-Type", "application/json");
  req.body = request.dump();
  int status = 0;
  std::string text;
  // The receiver rather than Post(): etcd 3.4's gateway ends its error
  // replies with an HTTP trailer, which httplib 0.11 reports as a read error
  // after the body arrived. With a receiver we keep the body, and a body
  // that parses as one JSON object is complete.
  req.response_handler = [&](const httplib::Response& res) {
    status = res.status;
    return true;
  };
  req.content_receiver = [&](const char* data, std::size_t size, std::uint64_t, std::uint64_t) {
    if (text.size() + size > kMaxReply) return false;
    text.append(data, size);
    return !(first_line && text.find('\n') != std::string::npos);
  };
  httplib::Response res;
  httplib::Error error = httplib::Error::Success;
  const bool sent = client.send(req, res, error);
  Reply reply;
  if (status == 0) {
    reply.error = describe(error);
    return reply;
  }
  if (first_line) text.resize(std::min(text.size(), text.find('\n')));
  reply.body = json::parse(text, nullptr, false);
  if (reply.body.is_discarded() || !reply.body.is_object()) {
    reply.body = json();
    reply.error = "HTTP " + std::to_string(status) + " with a reply that is not JSON" +
                  (sent ? std::string{} : std::string(" (") + describe(error) + ")");
    return reply;
  }
  if (status == 200) {
    reply.kind = Reply::Kind::ok;
    return reply;
  }
  std::string message = string_field(&reply.body, "message");
  if (message.empty()) message = string_field(&reply.body, "error");
  reply.lease_not_found = message.find("lease not found") != std::string::npos;
  reply.error = "HTTP " + std::to_string(status) + (message.empty() ? std::string{} : ": " + message);
  reply.kind = status < 500 ? Reply::Kind::rejected : Reply::Kind::unknown;
  return reply;
}

// --- the session: one lease, kept alive by a thread ------------------------

// What a lock needs to know of the lease, copied under the session's mutex.
struct LeaseView {
  std::int64_t id = 0;
  std::uint64_t generation = 0;  // +1 for each lease granted; a lock joined under one generation
  std::int64_t ttl_s = 0;
  std::uint64_t valid_until_ns = 0;
  bool alive = false;    // false: known to be gone (or the session closed)
  bool failing = false;  // the last keep-alive got no answer
  std::string error;     // failing: why
};

// Shared by the LockBackend and its BackendLocks (shared_ptr: a lock that
// outlives its backend finds a closed session instead of a dangling one).
class Session {
 public:
  Session(Endpoint endpoint, std::string root, std::chrono::milliseconds op_timeout, std::int64_t ttl_s)
      : endpoint_(std::move(endpoint)),
        root_(std::move(root)),
        op_timeout_(op_timeout),
        requested_ttl_s_(ttl_s),
        client_(make_client(endpoint_, op_timeout_, true)) {}

  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  ~Session() { close(); }

  // Grants the first lease, then starts the keep-alive thread.
  Result<void> open() {
    auto lease = ensure_lease(*client_);
    if (!lease) return std::move(lease).error();
    thread_ = std::thread([this] { run(); });
    return {};
  }

  // Stops the keep-alive thread and revokes the lease (each bounded by
  // op_timeout). Keys on the lease go with it.
  void close() noexcept {
    std::int64_t id = 0;
    {
      std::lock_guard lock(mu_);
      if (closed_) return;
      closed_ = true;
      if (alive_) id = lease_id_;
      alive_ = false;
    }
    cv_.notify_all();
    client_->stop();  // cuts a request in flight short (httplib allows this from another thread)
    if (thread_.joinable()) thread_.join();
    if (id == 0) return;
    try {
      auto client = make_client(endpoint_, op_timeout_, false);
      (void)call(*client, "/v3/lease/revoke", json{{"ID", std::to_string(id)}});
    } catch (...) {
      // Nothing to do: the lease runs out by itself after its TTL.
    }
  }

  const Endpoint& endpoint() const noexcept { return endpoint_; }
  const std::string& root() const noexcept { return root_; }
  std::chrono::milliseconds op_timeout() const noexcept { return op_timeout_; }
  std::string where() const { return "etcd at " + endpoint_.text; }

  LeaseView view() const {
    std::lock_guard lock(mu_);
    return view_locked();
  }

  // The current lease, granting a new one if it is known to be gone.
  Result<LeaseView> ensure_lease(httplib::Client& client) {
    {
      std::lock_guard lock(mu_);
      if (closed_) return Error{Errc::not_ready, where() + ": the session is closed"};
      if (alive_) return view_locked();
    }
    std::lock_guard grant(grant_mu_);  // one grant at a time, by whichever thread needs it
    {
      std::lock_guard lock(mu_);
      if (closed_) return Error{Errc::not_ready, where() + ": the session is closed"};
      if (alive_) return view_locked();
    }
    const std::uint64_t sent = monotonic_ns();
    const Reply reply = call(client, "/v3/lease/grant", json{{"TTL", std::to_string(requested_ttl_s_)}, {"ID", "0"}});
    if (reply.kind == Reply::Kind::rejected) return Error{Errc::system, where() + " refused a lease: " + reply.error};
    if (reply.kind != Reply::Kind::ok) {
      return Error{Errc::timed_out, "could not get a lease from " + where() + " within " +
                                        std::to_string(op_timeout_.count()) + " ms: " + reply.error};
    }
    const auto id = int_field(&reply.body, "ID");
    const auto ttl = int_field(&reply.body, "TTL");
    const std::string refused = string_field(&reply.body, "error");
    if (!id || !ttl || *id <= 0 || *ttl <= 0 || !refused.empty()) {
      return Error{Errc::system, where() + " did not grant a lease" + (refused.empty() ? "" : ": " + refused)};
    }
    std::lock_guard lock(mu_);
    if (closed_) return Error{Errc::not_ready, where() + ": the session is closed"};
    lease_id_ = *id;
    ttl_s_ = *ttl;
    valid_until_ns_ = sent + static_cast<std::uint64_t>(*ttl) * kNsPerS;
    next_keepalive_ns_ = sent + static_cast<std::uint64_t>(*ttl) * kNsPerS / 3;
    ++generation_;
    alive_ = true;
    failing_ = false;
    error_.clear();
    orphans_.clear();  // their keys went with the old lease
    cv_.notify_all();
    return view_locked();
  }

  // The lease of `generation` is gone (a reply said so): locks on it are
  // lost, and the keep-alive thread grants a new one.
  void mark_dead(std::uint64_t generation) noexcept {
    {
      std::lock_guard lock(mu_);
      if (generation != generation_ || !alive_) return;
      alive_ = false;
    }
    cv_.notify_all();
  }

  // A key whose deletion failed: the keep-alive thread retries it, so that a
  // key on our (kept alive) lease cannot block the lock for good. rev 0:
  // delete whatever is there (the key's creation itself was uncertain).
  void add_orphan(std::string key64, std::int64_t rev, std::uint64_t generation) noexcept {
    try {
      std::lock_guard lock(mu_);
      if (closed_ || generation != generation_) return;
      orphans_.push_back(Orphan{std::move(key64), rev, generation});
    } catch (...) {
      return;  // out of memory: the key lasts until the lease ends
    }
    cv_.notify_all();
  }

  // A lock is about to create `key64` again: no pending delete may remove it
  // afterwards. Waits for a delete pass in progress (orphan_mu_).
  void claim(const std::string& key64) {
    std::lock_guard pass(orphan_mu_);
    std::lock_guard lock(mu_);
    std::erase_if(orphans_, [&](const Orphan& o) { return o.key64 == key64; });
  }

  // etcd's recipe gives one key per lease and name, so one lock object per
  // name may use this session at a time.
  bool register_name(const std::string& name) {
    std::lock_guard lock(mu_);
    return names_.insert(name).second;
  }
  void unregister_name(const std::string& name) noexcept {
    std::lock_guard lock(mu_);
    names_.erase(name);
  }

 private:
  struct Orphan {
    std::string key64;
    std::int64_t rev;
    std::uint64_t generation;
  };

  LeaseView view_locked() const {
    return LeaseView{lease_id_, generation_, ttl_s_, valid_until_ns_, alive_ && !closed_, failing_, error_};
  }

  // The keep-alive thread: refreshes the lease every TTL/3, grants a new one
  // when it is gone, and retries failed deletes.
  void run() noexcept {
    std::unique_lock lock(mu_);
    while (!closed_) {
      const std::uint64_t now = monotonic_ns();
      const bool keepalive = alive_ && now >= next_keepalive_ns_;
      const bool grant = !alive_ && now >= next_grant_ns_;
      const bool orphans = !orphans_.empty() && now >= next_orphans_ns_;
      if (!keepalive && !grant && !orphans) {
        std::uint64_t wake = alive_ ? next_keepalive_ns_ : next_grant_ns_;
        if (!orphans_.empty()) wake = std::min(wake, next_orphans_ns_);
        cv_.wait_for(lock, ns_until(wake, now));
        continue;
      }
      lock.unlock();
      try {
        if (keepalive) keep_alive();
        if (grant && !ensure_lease(*client_)) {
          std::lock_guard relock(mu_);
          next_grant_ns_ = monotonic_ns() + kKeepAliveRetryNs;
        }
        if (orphans) delete_orphans();
      } catch (...) {
        // Out of memory or a library fault: try again later rather than end
        // the thread (locks would then outlive a dead lease unnoticed).
        std::lock_guard relock(mu_);
        next_keepalive_ns_ = next_grant_ns_ = next_orphans_ns_ = monotonic_ns() + kKeepAliveRetryNs;
      }
      lock.lock();
    }
  }

  void keep_alive() {
    const LeaseView lease = view();
    if (!lease.alive) return;
    const std::uint64_t sent = monotonic_ns();
    const Reply reply = call(*client_, "/v3/lease/keepalive", json{{"ID", std::to_string(lease.id)}}, true);
    const json* result = member(&reply.body, "result");
    const auto ttl = int_field(result, "TTL");
    if (reply.kind == Reply::Kind::ok && result != nullptr && ttl && member(&reply.body, "error") == nullptr) {
      if (*ttl <= 0) return mark_dead(lease.generation);  // TTL 0 or none: the lease is gone
      std::lock_guard lock(mu_);
      if (generation_ != lease.generation) return;
      ttl_s_ = *ttl;
      valid_until_ns_ = sent + static_cast<std::uint64_t>(*ttl) * kNsPerS;
      next_keepalive_ns_ = sent + static_cast<std::uint64_t>(*ttl) * kNsPerS / 3;
      failing_ = false;
      error_.clear();
      return;
    }
    if (reply.lease_not_found) return mark_dead(lease.generation);
    std::lock_guard lock(mu_);
    if (generation_ != lease.generation) return;
    failing_ = true;
    error_ = where() + " did not renew the lease: " +
             (reply.kind == Reply::Kind::ok ? std::string("unexpected reply") : reply.error);
    next_keepalive_ns_ =
        monotonic_ns() + std::min(kKeepAliveRetryNs, static_cast<std::uint64_t>(lease.ttl_s) * kNsPerS / 3);
  }

  void delete_orphans() {
    std::lock_guard pass(orphan_mu_);
    std::vector<Orphan> todo;
    std::uint64_t generation = 0;
    {
      std::lock_guard lock(mu_);
      todo = orphans_;
      generation = generation_;
    }
    std::vector<Orphan> done;
    for (const Orphan& o : todo) {
      if (o.generation == generation) {
        // With a known create revision, delete only that incarnation.
        const json request =
            o.rev > 0 ? json{{"compare", json::array({json{{"target", "CREATE"},
                                                            {"key", o.key64},
                                                            {"create_revision", std::to_string(o.rev)}}})},
                             {"success", json::array({json{{"request_delete_range", json{{"key", o.key64}}}}})}}
                      : json{{"success", json::array({json{{"request_delete_range", json{{"key", o.key64}}}}})}};
        if (call(*client_, "/v3/kv/txn", request).kind == Reply::Kind::unknown) continue;
      }
      done.push_back(o);
    }
    std::lock_guard lock(mu_);
    std::erase_if(orphans_, [&](const Orphan& o) {
      return std::any_of(done.begin(), done.end(), [&](const Orphan& d) {
        return d.key64 == o.key64 && d.rev == o.rev && d.generation == o.generation;
      });
    });
    next_orphans_ns_ = monotonic_ns() + kKeepAliveRetryNs;
  }

  const Endpoint endpoint_;
  const std::string root_;
  const std::chrono::milliseconds op_timeout_;
  const std::int64_t requested_ttl_s_;
  // The keep-alive thread's own client (also the first grant's, before the
  // thread starts): an httplib client serves one request at a time.
  const std::unique_ptr<httplib::Client> client_;

  std::mutex grant_mu_;   // before mu_
  std::mutex orphan_mu_;  // before mu_; held through a delete pass
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool closed_ = false;
  bool alive_ = false;
  std::int64_t lease_id_ = 0;
  std::uint64_t generation_ = 0;
  std::int64_t ttl_s_ = 0;
  std::uint64_t valid_until_ns_ = 0;
  bool failing_ = false;
  std::string error_;
  std::uint64_t next_keepalive_ns_ = 0;
  std::uint64_t next_grant_ns_ = 0;
  std::uint64_t next_orphans_ns_ = 0;
  std::vector<Orphan> orphans_;
  std::set<std::string> names_;
  std::thread thread_;
};

// --- one lock --------------------------------------------------------------

class EtcdLock final : public BackendLock {
 public:
  EtcdLock(std::shared_ptr<Session> session, std::string name)
      : session_(std::move(session)),
        name_(std::move(name)),
        prefix_(session_->root() + "/" + name_ + "/"),
        prefix64_(base64_encode(prefix_)),
        prefix_end64_(base64_encode(prefix_end(prefix_))),
        registered_(session_->register_name(name_)),
        // Each lock has its own clients: the thread driving it is not the
        // one driving another lock. The watch client opens a connection
        // per stream and closes it after (a stream is abandoned mid-way).
        rpc_(make_client(session_->endpoint(), session_->op_timeout(), true)),
        watch_(make_client(session_->endpoint(), session_->op_timeout(), false)) {}

  EtcdLock(const EtcdLock&) = delete;
  EtcdLock& operator=(const EtcdLock&) = delete;

  ~EtcdLock() override {
    release();
    if (registered_) session_->unregister_name(name_);
  }

  Acquire acquire(std::uint64_t deadline_ns) override {
    try {
      if (!registered_) {
        return failed("this session already has a lock object for '" + name_ +
                      "' (etcd's recipe allows one key per lease and name)");
      }
      if (state_ == State::held) {
        const LeaseView lease = session_->view();
        if (lease.alive && lease.generation == generation_) return held(lease);
        state_ = State::idle;  // lost with the lease: queue again
      }
      if (state_ == State::lost) state_ = State::idle;
      if (state_ == State::queued) {
        const LeaseView lease = session_->view();
        if (!lease.alive || lease.generation != generation_) {
          state_ = State::idle;
          return failed("the queue place was lost with the session's lease");
        }
      }
      if (state_ == State::idle) {
        if (auto joined = join(); joined.status != Acquire::Status::waiting) return joined;
      }
      return wait(deadline_ns);
    } catch (const std::exception& e) {
      return failed(std::string("unexpected error: ") + e.what());
    }
  }

  Renewal renew() override {
    try {
      if (state_ != State::held) return Renewal{Renewal::Status::lost, 0, "not held"};
      LeaseView lease = session_->view();
      if (!lease.alive || lease.generation != generation_) return lose("the session's lease is gone");
      const std::uint64_t now = monotonic_ns();
      if (now >= next_check_ns_) {
        // Due: does our key still exist, as the same incarnation?
        const Reply reply = call(*rpc_, "/v3/kv/range", json{{"key", key64_}});
        if (reply.kind != Reply::Kind::ok) {
          next_check_ns_ = now + kRetryNs;
          return unknown(session_->where() + " did not answer a check of " + key_ + ": " + reply.error);
        }
        const json* kv = first_kv(&reply.body);
        if (kv == nullptr) return lose(key_ + " is gone (deleted, or its lease ended)");
        if (int_field(kv, "create_revision") != rev_) return lose(key_ + " was created again by someone else");
        next_check_ns_ = now + check_interval(lease);
        lease = session_->view();
        if (!lease.alive || lease.generation != generation_) return lose("the session's lease is gone");
      }
      if (lease.failing) return unknown(lease.error);
      if (monotonic_ns() >= lease.valid_until_ns) return unknown(session_->where() + ": the lease was not renewed in time");
      last_valid_until_ns_ = lease.valid_until_ns;
      return Renewal{Renewal::Status::held, lease.valid_until_ns, {}};
    } catch (const std::exception& e) {
      return unknown(std::string("unexpected error: ") + e.what());
    }
  }

  void release() noexcept override {
    if (state_ == State::idle) return;
    const bool had_key = state_ != State::lost;
    state_ = State::idle;
    if (!had_key) return;  // lost: the key is gone already
    try {
      const LeaseView lease = session_->view();
      if (lease.generation != generation_) return;  // the key went with its lease
      const Reply reply = call(*rpc_, "/v3/kv/deleterange", json{{"key", key64_}});
      // No answer: the key may still be there, on a lease we keep alive.
      if (reply.kind == Reply::Kind::unknown) session_->add_orphan(key64_, rev_, generation_);
    } catch (...) {
      session_->add_orphan(key64_, rev_, generation_);
    }
  }

 private:
  enum class State { idle, queued, held, lost };

  Acquire failed(std::string why) const {
    Acquire a;
    a.status = Acquire::Status::failed;
    // Name the server and the lock once.
    a.detail = why.find(session_->where()) != std::string::npos ? "lock " + prefix_ + ": " + why
                                                                  : session_->where() + ", lock " + prefix_ + ": " + why;
    return a;
  }

  Acquire held(const LeaseView& lease) {
    if (state_ != State::held) next_check_ns_ = monotonic_ns() + check_interval(lease);  // the key was just seen
    state_ = State::held;
    last_valid_until_ns_ = lease.valid_until_ns;
    Acquire a;
    a.status = Acquire::Status::held;
    a.epoch = static_cast<std::uint64_t>(rev_);
    a.valid_until_ns = lease.valid_until_ns;
    return a;
  }

  Renewal lose(std::string why) {
    state_ = State::lost;
    return Renewal{Renewal::Status::lost, 0, session_->where() + ", lock " + prefix_ + ": " + why};
  }

  Renewal unknown(std::string why) const {
    return Renewal{Renewal::Status::unknown, last_valid_until_ns_, std::move(why)};
  }

  static std::uint64_t check_interval(const LeaseView& lease) noexcept {
    return std::max<std::uint64_t>(static_cast<std::uint64_t>(lease.ttl_s) * kNsPerS / 3, kRetryNs);
  }

  // Puts our key (the Mutex's Txn). Returns `held` if we are first, `waiting`
  // if queued, `failed` otherwise.
  Acquire join() {
    auto lease = session_->ensure_lease(*rpc_);
    if (!lease) return failed(lease.error().message);
    for (int attempt = 0; attempt < 4; ++attempt) {
      key_ = prefix_ + hex(static_cast<std::uint64_t>(lease->id));
      key64_ = base64_encode(key_);
      generation_ = lease->generation;
      session_->claim(key64_);
      const json owner = {{"request_range",
                           {{"key", prefix64_},
                            {"range_end", prefix_end64_},
                            {"sort_order", "ASCEND"},
                            {"sort_target", "CREATE"},
                            {"limit", "1"}}}};
      const json request = {
          {"compare",
           json::array({json{{"target", "CREATE"}, {"key", key64_}, {"create_revision", "0"}}})},
          {"success",
           json::array({json{{"request_put", {{"key", key64_}, {"value", ""}, {"lease", std::to_string(lease->id)}}}},
                        owner})},
          {"failure", json::array({json{{"request_range", {{"key", key64_}}}}, owner})},
      };
      const Reply reply = call(*rpc_, "/v3/kv/txn", request);
      if (reply.lease_not_found) {
        // Revoked or expired before the keep-alive thread noticed: take a new one.
        session_->mark_dead(lease->generation);
        lease = session_->ensure_lease(*rpc_);
        if (!lease) return failed(lease.error().message);
        continue;
      }
      if (reply.kind == Reply::Kind::unknown) {
        // The put may have happened: have the key deleted (and claimed back
        // if this lock joins again first).
        session_->add_orphan(key64_, 0, generation_);
        return failed("no answer to the request that joins the queue: " + reply.error);
      }
      if (reply.kind == Reply::Kind::rejected) return failed("the request that joins the queue was refused: " + reply.error);
      if (!bool_field(&reply.body, "succeeded")) {
        // The key exists already: an earlier entry of ours whose delete did
        // not get through. Its revision may have been granted before, so it
        // must not serve again (epochs only grow): delete it, put a new one.
        const json* existing = first_kv(txn_range(reply.body, 0));
        const auto rev = int_field(existing, "create_revision");
        if (existing == nullptr || !rev || *rev <= 0) return failed("unexpected reply to the join request");
        const json remove = {
            {"compare",
             json::array({json{{"target", "CREATE"}, {"key", key64_}, {"create_revision", std::to_string(*rev)}}})},
            {"success", json::array({json{{"request_delete_range", {{"key", key64_}}}}})}};
        const Reply removed = call(*rpc_, "/v3/kv/txn", remove);
        if (removed.kind != Reply::Kind::ok) {
          return failed("could not replace a stale key " + key_ + ": " + removed.error);
        }
        continue;
      }
      const auto rev = int_field(member(&reply.body, "header"), "revision");
      if (!rev || *rev <= 0 || static_cast<std::uint64_t>(*rev) >= kEpochLimit) {
        session_->add_orphan(key64_, 0, generation_);
        return failed("unexpected revision in the reply to the join request");
      }
      rev_ = *rev;
      state_ = State::queued;
      const auto first = int_field(first_kv(txn_range(reply.body, 1)), "create_revision");
      if (first && *first == rev_) return held(*lease);
      Acquire a;
      a.status = Acquire::Status::waiting;
      return a;
    }
    return failed("could not put " + key_ + " after several tries");
  }

  // Queued: waits until our key is the oldest under the prefix, or the deadline.
  Acquire wait(std::uint64_t deadline_ns) {
    std::string last_error;
    for (;;) {
      const LeaseView lease = session_->view();
      if (!lease.alive || lease.generation != generation_) {
        state_ = State::idle;
        return failed("the queue place was lost with the session's lease");
      }
      // One request for both: the newest key created before ours, and ours.
      const json request = {
          {"success",
           json::array({json{{"request_range",
                              {{"key", prefix64_},
                               {"range_end", prefix_end64_},
                               {"max_create_revision", std::to_string(rev_ - 1)},
                               {"sort_order", "DESCEND"},
                               {"sort_target", "CREATE"},
                               {"limit", "1"}}}},
                        json{{"request_range", {{"key", key64_}}}}})}};
      const Reply reply = call(*rpc_, "/v3/kv/txn", request);
      const std::uint64_t now = monotonic_ns();
      if (reply.kind == Reply::Kind::rejected) {
        // The server answered and refused: waiting longer will not help.
        release();
        return failed("a check of the queue was refused: " + reply.error);
      }
      if (reply.kind != Reply::Kind::ok) {
        // No answer: the key stays queued; keep trying until the deadline.
        last_error = session_->where() + ": " + reply.error;
        if (now >= deadline_ns) return waiting(last_error);
        std::this_thread::sleep_for(ns_until(std::min(deadline_ns, now + kRetryNs), now));
        continue;
      }
      const json* mine = first_kv(txn_range(reply.body, 1));
      if (mine == nullptr || int_field(mine, "create_revision") != rev_) {
        state_ = State::idle;
        return failed("our queue entry " + key_ + " is gone (deleted, or its lease ended)");
      }
      const json* before = first_kv(txn_range(reply.body, 0));
      if (before == nullptr) return held(lease);
      const std::string before64 = string_field(before, "key");
      const auto revision = int_field(member(&reply.body, "header"), "revision");
      if (before64.empty() || !revision) {
        last_error = session_->where() + ": unexpected reply while waiting";
        if (now >= deadline_ns) return waiting(last_error);
        std::this_thread::sleep_for(ns_until(std::min(deadline_ns, now + kRetryNs), now));
        continue;
      }
      if (now >= deadline_ns) {
        const auto before_key = base64_decode(before64);
        return waiting("queued behind " + (before_key ? *before_key : before64));
      }
      // Watch streams last at most one TTL, so that a dead connection or a
      // lease lost meanwhile is noticed even with a far deadline.
      const std::uint64_t until = std::min(deadline_ns, now + static_cast<std::uint64_t>(lease.ttl_s) * kNsPerS);
      if (!wait_deleted(before64, *revision + 1, until)) {
        // The watch failed (not the deadline): look again, not too often.
        const std::uint64_t after = monotonic_ns();
        if (after < until) std::this_thread::sleep_for(ns_until(std::min(until, after + kRetryNs), after));
      }
    }
  }

  static Acquire waiting(std::string detail) {
    Acquire a;
    a.status = Acquire::Status::waiting;
    a.detail = std::move(detail);
    return a;
  }

  // Watches `key64` from `from_revision` until a deletion is seen (true) or
  // `until_ns` (true too: the caller looks again). False: the watch failed.
  // The stream is abandoned at `until_ns`: the read timeout bounds the wait
  // for the next message, the receiver checks the clock on each one.
  bool wait_deleted(const std::string& key64, std::int64_t from_revision, std::uint64_t until_ns) {
    httplib::Request req;
    req.method = "POST";
    req.path = "/v3/watch";
    req.headers.emplace("Content-Type", "application/json");
    req.body = json{{"create_request",
                     {{"key", key64},
                      {"start_revision", std::to_string(from_revision)},
                      {"filters", json::array({"NOPUT"})}}}}
                   .dump();
    bool deleted = false;
    bool broken = false;
    std::string pending;
    req.response_handler = [&](const httplib::Response& res) {
      broken = res.status != 200;
      return !broken;
    };
    req.content_receiver = [&](const char* data, std::size_t size, std::uint64_t, std::uint64_t) {
      pending.append(data, size);
      for (auto nl = pending.find('\n'); nl != std::string::npos; nl = pending.find('\n')) {
        const json message = json::parse(std::string_view(pending).substr(0, nl), nullptr, false);
        pending.erase(0, nl + 1);
        const json* result = member(&message, "result");
        // Canceled (e.g. the revision was compacted) or an error: look again.
        if (result == nullptr || bool_field(result, "canceled")) broken = true;
        const json* events = member(result, "events");
        if (events != nullptr && events->is_array()) {
          for (const json& event : *events) {
            if (string_field(&event, "type") == "DELETE" && string_field(member(&event, "kv"), "key") == key64) {
              deleted = true;
            }
          }
        }
      }
      if (pending.size() > kMaxReply) broken = true;
      return !deleted && !broken && monotonic_ns() < until_ns;
    };
    const std::uint64_t now = monotonic_ns();
    // At least 1 ms: a zero timeout would mean none at all to httplib.
    watch_->set_read_timeout(std::max(ns_until(until_ns, now), std::chrono::nanoseconds(kNsPerMs)));
    httplib::Response res;
    httplib::Error error = httplib::Error::Success;
    (void)watch_->send(req, res, error);
    watch_->set_read_timeout(session_->op_timeout());
    return deleted || (!broken && monotonic_ns() >= until_ns);
  }

  const std::shared_ptr<Session> session_;
  const std::string name_;
  const std::string prefix_;  // ROOT/NAME/
  const std::string prefix64_;
  const std::string prefix_end64_;
  const bool registered_;
  const std::unique_ptr<httplib::Client> rpc_;
  const std::unique_ptr<httplib::Client> watch_;

  State state_ = State::idle;
  std::string key_;  // ROOT/NAME/<lease hex>
  std::string key64_;
  std::int64_t rev_ = 0;            // our key's create revision: the epoch
  std::uint64_t generation_ = 0;    // the session lease our key is on
  std::uint64_t last_valid_until_ns_ = 0;
  std::uint64_t next_check_ns_ = 0;  // renew(): when to look at the key again
};

class EtcdBackend final : public LockBackend {
 public:
  explicit EtcdBackend(std::shared_ptr<Session> session) : session_(std::move(session)) {}
  ~EtcdBackend() override { session_->close(); }
  EtcdBackend(const EtcdBackend&) = delete;
  EtcdBackend& operator=(const EtcdBackend&) = delete;

  const char* kind() const noexcept override { return "etcd"; }

  std::unique_ptr<BackendLock> lock(const std::string& name) override {
    return std::make_unique<EtcdLock>(session_, name);
  }

 private:
  std::shared_ptr<Session> session_;
};

}  // namespace

Result<std::unique_ptr<LockBackend>> open_etcd(const BackendSettings& settings) {
  auto endpoint = parse_endpoint(settings.endpoints);
  if (!endpoint) return std::move(endpoint).error();
  if (settings.lease < std::chrono::milliseconds(1000)) {
    return Error{Errc::invalid_argument, "etcd lease of " + std::to_string(settings.lease.count()) +
                                             " ms is too short: etcd leases are whole seconds, give at least 1000 ms"};
  }
  if (settings.op_timeout <= std::chrono::milliseconds(0)) {
    return Error{Errc::invalid_argument, "etcd op_timeout must be positive (it bounds each request to " +
                                             settings.endpoints + ")"};
  }
  std::string root = settings.root.empty() ? std::string("colo/locks") : settings.root;
  while (!root.empty() && root.back() == '/') root.pop_back();  // the key adds its own '/'
  if (root.empty()) return Error{Errc::invalid_argument, "etcd root '" + settings.root + "' names no prefix"};
  const std::int64_t ttl_s = (settings.lease.count() + 999) / 1000;
  try {
    auto session = std::make_shared<Session>(std::move(endpoint).value(), std::move(root), settings.op_timeout, ttl_s);
    if (auto opened = session->open(); !opened) return std::move(opened).error();
    return std::unique_ptr<LockBackend>(std::make_unique<EtcdBackend>(std::move(session)));
  } catch (const std::exception& e) {
    return Error{Errc::system, "could not open the etcd session at " + settings.endpoints + ": " + e.what()};
  }
}

}  // namespace colo::bridge
