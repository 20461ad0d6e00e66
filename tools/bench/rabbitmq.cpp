// `colo bench rabbitmq`: what colod's RabbitMQ links cost, against
// rabbitmq-c itself on the same server, in one run (docs/rabbitmq.md,
// "Figures").
//
// For each message size (--sizes, default 64 B and 1 KiB), N messages
// (--messages), every message persistent into a durable queue. The five
// cells run interleaved, --rounds times (default 3): round after round, for
// each size raw, + id (then raw consume of what it left), mirror (then
// source), so a burst of load from the machine's other users falls on one
// round's cells rather than on one cell of every round.
// Every cell of a size uses one and the same queue (the links' queue),
// emptied (queue.purge) before each publish cell, and each publish cell
// starts after kQuiet without traffic (not with --quick): measured here,
// the same bare publisher made 0.8x-0.9x in one of two freshly declared
// queues of what it made in the other, whichever ran first, and 1.02x
// into one queue; with a queue per cell that difference was in the ratios.
// Each round's ratios are reported, and the median and range of each cell.
//   publish  raw: this process's rabbitmq-c connection in confirm mode, at
//            most --window messages published and not yet confirmed (the
//            mirror's `window`), N messages into a queue through the default
//            exchange; msg/s from the first publish to the last confirm. No
//            headers: the library's own pace.
//            + id: the same, each message as the mirror sends it
//            (mandatory, timestamp, the message-id property of the same
//            form): the same bytes on the wire. (Measured separately, one
//            queue, 8 alternating rounds: mandatory alone 0.95x of bare,
//            the timestamp 0.92x, the message id 0.89x, all three 0.83x:
//            what the server does with them.)
//            mirror: a colod (LocalCluster, one host) mirrors a topic of its
//            namespace into a queue (block, window --window); this process
//            publishes N messages into the ring (publish_batch); msg/s from
//            the first publish to the moment colod's link reports N
//            acknowledged (its control socket, polled every 5 ms).
//   consume  (each 5 s after its queue was filled: a queue just filled
//            often reads slower, whoever reads it)
//            raw: a rabbitmq-c consumer with manual acks and basic.qos
//            --prefetch (the source's `prefetch`) reads the N messages the
//            round's "+ id" cell left in the queue, one ack (multiple) per 256
//            deliveries as a source acknowledges a topic's batch; msg/s from
//            the first delivery to the last.
//            source: a colod (one per size and round, started for the
//            cell with its link paused, resumed once the queue has
//            settled) consumes what the mirror left (N messages with colo's
//            message ids, as the raw consumer's) into a topic nobody reads;
//            msg/s from its first published messages to its N-th (its
//            `produced` counter, polled every 5 ms), as for the raw consumer.
// Goals (reported, not enforced): mirror msg/s and source msg/s each at
// least 80% of the raw figure at each size (the median of the rounds'
// ratios).
//
// Checked, making the exit status 1: every message confirmed (raw, mirror),
// every message consumed (raw, source), nothing lost or skipped.
// Cleanup: colod stopped, the namespaces removed, the run's queues
// (colo.bench.<pid>.*) deleted from the server.
#include "commands.hpp"

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "app.hpp"
#include "colo/internal/clock.hpp"
#include "colo/node.hpp"
#include "colod_client.hpp"
#include "format.hpp"
#include "link_bench.hpp"
#include "local_cluster.hpp"

namespace colo::cli {
namespace {

using namespace std::chrono_literals;
using internal::monotonic_ns;

constexpr double kGoalRatio = 0.8;
constexpr std::uint32_t kAckEvery = 256;  // the raw consumer's multiple ack, as the source's publish batch
constexpr amqp_channel_t kChannel = 1;
constexpr std::uint64_t kDeadlineNs = 300'000'000'000ull;

struct Options {
  std::string server;  // --server HOST:PORT, else $COLO_RABBITMQ
  std::string user = "guest";
  std::string password_file;  // "" = the password "guest"
  std::string colod;
  std::vector<std::uint32_t> sizes = {64, 1024};
  std::uint32_t messages = 100'000;
  std::uint32_t window = 1000;
  std::uint32_t prefetch = 1000;
  std::uint32_t rounds = 3;
  bool quick = false;
  bool json = false;
};

// One round of the cells of one size, msg/s.
struct PublishRound {
  double raw = 0, as_mirror = 0, mirror = 0;
  double raw_consume = 0, source = 0;
  double load = 0;  // 1-minute load average as the round started
};

struct SizeRun {
  std::uint32_t size = 0;
  std::vector<PublishRound> rounds;
  std::string error;  // a failed measurement
};

// The median of `values` (format.hpp's spread_of: the mean of the middle two
// for an even count); 0 if none.
double median(std::vector<double> values) { return spread_of(std::move(values)).median; }

// Field `f` of every round, or the ratio of two fields (0 where the divisor is).
std::vector<double> each(const SizeRun& s, double PublishRound::*f) {
  std::vector<double> v;
  for (const auto& r : s.rounds) v.push_back(r.*f);
  return v;
}
std::vector<double> ratios(const SizeRun& s, double PublishRound::*num, double PublishRound::*den) {
  std::vector<double> v;
  for (const auto& r : s.rounds) v.push_back(r.*den > 0 ? r.*num / r.*den : 0);
  return v;
}

std::string run_id() { return "colo.bench." + std::to_string(::getpid()); }

// ------------------------------------------------------------ rabbitmq-c side

// One connection with channel 1 open, closed and freed at the end.
class Amqp {
 public:
  ~Amqp() {
    if (conn_ == nullptr) return;
    if (usable_) {
      (void)amqp_channel_close(conn_, kChannel, AMQP_REPLY_SUCCESS);
      (void)amqp_connection_close(conn_, AMQP_REPLY_SUCCESS);
    }
    amqp_destroy_connection(conn_);
  }
  // "" or what failed.
  std::string open(const Options& o, const std::string& password) {
    const auto colon = o.server.rfind(':');
    if (colon == std::string::npos) return "--server: HOST:PORT expected, got '" + o.server + "'";
    const std::string host = o.server.substr(0, colon);
    const int port = std::atoi(o.server.c_str() + colon + 1);
    conn_ = amqp_new_connection();
    amqp_socket_t* socket = amqp_tcp_socket_new(conn_);
    if (socket == nullptr) return "cannot make a socket";
    if (const int s = amqp_socket_open(socket, host.c_str(), port); s != AMQP_STATUS_OK)
      return "connecting to " + o.server + ": " + amqp_error_string2(s);
    const amqp_rpc_reply_t login = amqp_login(conn_, "/", 0, AMQP_DEFAULT_FRAME_SIZE, 0, AMQP_SASL_METHOD_PLAIN,
                                              o.user.c_str(), password.c_str());
    if (login.reply_type != AMQP_RESPONSE_NORMAL) return "login as " + o.user + " refused";
    amqp_channel_open(conn_, kChannel);
    if (auto e = check("channel.open"); !e.empty()) return e;
    usable_ = true;
    return {};
  }
  // The last RPC's outcome: "" or what failed.
  std::string check(const std::string& what) {
    const amqp_rpc_reply_t r = amqp_get_rpc_reply(conn_);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) return {};
    usable_ = false;
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) return what + ": " + amqp_error_string2(r.library_error);
    return what + ": refused by the server";
  }
  amqp_connection_state_t conn() const { return conn_; }

 private:
  amqp_connection_state_t conn_ = nullptr;
  bool usable_ = false;
};

amqp_bytes_t bytes_of(const std::string& s) { return amqp_bytes_t{s.size(), const_cast<char*>(s.data())}; }

// Declares `queue` (durable) and empties it: a round starts from an empty queue.
std::string declare_queue(Amqp& a, const std::string& queue) {
  amqp_queue_declare(a.conn(), kChannel, bytes_of(queue), 0, /*durable*/ 1, 0, 0, amqp_empty_table);
  if (auto e = a.check("declaring queue " + queue); !e.empty()) return e;
  amqp_queue_purge(a.conn(), kChannel, bytes_of(queue));
  return a.check("purging queue " + queue);
}

std::string empty_queue(const Options& o, const std::string& password, const std::string& queue) {
  Amqp a;
  if (auto e = a.open(o, password); !e.empty()) return e;
  return declare_queue(a, queue);
}

// N messages of `size` bytes into `queue`, at most o.window unconfirmed;
// with `as_mirror`, each is published exactly as the mirror publishes it
// (bridge/links/rabbitmq/mirror.cpp: mandatory, timestamp, message id).
double raw_publish(const Options& o, const std::string& password, const std::string& queue, std::uint32_t size,
                   bool as_mirror, std::string& error) {
  Amqp a;
  if (error = a.open(o, password); !error.empty()) return 0;
  if (error = declare_queue(a, queue); !error.empty()) return 0;
  amqp_confirm_select(a.conn(), kChannel);
  if (error = a.check("confirm.select"); !error.empty()) return 0;
  const std::string payload(size, 'r');
  // The message id's prefix, "ORIGIN:OBJECT:EPOCH:" (bridge/links/mirror_ring.hpp).
  const std::string id_prefix =
      "bench:bench/mirror-" + std::to_string(size) + ":" + std::to_string(internal::realtime_ns()) + ":";
  char id[128];
  std::copy(id_prefix.begin(), id_prefix.end(), id);
  // done[tag]: confirmed; confirms may be single or `multiple`.
  std::vector<bool> done(o.messages + 1, false);
  std::uint64_t confirmed = 0, low = 1;
  auto read_confirms = [&](timeval* wait) -> bool {
    for (;;) {
      amqp_frame_t frame;
      const int s = amqp_simple_wait_frame_noblock(a.conn(), &frame, wait);
      if (s == AMQP_STATUS_TIMEOUT) return true;
      if (s != AMQP_STATUS_OK) return error = std::string("reading confirms: ") + amqp_error_string2(s), false;
      timeval none{0, 0};
      wait = &none;
      if (frame.frame_type != AMQP_FRAME_METHOD) continue;  // a returned message's content: none expected
      const auto id = frame.payload.method.id;
      if (id == AMQP_BASIC_NACK_METHOD) return error = "the server refused a message (basic.nack)", false;
      if (id == AMQP_BASIC_RETURN_METHOD) return error = "a message came back unroutable", false;
      if (id != AMQP_BASIC_ACK_METHOD) continue;
      const auto& ack = *static_cast<amqp_basic_ack_t*>(frame.payload.method.decoded);
      const std::uint64_t tag = std::min<std::uint64_t>(ack.delivery_tag, o.messages);
      for (std::uint64_t t = ack.multiple != 0 ? low : tag; t <= tag; ++t)
        if (!done[t]) done[t] = true, ++confirmed;
      while (low <= o.messages && done[low]) ++low;
    }
  };
  const std::uint64_t t0 = monotonic_ns();
  for (std::uint32_t i = 0; i < o.messages; ++i) {
    while (i - confirmed >= o.window) {
      timeval wait{10, 0};
      if (!read_confirms(&wait)) return 0;
      if (monotonic_ns() - t0 > kDeadlineNs) return error = "no confirms for 300 s", 0;
    }
    amqp_basic_properties_t p{};
    p._flags = AMQP_BASIC_DELIVERY_MODE_FLAG;
    p.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    if (as_mirror) {
      const auto id_len = std::to_chars(id + id_prefix.size(), id + sizeof id, i).ptr - id;
      p._flags |= AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_TIMESTAMP_FLAG;
      p.message_id = amqp_bytes_t{static_cast<std::size_t>(id_len), id};
      p.timestamp = internal::realtime_ns() / 1'000'000'000;
    }
    const int s = amqp_basic_publish(a.conn(), kChannel, amqp_empty_bytes, bytes_of(queue), as_mirror ? 1 : 0, 0, &p,
                                     bytes_of(payload));
    if (s != AMQP_STATUS_OK) return error = std::string("publishing: ") + amqp_error_string2(s), 0;
  }
  while (confirmed < o.messages) {
    timeval wait{10, 0};
    if (!read_confirms(&wait)) return 0;
    if (monotonic_ns() - t0 > kDeadlineNs) return error = "no confirms for 300 s", 0;
  }
  return o.messages / (static_cast<double>(monotonic_ns() - t0) / 1e9);
}

// Consumes the N messages of `queue` (manual acks, prefetch o.prefetch).
double raw_consume(const Options& o, const std::string& password, const std::string& queue, std::string& error) {
  Amqp a;
  if (error = a.open(o, password); !error.empty()) return 0;
  amqp_basic_qos(a.conn(), kChannel, 0, static_cast<std::uint16_t>(o.prefetch), 0);
  if (error = a.check("basic.qos"); !error.empty()) return 0;
  amqp_basic_consume(a.conn(), kChannel, bytes_of(queue), amqp_empty_bytes, 0, /*no_ack*/ 0, 0, amqp_empty_table);
  if (error = a.check("consuming " + queue); !error.empty()) return 0;
  std::uint64_t got = 0, first = 0, unacked = 0, last_tag = 0;
  const std::uint64_t deadline = monotonic_ns() + kDeadlineNs;
  while (got < o.messages) {
    if (monotonic_ns() > deadline) return error = "read " + std::to_string(got) + " in 300 s", 0;
    amqp_maybe_release_buffers(a.conn());
    amqp_envelope_t envelope;
    timeval wait{1, 0};
    const amqp_rpc_reply_t r = amqp_consume_message(a.conn(), &envelope, &wait, 0);
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT) continue;
    if (r.reply_type != AMQP_RESPONSE_NORMAL) return error = "consuming: the connection failed", 0;
    if (got++ == 0) first = monotonic_ns();
    last_tag = envelope.delivery_tag;
    amqp_destroy_envelope(&envelope);
    if (++unacked == kAckEvery || got == o.messages) {
      if (amqp_basic_ack(a.conn(), kChannel, last_tag, 1) != AMQP_STATUS_OK) return error = "acknowledging", 0;
      unacked = 0;
    }
  }
  return o.messages / (static_cast<double>(monotonic_ns() - first) / 1e9);
}

std::string delete_queues(const Options& o, const std::string& password, const std::vector<std::string>& queues) {
  Amqp a;
  if (auto e = a.open(o, password); !e.empty()) return e;
  for (const auto& q : queues) {
    amqp_queue_delete(a.conn(), kChannel, bytes_of(q), 0, 0);
    if (auto e = a.check("deleting queue " + q); !e.empty()) return e;
  }
  return {};
}

// ------------------------------------------------------------------ colod side

// The link `name` of the host's colod; nullopt if colod did not answer or has no such link.
std::optional<ColodLink> link_of(const LocalCluster::Host& h, const std::string& name) {
  auto status = colod_status(h.ns(), h.control, 0.5);
  if (!status) return std::nullopt;
  for (auto& l : status->links)
    if (l.name == name) return l;
  return std::nullopt;
}

// Waits until link `name` of h is in `state` ("running", "paused").
bool wait_state(const LocalCluster::Host& h, const std::string& name, const std::string& state, std::string& error) {
  const std::uint64_t deadline = monotonic_ns() + 60'000'000'000ull;
  std::optional<ColodLink> l;
  while (monotonic_ns() < deadline) {
    l = link_of(h, name);
    if (l && l->state == state) return true;
    std::this_thread::sleep_for(kLinkPoll);
  }
  error = "link " + name + " not " + state + " after 60 s" + (l ? ": " + l->state + ": " + l->last_error : "");
  return false;
}

std::string link_toml(const std::string& mode, const std::string& object, std::uint64_t capacity,
                      std::uint32_t max_message, const std::string& rabbitmq, bool paused = false) {
  return "[[link]]\nmode = \"" + mode + "\"\nobject = \"" + object + "\"\nkind = \"topic\"\ncapacity = " +
         std::to_string(capacity) + "\nmax_message = " + std::to_string(max_message) +
         (paused ? "\npaused = true" : "") + "\nrabbitmq = { server = \"bench\", " + rabbitmq + " }\n";
}

// ------------------------------------------------------------------ the run

struct Run {
  std::vector<SizeRun> sizes;
  std::string error;  // a failure outside one size's cells
  double load_before = 0, load_after = 0;
};

// The [[rabbitmq]] table of the run's colods; its password file in a
// directory of the run, removed at the end.
struct ServerToml {
  std::string dir, toml;
  ~ServerToml() {
    if (dir.empty()) return;
    ::unlink((dir + "/password").c_str());
    ::rmdir(dir.c_str());
    forget_on_interrupt(dir + "/password");
    forget_on_interrupt(dir);
  }
};

std::string server_toml(const Options& o, const std::string& password, ServerToml& out) {
  char tmpl[] = "/tmp/colo-rmqbench-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) return "mkdtemp /tmp/colo-rmqbench-XXXXXX failed";
  out.dir = tmpl;
  unlink_on_interrupt(out.dir);
  unlink_on_interrupt(out.dir + "/password");
  std::ofstream(out.dir + "/password") << password << "\n";
  const auto colon = o.server.rfind(':');
  out.toml = "[[rabbitmq]]\nname = \"bench\"\nhost = \"" + o.server.substr(0, colon) + "\"\nport = " +
             o.server.substr(colon + 1) + "\nuser = \"" + o.user + "\"\npassword_file = \"" + out.dir + "/password\"\n";
  return {};
}

Run run(const Options& o, const std::string& password, Progress& progress) {
  Run r;
  const std::string id = run_id();
  for (auto size : o.sizes) {
    SizeRun s;
    s.size = size;
    r.sizes.push_back(s);
  }
  // The one queue of each size's cells (the head comment says why one).
  auto queue_of = [&](const SizeRun& s) { return id + ".size-" + std::to_string(s.size); };
  std::vector<std::string> queues;
  for (const auto& s : r.sizes) queues.push_back(queue_of(s));
  ServerToml server;
  if (auto e = server_toml(o, password, server); !e.empty()) return r.error = e, r;

  // A queue of 1 KiB messages reads at one of two speeds (40-50 k or
  // 80-110 k msg/s on the development machine), for rabbitmq-c and colod
  // alike; a queue just filled was most often the slow one. Each consume
  // cell starts kSettleNs after its queue was filled, so that both read
  // queues of the same age; the rest is why the goal is judged on the
  // median of the rounds.
  constexpr std::uint64_t kSettleNs = 5'000'000'000;
  auto settle = [](std::uint64_t filled_ns) {
    const std::uint64_t now = monotonic_ns();
    if (now < filled_ns + kSettleNs) std::this_thread::sleep_for(std::chrono::nanoseconds(filled_ns + kSettleNs - now));
  };
  // Before each publish cell: what the server still does for the cell
  // before (deleting what was consumed or purged) is not charged to it.
  constexpr auto kQuiet = std::chrono::seconds(3);

  // A colod whose source link consumes the mirror's queue (N messages with
  // colo's message ids, filled at `filled_ns`) into a topic nobody reads:
  // its ring wraps (reclaim is part of the cost), 64 MiB like a busy
  // topic's. The link starts paused (connected, `prefetch` deliveries
  // taken, nothing published) and is resumed once the queue has settled, so
  // the cell times the link, not colod's start. msg/s from the first count
  // of published records that moved to the N-th (the prefetched ones before
  // it are not counted); 0 and `error` set if it failed.
  auto measure_source = [&](SizeRun& s, std::uint64_t filled_ns) -> double {
    const std::string link = "source:bench/source-" + std::to_string(s.size);
    LocalCluster::Settings settings;
    settings.colod = o.colod;
    settings.extra_toml =
        server.toml + link_toml("source", "bench/source-" + std::to_string(s.size),
                                std::max<std::uint64_t>(64ull << 20, ring_for(1000, s.size + 512)), s.size + 512,
                                "queue = \"" + queue_of(s) + "\", prefetch = " + std::to_string(o.prefetch), true);
    LocalCluster cluster;
    if (auto started = cluster.start(settings, {{"bench", "rmqbench-s-"}}); !started) {
      s.error = started.error().message;
      return 0;
    }
    auto& h = cluster.host(0);
    double rate = 0;
    if (wait_state(h, link, "paused", s.error)) {
      settle(filled_ns);
      if (auto resumed = colod_pause_link(h.ns(), h.control, 1.0, link, false); !resumed) {
        s.error = resumed.error().message;
      } else {
        std::uint64_t first = 0, at_first = 0, done = 0;
        if (wait_counter(h, link, true, o.messages, first, done, s.error, &at_first) && done > first)
          rate = static_cast<double>(o.messages - at_first) / (static_cast<double>(done - first) / 1e9);
        else if (s.error.empty())
          s.error = "the source took every message before its counter was read twice (use more --messages)";
      }
    }
    (void)cluster.stop();
    return rate;
  };

  // A colod with a mirror link per size, up through the rounds.
  {
    LocalCluster::Settings settings;
    settings.colod = o.colod;
    settings.extra_toml = server.toml;
    for (const auto& s : r.sizes)
      settings.extra_toml += link_toml("mirror", "bench/mirror-" + std::to_string(s.size), ring_for(o.messages, s.size),
                                       s.size,
                                       "queue = \"" + queue_of(s) + "\", window = " + std::to_string(o.window));
    progress.show("colod with mirror links");
    LocalCluster cluster;
    if (auto started = cluster.start(settings, {{"bench", "rmqbench-m-"}}); !started)
      return r.error = started.error().message, r;
    auto& host = cluster.host(0);
    NodeOptions node_options;
    node_options.ns = host.ns();
    auto node = Node::open(node_options);
    if (!node) return r.error = node.error().message, r;
    for (auto& s : r.sizes)
      (void)wait_state(host, "mirror:bench/mirror-" + std::to_string(s.size), "running", s.error);

    // The cells, interleaved: round after round, each size's raw, + id and
    // mirror publish in turn, rabbitmq-c's consumer on what the + id cell
    // left and colod's source on what the mirror left (the same messages),
    // all in the size's one queue, so that the consume cells too are
    // measured in every round under the same conditions.
    const auto quiet = o.quick ? std::chrono::seconds(0) : kQuiet;
    for (std::uint32_t round = 0; round < o.rounds; ++round) {
      for (auto& s : r.sizes) {
        if (!s.error.empty()) continue;
        const std::string of = std::to_string(s.size) + " B, round " + std::to_string(round + 1) + "/" +
                               std::to_string(o.rounds);
        const std::string queue = queue_of(s);
        PublishRound pr;
        pr.load = load_average();
        progress.show("raw publish, " + of);
        std::this_thread::sleep_for(quiet);
        pr.raw = raw_publish(o, password, queue, s.size, false, s.error);
        if (!s.error.empty()) continue;
        progress.show("raw publish with colo's message id, " + of);
        // Emptied before the quiet, as for the mirror: deleting what raw
        // left is not charged to this cell.
        if (s.error = empty_queue(o, password, queue); !s.error.empty()) continue;
        std::this_thread::sleep_for(quiet);
        pr.as_mirror = raw_publish(o, password, queue, s.size, true, s.error);
        if (!s.error.empty()) continue;
        const std::uint64_t as_mirror_filled = monotonic_ns();
        progress.show("raw consume, " + of);
        settle(as_mirror_filled);
        pr.raw_consume = raw_consume(o, password, queue, s.error);
        if (!s.error.empty()) continue;
        progress.show("mirror, " + of);
        if (s.error = empty_queue(o, password, queue); !s.error.empty()) continue;
        std::this_thread::sleep_for(quiet);
        const std::string object = "bench/mirror-" + std::to_string(s.size);
        const std::uint64_t t0 = monotonic_ns();
        if (s.error = publish_all(*node, object, o.messages, s.size); !s.error.empty()) continue;
        // The link's counter counts every round's messages.
        std::uint64_t first = 0, done = 0;
        if (!wait_counter(host, "mirror:" + object, false, std::uint64_t{o.messages} * (round + 1), first, done,
                          s.error))
          continue;
        pr.mirror = o.messages / (static_cast<double>(done - t0) / 1e9);
        progress.show("colod source, " + of);
        pr.source = measure_source(s, done);
        if (!s.error.empty()) continue;
        s.rounds.push_back(pr);
      }
    }
    (void)cluster.stop();
  }

  if (auto e = delete_queues(o, password, queues); !e.empty() && r.error.empty()) r.error = e;
  return r;
}

std::string ratio_or_dash(double a, double b) { return a > 0 && b > 0 ? ratio_text(a / b) : "-"; }

int run_bench_rabbitmq(Options o, const CLI::App& cmd) {
  if (o.quick && cmd.count("--messages") == 0) o.messages = 10'000;
  if (o.server.empty()) {
    const char* env = std::getenv("COLO_RABBITMQ");
    o.server = env != nullptr ? env : "";
  }
  if (o.server.empty())
    return fail("no RabbitMQ server: give --server HOST:PORT or set COLO_RABBITMQ (tests/services/services.sh start "
                "rabbitmq starts one on loopback)");
  std::string password = "guest";
  if (!o.password_file.empty()) {
    std::ifstream in(o.password_file);
    if (!in || !std::getline(in, password) || password.empty())
      return fail("--password-file: cannot read a password from the first line of '" + o.password_file + "'");
  }
  if (o.colod.empty()) o.colod = find_colod();
  Run r;
  const double load_before = load_average();  // r is replaced by run()'s result
  {
    Progress progress(!o.json);
    r = run(o, password, progress);
  }
  r.load_before = load_before;
  r.load_after = load_average();
  bool correct = r.error.empty();
  for (const auto& s : r.sizes) correct = correct && s.error.empty();
  if (o.json) {
    nlohmann::json sizes = nlohmann::json::array();
    for (const auto& s : r.sizes) {
      nlohmann::json rounds = nlohmann::json::array();
      for (const auto& pr : s.rounds)
        rounds.push_back({{"load_average_1min", pr.load},
                          {"raw_publish_msg_per_s", pr.raw},
                          {"raw_publish_as_mirror_msg_per_s", pr.as_mirror},
                          {"mirror_msg_per_s", pr.mirror},
                          {"mirror_over_raw", pr.raw > 0 ? pr.mirror / pr.raw : 0},
                          {"mirror_over_raw_as_mirror", pr.as_mirror > 0 ? pr.mirror / pr.as_mirror : 0},
                          {"raw_consume_msg_per_s", pr.raw_consume},
                          {"source_msg_per_s", pr.source},
                          {"source_over_raw", pr.raw_consume > 0 ? pr.source / pr.raw_consume : 0}});
      sizes.push_back({{"size", s.size},
                       {"rounds", rounds},
                       {"raw_publish_msg_per_s_median", median(each(s, &PublishRound::raw))},
                       {"raw_publish_as_mirror_msg_per_s_median", median(each(s, &PublishRound::as_mirror))},
                       {"mirror_msg_per_s_median", median(each(s, &PublishRound::mirror))},
                       {"mirror_over_raw_median", median(ratios(s, &PublishRound::mirror, &PublishRound::raw))},
                       {"mirror_over_raw_as_mirror_median",
                        median(ratios(s, &PublishRound::mirror, &PublishRound::as_mirror))},
                       {"raw_consume_msg_per_s_median", median(each(s, &PublishRound::raw_consume))},
                       {"source_msg_per_s_median", median(each(s, &PublishRound::source))},
                       {"source_over_raw_median", median(ratios(s, &PublishRound::source, &PublishRound::raw_consume))},
                       {"goal_at_least", kGoalRatio},
                       {"error", s.error}});
    }
    std::cout << nlohmann::json{{"benchmark", "rabbitmq"},
                                {"machine", machine_json()},
                                {"server", o.server},
                                {"messages", o.messages},
                                {"window", o.window},
                                {"prefetch", o.prefetch},
                                {"rounds", o.rounds},
                                {"load_average_1min", {{"before", r.load_before}, {"after", r.load_after}}},
                                {"sizes", sizes},
                                {"error", r.error},
                                {"correct", correct}}
                     .dump(2)
              << '\n';
    return correct ? kExitOk : kExitFailure;
  }
  std::printf("colo bench rabbitmq: colod's RabbitMQ links against rabbitmq-c on the same server (%s)\n%s\n",
              o.server.c_str(), machine_line().c_str());
  std::printf(
      "load average (1 min): %.2f before, %.2f after; %u messages per cell, confirm window %u, prefetch %u, %u "
      "rounds\n\n",
      r.load_before, r.load_after, o.messages, o.window, o.prefetch, o.rounds);
  // The publish cells, round by round, then each size's median (and range).
  std::printf("%-7s %-7s %5s %13s %13s %13s %7s %7s %6s\n", "size", "round", "load", "raw publish", "+ msg id",
              "colod mirror", "/raw", "/+id", "goal");
  for (const auto& s : r.sizes) {
    for (std::size_t i = 0; i < s.rounds.size(); ++i) {
      const auto& pr = s.rounds[i];
      std::printf("%-7s %-7zu %5.2f %11s/s %11s/s %11s/s %7s %7s\n", human_bytes(s.size).c_str(), i + 1, pr.load,
                  human_rate(pr.raw).c_str(), human_rate(pr.as_mirror).c_str(), human_rate(pr.mirror).c_str(),
                  ratio_or_dash(pr.mirror, pr.raw).c_str(), ratio_or_dash(pr.mirror, pr.as_mirror).c_str());
    }
    if (!s.rounds.empty()) {
      const double over_raw = median(ratios(s, &PublishRound::mirror, &PublishRound::raw));
      std::printf("%-7s %-13s %11s/s %11s/s %11s/s %7s %7s %6s\n", human_bytes(s.size).c_str(), "median",
                  human_rate(median(each(s, &PublishRound::raw))).c_str(),
                  human_rate(median(each(s, &PublishRound::as_mirror))).c_str(),
                  human_rate(median(each(s, &PublishRound::mirror))).c_str(), ratio_or_dash(over_raw, 1).c_str(),
                  ratio_or_dash(median(ratios(s, &PublishRound::mirror, &PublishRound::as_mirror)), 1).c_str(),
                  over_raw >= kGoalRatio ? "met" : "MISSED");
      auto range = [&](double PublishRound::*f) {
        const Spread v = spread_of(each(s, f));
        return human_rate(v.min) + "-" + human_rate(v.max);
      };
      auto ratio_range = [&](double PublishRound::*num, double PublishRound::*den) {
        const Spread v = spread_of(ratios(s, num, den));
        return ratio_text(v.min) + "-" + ratio_text(v.max);
      };
      std::printf("%-7s %-13s %13s %13s %13s %7s %7s\n", "", "range", range(&PublishRound::raw).c_str(),
                  range(&PublishRound::as_mirror).c_str(), range(&PublishRound::mirror).c_str(),
                  ratio_range(&PublishRound::mirror, &PublishRound::raw).c_str(),
                  ratio_range(&PublishRound::mirror, &PublishRound::as_mirror).c_str());
    }
    if (!s.error.empty()) std::printf("%-7s FAILED: %s\n", human_bytes(s.size).c_str(), s.error.c_str());
  }
  std::printf("\n%-7s %-13s %13s %13s %8s %6s\n", "size", "round", "raw consume", "colod source", "/raw", "goal");
  for (const auto& s : r.sizes) {
    for (std::size_t i = 0; i < s.rounds.size(); ++i)
      std::printf("%-7s %-13zu %11s/s %11s/s %8s\n", human_bytes(s.size).c_str(), i + 1,
                  human_rate(s.rounds[i].raw_consume).c_str(), human_rate(s.rounds[i].source).c_str(),
                  ratio_or_dash(s.rounds[i].source, s.rounds[i].raw_consume).c_str());
    if (s.rounds.empty()) continue;
    const double over_raw = median(ratios(s, &PublishRound::source, &PublishRound::raw_consume));
    std::printf("%-7s %-13s %11s/s %11s/s %8s %6s\n", human_bytes(s.size).c_str(), "median",
                human_rate(median(each(s, &PublishRound::raw_consume))).c_str(),
                human_rate(median(each(s, &PublishRound::source))).c_str(), ratio_or_dash(over_raw, 1).c_str(),
                over_raw >= kGoalRatio ? "met" : "MISSED");
  }
  if (!r.error.empty()) std::printf("FAILED: %s\n", r.error.c_str());
  std::printf(
      "raw publish: rabbitmq-c, persistent messages into a durable queue, confirms with the mirror's window, no\n"
      "properties; + msg id: the same as the mirror publishes (mandatory, timestamp, message id). mirror: from\n"
      "the first publish into the ring to RabbitMQ's last confirm. raw consume: rabbitmq-c, manual acks, the\n"
      "source's prefetch, what + msg id published; source: colod consumes what the mirror published into a topic.\n"
      "The five run interleaved, round after round, all of a size in one queue; goals (mirror/raw, source/raw at\n"
      "least 0.8) are judged on the median of the rounds' ratios, reported, not enforced; exit status 1 only if a\n"
      "measurement failed or a message was lost.\n");
  return correct ? kExitOk : kExitFailure;
}

}  // namespace

void register_bench_rabbitmq(CLI::App& bench, int& exit_code) {
  auto* cmd = bench.add_subcommand("rabbitmq", "colod's RabbitMQ mirror and source against rabbitmq-c on the same server");
  cmd->footer(
      "Needs a RabbitMQ server: --server HOST:PORT or $COLO_RABBITMQ (tests/services/services.sh start rabbitmq "
      "starts one on loopback). Each size: rabbitmq-c's publisher with confirms alone, then colod's mirror (publish "
      "into a ring, colod publishes with the same confirm window); rabbitmq-c's consumer alone, then colod's source "
      "(colod consumes into a ring with the same prefetch). The cells run interleaved --rounds times, all of a size "
      "in one queue (median and range reported). Goals: mirror and source each at least 80% of "
      "rabbitmq-c's msg/s.\n"
      "Examples:\n"
      "  colo bench rabbitmq --quick\n"
      "  colo bench rabbitmq --sizes 64 --messages 200000 --json");
  auto o = std::make_shared<Options>();
  cmd->add_option("--server", o->server, "the server, HOST:PORT (default: $COLO_RABBITMQ)");
  cmd->add_option("--user", o->user, "the user, vhost /")->capture_default_str();
  cmd->add_option("--password-file", o->password_file, "a file whose first line is the password (default: guest)");
  cmd->add_option("--sizes", o->sizes, "message sizes in bytes (64,1024 or 64 1024)")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::Range(1u, 1u << 20));
  cmd->add_option("--messages", o->messages, "messages per cell")->capture_default_str()->check(CLI::Range(1000u, 100'000'000u));
  cmd->add_option("--window", o->window, "messages published and not yet confirmed, at most (raw and mirror)")
      ->capture_default_str()
      ->check(CLI::Range(1u, 65535u));
  cmd->add_option("--prefetch", o->prefetch, "deliveries not yet acknowledged, at most (raw and source)")
      ->capture_default_str()
      ->check(CLI::Range(1u, 65535u));
  cmd->add_option("--rounds", o->rounds, "rounds of the publish cells (raw, + msg id, mirror), interleaved")
      ->capture_default_str()
      ->check(CLI::Range(1u, 100u));
  cmd->add_option("--colod", o->colod, "the colod program (default: $COLOD_BIN, beside colo-bench, or on $PATH)");
  cmd->add_flag("--quick", o->quick, "10,000 messages per cell (a smoke run)");
  cmd->add_flag("--json", o->json, "print JSON");
  cmd->callback([o, cmd, &exit_code] { exit_code = run_bench_rabbitmq(*o, *cmd); });
}

}  // namespace colo::cli
