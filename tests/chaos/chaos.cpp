// colo-chaos — a chaos run with checkers in the spirit of Jepsen's.
//
//   colo-chaos [--seconds N | --minutes N] [--seed N] [--verbose] [--sabotage]
//              [--backends zookeeper,etcd,redis --services tests/services/services.sh]
//
// For the set time (75 s by default), workers use colo's objects while a
// random schedule, drawn from the seed (printed; the same seed draws the
// same sequence of faults), kill -9s and SIGSTOP/SIGCONTs them and the
// colod processes:
//
//   host alpha (namespace + colod)              host beta (namespace + colod)
//   topic chaos/topic: 2 publishers,            topic chaos/fed (federated):
//     1 witness + 2 other block subscribers       1 witness subscriber (block)
//   queue chaos/queue (acks): 2 producers,
//     3 consumers
//   lock chaos/lock: 3 holders, a fenced store
//   topic chaos/fed: 1 publisher  ---- colod <-> colod over a veth pair ----
//   with --backends, per lock server (ZooKeeper, etcd, Redis):
//   lock chaos/<server>/lock, cluster scope:    the same lock:
//     2 holders, a fenced store shared ------      1 holder
//     with beta's holder
//
// As root with iproute2, each host's colod runs in a network namespace of
// its own and the two are joined by a veth pair (tools/harness/netns.hpp);
// otherwise both listen on 127.0.0.1 and the run has no link faults.
// Faults: kill -9 of any worker but the witnesses (it is started again as a
// new incarnation), SIGSTOP of any worker for 50-1000 ms, kill -9 of a colod
// (started again after 0-2 s), SIGSTOP of a colod for 100-2000 ms, the link
// down for 100-3000 ms (`ip link set ... down`, then up).
// With --backends (the servers started by services.sh, their addresses in
// COLO_ZOOKEEPER, COLO_ETCD, COLO_REDIS as `services.sh env` sets them):
// a server restarted (`services.sh restart`, 0-3 s down) or killed -9 and
// started again after 0-3 s (`services.sh crash`), its data kept, and, with
// the network namespaces, a host cut off from the servers: its backend
// link (backend_link.hpp) SIGSTOPped for 100-5000 ms or killed -9 (every
// connection reset) and started again; a colod is then SIGSTOPped for up
// to 5000 ms. Both outlast the cluster locks' 2 s lease at times.
// Checkers (records.hpp lists them): online in the subscribers and lock
// holders, then on the records once everything has drained (checks.hpp).
// The run prints operations by kind, faults by kind and violations by
// checker, and exits 1 if any checker found a violation (2: bad arguments,
// 3: the run could not be set up or a server could not be restarted, 77:
// --backends without their addresses, unless COLO_REQUIRE_SERVICES=1).
//
// --sabotage shows that every checker can fail: some workers plant the
// faults their checkers must catch (a lost, a doubled and a corrupt message,
// a doubled, an unlogged and an invented queue delivery, an occupied
// critical section, a stale token past the store, a worker that fails) and
// a colod is stopped behind the schedule's back; with --backends, beta's
// holder of each cluster lock also writes a newer token than its own to the
// store while it holds (its next writes are refused with its lease valid).
// The run then exits 0 iff every checker found at least one violation.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "backend_link.hpp"
#include "checks.hpp"
#include "local_cluster.hpp"
#include "netns.hpp"
#include "processes.hpp"
#include "records.hpp"
#include "workers.hpp"

namespace colo::chaos {
namespace {

using namespace std::chrono_literals;
using cli::Children;
using cli::ChildExit;
using cli::LocalCluster;
using cli::SharedBlock;
using cli::SteadyClock;

constexpr const char* kTopic = "chaos/topic";
constexpr const char* kFedTopic = "chaos/fed";
constexpr const char* kQueue = "chaos/queue";
constexpr const char* kLock = "chaos/lock";
constexpr int kLeaseMs = 2000;  // the cluster locks' lease (lock_backend.lease_ms)

enum class RoleKind { topic_publisher, topic_witness, topic_subscriber, queue_producer, queue_consumer, lock_holder,
                      fed_publisher, fed_witness, cluster_lock_holder, backend_link, count };
constexpr const char* kRoleNames[] = {"topic publisher",     "topic witness",     "topic subscriber",
                                      "queue producer",      "queue consumer",    "lock holder",
                                      "federated publisher", "federated witness", "cluster lock holder",
                                      "backend link"};
static_assert(std::size(kRoleNames) == static_cast<std::size_t>(RoleKind::count));
constexpr std::size_t kRoleKinds = static_cast<std::size_t>(RoleKind::count);

struct Options {
  double seconds = 75;
  std::uint64_t seed = 0;
  bool verbose = false;
  bool sabotage = false;  // plant a fault for every checker; pass iff every checker catches its own
  std::vector<std::string> backends;  // lock servers for cluster-scope locks: zookeeper, etcd, redis
  std::string services;               // services.sh, which restarts them
};

// The variable `services.sh env` sets to a lock server's address.
const char* address_variable(const std::string& kind) {
  return kind == "zookeeper" ? "COLO_ZOOKEEPER" : kind == "etcd" ? "COLO_ETCD" : "COLO_REDIS";
}

// A lock server of the run (--backends) and what the schedule does to it.
struct Backend {
  std::string kind;      // zookeeper, etcd, redis: services.sh's name and colod's lock_backend kind
  std::string endpoint;  // as colod's config takes it (from COLO_ZOOKEEPER ...)
  std::uint16_t port = 0;
  std::string lock;        // chaos/<kind>/lock, cluster scope
  std::size_t slot = 0;    // its records (records.hpp, kLocks)
  std::string store_path;  // its fenced store
  pid_t restarting = 0;    // the services.sh process restarting it, 0: none
  std::uint64_t restarts = 0, crashes = 0;
  long store_writes = 0;            // accepted by its fenced store
  std::uint64_t lease_losses = 0;   // cluster holds the hosts lost (the lock records' count)
  std::uint64_t host_changes = 0;   // ... from another host than the write before
};

struct Role {
  RoleKind kind;
  pid_t pid = 0;
  std::uint32_t id = 0;  // the current incarnation's writer or consumer id
  std::size_t host = 0;  // 0 alpha, 1 beta
  std::size_t backend = 0;  // cluster lock holders: which of Run::backends_
  bool stopped = false;
  bool sabotage = false;  // every incarnation of it plants its faults (--sabotage)
  bool witness() const { return kind == RoleKind::topic_witness || kind == RoleKind::fed_witness; }
  bool writer() const {
    return kind == RoleKind::topic_publisher || kind == RoleKind::queue_producer || kind == RoleKind::fed_publisher;
  }
};

// Something the schedule does later: SIGCONT a role or a colod, restart a colod.
struct Pending {
  SteadyClock::time_point at;
  enum class What { cont_role, cont_colod, restart_colod, link_up } what;
  std::size_t index;
};

class Run {
 public:
  explicit Run(const Options& o) : options_(o), rng_(o.seed) {}
  int main();

 private:
  bool set_up();
  pid_t spawn(Role& role);
  void inject_fault();
  void do_pending(SteadyClock::time_point now);
  void watch_processes();
  void finish();
  void report(double elapsed_s);
  void keep_colod_logs();
  bool set_up_backends(LocalCluster::Settings& s);
  void fault_backend(Backend& b, bool crash);
  void watch_backends(bool wait);
  double since_start() const { return std::chrono::duration<double>(SteadyClock::now() - started_).count(); }
  void note(const std::string& what);
  template <typename Duration>
  Duration uniform(Duration lo, Duration hi) {
    return Duration(std::uniform_int_distribution<long long>(lo.count(), hi.count())(rng_));
  }

  Options options_;
  std::mt19937_64 rng_;
  SharedBlock<SharedRecords> records_;
  cli::VethPair link_;  // the hosts' network namespaces (destroyed after the cluster)
  bool have_link_ = false;
  std::string no_link_why_;
  bool link_down_ = false;
  std::uint64_t link_downs_ = 0;
  LocalCluster cluster_;
  Children children_;
  std::vector<Role> roles_;
  std::vector<bool> colod_down_, colod_stopped_;
  std::deque<Pending> pending_;
  std::string dir_, queue_log_, store_path_, services_log_;
  std::vector<Backend> backends_;
  bool services_failed_ = false;
  std::uint32_t next_writer_ = 1, next_consumer_ = 1;
  WriterSet writers_[kRoleKinds];
  std::uint64_t faults_kill_[kRoleKinds] = {}, faults_stop_[kRoleKinds] = {};
  std::uint64_t colod_kills_ = 0, colod_stops_ = 0;
  std::deque<std::string> schedule_tail_;  // the last faults, shown when a checker complains
  SteadyClock::time_point started_;
  std::uint64_t fed_lost_ = 0, fed_missed_ = 0;
  long queue_records_ = 0, store_records_ = 0, drained_ = 0;
  bool setup_failed_ = false;
};

void Run::note(const std::string& what) {
  char line[200];
  std::snprintf(line, sizeof line, "t=%8.3f s  %s", since_start(), what.c_str());
  if (options_.verbose) std::fprintf(stderr, "colo-chaos: %s\n", line);
  schedule_tail_.push_back(line);
  if (schedule_tail_.size() > 40) schedule_tail_.pop_front();
}

bool Run::set_up() {
  if (!records_) {
    std::perror("colo-chaos: shared records");
    return false;
  }
  char dir[] = "/tmp/colo-chaos-XXXXXX";
  if (::mkdtemp(dir) == nullptr) {
    std::perror("colo-chaos: mkdtemp");
    return false;
  }
  dir_ = dir;
  cli::unlink_on_interrupt(dir_);
  queue_log_ = dir_ + "/queue.log";
  store_path_ = dir_ + "/store.log";
  services_log_ = dir_ + "/services.log";
  std::vector<std::string> files = {queue_log_, store_path_, services_log_};
  for (std::size_t i = 0; i < options_.backends.size(); ++i) {
    Backend b;
    b.kind = options_.backends[i];
    b.lock = "chaos/" + b.kind + "/lock";
    b.slot = 1 + i;
    b.store_path = dir_ + "/store-" + b.kind + ".log";
    files.push_back(b.store_path);
    backends_.push_back(b);
  }
  for (const auto& path : files) {
    const int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
      std::perror(path.c_str());
      return false;
    }
    ::close(fd);
    cli::unlink_on_interrupt(path);
  }

  LocalCluster::Settings s;
  s.colod = cli::find_colod();
  if (s.colod.empty()) {
    std::fprintf(stderr, "colo-chaos: colod not found (set COLOD_BIN)\n");
    return false;
  }
  // The federated ring holds about a minute of the federated publisher's
  // messages: longer than any outage the schedule makes, so nothing should
  // be lost, and what is must be what colod counts.
  s.extra_toml = "[[topic]]\nname = \"" + std::string(kFedTopic) +
                 "\"\ncapacity = 4194304\nmax_message = 256\nbackpressure = \"block\"\n";
  s.objects = {kFedTopic, kTopic, kQueue, std::string(kQueue) + ".dlq", kLock};
  std::vector<LocalCluster::HostSpec> hosts = {{"alpha", "chaos-a"}, {"beta", "chaos-b"}};
  // Two network namespaces joined by a veth pair, when this process may
  // make them (root, iproute2): then the link between the hosts can fail.
  no_link_why_ = link_.create();
  have_link_ = no_link_why_.empty();
  if (have_link_) {
    hosts[0].address = cli::VethPair::kAddressA;
    hosts[0].port = 7101;  // fixed: the namespaces are new and empty
    hosts[0].launcher = link_.launcher(link_.netns_a);
    hosts[1].address = cli::VethPair::kAddressB;
    hosts[1].port = 7102;
    hosts[1].launcher = link_.launcher(link_.netns_b);
  } else {
    std::printf("colo-chaos: no link faults, the colods talk over 127.0.0.1 (%s)\n", no_link_why_.c_str());
  }
  // A private veth pair: plain TCP is what the link test needs (colod
  // refuses a non-loopback listen without CURVE unless told so).
  if (have_link_) s.extra_toml = "[security]\ninsecure = true\n" + s.extra_toml;
  if (!set_up_backends(s)) return false;
  if (auto started = cluster_.start(s, hosts); !started) {
    std::fprintf(stderr, "colo-chaos: %s\n", started.error().message.c_str());
    return false;
  }
  colod_down_.assign(2, false);
  colod_stopped_.assign(2, false);

  Node& alpha = cluster_.host(0).scratch->node();
  // Small rings: they wrap every few milliseconds, so reclaim, dead claims
  // and evictions happen all the time.
  auto topic = alpha.topic(kTopic, OpenMode::create, {.capacity = 64 * 1024, .max_message = 64});
  auto queue = alpha.queue(kQueue, OpenMode::create,
                           {.capacity = 64 * 1024, .max_message = 64, .acks = true, .max_deliveries = 100});
  auto lock = alpha.lock(kLock, OpenMode::create);
  if (!topic || !queue || !lock) {
    std::fprintf(stderr, "colo-chaos: cannot create the objects: %s\n",
                 (!topic ? topic.error() : !queue ? queue.error() : lock.error()).message.c_str());
    return false;
  }
  for (const Backend& b : backends_)
    for (std::size_t h = 0; h < 2; ++h)
      if (auto cl = cluster_.host(h).scratch->node().lock(b.lock, OpenMode::create, {.scope = Scope::cluster}); !cl) {
        std::fprintf(stderr, "colo-chaos: cannot create %s on %s: %s\n", b.lock.c_str(),
                     cluster_.host(h).name.c_str(), cl.error().message.c_str());
        return false;
      }

  auto add = [&](RoleKind kind, int n) {
    for (int i = 0; i < n; ++i) {
      roles_.push_back({kind});
      // --sabotage: the first role of these kinds plants faults (workers.cpp).
      roles_.back().sabotage = options_.sabotage && i == 0 &&
                               (kind == RoleKind::topic_witness || kind == RoleKind::fed_witness ||
                                kind == RoleKind::topic_publisher || kind == RoleKind::queue_consumer ||
                                kind == RoleKind::lock_holder);
    }
  };
  // Witnesses first: they subscribe before any writer publishes.
  add(RoleKind::topic_witness, 1);
  add(RoleKind::fed_witness, 1);
  add(RoleKind::topic_subscriber, 2);
  add(RoleKind::queue_consumer, 3);
  add(RoleKind::lock_holder, 3);
  // Each host's backend link (a colod in a network namespace reaches the
  // lock servers through it), started before the holders need it.
  if (!backends_.empty() && have_link_) {
    add(RoleKind::backend_link, 2);
    roles_[roles_.size() - 1].host = 1;
  }
  for (std::size_t b = 0; b < backends_.size(); ++b) {
    for (std::size_t host : {0, 0, 1}) {
      roles_.push_back({RoleKind::cluster_lock_holder});
      roles_.back().host = host;
      roles_.back().backend = b;
      roles_.back().sabotage = options_.sabotage && host == 1;  // beta's holder of each cluster lock
    }
  }
  for (auto& role : roles_)
    if (spawn(role) < 0) return false;
  std::this_thread::sleep_for(300ms);  // the witnesses' subscriptions are in place
  add(RoleKind::topic_publisher, 2);
  add(RoleKind::queue_producer, 2);
  add(RoleKind::fed_publisher, 1);
  for (auto& role : roles_)
    if (role.pid == 0 && spawn(role) < 0) return false;
  return true;
}

pid_t Run::spawn(Role& role) {
  WorkerContext ctx;
  ctx.records = &*records_;
  ctx.seed = rng_();
  if (role.kind == RoleKind::fed_witness) role.host = 1;
  ctx.ns = cluster_.host(role.host).ns();
  role.id = 0;
  if (role.writer()) {
    if (next_writer_ >= kMaxWriters) {
      std::fprintf(stderr, "colo-chaos: more than %u writer incarnations: run shorter\n", kMaxWriters);
      return -1;
    }
    role.id = next_writer_++;
    writers_[static_cast<std::size_t>(role.kind)].ids.push_back(role.id);
  } else if (role.kind == RoleKind::queue_consumer) {
    if (next_consumer_ >= kFinalConsumer) {
      std::fprintf(stderr, "colo-chaos: more than %u consumer incarnations: run shorter\n", kFinalConsumer);
      return -1;
    }
    role.id = next_consumer_++;
  }
  ctx.id = role.id;
  ctx.sabotage = role.sabotage;
  std::function<int()> body;
  switch (role.kind) {
    case RoleKind::topic_publisher:
      ctx.object = kTopic;
      ctx.pause_us = 100;
      body = [ctx] { return run_publisher(ctx, Op::topic_publish); };
      break;
    case RoleKind::fed_publisher:
      ctx.object = kFedTopic;
      ctx.pause_us = 500;
      body = [ctx] { return run_publisher(ctx, Op::fed_publish); };
      break;
    case RoleKind::queue_producer:
      ctx.object = kQueue;
      ctx.pause_us = 500;
      body = [ctx] { return run_publisher(ctx, Op::queue_produce); };
      break;
    case RoleKind::topic_witness:
    case RoleKind::topic_subscriber:
      ctx.object = kTopic;
      ctx.witness = role.kind == RoleKind::topic_witness ? 0 : -1;
      body = [ctx] { return run_subscriber(ctx, Op::topic_delivery); };
      break;
    case RoleKind::fed_witness:
      ctx.object = kFedTopic;
      ctx.witness = 1;
      ctx.gaps_are_lost = true;
      body = [ctx] { return run_subscriber(ctx, Op::fed_delivery); };
      break;
    case RoleKind::queue_consumer:
      ctx.object = kQueue;
      ctx.path = queue_log_;
      body = [ctx] { return run_consumer(ctx); };
      break;
    case RoleKind::lock_holder:
      ctx.object = kLock;
      ctx.path = store_path_;
      body = [ctx] { return run_lock_holder(ctx); };
      break;
    case RoleKind::cluster_lock_holder: {
      const Backend& b = backends_[role.backend];
      ctx.object = b.lock;
      ctx.path = b.store_path;
      ctx.lock_slot = b.slot;
      ctx.cluster = true;
      ctx.id = static_cast<std::uint32_t>(role.host);  // the store log tells the hosts' writes apart
      body = [ctx] { return run_lock_holder(ctx); };
      break;
    }
    case RoleKind::backend_link: {
      std::vector<std::uint16_t> ports;
      for (const Backend& b : backends_) ports.push_back(b.port);
      const std::string netns = role.host == 0 ? link_.netns_a : link_.netns_b;
      SharedRecords* records = &*records_;
      body = [records, netns, ports] { return run_backend_link(*records, netns, ports); };
      break;
    }
    case RoleKind::count:
      return -1;
  }
  role.pid = children_.spawn(body);
  role.stopped = false;
  if (role.pid < 0) std::perror("colo-chaos: fork");
  return role.pid;
}

void Run::inject_fault() {
  // Targets: every role, each colod, the link and each lock server (each as
  // likely as any one role).
  const std::size_t targets = roles_.size() + 3 + backends_.size();
  const std::size_t t = std::uniform_int_distribution<std::size_t>(0, targets - 1)(rng_);
  const bool kill = rng_() % 2 == 0;
  const auto now = SteadyClock::now();
  if (t >= roles_.size() + 3) {
    fault_backend(backends_[t - roles_.size() - 3], kill);
    return;
  }
  if (t == roles_.size() + 2) {
    if (!have_link_ || link_down_) return;
    if (const std::string e = link_.set_link_a(false); !e.empty()) {
      std::fprintf(stderr, "colo-chaos: %s\n", e.c_str());
      return;
    }
    link_down_ = true;
    ++link_downs_;
    const auto delay = uniform<std::chrono::milliseconds>(100ms, 3000ms);
    pending_.push_back({now + delay, Pending::What::link_up, 0});
    note("link down for " + std::to_string(delay.count()) + " ms");
    return;
  }
  if (t >= roles_.size()) {
    const std::size_t host = t - roles_.size();
    const std::string name = cluster_.host(host).name;
    if (colod_down_[host] || colod_stopped_[host]) return;  // its fault is still under way
    if (kill) {
      cluster_.kill(host, SIGKILL);
      colod_down_[host] = true;
      ++colod_kills_;
      const auto delay = uniform<std::chrono::milliseconds>(0ms, 2000ms);
      pending_.push_back({now + delay, Pending::What::restart_colod, host});
      note("kill -9 colod " + name + ", restart in " + std::to_string(delay.count()) + " ms");
    } else {
      cluster_.kill(host, SIGSTOP);
      colod_stopped_[host] = true;
      ++colod_stops_;
      // With lock servers, sometimes past the cluster locks' lease (kLeaseMs).
      const auto delay = uniform<std::chrono::milliseconds>(100ms, backends_.empty() ? 2000ms : 5000ms);
      pending_.push_back({now + delay, Pending::What::cont_colod, host});
      note("SIGSTOP colod " + name + " for " + std::to_string(delay.count()) + " ms");
    }
    return;
  }
  Role& role = roles_[t];
  const auto k = static_cast<std::size_t>(role.kind);
  if (role.stopped) return;
  if (kill && !role.witness()) {
    const pid_t old = role.pid;
    children_.kill(old, SIGKILL);
    (void)children_.wait(old, now + 5s);
    if (role.writer()) records_->writer_killed[role.id].store(1);
    if (role.kind == RoleKind::queue_consumer) records_->consumer_killed[role.id].store(1);
    ++faults_kill_[k];
    note("kill -9 " + std::string(kRoleNames[k]) + " (pid " + std::to_string(old) + ")");
    (void)spawn(role);
  } else {
    children_.kill(role.pid, SIGSTOP);
    role.stopped = true;
    ++faults_stop_[k];
    // A backend link: sometimes past the lease, so that holders lose it.
    const auto delay = role.kind == RoleKind::backend_link ? uniform<std::chrono::milliseconds>(100ms, 5000ms)
                                                           : uniform<std::chrono::milliseconds>(50ms, 1000ms);
    pending_.push_back({now + delay, Pending::What::cont_role, static_cast<std::size_t>(t)});
    note("SIGSTOP " + std::string(kRoleNames[k]) + " (pid " + std::to_string(role.pid) + ") for " +
         std::to_string(delay.count()) + " ms");
  }
}

// The lock servers: each must be one services.sh runs (its kind, on
// 127.0.0.1), its address as `services.sh env` gives it. colod reaches it
// at the same address: directly, or inside a host's network namespace
// through that host's backend link, which listens there on the same port.
bool Run::set_up_backends(LocalCluster::Settings& s) {
  for (Backend& b : backends_) {
    const char* var = address_variable(b.kind);
    const char* value = std::getenv(var);
    if (value == nullptr || *value == '\0') {
      std::fprintf(stderr, "colo-chaos: --backends %s: %s is not set (eval \"$(%s env %s)\")\n", b.kind.c_str(), var,
                   options_.services.c_str(), b.kind.c_str());
      return false;
    }
    b.endpoint = value;
    // The port after the last ':' of 127.0.0.1:PORT (etcd: http://127.0.0.1:PORT).
    const std::string host_part = b.kind == "etcd" ? "http://127.0.0.1:" : "127.0.0.1:";
    const std::string port = b.endpoint.rfind(host_part, 0) == 0 ? b.endpoint.substr(host_part.size()) : "";
    char* end = nullptr;
    const unsigned long n = port.empty() ? 0 : std::strtoul(port.c_str(), &end, 10);
    if (n == 0 || n > 65535 || *end != '\0') {
      std::fprintf(stderr, "colo-chaos: %s=%s: expected %sPORT (a server services.sh runs on loopback)\n", var,
                   b.endpoint.c_str(), host_part.c_str());
      return false;
    }
    b.port = static_cast<std::uint16_t>(n);
    s.extra_toml += "[[lock_backend]]\nkind = \"" + b.kind + "\"\nendpoints = \"" + b.endpoint + "\"\nprefix = \"chaos/" +
                    b.kind + "/\"\nlease_ms = " + std::to_string(kLeaseMs) + "\nop_timeout_ms = 1000\n";
    s.objects.push_back(b.lock);
  }
  return true;
}

// A lock server restarted (SIGTERM, its data kept) or killed -9, then
// started again after 0-3 s, by services.sh in a child process: the
// schedule goes on meanwhile; watch_backends() sees it end.
void Run::fault_backend(Backend& b, bool crash) {
  if (b.restarting != 0) return;  // its restart is still under way
  const auto down = uniform<std::chrono::milliseconds>(0ms, 3000ms);
  char seconds[32];
  std::snprintf(seconds, sizeof seconds, "%.3f", static_cast<double>(down.count()) / 1000);
  const std::string services = options_.services, kind = b.kind, log = services_log_;
  const char* action = crash ? "crash" : "restart";
  b.restarting = children_.spawn([=] {
    const int fd = ::open(log.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd >= 0) {
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(fd, STDERR_FILENO);
    }
    ::execl(services.c_str(), services.c_str(), action, kind.c_str(), seconds, static_cast<char*>(nullptr));
    std::perror(("colo-chaos: " + services).c_str());
    return 127;
  });
  if (b.restarting < 0) {
    std::perror("colo-chaos: fork");
    b.restarting = 0;
    return;
  }
  ++(crash ? b.crashes : b.restarts);
  note((crash ? "kill -9 " : "restart ") + b.kind + ", down for " + std::to_string(down.count()) + " ms or more");
}

// Restarts of lock servers that ended: one that failed ends the run (the
// servers are the run's set-up, not colo). `wait`: until none is under way.
void Run::watch_backends(bool wait) {
  for (Backend& b : backends_) {
    if (b.restarting == 0) continue;
    std::optional<ChildExit> exit = wait ? children_.wait(b.restarting, SteadyClock::now() + 180s)
                                         : children_.poll(b.restarting);
    if (!exit) continue;
    b.restarting = 0;
    if (exit->how == ChildExit::How::exited && exit->code == 0) continue;
    std::fprintf(stderr, "colo-chaos: restarting %s failed (%s); services.sh said:\n", b.kind.c_str(),
                 exit->text().c_str());
    std::ifstream in(services_log_);
    for (std::string line; std::getline(in, line);) std::fprintf(stderr, "  %s\n", line.c_str());
    services_failed_ = true;
  }
}

void Run::do_pending(SteadyClock::time_point now) {
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->at > now) {
      ++it;
      continue;
    }
    switch (it->what) {
      case Pending::What::cont_role: {
        Role& role = roles_[it->index];
        children_.kill(role.pid, SIGCONT);
        role.stopped = false;
        break;
      }
      case Pending::What::cont_colod:
        cluster_.kill(it->index, SIGCONT);
        colod_stopped_[it->index] = false;
        break;
      case Pending::What::restart_colod:
        if (auto restarted = cluster_.restart(it->index); !restarted)
          std::fprintf(stderr, "colo-chaos: restarting colod %s: %s\n", cluster_.host(it->index).name.c_str(),
                       restarted.error().message.c_str());
        colod_down_[it->index] = false;
        break;
      case Pending::What::link_up:
        if (const std::string e = link_.set_link_a(true); !e.empty()) {
          std::fprintf(stderr, "colo-chaos: %s (trying again)\n", e.c_str());
          it->at = now + 100ms;
          ++it;
          continue;
        }
        link_down_ = false;
        break;
    }
    it = pending_.erase(it);
  }
}

// A worker or a colod that ended without being killed by the schedule is a
// failure: counted, said, and started again so that the run goes on.
void Run::watch_processes() {
  for (auto& role : roles_) {
    if (role.pid <= 0) continue;
    auto exit = children_.poll(role.pid);
    if (!exit) continue;
    report_violation(*records_, Check::worker_failed, "%s (pid %d) ended by itself: %s",
                     kRoleNames[static_cast<std::size_t>(role.kind)], role.pid, exit->text().c_str());
    if (role.writer()) records_->writer_killed[role.id].store(1);  // its last publish may be unrecorded
    if (role.kind == RoleKind::queue_consumer) records_->consumer_killed[role.id].store(1);
    (void)spawn(role);
  }
  for (std::size_t h = 0; h < 2; ++h) {
    if (colod_down_[h]) continue;
    std::string ended = cluster_.ended();
    if (ended.empty()) break;
    report_violation(*records_, Check::colod_died, "%s", ended.c_str());
    for (std::size_t i = 0; i < 2; ++i)
      if (cluster_.host(i).exit.how != ChildExit::How::running && !colod_down_[i]) {
        cluster_.host(i).pid = 0;
        (void)cluster_.restart(i);
      }
  }
}

// The end of the schedule: everything resumed and reconnected, writers
// stopped, readers drained, the queue emptied into the log.
void Run::finish() {
  watch_backends(true);  // every lock server up again
  for (auto& p : pending_) p.at = SteadyClock::time_point{};
  const auto resume_limit = SteadyClock::now() + 10s;  // `ip` may need another try
  while (!pending_.empty() && SteadyClock::now() < resume_limit) {
    do_pending(SteadyClock::now());
    if (!pending_.empty()) std::this_thread::sleep_for(100ms);
  }
  if (!cluster_.all_connected(60)) {
    std::fprintf(stderr, "colo-chaos: the colods did not reconnect within 60 s after the last fault\n");
    report_violation(*records_, Check::colod_died, "not reconnected 60 s after the last fault");
  }
  note("end of faults: writers stop");
  records_->phase.store(static_cast<std::uint32_t>(Phase::stop_writers), std::memory_order_release);
  auto wait_roles = [&](auto pick, std::chrono::seconds limit) {
    const auto deadline = SteadyClock::now() + limit;
    for (auto& role : roles_) {
      if (!pick(role) || role.pid <= 0) continue;
      ChildExit exit = children_.wait(role.pid, deadline);
      if (exit.how != ChildExit::How::exited || exit.code != 0)
        report_violation(*records_, Check::worker_failed, "%s (pid %d) at the end: %s",
                         kRoleNames[static_cast<std::size_t>(role.kind)], role.pid, exit.text().c_str());
      role.pid = 0;
    }
  };
  wait_roles(
      [](const Role& r) {
        return r.writer() || r.kind == RoleKind::lock_holder || r.kind == RoleKind::cluster_lock_holder;
      },
      20s);
  note("readers drain");
  records_->phase.store(static_cast<std::uint32_t>(Phase::drain), std::memory_order_release);
  wait_roles([](const Role&) { return true; }, 90s);

  WorkerContext ctx;
  ctx.records = &*records_;
  ctx.ns = cluster_.host(0).ns();
  ctx.object = kQueue;
  ctx.path = queue_log_;
  drained_ = drain_queue(ctx);
  if (drained_ < 0) setup_failed_ = true;

  fed_lost_ = lost_in_colod_log(cluster_.host(1).log, "alpha");
  check_topic_witness(*records_, writers_[static_cast<std::size_t>(RoleKind::topic_publisher)]);
  fed_missed_ = check_federated_witness(*records_, writers_[static_cast<std::size_t>(RoleKind::fed_publisher)],
                                        fed_lost_);
  queue_records_ = check_queue_log(*records_, writers_[static_cast<std::size_t>(RoleKind::queue_producer)], queue_log_);
  store_records_ = check_store_log(*records_, store_path_, kLock);
  if (queue_records_ < 0 || store_records_ < 0) setup_failed_ = true;
  for (Backend& b : backends_) {
    for (std::size_t h = 0; h < 2; ++h)
      if (auto lock = cluster_.host(h).scratch->node().lock(b.lock, OpenMode::open); lock && lock->stats().cluster)
        b.lease_losses += lock->stats().cluster->lease_losses;
    b.store_writes = check_store_log(*records_, b.store_path, b.lock, &b.host_changes);
    if (b.store_writes < 0) setup_failed_ = true;
  }
}

void Run::report(double elapsed_s) {
  SharedRecords& r = *records_;
  std::printf("colo-chaos: seed %llu, %.0f s of faults (%.0f s in all)\n", static_cast<unsigned long long>(options_.seed),
              options_.seconds, elapsed_s);
  std::printf("operations:\n");
  for (std::size_t i = 0; i < static_cast<std::size_t>(Op::count); ++i)
    std::printf("  %-28s %12llu\n", kOpNames[i], static_cast<unsigned long long>(r.ops[i].load()));
  std::printf("  %-28s %12ld\n", "queue final drain", drained_);
  std::printf("  %-28s %12llu\n", "federated lost (colod)", static_cast<unsigned long long>(fed_lost_));
  for (const Backend& b : backends_) {
    std::printf("  %-28s %12ld\n", (b.kind + " lock: store writes").c_str(), b.store_writes);
    std::printf("  %-28s %12llu\n", (b.kind + " lock: host changes").c_str(),
                static_cast<unsigned long long>(b.host_changes));
    std::printf("  %-28s %12llu\n", (b.kind + " lock: leases lost").c_str(),
                static_cast<unsigned long long>(b.lease_losses));
  }
  std::printf("faults:\n");
  std::uint64_t faults = colod_kills_ + colod_stops_;
  for (std::size_t k = 0; k < kRoleKinds; ++k) {
    faults += faults_kill_[k] + faults_stop_[k];
    if (faults_kill_[k] > 0)
      std::printf("  kill -9 %-20s %12llu\n", kRoleNames[k], static_cast<unsigned long long>(faults_kill_[k]));
    if (faults_stop_[k] > 0)
      std::printf("  SIGSTOP %-20s %12llu\n", kRoleNames[k], static_cast<unsigned long long>(faults_stop_[k]));
  }
  for (const Backend& b : backends_) {
    std::printf("  restart %-20s %12llu\n", b.kind.c_str(), static_cast<unsigned long long>(b.restarts));
    std::printf("  kill -9 %-20s %12llu\n", b.kind.c_str(), static_cast<unsigned long long>(b.crashes));
    faults += b.restarts + b.crashes;
  }
  std::printf("  kill -9 %-20s %12llu\n", "colod", static_cast<unsigned long long>(colod_kills_));
  std::printf("  SIGSTOP %-20s %12llu\n", "colod", static_cast<unsigned long long>(colod_stops_));
  if (have_link_)
    std::printf("  %-28s %12llu\n", "link down/up", static_cast<unsigned long long>(link_downs_));
  else
    std::printf("  %-28s %12s (%s)\n", "link down/up", "-", no_link_why_.c_str());
  faults += link_downs_;
  std::printf("  %-28s %12llu\n", "total", static_cast<unsigned long long>(faults));
  std::printf("violations:\n");
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < static_cast<std::size_t>(Check::count); ++i) {
    total += r.violations[i].load();
    std::printf("  %-48s %6llu\n", kCheckNames[i], static_cast<unsigned long long>(r.violations[i].load()));
  }
  if (total > 0) {
    std::printf("the last faults before the end:\n");
    for (const auto& line : schedule_tail_) std::printf("  %s\n", line.c_str());
  }
  if (services_failed_)
    std::printf("colo-chaos: a lock server could not be restarted: the run stopped early and fails (exit 3)\n");
  std::printf("colo-chaos: %s (%llu violation(s); replay with --seed %llu)\n",
              options_.sabotage ? "planted faults" : total == 0 ? "PASS" : "FAIL",
              static_cast<unsigned long long>(total), static_cast<unsigned long long>(options_.seed));
  std::fflush(stdout);
}

// After a violation: the colods' logs (removed with the cluster) copied to
// /tmp/colo-chaos-<seed>-<host>.log, for whoever investigates.
void Run::keep_colod_logs() {
  for (const auto& h : cluster_.hosts()) {
    const std::string kept = "/tmp/colo-chaos-" + std::to_string(options_.seed) + "-" + h.name + ".log";
    std::ifstream in(h.log, std::ios::binary);
    std::ofstream out(kept, std::ios::binary | std::ios::trunc);
    out << in.rdbuf();
    if (out) std::printf("colo-chaos: colod %s's log kept in %s\n", h.name.c_str(), kept.c_str());
  }
}

int Run::main() {
  started_ = SteadyClock::now();
  std::printf("colo-chaos: seed %llu, %.0f s\n", static_cast<unsigned long long>(options_.seed), options_.seconds);
  std::fflush(stdout);
  int rc = 0;
  if (!set_up()) {
    rc = 3;
  } else {
    const auto end = started_ + std::chrono::duration_cast<SteadyClock::duration>(
                                    std::chrono::duration<double>(options_.seconds));
    auto next_fault = SteadyClock::now() + uniform<std::chrono::milliseconds>(150ms, 600ms);
    bool colod_sabotaged = false;
    while (SteadyClock::now() < end) {
      const auto now = SteadyClock::now();
      if (options_.sabotage && !colod_sabotaged && now > started_ + (end - started_) / 2 && !colod_down_[1] &&
          !colod_stopped_[1]) {
        // A colod that ends without the schedule killing it (SIGTERM behind its back).
        ::kill(cluster_.host(1).pid, SIGTERM);
        colod_sabotaged = true;
      }
      do_pending(now);
      watch_processes();
      watch_backends(false);
      if (services_failed_) break;
      if (now >= next_fault) {
        inject_fault();
        next_fault = now + uniform<std::chrono::milliseconds>(150ms, 600ms);
      }
      std::this_thread::sleep_for(10ms);
    }
    finish();
    report(since_start());
    std::uint64_t total = 0;
    for (const auto& v : records_->violations) total += v.load();
    rc = setup_failed_ || services_failed_ ? 3 : total > 0 ? 1 : 0;
    if (options_.sabotage && !setup_failed_) {
      rc = 0;
      for (std::size_t i = 0; i < static_cast<std::size_t>(Check::count); ++i)
        if (records_->violations[i].load() == 0) {
          std::printf("colo-chaos: sabotage: the checker \"%s\" missed its planted fault\n", kCheckNames[i]);
          rc = 1;
        }
      std::printf("colo-chaos: sabotage: %s\n", rc == 0 ? "every checker caught its planted fault" : "FAIL");
    }
  }
  children_.wait_all(SteadyClock::now() + 5s);
  if (rc == 1 && !options_.sabotage) keep_colod_logs();
  for (const auto& left : cluster_.stop()) std::fprintf(stderr, "colo-chaos: left behind: %s\n", left.c_str());
  if (!dir_.empty()) {
    std::vector<std::string> files = {queue_log_, store_path_, services_log_};
    for (const Backend& b : backends_) files.push_back(b.store_path);
    for (const auto& path : files) {
      ::unlink(path.c_str());
      cli::forget_on_interrupt(path);
    }
    ::rmdir(dir_.c_str());
    cli::forget_on_interrupt(dir_);
  }
  return rc;
}

int usage(const char* why) {
  if (why != nullptr) std::fprintf(stderr, "colo-chaos: %s\n", why);
  std::fprintf(stderr,
               "usage: colo-chaos [--seconds N | --minutes N] [--seed N] [--verbose] [--sabotage]\n"
               "                  [--backends zookeeper,etcd,redis --services PATH/services.sh]\n");
  return 2;
}

bool parse_number(const char* text, double& out) {
  char* end = nullptr;
  errno = 0;
  out = std::strtod(text, &end);
  return errno == 0 && end != text && *end == '\0' && out > 0 && out <= 24 * 3600.0;
}

}  // namespace
}  // namespace colo::chaos

int main(int argc, char** argv) {
  using namespace colo::chaos;
  Options o;
  bool seeded = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--verbose") {
      o.verbose = true;
    } else if ((a == "--seconds" || a == "--minutes") && has_value) {
      double v = 0;
      if (!parse_number(argv[++i], v)) return usage("--seconds/--minutes: a number of seconds up to one day");
      o.seconds = a == "--minutes" ? v * 60 : v;
      if (o.seconds > 24 * 3600.0) return usage("at most one day");
    } else if (a == "--seed" && has_value) {
      char* end = nullptr;
      errno = 0;
      o.seed = std::strtoull(argv[++i], &end, 10);
      if (errno != 0 || *end != '\0' || end == argv[i] || argv[i][0] == '-') return usage("--seed: a decimal number");
      seeded = true;
    } else if (a == "--backends" && has_value) {
      o.backends.clear();
      std::string list = argv[++i];
      for (std::size_t at = 0; at <= list.size();) {
        const std::size_t comma = std::min(list.find(',', at), list.size());
        const std::string kind = list.substr(at, comma - at);
        if (kind != "zookeeper" && kind != "etcd" && kind != "redis")
          return usage(("--backends: \"" + kind + "\" is not zookeeper, etcd or redis").c_str());
        if (std::find(o.backends.begin(), o.backends.end(), kind) != o.backends.end())
          return usage(("--backends: " + kind + " twice").c_str());
        o.backends.push_back(kind);
        at = comma + 1;
      }
    } else if (a == "--services" && has_value) {
      o.services = argv[++i];
    } else if (a == "--sabotage") {
      o.sabotage = true;
    } else if (a == "--help" || a == "-h") {
      usage(nullptr);
      return 0;
    } else {
      return usage(("unknown or incomplete argument: " + a).c_str());
    }
  }
  if (!o.backends.empty() && o.services.empty()) return usage("--backends needs --services (services.sh restarts them)");
  if (o.backends.empty() && !o.services.empty()) return usage("--services without --backends");
  for (const std::string& kind : o.backends) {
    const char* var = address_variable(kind);
    const char* required = std::getenv("COLO_REQUIRE_SERVICES");
    if (std::getenv(var) == nullptr && (required == nullptr || std::strcmp(required, "1") != 0)) {
      std::printf("colo-chaos: skipped: %s is not set (start the servers: %s start; eval \"$(%s env)\")\n", var,
                  o.services.c_str(), o.services.c_str());
      return 77;  // Meson's "skipped"
    }
  }
  if (!seeded) o.seed = std::random_device{}();
  Run run(o);
  return run.main();
}
