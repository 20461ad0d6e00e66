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
// The goals are the issue's: colo-bridge at least 60% of ZeroMQ's 64-byte
// msg/s, and a 64-byte p50 at most 2x ZeroMQ's.
//
// Life of the daemons: started once for the run (a scratch directory holds
// their configs, logs and control sockets); the run waits, bounded, until
// each reports the other connected over its control socket; before each
// colo-bridge cell it checks they still run (a cell fails with the colod's
// last log lines instead of timing out); after the last cell it asks both for
// their counters, stops them with SIGTERM (SIGKILL after 5 s) and removes both
// namespaces and the scratch directory. On Ctrl-C the harness's signal
// handler SIGKILLs them and unlinks the same files; a colod also gets SIGKILL
// if colo-bench itself dies (PR_SET_PDEATHSIG).
#include "commands.hpp"

#include <fcntl.h>   // open: colod's stdin and log
#include <unistd.h>  // execv, dup2, rmdir

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>  // SIGTERM
#include <cstdio>
#include <cstdlib>  // getenv, mkdtemp
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <thread>  // sleep_for while the daemons start

#include "msg_bench.hpp"
#include "transport.hpp"
#include "app.hpp"        // fail, find_program
#include "format.hpp"
#include "processes.hpp"  // Children, ScratchNamespace, unlink_on_interrupt, free_loopback_port
#include "colod_client.hpp"
#include "local_cluster.hpp"  // find_colod

namespace colo::cli {
namespace {

using namespace std::chrono_literals;

constexpr const char* kTopic = "bench/bridge";
constexpr const char* kSubject = "colo-bridge";
constexpr const char* kBaseline = "zmq-tcp-pushpull";
constexpr auto kStartLimit = 20s;  // both daemons up and connected to each other
constexpr auto kStopLimit = 5s;    // a daemon's exit after SIGTERM; then SIGKILL
constexpr auto kStatusTimeout = 500ms;
constexpr int kLogTail = 8;        // lines of a daemon's log shown when it failed

// The daemons' part of the configuration (the rest is fixed above).
struct Settings {
  std::string colod;                       // program: --colod, $COLOD_BIN, beside colo-bench, $PATH
  std::uint64_t capacity = 64ull << 20;    // the topic's ring on each host
  std::uint32_t max_message = 0;           // the largest of --sizes
  std::uint32_t max_frame = 4u << 20;      // colod's limits.max_frame (its default, or more for large sizes)
  std::uint32_t credit = 0;                // colod's limits.credit; 0: colod's default
  std::uint32_t heartbeat_ms = 200;
};

std::string errno_text(const std::string& what) { return what + ": " + std::strerror(errno); }

// The last `lines` lines of a file, each indented, for an error report.
std::string last_lines(const std::string& path, int lines) {
  std::ifstream in(path);
  std::vector<std::string> all;
  for (std::string line; std::getline(in, line);) all.push_back(line);
  std::string out;
  const std::size_t from = all.size() > static_cast<std::size_t>(lines) ? all.size() - lines : 0;
  for (std::size_t i = from; i < all.size(); ++i) out += "\n    " + all[i];
  return out.empty() ? "\n    (its log is empty)" : out;
}

// CPU time (user + system) a live process has used so far, in seconds; -1
// if unknown. Read while it runs: once reaped, /proc has nothing left.
double cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return -1;
  const auto paren = line.rfind(')');  // the command may hold spaces and parentheses
  if (paren == std::string::npos) return -1;
  std::istringstream fields(line.substr(paren + 2));
  std::string skip;
  for (int field = 3; field < 14; ++field) fields >> skip;  // state .. cmajflt
  unsigned long long utime = 0, stime = 0;
  if (!(fields >> utime >> stime)) return -1;
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

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

// Two colod daemons, A (the senders' host) and B (the receivers'), each
// federating its own namespace with the other's over 127.0.0.1.
//
// Contract: used by the single thread of `colo` (it forks). Nothing runs
// until start(); stop() (also called by finish() and the destructor) leaves
// no daemon, no segment of either namespace and no scratch file behind, and
// is idempotent.
class BridgeHosts {
 public:
  BridgeHosts() {
    const std::string pid = std::to_string(::getpid());
    hosts_[0].role = "A";
    hosts_[0].node = "bench-a";
    hosts_[0].prefix = "bridgebench-a-";
    hosts_[1].role = "B";
    hosts_[1].node = "bench-b";
    hosts_[1].prefix = "bridgebench-b-";
    for (auto& h : hosts_) h.ns = h.prefix + pid;  // what ScratchNamespace::open will make
  }
  BridgeHosts(const BridgeHosts&) = delete;
  BridgeHosts& operator=(const BridgeHosts&) = delete;
  ~BridgeHosts() { stop(); }

  const std::string& sender_ns() const { return hosts_[0].ns; }
  const std::string& receiver_ns() const { return hosts_[1].ns; }

  // Starts both daemons and waits (bounded) until each reports the other
  // connected. "" or what went wrong, with the daemon's last log lines.
  std::string start(const Settings& settings);
  // "" while both daemons run, else which one ended and how.
  std::string check();
  // After the last cell: both daemons' counters, then stop(); the report.
  bench::ReportContext finish();
  void stop();

 private:
  struct Host {
    const char* role = "";
    std::string node, prefix, ns;
    ScratchNamespace scratch;
    int port = 0;
    std::string config, log, socket;  // in the scratch directory
    pid_t pid = -1;
    ChildExit exit;
    double cpu_s = -1;     // CPU time over the whole run, read just before stopping it
    std::string log_tail;  // its last lines, read before the file is removed
    std::string endpoint() const { return "tcp://127.0.0.1:" + std::to_string(port); }
    std::string label() const { return std::string("colod ") + role + " (" + node + ")"; }
  };

  std::string write_config(const Host& me, const Host& peer) const;
  pid_t spawn(const Host& h);

  std::array<Host, 2> hosts_;
  Settings settings_;
  Children children_;
  std::string dir_;  // scratch directory
  std::vector<std::string> leftovers_;
  bool started_ = false;
  bool stopped_ = false;
};

std::string BridgeHosts::write_config(const Host& me, const Host& peer) const {
  std::ofstream f(me.config);
  f << "# colo bench bridge, host " << me.role << ": written for one run, removed after it\n"
    << "[node]\nname = \"" << me.node << "\"\nnamespace = \"" << me.ns << "\"\nlisten = \"" << me.endpoint()
    << "\"\n\n[control]\nsocket = \"" << me.socket << "\"\n\n[limits]\nmax_frame = " << settings_.max_frame
    << "\nheartbeat_ms = " << settings_.heartbeat_ms << "\n";
  if (settings_.credit > 0) f << "credit = " << settings_.credit << "\n";
  f << "\n[log]\nlevel = \"info\"\n\n[[peer]]\nname = \"" << peer.node << "\"\nendpoint = \"" << peer.endpoint()
    << "\"\n\n[[topic]]\nname = \"" << kTopic << "\"\ncapacity = " << settings_.capacity
    << "\nmax_message = " << settings_.max_message << "\nbackpressure = \"block\"\n";
  f.close();
  return f ? std::string() : errno_text("cannot write " + me.config);
}

pid_t BridgeHosts::spawn(const Host& h) {
  // Everything the child needs is made before fork: it only opens, dup2s and execs.
  std::vector<std::string> args = {settings_.colod, "--config", h.config};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const char* log = h.log.c_str();
  return children_.spawn([&argv, log] {
    const int in = ::open("/dev/null", O_RDONLY);
    const int out = ::open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (in >= 0) ::dup2(in, STDIN_FILENO);
    if (out >= 0) {
      ::dup2(out, STDOUT_FILENO);
      ::dup2(out, STDERR_FILENO);
    }
    if (in > STDERR_FILENO) ::close(in);
    if (out > STDERR_FILENO) ::close(out);
    ::execv(argv[0], argv.data());
    ::dprintf(STDERR_FILENO, "colo bench bridge: cannot run %s: %s\n", argv[0], std::strerror(errno));
    return 127;
  });
}

std::string BridgeHosts::start(const Settings& settings) {
  settings_ = settings;
  started_ = true;
  // The control sockets live in the scratch directory, and a Unix socket
  // path has at most 107 bytes: a long $TMPDIR falls back to /tmp.
  const char* tmp = std::getenv("TMPDIR");
  std::string base = tmp != nullptr && *tmp != '\0' && std::strlen(tmp) <= 60 ? tmp : "/tmp";
  std::string dir = base + "/colo-bridgebench-XXXXXX";
  if (::mkdtemp(dir.data()) == nullptr) return errno_text("mkdtemp " + dir);
  dir_ = dir;
  unlink_on_interrupt(dir_);  // the handler removes directories after the files in them
  for (auto& h : hosts_) {
    if (auto ok = h.scratch.open(h.prefix); !ok) return "namespace " + h.ns + ": " + ok.error().message;
    if (h.scratch.ns() != h.ns) return "namespace " + h.scratch.ns() + " is not the expected " + h.ns;
    h.scratch.track(kTopic);  // colod creates it; unlinked even if the run is interrupted
    h.port = free_loopback_port();
    if (h.port < 0) return errno_text("a free port on 127.0.0.1");
    h.config = dir_ + "/" + h.node + ".toml";
    h.log = dir_ + "/" + h.node + ".log";
    h.socket = dir_ + "/" + h.node + ".sock";
    for (const std::string* path : {&h.config, &h.log, &h.socket}) unlink_on_interrupt(*path);
  }
  for (int i = 0; i < 2; ++i)
    if (std::string e = write_config(hosts_[i], hosts_[1 - i]); !e.empty()) return e;
  for (auto& h : hosts_) {
    h.pid = spawn(h);
    if (h.pid < 0) return errno_text("fork");
  }
  const auto deadline = SteadyClock::now() + kStartLimit;
  for (;;) {
    if (std::string e = check(); !e.empty()) return e;
    bool connected = true;
    for (auto& h : hosts_) {
      const auto status = counters_of(h.socket);
      connected = connected && status && status.value().connected;
    }
    if (connected) return {};
    if (SteadyClock::now() > deadline) {
      std::string e = "colod A and B did not report each other connected within " +
                      std::to_string(std::chrono::duration_cast<std::chrono::seconds>(kStartLimit).count()) + " s";
      for (auto& h : hosts_) e += "\n  " + h.label() + ", last lines of its log:" + last_lines(h.log, kLogTail);
      return e;
    }
    std::this_thread::sleep_for(50ms);
  }
}

std::string BridgeHosts::check() {
  for (auto& h : hosts_) {
    if (h.pid <= 0) continue;
    if (auto ended = children_.poll(h.pid))
      return h.label() + " has ended (" + ended->text() + "); last lines of its log:" + last_lines(h.log, kLogTail);
  }
  return {};
}

void BridgeHosts::stop() {
  if (!started_ || stopped_) return;
  stopped_ = true;
  for (auto& h : hosts_)
    if (h.pid > 0) children_.kill(h.pid, SIGTERM);
  const auto deadline = SteadyClock::now() + kStopLimit;
  for (auto& h : hosts_) {
    if (h.pid <= 0) continue;
    h.exit = children_.wait(h.pid, deadline);  // SIGKILL at the deadline
    h.log_tail = last_lines(h.log, kLogTail);   // shown if anything went wrong; the file goes below
  }
  // The daemons are gone: nothing maps the segments any more.
  for (auto& h : hosts_)
    for (const auto& left : h.scratch.remove_all()) leftovers_.push_back("/dev/shm/" + left);
  for (auto& h : hosts_)
    for (const std::string* path : {&h.config, &h.log, &h.socket}) {
      if (path->empty()) continue;
      ::unlink(path->c_str());  // the socket is normally gone already: colod unlinks it when it stops
      forget_on_interrupt(*path);
    }
  if (!dir_.empty()) {
    if (::rmdir(dir_.c_str()) != 0 && errno != ENOENT) leftovers_.push_back(errno_text(dir_));
    forget_on_interrupt(dir_);
  }
}

bench::ReportContext BridgeHosts::finish() {
  std::array<Result<ColodCounters>, 2> status = {counters_of(hosts_[0].socket), counters_of(hosts_[1].socket)};
  for (auto& h : hosts_) h.cpu_s = cpu_seconds(h.pid);
  stop();

  bench::ReportContext r;
  nlohmann::json hosts = nlohmann::json::array();
  for (std::size_t i = 0; i < hosts_.size(); ++i) {
    const Host& h = hosts_[i];
    const bool clean = h.exit.how == ChildExit::How::exited && h.exit.code == 0;
    nlohmann::json j = {{"role", h.role},
                        {"node", h.node},
                        {"namespace", h.ns},
                        {"endpoint", h.endpoint()},
                        {"pid", h.pid},
                        {"exit", h.exit.text()},
                        {"cpu_seconds", h.cpu_s},
                        {"stopped_cleanly", clean}};
    if (status[i]) j["counters"] = to_json(*status[i]);
    else j["counters_error"] = status[i].error().message;
    j["log_tail"] = h.log_tail;
    hosts.push_back(j);
    r.failed = r.failed || !clean || !status[i];
  }
  // What crossed from A to B is what B counts from A: a loss or a duplicate
  // there fails the run. B publishes nothing of its own, so a loss or a
  // duplicate A is told about on B's stream is a false report (a colod bug:
  // B's cursor for A counts the relayed messages it was lapped by, which it
  // would never have sent): a warning, since every message of every cell was
  // checked at the receiver.
  std::uint64_t lost = 0, duplicates = 0, rejected = 0;
  if (status[1]) {
    lost = status[1].value().lost;
    duplicates = status[1].value().duplicates;
  }
  for (const auto& s : status)
    if (s) rejected += s.value().bad_frames + s.value().rejected_peers + s.value().failed_handshakes;
  r.failed = r.failed || lost > 0 || duplicates > 0 || rejected > 0 || !leftovers_.empty();
  std::vector<std::string> warnings;
  if (status[0] && status[0].value().lost + status[0].value().duplicates > 0)
    warnings.push_back("colod A was told that " + with_commas(status[0].value().lost) +
                       " message(s) of B's stream were lost (and dropped " +
                       with_commas(status[0].value().duplicates) +
                       " duplicate(s)), but B publishes nothing of its own: a false report of colod's (B's cursor "
                       "for A counts the relayed messages that lapped it); A->B is unaffected");
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
            {"a_to_b", {{"lost", lost}, {"duplicates", duplicates}}},
            {"rejected_frames", rejected},
            {"warnings", warnings},
            {"leftovers", leftovers_}};

  auto& lines = r.lines;
  lines.push_back("hosts: two namespaces of this machine, each with its own colod, linked over 127.0.0.1 "
                  "(plain TCP, no CURVE):");
  for (const auto& h : hosts_) {
    char buf[256];
    std::snprintf(buf, sizeof buf, "  %s  colod %-8s pid %-8d namespace %-22s %-22s %s", h.role, h.node.c_str(),
                  static_cast<int>(h.pid), h.ns.c_str(), h.endpoint().c_str(),
                  h.role[0] == 'A' ? "senders publish here" : "receivers subscribe here ('block')");
    lines.push_back(buf);
  }
  lines.push_back(std::string("cluster topic ") + kTopic + ": ring " + human_bytes(settings_.capacity) +
                  " per host, max_message " + human_bytes(settings_.max_message) +
                  ", backpressure block; colod limits: credit " +
                  (settings_.credit > 0 ? std::to_string(settings_.credit) : std::string("(colod's default)")) +
                  ", heartbeat " + std::to_string(settings_.heartbeat_ms) + " ms, max_frame " +
                  human_bytes(settings_.max_frame));
  lines.push_back("colod: " + settings_.colod);
  if (status[0] && status[1]) {
    const ColodCounters& a = *status[0];
    const ColodCounters& b = *status[1];
    lines.push_back("colod counters over the run (warm-up messages included): A sent " + with_commas(a.messages_out) +
                    " messages (" + human_bytes(a.bytes_out) + "), B received " + with_commas(b.messages_in) + " (" +
                    human_bytes(b.bytes_in) + "); A->B lost " + std::to_string(lost) + ", duplicates " +
                    std::to_string(duplicates) + "; bad frames/refused " + std::to_string(rejected) +
                    (lost + duplicates + rejected > 0 ? "  <- FAILED" : ""));
  }
  if (status[1] && status[1].value().messages_in > 0 && hosts_[0].cpu_s >= 0 && hosts_[1].cpu_s >= 0) {
    // What carrying one message costs each daemon, idle polling included:
    // a figure that other work on the machine moves much less than msg/s.
    const double crossed = static_cast<double>(status[1].value().messages_in);
    char buf[200];
    std::snprintf(buf, sizeof buf,
                  "colod CPU time over the run (every cell, idle polls included): A %.2f s, B %.2f s; "
                  "per message crossed: A %s, B %s",
                  hosts_[0].cpu_s, hosts_[1].cpu_s, human_duration_ns(hosts_[0].cpu_s * 1e9 / crossed).c_str(),
                  human_duration_ns(hosts_[1].cpu_s * 1e9 / crossed).c_str());
    lines.push_back(buf);
  }
  for (const auto& w : warnings) lines.push_back("warning: " + w);
  for (std::size_t i = 0; i < hosts_.size(); ++i)
    if (!status[i]) lines.push_back(hosts_[i].label() + ": no counters: " + status[i].error().message + "  <- FAILED");
  std::string exits;
  for (const auto& h : hosts_)
    exits += (exits.empty() ? "" : "; ") + h.label() + ": " + h.exit.text() + " after SIGTERM";
  lines.push_back(exits);
  if (r.failed)
    for (const auto& h : hosts_) lines.push_back("  <- FAILED; " + h.label() + ", last lines of its log:" + h.log_tail);
  if (leftovers_.empty()) {
    lines.push_back("cleanup: both daemons reaped, both namespaces and the scratch directory removed");
  } else {
    std::string left;
    for (const auto& l : leftovers_) left += " " + l;
    lines.push_back("cleanup: left behind (a bug of colo bench bridge; remove by hand):" + left + "  <- FAILED");
  }
  return r;
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
      "Goals (64 B): colo-bridge at least 60% of ZeroMQ's msg/s, p50 at most 2x ZeroMQ's; reported, not enforced. "
      "The daemons are stopped (SIGTERM) and both namespaces removed at the end, also after a failure or Ctrl-C "
      "(--ns is ignored). Exit status 1 if a cell failed, a daemon died or counted a loss, or anything was left. "
      "Examples: colo bench bridge; colo bench bridge --quick --json; colo bench bridge --credit 4096 --sizes 64");
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
  o.messages = 200'000;
  o.rate = 10'000;
  o.latency_seconds = 1.0;
  o.min_samples = 1'000;
  o.cell_timeout = 60;
  o.goals = {
      {"64 B 1->1 throughput at least 60% of zmq-tcp-pushpull's", bench::Measure::throughput, 64,
       bench::ReaderMode::blocking, kBaseline, 0.6, true},
      {"64 B 1->1 one-way p50 at most 2x zmq-tcp-pushpull's", bench::Measure::latency, 64,
       bench::ReaderMode::blocking, kBaseline, 2.0, false},
  };
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
