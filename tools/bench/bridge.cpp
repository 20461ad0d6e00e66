// `colo bench bridge`: what federation costs, against the raw transport under it.
//
// Two "hosts" on this machine are two namespaces, each with its own colod,
// linked over 127.0.0.1 like two machines of a cluster (plain TCP, no CURVE),
// and one cluster topic declared in both configs:
//
//   host A: namespace bridgebench-a-<pid>          host B: namespace bridgebench-b-<pid>
//   sender --loan/commit--> ring bench/bridge       ring bench/bridge --view--> receiver
//                              | colod bench-a       ^ colod bench-b              ('block' subscriber)
//                              +--- data frames ---> + (tcp://127.0.0.1:<port>)
//                                   <--- credit ----
//
//   baseline (zmq-tcp-pushpull): sender -- PUSH (connect) --> tcp://127.0.0.1:<port> --> PULL (bind) -- receiver
//
// Both run through the cells of the message benchmark (msg_bench.hpp),
// one after the other for each size: a forked sender and a forked receiver,
// warm-up until the receiver has heard from the sender (so the subscriber is in
// place and the colods stream before anything is timed), then
//   - throughput: N messages (--messages) as fast as the channel takes them;
//     msg/s = N / (first send .. last receive), every payload checked;
//   - latency: a fixed rate (--rate), message i due at t0 + i/rate and carrying
//     that intended CLOCK_MONOTONIC time, so a stall anywhere counts (no
//     coordinated omission); one-way p50/p99/p99.9/max at the receiver.
// The goals: colo-bridge at least 80% of ZeroMQ's 64-byte
// msg/s, and a 64-byte p50 at most 2x ZeroMQ's.
//
// Life of the daemons (a LocalCluster of two hosts): started once for the
// run (a scratch directory holds their configs, logs and control sockets);
// the run waits, bounded, until each reports the other connected over its
// control socket; before each
// colo-bridge cell it checks they still run (a cell fails with the colod's
// last log lines instead of timing out); after the last cell it asks both for
// their counters, stops them with SIGTERM (SIGKILL after 5 s) and removes both
// namespaces and the scratch directory. On Ctrl-C the harness's signal
// handler SIGKILLs them and unlinks the same files; a colod also gets SIGKILL
// if colo-bench itself dies (PR_SET_PDEATHSIG).
#include "commands.hpp"

#include <unistd.h>  // getpid, isatty, sysconf

#include <algorithm>
#include <array>
#include <cstdio>
#include <iostream>
#include <memory>

#include "app.hpp"  // fail
#include "colod_client.hpp"
#include "format.hpp"
#include "link_bench.hpp"  // cpu_seconds
#include "local_cluster.hpp"  // LocalCluster, find_colod
#include "msg_bench.hpp"
#include "transport.hpp"

namespace colo::cli {
namespace {

using namespace std::chrono_literals;

constexpr const char* kTopic = "bench/bridge";
constexpr const char* kSubject = "colo-bridge";
constexpr const char* kBaseline = "zmq-tcp-pushpull";
constexpr double kStartLimitS = 20;  // both daemons up and connected to each other
constexpr auto kStatusTimeout = 500ms;

// The daemons' part of the configuration (the rest is fixed above).
struct Settings {
  std::string colod;                       // program: --colod, $COLOD_BIN, beside colo-bench, $PATH
  std::uint64_t capacity = 64ull << 20;    // the topic's ring on each host
  std::uint32_t max_message = 0;           // the largest of --sizes
  std::uint32_t max_frame = 4u << 20;      // colod's limits.max_frame (its default, or more for large sizes)
  std::uint32_t credit = 0;                // colod's limits.credit; 0: colod's default
  std::uint32_t heartbeat_ms = 200;
};

// ------------------------------------------------------------ colod status

// One colod's view of its single peer, and what it rejected.
struct ColodCounters {
  bool connected = false;
  std::uint64_t messages_in = 0, messages_out = 0, bytes_in = 0, bytes_out = 0;
  std::uint64_t gaps_filled = 0, lost = 0, duplicates = 0;
  std::uint64_t bad_frames = 0, rejected_peers = 0, failed_handshakes = 0, dropped_connections = 0;
};

Result<ColodCounters> counters_of(const std::string& socket) {
  auto status = colod_status("", socket, std::chrono::duration<double>(kStatusTimeout).count());
  if (!status) return std::move(status).error();
  ColodCounters c;
  c.connected = !status->peers.empty();
  for (const auto& p : status->peers) {
    c.connected = c.connected && p.connected;
    c.messages_in += p.messages_in;
    c.messages_out += p.messages_out;
    c.bytes_in += p.bytes_in;
    c.bytes_out += p.bytes_out;
    c.gaps_filled += p.gaps_filled;
    c.lost += p.lost;
    c.duplicates += p.duplicates;
  }
  c.bad_frames = status->bad_frames;
  c.rejected_peers = status->rejected_peers;
  c.failed_handshakes = status->failed_handshakes;
  c.dropped_connections = status->dropped_connections;
  return c;
}

nlohmann::json to_json(const ColodCounters& c) {
  return {{"connected", c.connected},     {"messages_in", c.messages_in},
          {"messages_out", c.messages_out}, {"bytes_in", c.bytes_in},
          {"bytes_out", c.bytes_out},     {"gaps_filled", c.gaps_filled},
          {"lost", c.lost},               {"duplicates", c.duplicates},
          {"bad_frames", c.bad_frames},   {"rejected_peers", c.rejected_peers},
          {"failed_handshakes", c.failed_handshakes}, {"dropped_connections", c.dropped_connections}};
}

// ------------------------------------------------------------------ hosts

struct Findings;

// Two colod daemons (a LocalCluster of two hosts), A (the senders' host) and
// B (the receivers'), each federating its own namespace with the other's over
// 127.0.0.1, with the topic declared in both.
//
// Contract: used by the single thread of colo-bench (it forks). Nothing runs
// until start(); stop() (also called by finish() and the destructor) leaves
// no daemon, no segment of either namespace and no scratch file behind, and
// is idempotent.
class BridgeHosts {
 public:
  BridgeHosts() : pid_(std::to_string(::getpid())) {}
  BridgeHosts(const BridgeHosts&) = delete;
  BridgeHosts& operator=(const BridgeHosts&) = delete;
  ~BridgeHosts() { stop(); }

  // What LocalCluster makes of the prefixes, known before start().
  std::string sender_ns() const { return kHosts[0].prefix + pid_; }
  std::string receiver_ns() const { return kHosts[1].prefix + pid_; }

  // Starts both daemons and waits (bounded) until each reports the other
  // connected. "" or what went wrong, with the daemons' last log lines.
  std::string start(const Settings& settings);
  // "" while both daemons run, else which one ended and how.
  std::string check() { return cluster_.ended(); }
  // After the last cell: both daemons' counters, then stop(); the report.
  bench::ReportContext finish();
  void stop();

 private:
  struct Role {
    const char* role;
    const char* node;
    std::string prefix;
  };
  inline static const Role kHosts[2] = {{"A", "bench-a", "bridgebench-a-"}, {"B", "bench-b", "bridgebench-b-"}};
  std::vector<std::string> report_lines(const Findings& f, bool failed);
  static std::string label(std::size_t i) {
    return std::string("colod ") + kHosts[i].role + " (" + kHosts[i].node + ")";
  }

  std::string pid_;
  Settings settings_;
  LocalCluster cluster_;
  pid_t pids_[2] = {0, 0};         // the daemons, kept for the report once stopped
  double cpu_s_[2] = {-1, -1};     // CPU time over the whole run, read just before stopping them
  std::vector<std::string> leftovers_;
  bool started_ = false;
  bool stopped_ = false;
};

std::string BridgeHosts::start(const Settings& settings) {
  settings_ = settings;
  started_ = true;
  LocalCluster::Settings s;
  s.colod = settings.colod;
  s.limits_toml = "max_frame = " + std::to_string(settings.max_frame) +
                  "\nheartbeat_ms = " + std::to_string(settings.heartbeat_ms) + "\n" +
                  (settings.credit > 0 ? "credit = " + std::to_string(settings.credit) + "\n" : std::string());
  s.extra_toml = "[log]\nlevel = \"info\"\n[[topic]]\nname = \"" + std::string(kTopic) +
                 "\"\ncapacity = " + std::to_string(settings.capacity) +
                 "\nmax_message = " + std::to_string(settings.max_message) + "\nbackpressure = \"block\"\n";
  s.objects = {kTopic};  // colod creates it; unlinked even if the run is interrupted
  s.start_timeout_s = kStartLimitS;
  if (auto started = cluster_.start(s, {{kHosts[0].node, kHosts[0].prefix}, {kHosts[1].node, kHosts[1].prefix}});
      !started)
    return started.error().message;
  for (std::size_t i = 0; i < 2; ++i) {
    pids_[i] = cluster_.host(i).pid;
    const std::string expected = i == 0 ? sender_ns() : receiver_ns();
    if (cluster_.host(i).ns() != expected)
      return "namespace " + cluster_.host(i).ns() + " is not the expected " + expected;
  }
  return {};
}

void BridgeHosts::stop() {
  if (!started_ || stopped_) return;
  stopped_ = true;
  for (auto& left : cluster_.stop()) leftovers_.push_back(left.front() == '/' ? left : "/dev/shm/" + left);
}

// What the daemons said at the end of the run, and what it means for it.
struct Findings {
  std::array<Result<ColodCounters>, 2> status;
  std::uint64_t lost = 0, duplicates = 0, rejected = 0;  // A->B, as B counts; frames refused by either
  std::vector<std::string> warnings;
};

Findings findings_of(std::array<Result<ColodCounters>, 2> status) {
  Findings f{std::move(status), 0, 0, 0, {}};
  // What crossed from A to B is what B counts from A: a loss or a duplicate
  // there fails the run. B publishes nothing of its own, so a loss or a
  // duplicate A is told about on B's stream is a false report (a colod bug:
  // B's cursor for A counts the relayed messages it was lapped by, which it
  // would never have sent): a warning, since every message of every cell was
  // checked at the receiver.
  if (f.status[1]) {
    f.lost = f.status[1].value().lost;
    f.duplicates = f.status[1].value().duplicates;
  }
  for (const auto& s : f.status)
    if (s) f.rejected += s.value().bad_frames + s.value().rejected_peers + s.value().failed_handshakes;
  if (f.status[0] && f.status[0].value().lost + f.status[0].value().duplicates > 0)
    f.warnings.push_back("colod A was told that " + with_commas(f.status[0].value().lost) +
                         " message(s) of B's stream were lost (and dropped " +
                         with_commas(f.status[0].value().duplicates) +
                         " duplicate(s)), but B publishes nothing of its own: a false report of colod's (B's "
                         "cursor for A counts the relayed messages that lapped it); A->B is unaffected");
  return f;
}

bench::ReportContext BridgeHosts::finish() {
  std::array<Result<ColodCounters>, 2> status = {counters_of(cluster_.host(0).control),
                                                 counters_of(cluster_.host(1).control)};
  for (std::size_t i = 0; i < 2; ++i) cpu_s_[i] = cpu_seconds(pids_[i]);
  stop();
  const Findings f = findings_of(std::move(status));
  bench::ReportContext r;
  r.failed = f.lost > 0 || f.duplicates > 0 || f.rejected > 0 || !leftovers_.empty();
  nlohmann::json hosts = nlohmann::json::array();
  for (std::size_t i = 0; i < 2; ++i) {
    const LocalCluster::Host& h = cluster_.host(i);
    const bool clean = h.exit.how == ChildExit::How::exited && h.exit.code == 0;
    nlohmann::json j = {{"role", kHosts[i].role},
                        {"node", h.name},
                        {"namespace", h.ns()},
                        {"endpoint", h.endpoint()},
                        {"pid", pids_[i]},
                        {"exit", h.exit.text()},
                        {"cpu_seconds", cpu_s_[i]},
                        {"stopped_cleanly", clean}};
    if (f.status[i]) j["counters"] = to_json(f.status[i].value());
    else j["counters_error"] = f.status[i].error().message;
    j["log_tail"] = h.log_tail;
    hosts.push_back(j);
    r.failed = r.failed || !clean || !f.status[i];
  }
  r.json = {{"colod", settings_.colod},
            {"topic",
             {{"name", kTopic},
              {"capacity", settings_.capacity},
              {"max_message", settings_.max_message},
              {"backpressure", "block"}}},
            {"limits",
             {// null: colod's default
              {"credit", settings_.credit > 0 ? nlohmann::json(settings_.credit) : nlohmann::json(nullptr)},
              {"heartbeat_ms", settings_.heartbeat_ms},
              {"max_frame", settings_.max_frame}}},
            {"link", "tcp://127.0.0.1, plain (no CURVE)"},
            {"hosts", hosts},
            {"a_to_b", {{"lost", f.lost}, {"duplicates", f.duplicates}}},
            {"rejected_frames", f.rejected},
            {"warnings", f.warnings},
            {"leftovers", leftovers_}};
  r.lines = report_lines(f, r.failed);
  return r;
}

std::vector<std::string> BridgeHosts::report_lines(const Findings& f, bool failed) {
  std::vector<std::string> lines;
  lines.push_back("hosts: two namespaces of this machine, each with its own colod, linked over 127.0.0.1 "
                  "(plain TCP, no CURVE):");
  for (std::size_t i = 0; i < 2; ++i) {
    const LocalCluster::Host& h = cluster_.host(i);
    char buf[256];
    std::snprintf(buf, sizeof buf, "  %s  colod %-8s pid %-8d namespace %-22s %-22s %s", kHosts[i].role,
                  h.name.c_str(), static_cast<int>(pids_[i]), h.ns().c_str(), h.endpoint().c_str(),
                  i == 0 ? "senders publish here" : "receivers subscribe here ('block')");
    lines.push_back(buf);
  }
  lines.push_back(std::string("cluster topic ") + kTopic + ": ring " + human_bytes(settings_.capacity) +
                  " per host, max_message " + human_bytes(settings_.max_message) +
                  ", backpressure block; colod limits: credit " +
                  (settings_.credit > 0 ? std::to_string(settings_.credit) : std::string("(colod's default)")) +
                  ", heartbeat " + std::to_string(settings_.heartbeat_ms) + " ms, max_frame " +
                  human_bytes(settings_.max_frame));
  lines.push_back("colod: " + settings_.colod);
  if (f.status[0] && f.status[1]) {
    const ColodCounters& a = f.status[0].value();
    const ColodCounters& b = f.status[1].value();
    lines.push_back("colod counters over the run (warm-up messages included): A sent " + with_commas(a.messages_out) +
                    " messages (" + human_bytes(a.bytes_out) + "), B received " + with_commas(b.messages_in) + " (" +
                    human_bytes(b.bytes_in) + "); A->B lost " + std::to_string(f.lost) + ", duplicates " +
                    std::to_string(f.duplicates) + "; bad frames/refused " + std::to_string(f.rejected) +
                    (f.lost + f.duplicates + f.rejected > 0 ? "  <- FAILED" : ""));
  }
  if (f.status[1] && f.status[1].value().messages_in > 0 && cpu_s_[0] >= 0 && cpu_s_[1] >= 0) {
    // What carrying one message costs each daemon, idle polling included:
    // a figure that other work on the machine moves much less than msg/s.
    const double crossed = static_cast<double>(f.status[1].value().messages_in);
    char buf[200];
    std::snprintf(buf, sizeof buf,
                  "colod CPU time over the run (every cell, idle polls included): A %.2f s, B %.2f s; "
                  "per message crossed: A %s, B %s",
                  cpu_s_[0], cpu_s_[1], human_duration_ns(cpu_s_[0] * 1e9 / crossed).c_str(),
                  human_duration_ns(cpu_s_[1] * 1e9 / crossed).c_str());
    lines.push_back(buf);
  }
  for (const auto& w : f.warnings) lines.push_back("warning: " + w);
  for (std::size_t i = 0; i < 2; ++i)
    if (!f.status[i]) lines.push_back(label(i) + ": no counters: " + f.status[i].error().message + "  <- FAILED");
  std::string exits;
  for (std::size_t i = 0; i < 2; ++i)
    exits += (exits.empty() ? "" : "; ") + label(i) + ": " + cluster_.host(i).exit.text() + " after SIGTERM";
  lines.push_back(exits);
  if (failed)
    for (std::size_t i = 0; i < 2; ++i)
      lines.push_back("  <- FAILED; " + label(i) + ", last lines of its log:\n" + cluster_.host(i).log_tail);
  if (leftovers_.empty()) {
    lines.push_back("cleanup: both daemons reaped, both namespaces and the scratch directory removed");
  } else {
    std::string left;
    for (const auto& l : leftovers_) left += " " + l;
    lines.push_back("cleanup: left behind (a bug of colo bench bridge; remove by hand):" + left + "  <- FAILED");
  }
  return lines;
}

// ----------------------------------------------------------------- command

bench::RemoteTopic remote_topic(BridgeHosts& hosts, const Settings& settings) {
  bench::RemoteTopic t;
  t.name = kSubject;
  t.description =
      "colo Topic published on host A, carried by colod A -> tcp://127.0.0.1 -> colod B into the same topic on "
      "host B, read there by a 'block' subscriber; loan/commit + in-place views";
  t.topic = kTopic;
  t.sender_ns = hosts.sender_ns();
  t.receiver_ns = hosts.receiver_ns();
  t.max_message = settings.max_message;
  t.note = "ring " + human_bytes(settings.capacity) + " per host; the depth column does not apply";
  t.check = [&hosts] { return hosts.check(); };
  return t;
}

int run_bench_bridge(bench::MsgBenchCli& cli, Settings settings, bool list) {
  BridgeHosts hosts;
  auto make_transports = [&] {
    std::vector<std::unique_ptr<bench::TransportFactory>> out;
    out.push_back(bench::colo_remote_topic_transport(remote_topic(hosts, settings)));
    out.push_back(bench::zmq_tcp_transport());
    return out;
  };
  auto transports = make_transports();
  if (list) {
    for (const auto& t : transports)
      std::printf("%-17s %-9s %s\n", t->name().c_str(), bench::fanout_name(t->fanout()), t->description().c_str());
    return kExitOk;
  }
  if (const std::string error = bench::resolve_msg_bench_options(cli, transports); !error.empty()) {
    std::cerr << "colo bench bridge: " << error << '\n';
    return kExitUsage;
  }
  bench::MsgBenchOptions& o = cli.options;
  std::size_t largest = 64;
  for (std::size_t size : o.sizes) largest = std::max(largest, size);
  // A record (payload + 32 bytes, rounded up to 64) must fit twice in the ring.
  if (largest > settings.capacity / 2 - 64) {
    std::cerr << "colo bench bridge: --capacity " << settings.capacity << " is too small for " << largest
              << "-byte messages (at most capacity/2 - 64)\n";
    return kExitUsage;
  }
  settings.max_message = static_cast<std::uint32_t>(largest);
  settings.max_frame = static_cast<std::uint32_t>(std::max<std::size_t>(settings.max_frame, largest + 4096));
  transports = make_transports();  // now with the topic's max_message

  const bool bridge_runs =
      o.transports.empty() || std::find(o.transports.begin(), o.transports.end(), kSubject) != o.transports.end();
  if (bridge_runs) {
    if (settings.colod.empty()) settings.colod = find_colod();
    if (settings.colod.empty())
      return fail("bench bridge: cannot find colod (beside colo-bench, in ../../bridge/ of a build tree, or on $PATH); "
                  "set COLOD_BIN or pass --colod PATH");
    const bool tty = ::isatty(STDERR_FILENO) != 0;
    if (tty) std::fprintf(stderr, "colo bench bridge: starting colod A and B, waiting until they are connected...");
    const std::string error = hosts.start(settings);
    if (tty) std::fprintf(stderr, "\r\033[K");
    if (!error.empty()) {
      hosts.stop();
      return fail("bench bridge: " + error);
    }
    transports = make_transports();  // the same, with the settings hosts.start() used
    o.context = [&hosts] { return hosts.finish(); };
  }
  const int rc = bench::run_msg_bench(o, transports);
  hosts.stop();
  return rc;
}

}  // namespace

void register_bench_bridge(CLI::App& bench_group, int& exit_code) {
  auto* cmd = bench_group.add_subcommand(
      "bridge",
      "a cluster topic through two colod on loopback vs raw ZeroMQ PUSH/PULL over the same loopback TCP: "
      "msg/s and one-way latency percentiles at 64 B and 4 KiB");
  cmd->footer(
      "Two 'hosts' are two namespaces of this machine (bridgebench-a-<pid>, bridgebench-b-<pid>), each with its own "
      "colod (found through --colod, $COLOD_BIN, beside colo-bench, or $PATH), linked over 127.0.0.1 with one cluster topic "
      "(bench/bridge, backpressure block). A forked sender publishes on A, a forked 'block' subscriber reads on B; "
      "the baseline is ZeroMQ PUSH (connect) -> PULL (bind) between two processes over tcp://127.0.0.1. Throughput: "
      "--messages per cell as fast as taken, msg/s = messages / (first send .. last receive), every payload checked. "
      "Latency: a fixed --rate with the intended send time in each message (stalls count), one-way p50/p99/p99.9/max. "
      "Goals (64 B): colo-bridge at least 80% of ZeroMQ's msg/s, p50 at most 2x ZeroMQ's; reported, not enforced. "
      "The daemons are stopped (SIGTERM) and both namespaces removed at the end, also after a failure or Ctrl-C "
      "(--ns is ignored). Exit status 1 if a cell failed, a daemon died or counted a loss, or anything was left.\n"
      "Examples:\n"
      "  colo bench bridge\n"
      "  colo bench bridge --quick --json\n"
      "  colo bench bridge --credit 4096 --sizes 64");
  auto cli = std::make_shared<bench::MsgBenchCli>();
  bench::MsgBenchOptions& o = cli->options;
  o.title = "colo bench bridge";
  o.headline = "a cluster topic through two colod on loopback vs raw ZeroMQ over the same loopback TCP";
  o.json_name = "bridge";
  o.subject = kSubject;
  o.reference = kBaseline;
  o.sizes = {64, 4096};
  o.patterns = {bench::Pattern::one_to_one};
  o.latency_patterns = {bench::Pattern::one_to_one};
  o.readers = {bench::ReaderMode::blocking};
  // Throughput cells of one second: at 64 B a cell of 200,000 messages
  // lasted 40-60 ms, and ZeroMQ's own figure moved from 1.3 M to 6 M msg/s
  // between such cells of one run (1 s: 3.8-5.8 M).
  o.messages = 0;
  o.seconds = 1.0;
  o.rate = 10'000;
  o.latency_seconds = 1.0;
  o.min_samples = 1'000;
  o.cell_timeout = 60;
  o.goals = {
      {"64 B 1->1 throughput at least 80% of zmq-tcp-pushpull's", bench::Measure::throughput, 64,
       bench::ReaderMode::blocking, kBaseline, 0.8, true, ""},
      {"64 B 1->1 one-way p50 at most 2x zmq-tcp-pushpull's", bench::Measure::latency, 64,
       bench::ReaderMode::blocking, kBaseline, 2.0, false, ""},
  };
  o.pingpong = false;  // two hosts over TCP: a cache-line floor says nothing here
  cli->quick_profile = {.sizes = "",
                        .seconds = 0,
                        .messages = 5'000,
                        .latency_seconds = 0.25,
                        .min_samples = 200,
                        .rate = 2'000};
  bench::add_msg_bench_options(*cmd, *cli);

  auto settings = std::make_shared<Settings>();
  cmd->add_option("--capacity", settings->capacity, "ring bytes of the cluster topic on each host (K, M, G = 1024^n)")
      ->transform(CLI::AsSizeValue(false))
      ->check([](const std::string& text) -> std::string {
        const std::uint64_t v = std::stoull(text);
        return v >= 4096 && v <= (16ull << 30) && (v & (v - 1)) == 0 ? "" : "a power of two from 4 KiB to 16 GiB";
      })
      ->capture_default_str();
  cmd->add_option("--credit", settings->credit,
                  "colod limits.credit: messages the origin may send ahead of the receiver's confirmation "
                  "(default: colod's own)")
      ->check(CLI::Range(1u, 1'000'000u));
  cmd->add_option("--heartbeat-ms", settings->heartbeat_ms, "colod limits.heartbeat_ms")
      ->capture_default_str()
      ->check(CLI::Range(50u, 60'000u));
  cmd->add_option("--colod", settings->colod, "the colod program (default: $COLOD_BIN, beside colo-bench, or on $PATH)");
  auto list = std::make_shared<bool>(false);
  cmd->add_flag("--list", *list, "list the transports and exit");
  cmd->callback([cli, settings, list, &exit_code] { exit_code = run_bench_bridge(*cli, *settings, *list); });
}

}  // namespace colo::cli
