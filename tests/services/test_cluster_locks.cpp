// tests/services/test_cluster_locks.cpp — cluster-scope locks end to end:
// three colod (three namespaces standing for hosts) against a real
// ZooKeeper, etcd or Redis (each test runs once per backend), processes
// using libcolo through colo-test-lock-worker, and the backends' own
// clients (tests/services/interop/hold_lock.py: kazoo, etcdctl, redis-py).
//
// Every colod gets lease_ms = 2000: a killed or paused colod's hold moves
// to another host after about 2 s.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bridge/federation_support.hpp"

namespace colo::test {
namespace {

constexpr int kLeaseMs = 2000;

std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

std::string endpoint_of(const std::string& backend) {
  if (backend == "zookeeper") return env_or_empty("COLO_ZOOKEEPER");
  if (backend == "etcd") return env_or_empty("COLO_ETCD");
  return env_or_empty("COLO_REDIS");
}

std::string lock_worker() { return env_or_empty("COLO_LOCK_WORKER"); }

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

bool has_line(const Process& p, const std::string& prefix) {
  for (const auto& l : lines_of(p.out()))
    if (l.rfind(prefix, 0) == 0) return true;
  return false;
}

// The first line starting with `prefix`, split into words.
std::vector<std::string> words_of_line(const Process& p, const std::string& prefix) {
  for (const auto& l : lines_of(p.out())) {
    if (l.rfind(prefix, 0) != 0) continue;
    std::istringstream in(l);
    std::vector<std::string> words;
    for (std::string w; in >> w;) words.push_back(w);
    return words;
  }
  return {};
}

std::uint64_t token_of(const Process& p) {
  const auto w = words_of_line(p, "acquired");
  return w.size() >= 2 ? std::stoull(w[1]) : 0;
}

class ClusterLocks : public Federation, public ::testing::WithParamInterface<std::string> {
 protected:
  void SetUp() override {
    Federation::SetUp();
    endpoint_ = endpoint_of(GetParam());
    if (endpoint_.empty()) {
      if (env_or_empty("COLO_REQUIRE_SERVICES") == "1")
        GTEST_FAIL() << GetParam() << ": no server given (COLO_" << GetParam() << " unset) but COLO_REQUIRE_SERVICES=1";
      GTEST_SKIP() << GetParam() << ": no server given; start them with tests/services/services.sh start";
    }
    ASSERT_FALSE(lock_worker().empty()) << "COLO_LOCK_WORKER is not set";
    // Names unique per run: the servers keep their state between runs.
    static int counter = 0;
    lock_name_ = "t" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  }

  void TearDown() override {
    for (auto& w : workers_) w.kill(SIGKILL);
    Federation::TearDown();
  }

  // `n` hosts with this backend, started; `locks_toml` may set [locks].
  void start_hosts(int n, const std::string& locks_toml = "") {
    for (int i = 0; i < n; ++i) add_host(std::string(1, static_cast<char>('a' + i)) + "host");
    write_configs({}, false);
    for (auto& h : hosts_) {
      std::ofstream f(h.config_path, std::ios::app);
      f << "[log]\nlevel = \"debug\"\n";
      f << "[[lock_backend]]\nkind = \"" << GetParam() << "\"\nendpoints = \"" << endpoint_ << "\"\nlease_ms = "
        << kLeaseMs << "\nop_timeout_ms = 1000\n";
      f << locks_toml;
    }
    for (auto& h : hosts_) start(h);
  }

  Process& worker(const Host& h, const std::vector<std::string>& args) {
    std::vector<std::string> argv = {lock_worker(), args.at(0), "--ns", h.ns, "--name", lock_name_, "--host", h.name};
    argv.insert(argv.end(), args.begin() + 1, args.end());
    workers_.push_back(Process::spawn(argv));
    return workers_.back();
  }

  // hold_lock.py with this backend on the same name.
  Process& foreign(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {env_or_empty("COLO_HOLD_LOCK"), "--backend", GetParam(), "--name", lock_name_,
                                     "--endpoint", endpoint_};
    argv.insert(argv.end(), args.begin(), args.end());
    workers_.push_back(Process::spawn(argv));
    return workers_.back();
  }

  std::string dump(const Process& p) { return "stdout:\n" + p.out() + "stderr:\n" + p.err(); }

  std::string endpoint_, lock_name_;
  std::deque<Process> workers_;
};

// 3 hosts x 4 processes, 3,000 increments of a file counter under the lock.
TEST_P(ClusterLocks, ThreeHostsCountExactlyWithIncreasingTokens) {
  // A hand-off budget well below a host's share (1,000), so that the lock
  // must move between hosts many times.
  start_hosts(3, "[locks]\nmax_handoffs = 100\n");
  const std::string counter = dir_ + "/counter", log = dir_ + "/grants";
  constexpr int kPerWorker = 250;  // x 12 = 3,000
  std::vector<Process*> ws;
  for (auto& h : hosts_)
    for (int i = 0; i < 4; ++i)
      ws.push_back(&worker(h, {"increment", "--count", std::to_string(kPerWorker), "--counter", counter, "--log", log}));
  for (auto* w : ws) {
    const auto status = w->wait_for(120s);
    ASSERT_TRUE(status.has_value()) << "a worker did not finish in 120 s (starved?)\n" << dump(*w);
    ASSERT_EQ(*status, 0) << dump(*w);
  }
  std::ifstream c(counter);
  long value = -1;
  c >> value;
  EXPECT_EQ(value, 3000);

  std::ifstream in(log);
  std::uint64_t previous = 0, grants = 0;
  std::map<std::string, int> per_host, in_first_third;
  std::set<std::uint64_t> epochs;
  std::string last_host;
  int run = 0, longest_run = 0;  // consecutive grants on one host
  for (std::string line; std::getline(in, line);) {
    std::istringstream words(line);
    std::uint64_t token = 0;
    std::string host;
    words >> token >> host;
    ASSERT_GT(token, previous) << "grant " << grants << ": token " << token << " after " << previous;
    previous = token;
    ++per_host[host];
    if (grants < 1000) ++in_first_third[host];
    run = host == last_host ? run + 1 : 1;
    // Runs count while every host still has work (at the end one host may
    // rightly keep the lock: nobody else wants it).
    if (std::all_of(per_host.begin(), per_host.end(), [](const auto& h) { return h.second < 4 * kPerWorker; }))
      longest_run = std::max(longest_run, run);
    last_host = host;
    epochs.insert(token >> 20);
    ++grants;
  }
  EXPECT_EQ(grants, 3000u);
  ASSERT_EQ(per_host.size(), 3u);
  for (const auto& [host, n] : per_host) EXPECT_EQ(n, 4 * kPerWorker) << host;  // every process finished its share
  // No host starves another: each one is served early in the run, not only
  // once the others are done, and no host keeps the lock beyond its budget.
  EXPECT_EQ(in_first_third.size(), 3u) << "a host got nothing in the first 1,000 grants";
  EXPECT_LE(longest_run, 100) << "a host kept the lock beyond max_handoffs";
  EXPECT_GE(epochs.size(), 30u) << "3,000 grants with a budget of 100 need at least 30 cluster holds";
  std::cout << "[ info ] " << GetParam() << ": 3,000 grants under " << epochs.size()
            << " cluster holds, longest run on one host " << longest_run << ", first 1,000 grants:";
  for (const auto& [host, n] : in_first_third) std::cout << " " << host << " " << n;
  std::cout << "\n";
}

// A foreign client's hold blocks colo, and colo's hold blocks it.
TEST_P(ClusterLocks, ExcludesTheBackendsOwnClient) {
  start_hosts(1);
  const Host& a = hosts_[0];
  Process& theirs = foreign({"--hold", "2"});
  ASSERT_TRUE(wait_until([&] { return has_line(theirs, "acquired"); }, 15s)) << dump(theirs);
  Process& blocked = worker(a, {"try", "--timeout-ms", "800"});
  ASSERT_TRUE(blocked.wait_for(20s).has_value());
  EXPECT_EQ(lines_of(blocked.out()), std::vector<std::string>{"busy"}) << dump(blocked);
  ASSERT_TRUE(wait_until([&] { return has_line(theirs, "released"); }, 15s)) << dump(theirs);
  Process& after = worker(a, {"try", "--timeout-ms", "10000"});
  ASSERT_TRUE(after.wait_for(20s).has_value());
  EXPECT_TRUE(has_line(after, "acquired")) << dump(after);

  Process& ours = worker(a, {"hold", "--hold-ms", "4000"});
  ASSERT_TRUE(wait_until([&] { return has_line(ours, "acquired"); }, 15s)) << dump(ours);
  Process& refused = foreign({"--try-acquire", "1"});
  const auto status = refused.wait_for(20s);
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 3) << dump(refused);
  EXPECT_EQ(lines_of(refused.out()), std::vector<std::string>{"busy"}) << dump(refused);
  ASSERT_TRUE(wait_until([&] { return has_line(ours, "released"); }, 15s)) << dump(ours);
  Process& theirs_again = foreign({"--try-acquire", "5"});
  ASSERT_TRUE(theirs_again.wait_for(20s).has_value());
  EXPECT_TRUE(has_line(theirs_again, "acquired")) << dump(theirs_again);
}

// A local holder killed: the next local waiter gets the lock, told that the
// owner died, under the same cluster hold (same epoch: not lost needlessly).
TEST_P(ClusterLocks, KilledLocalHolderIsRecoveredUnderTheSameClusterHold) {
  // A time budget longer than the test: colod would otherwise give the lock
  // up after 100 ms (the default) while the first process holds it.
  start_hosts(1, "[locks]\nmax_hold_ms = 60000\n");
  const Host& a = hosts_[0];
  Process& first = worker(a, {"hold"});
  ASSERT_TRUE(wait_until([&] { return has_line(first, "acquired"); }, 15s)) << dump(first);
  Process& second = worker(a, {"hold", "--hold-ms", "100"});
  ASSERT_TRUE(wait_until([&] {
    const auto r = run_colo(a.ns, {"stat", lock_name_, "--json"});
    return r.out.find("\"waiters\": 1") != std::string::npos;
  }, 10s)) << "the second process never waited";
  first.kill(SIGKILL);
  ASSERT_TRUE(wait_until([&] { return has_line(second, "released"); }, 15s)) << dump(second);
  const auto w = words_of_line(second, "acquired");
  ASSERT_EQ(w.size(), 3u) << dump(second);
  EXPECT_EQ(w[2], "1") << "owner_died not reported";
  const std::uint64_t t1 = token_of(first), t2 = std::stoull(w[1]);
  EXPECT_GT(t2, t1);
  EXPECT_EQ(t2 >> 20, t1 >> 20) << "the cluster hold changed: " << t1 << " -> " << t2;
}

// colod killed while its host holds the lock: the holder is told, another
// host gets the lock once the session/lease times out, with a higher token.
TEST_P(ClusterLocks, KilledColodLosesTheLockToAnotherHostWithAHigherToken) {
  start_hosts(2);
  Process& holder = worker(hosts_[0], {"hold"});
  ASSERT_TRUE(wait_until([&] { return has_line(holder, "acquired"); }, 15s)) << dump(holder);
  Process& other = worker(hosts_[1], {"hold", "--hold-ms", "0"});
  std::this_thread::sleep_for(300ms);
  EXPECT_FALSE(has_line(other, "acquired")) << "granted on two hosts at once";
  const auto killed_at = std::chrono::steady_clock::now();
  hosts_[0].colod->kill(SIGKILL);
  ASSERT_TRUE(wait_until([&] { return has_line(holder, "lease-lost"); }, std::chrono::milliseconds(kLeaseMs + 2000)))
      << dump(holder);
  ASSERT_TRUE(wait_until([&] { return has_line(other, "acquired"); }, std::chrono::milliseconds(kLeaseMs + 10000)))
      << dump(other);
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - killed_at);
  EXPECT_GT(token_of(other), token_of(holder));
  std::cout << "[ info ] " << GetParam() << ": another host got the lock " << took.count() << " ms after the kill\n";

  // colod restarted on the first host: its next grant is ordered after all.
  holder.kill(SIGTERM);
  ASSERT_TRUE(holder.wait_for(10s).has_value());
  start(hosts_[0]);
  Process& again = worker(hosts_[0], {"hold", "--hold-ms", "0"});
  ASSERT_TRUE(wait_until([&] { return has_line(again, "released"); }, 20s)) << dump(again);
  EXPECT_GT(token_of(again), token_of(other));
}

// colod paused (SIGSTOP) past its lease while its host's process writes to
// a fencing-checking resource: the process is told, the other host takes
// over, and a write made anyway with the old token is refused.
TEST_P(ClusterLocks, PausedColodHolderIsToldAndStaleWritesAreFenced) {
  start_hosts(2);
  const std::string resource = dir_ + "/resource";
  Process& a = worker(hosts_[0], {"fenced", "--resource", resource, "--for-ms", "9000", "--unchecked-after-loss",
                                  "--hold-ms", std::to_string(kLeaseMs + 1500)});
  ASSERT_TRUE(wait_until([&] { return file_exists(resource); }, 15s)) << dump(a);
  std::this_thread::sleep_for(200ms);
  // Now host b wants it too, and a's colod stops at once: a holds at that
  // moment unless its colod had just spent its budget (handled below).
  Process& b = worker(hosts_[1], {"fenced", "--resource", resource, "--for-ms", "9000"});
  const pid_t colod_a = hosts_[0].colod->pid();
  ::kill(colod_a, SIGSTOP);
  std::this_thread::sleep_for(std::chrono::milliseconds(2 * kLeaseMs + 1500));
  ::kill(colod_a, SIGCONT);
  ASSERT_TRUE(a.wait_for(30s).has_value()) << dump(a);
  ASSERT_TRUE(b.wait_for(30s).has_value()) << dump(b);

  std::ifstream in(resource);
  int accepted = 0, rejected = 0, rejected_b = 0;
  std::uint64_t highest = 0;
  for (std::string line; std::getline(in, line);) {
    std::istringstream words(line);
    std::uint64_t token = 0;
    std::string host, verdict;
    words >> token >> host >> verdict;
    if (verdict == "accepted") {
      ++accepted;
      EXPECT_GE(token, highest);
      highest = token;
    } else {
      ++rejected;
      if (host == hosts_[1].name) ++rejected_b;
    }
  }
  EXPECT_GT(accepted, 0);
  EXPECT_EQ(rejected_b, 0) << "b's writes, all made while its lease stood, must all be accepted";
  if (has_line(a, "lease-lost")) {
    // a held when its colod stopped (the usual case): it was told, and its
    // deliberate write with the stale token was refused.
    EXPECT_TRUE(has_line(a, "unchecked-rejected")) << dump(a);
    EXPECT_FALSE(has_line(a, "unchecked-accepted")) << dump(a);
    EXPECT_EQ(rejected, 1) << "only a's deliberate stale write may be refused";
  } else {
    EXPECT_EQ(rejected, 0);
    std::cout << "[ info ] a did not hold when its colod was paused (the lock had moved to b)\n";
  }
}

// `colo lock --cluster`: the command gets the token, and the configured
// signal as soon as the hold is lost (here: its colod paused past the lease).
TEST_P(ClusterLocks, ColoLockSignalsItsCommandWhenTheLeaseIsLost) {
  start_hosts(1);
  const Host& a = hosts_[0];
  Process& cmd = *[&] {
    workers_.push_back(Process::spawn({colo_path(), "--ns", a.ns, "lock", "--cluster", lock_name_, "--on-lease-loss",
                                       "USR1", "--", "sh", "-c",
                                       "trap 'echo got-usr1; exit 7' USR1; echo token=$COLO_FENCING_TOKEN; "
                                       "while :; do sleep 0.05; done"}));
    return &workers_.back();
  }();
  ASSERT_TRUE(wait_until([&] { return has_line(cmd, "token="); }, 15s)) << dump(cmd);
  EXPECT_NE(words_of_line(cmd, "token=").at(0), "token=0");
  ::kill(a.colod->pid(), SIGSTOP);
  const auto status = cmd.wait_for(std::chrono::milliseconds(kLeaseMs + 5000));
  ::kill(a.colod->pid(), SIGCONT);
  ASSERT_TRUE(status.has_value()) << "the command was not signalled\n" << dump(cmd);
  EXPECT_TRUE(has_line(cmd, "got-usr1")) << dump(cmd);
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 7) << dump(cmd);  // colo lock exits with its status
  EXPECT_NE(cmd.err().find("lease of cluster lock '" + lock_name_ + "' lost; sending SIGUSR1"), std::string::npos)
      << dump(cmd);
}

// Reads the fencing resource: accepted and rejected writes, and the
// highest accepted token.
struct ResourceLog {
  int accepted = 0, rejected = 0;
  std::uint64_t highest = 0;
  bool decreasing = false;  // an accepted token below an earlier one (never, by construction)
};
ResourceLog read_resource(const std::string& path) {
  ResourceLog r;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    std::istringstream words(line);
    std::uint64_t token = 0;
    std::string host, verdict;
    words >> token >> host >> verdict;
    if (verdict != "accepted") {
      ++r.rejected;
      continue;
    }
    ++r.accepted;
    if (token < r.highest) r.decreasing = true;
    r.highest = std::max(r.highest, token);
  }
  return r;
}

// The backend's server stopped for longer than the lease, then started
// again (its data kept, as a real restart does) while two hosts' processes
// write to the fencing resource: the holder is told, grants resume with
// higher tokens, and no write is refused (no two holders at once).
TEST_P(ClusterLocks, BackendRestartTellsHoldersAndGrantsResumeWithoutDoubleGrant) {
  const std::string services = env_or_empty("COLO_SERVICES_SH");
  ASSERT_FALSE(services.empty()) << "COLO_SERVICES_SH is not set";
  start_hosts(2);
  const std::string resource = dir_ + "/resource";
  Process& a = worker(hosts_[0], {"fenced", "--resource", resource, "--for-ms", "16000"});
  Process& b = worker(hosts_[1], {"fenced", "--resource", resource, "--for-ms", "16000"});
  ASSERT_TRUE(wait_until([&] { return read_resource(resource).accepted >= 50; }, 15s)) << dump(a) << dump(b);

  const auto stopped = run({services, "stop", GetParam()}, 60s);
  ASSERT_TRUE(stopped.exited && stopped.exit_code == 0) << describe(stopped);
  const ResourceLog before = read_resource(resource);
  std::this_thread::sleep_for(std::chrono::milliseconds(kLeaseMs + 1500));
  const ResourceLog during = read_resource(resource);
  const auto restarted = run({services, "restart", GetParam()}, 90s);
  ASSERT_TRUE(restarted.exited && restarted.exit_code == 0) << describe(restarted);

  ASSERT_TRUE(a.wait_for(60s).has_value()) << dump(a);
  ASSERT_TRUE(b.wait_for(60s).has_value()) << dump(b);
  const ResourceLog after = read_resource(resource);
  EXPECT_TRUE(has_line(a, "lease-lost") || has_line(b, "lease-lost")) << "nobody was told\n" << dump(a) << dump(b);
  EXPECT_EQ(after.rejected, 0) << "two holders at once: a write with an older token came after a newer one";
  EXPECT_FALSE(after.decreasing);
  // While the server was down, writes stopped within the lease.
  EXPECT_LE(during.accepted - before.accepted, kLeaseMs / 5 + 10);
  EXPECT_GT(after.accepted, during.accepted) << "grants did not resume after the restart";
  EXPECT_GT(after.highest, during.highest);
  std::cout << "[ info ] " << GetParam() << ": " << before.accepted << " writes before the stop, "
            << during.accepted - before.accepted << " while down, " << after.accepted - during.accepted
            << " after the restart\n";
}

// Keyed cluster locks: a cluster-scope lock table on 2 hosts x 4 processes
// and the backend's own client, on the same 4 keys (colod names the backend
// lock TABLE/KEY, the client locks that name with its stock recipe): every
// key's counter is exact, and colo's tokens grow per key in grant order.
TEST_P(ClusterLocks, TableKeysExcludeAcrossHostsAndTheBackendsOwnClientKeyByKey) {
  start_hosts(2, "[locks]\nmax_handoffs = 20\n");
  const std::vector<std::string> keys = {"order:1", "order:2", "order:3", "order:4"};
  const std::string key_list = "order:1,order:2,order:3,order:4";
  const std::string log = dir_ + "/grants";
  const std::string counters = dir_ + "/counters";
  ASSERT_EQ(::mkdir(counters.c_str(), 0755), 0);
  constexpr int kPerWorker = 150, kForeign = 40;  // enough for both sides to run at once
  std::vector<Process*> ws;
  int offset = 0;
  for (auto& h : hosts_)
    for (int i = 0; i < 4; ++i)
      ws.push_back(&worker(h, {"table-increment", "--keys", key_list, "--count", std::to_string(kPerWorker),
                               "--counter-dir", counters, "--log", log, "--offset", std::to_string(offset++)}));
  std::vector<std::string> argv = {env_or_empty("COLO_INCREMENT_KEYS"), "--backend", GetParam(), "--table",
                                   lock_name_, "--keys", key_list, "--count", std::to_string(kForeign),
                                   "--counter-dir", counters, "--endpoint", endpoint_};
  workers_.push_back(Process::spawn(argv));
  Process& theirs = workers_.back();
  for (auto* w : ws) {
    const auto status = w->wait_for(180s);
    ASSERT_TRUE(status.has_value()) << "a worker did not finish in 180 s\n" << dump(*w);
    ASSERT_EQ(*status, 0) << dump(*w);
  }
  const auto status = theirs.wait_for(180s);
  ASSERT_TRUE(status.has_value()) << dump(theirs);
  ASSERT_EQ(*status, 0) << dump(theirs);

  // Expected per key: each worker's N increments go round the keys from its
  // offset; the client's go round from key 0.
  std::map<std::string, long> expected;
  for (int w = 0; w < offset; ++w)
    for (int i = 0; i < kPerWorker; ++i) ++expected[keys[static_cast<std::size_t>(w + i) % keys.size()]];
  for (int i = 0; i < kForeign; ++i) ++expected[keys[static_cast<std::size_t>(i) % keys.size()]];
  for (const auto& key : keys) {
    std::ifstream c(counters + "/" + key);
    long value = -1;
    c >> value;
    EXPECT_EQ(value, expected[key]) << key;
  }
  std::ifstream in(log);
  std::map<std::string, std::uint64_t> last_token;
  std::map<std::string, int> per_host;
  int grants = 0;
  for (std::string line; std::getline(in, line);) {
    std::istringstream words(line);
    std::string key, host;
    std::uint64_t token = 0;
    words >> key >> token >> host;
    EXPECT_GT(token, last_token[key]) << "key " << key << ": token " << token << " after " << last_token[key];
    last_token[key] = token;
    ++per_host[host];
    ++grants;
  }
  EXPECT_EQ(grants, offset * kPerWorker);
  EXPECT_EQ(per_host.size(), 2u);
}

INSTANTIATE_TEST_SUITE_P(Backends, ClusterLocks, ::testing::Values("zookeeper", "etcd", "redis"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace colo::test
