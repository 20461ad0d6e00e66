// `colo bench bridge`, run as a real process with real colod daemons (suite
// `bridge`): exact counts, never timings. Speed is the benchmark's business;
// here it must deliver every message on both transports, and leave no
// daemon, no namespace and no scratch file behind, whether it ends normally,
// is interrupted, or cannot start its daemons.
//
//   quickRun...     --quick --json: every cell ok, sent == delivered, both
//                   transports at 64 B and 4 KiB, the daemons' counters agree
//   interrupted...  SIGINT in the middle of a run
//   missingColod... COLOD_BIN names nothing
#include <dirent.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>  // getenv, system
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "support.hpp"

namespace colo {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

std::string colod_path() {
  const char* p = std::getenv("COLOD_BIN");
  return p != nullptr ? p : "colod";
}

// Entries of a directory, without . and ..
std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") out.push_back(name);
  }
  ::closedir(d);
  return out;
}

// The pids of `pid`'s children whose command is `comm`.
std::vector<pid_t> children_named(pid_t pid, const std::string& comm) {
  std::vector<pid_t> out;
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  for (pid_t child; in >> child;) {
    std::ifstream c("/proc/" + std::to_string(child) + "/comm");
    std::string name;
    std::getline(c, name);
    if (name == comm) out.push_back(child);
  }
  return out;
}

std::string ns_of(char host, pid_t colo_pid) {
  return std::string("bridgebench-") + host + "-" + std::to_string(colo_pid);
}

class BenchBridge : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/colo-benchbridge-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    tmp_ = tmpl;
  }
  void TearDown() override {
    for (pid_t pid : colo_pids_)
      for (char host : {'a', 'b'}) test::remove_namespace_files(ns_of(host, pid));
    (void)std::system(("rm -rf " + tmp_).c_str());
  }

  // colo's environment: its scratch directory goes in our own TMPDIR, so that
  // "nothing left" can be checked exactly.
  test::SpawnOptions options(const std::string& colod) const {
    test::SpawnOptions o;
    o.env = {"TMPDIR=" + tmp_, "COLOD_BIN=" + colod};
    return o;
  }

  ::testing::AssertionResult nothing_left(pid_t colo_pid) {
    for (char host : {'a', 'b'})
      if (auto files = test::namespace_files(ns_of(host, colo_pid)); !files.empty())
        return ::testing::AssertionFailure() << "left in /dev/shm: " << files.front() << " (and " << files.size() - 1
                                             << " more)";
    if (auto files = entries(tmp_); !files.empty())
      return ::testing::AssertionFailure() << "left in TMPDIR: " << files.front();
    return ::testing::AssertionSuccess();
  }

  std::string tmp_;
  std::vector<pid_t> colo_pids_;
};

TEST_F(BenchBridge, quickRunDeliversEveryMessageOnBothTransportsAndLeavesNothingBehind) {
  const auto r = test::run({test::colo_path(), "bench", "bridge", "--quick", "--json"}, 180s, options(colod_path()));
  colo_pids_.push_back(r.pid);
  ASSERT_TRUE(r.exited) << test::describe(r);
  ASSERT_EQ(r.exit_code, 0) << test::describe(r);
  const json j = json::parse(r.out);
  EXPECT_EQ(j["benchmark"], "bridge");
  EXPECT_EQ(j["subject"], "colo-bridge");
  EXPECT_EQ(j["reference"], "zmq-tcp-pushpull");
  EXPECT_EQ(j["failed"], false);

  // Every cell: ok, and exactly what was sent arrived, intact.
  std::map<std::string, std::set<std::size_t>> sizes_of;  // "throughput colo-bridge" -> {64, 4096}
  std::uint64_t bridge_delivered = 0;
  for (const char* measure : {"throughput", "latency"})
    for (const auto& cell : j[measure]) {
      EXPECT_EQ(cell["status"], "ok") << cell.dump();
      EXPECT_GT(cell["sent"].get<std::uint64_t>(), 0u) << cell.dump();
      EXPECT_EQ(cell["delivered"], cell["sent"]) << cell.dump();
      EXPECT_EQ(cell["delivered"], cell["expected_deliveries"]) << cell.dump();
      EXPECT_EQ(cell["lost"], 0) << cell.dump();
      EXPECT_EQ(cell["corrupt"], 0) << cell.dump();
      EXPECT_EQ(cell["out_of_order"], 0) << cell.dump();  // each sequence above the last: no repeat hides a loss
      const std::string key = std::string(measure) + " " + cell["transport"].get<std::string>();
      sizes_of[key].insert(cell["size"].get<std::size_t>());
      if (cell["transport"] == "colo-bridge") bridge_delivered += cell["delivered"].get<std::uint64_t>();
    }
  const std::set<std::size_t> both = {64, 4096};
  EXPECT_EQ(sizes_of.size(), 4u);
  for (const char* key : {"throughput colo-bridge", "throughput zmq-tcp-pushpull", "latency colo-bridge",
                          "latency zmq-tcp-pushpull"})
    EXPECT_EQ(sizes_of[key], both) << key;
  // --quick: 5,000 messages per throughput cell.
  for (const auto& cell : j["throughput"]) EXPECT_EQ(cell["sent"], 5000) << cell.dump();

  // Both goals are measured (whether they are met is a matter of speed).
  ASSERT_EQ(j["goals"].size(), 2u);
  for (const auto& g : j["goals"]) EXPECT_FALSE(g["met"].is_null()) << g.dump();

  // The daemons: stopped cleanly by SIGTERM, agreeing on what crossed, no loss.
  const json& setup = j["setup"];
  ASSERT_EQ(setup["hosts"].size(), 2u) << setup.dump();
  const json& a = setup["hosts"][0];
  const json& b = setup["hosts"][1];
  EXPECT_EQ(a["namespace"], ns_of('a', r.pid));
  EXPECT_EQ(b["namespace"], ns_of('b', r.pid));
  for (const json& h : {a, b}) {
    EXPECT_EQ(h["exit"], "exit 0") << h.dump();
    EXPECT_EQ(h["counters"]["bad_frames"], 0) << h.dump();
    EXPECT_TRUE(test::process_gone(h["pid"].get<pid_t>())) << h.dump();
  }
  // A -> B, as B counts it: nothing lost, nothing twice.
  EXPECT_EQ(b["counters"]["lost"], 0) << b.dump();
  EXPECT_EQ(b["counters"]["duplicates"], 0) << b.dump();
  EXPECT_EQ(setup["a_to_b"], (json{{"lost", 0}, {"duplicates", 0}}));
  EXPECT_EQ(setup["rejected_frames"], 0);
  EXPECT_EQ(a["counters"]["messages_out"], b["counters"]["messages_in"]);
  EXPECT_EQ(b["counters"]["messages_out"], 0);  // B published nothing of its own
  // Warm-up messages cross too: at least every data message did.
  EXPECT_GE(b["counters"]["messages_in"].get<std::uint64_t>(), bridge_delivered);
  EXPECT_EQ(setup["leftovers"], json::array());
  EXPECT_TRUE(nothing_left(r.pid));
}

TEST_F(BenchBridge, interruptedRunKillsTheDaemonsAndRemovesTheirNamespacesAndFiles) {
  // Long enough to be interrupted in the middle of its cells.
  auto colo = test::Process::spawn(
      {test::colo_path(), "bench", "bridge", "--messages", "5000000", "--latency-seconds", "30"},
      options(colod_path()));
  colo_pids_.push_back(colo.pid());
  // Both daemons up, and the receiving host's copy of the topic made.
  const std::string topic_b = "/dev/shm/colo." + ns_of('b', colo.pid()) + ".obj.bench^bridge";
  std::vector<pid_t> colods;
  ASSERT_TRUE(test::wait_until(
      [&] {
        colods = children_named(colo.pid(), "colod");
        return colods.size() == 2 && test::file_exists(topic_b);
      },
      30s, 20ms))
      << colo.err();
  std::this_thread::sleep_for(1500ms);  // into the cells
  ASSERT_FALSE(colo.reaped());
  colo.kill(SIGINT);
  const auto status = colo.wait_for(15s);
  ASSERT_TRUE(status.has_value()) << "colo did not end after SIGINT";
  EXPECT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGINT) << "wait status " << *status;
  for (pid_t pid : colods)
    EXPECT_TRUE(test::wait_until([&] { return test::process_gone(pid); }, 5s, 10ms)) << "colod " << pid << " survived";
  EXPECT_TRUE(nothing_left(colo.pid()));
}

TEST_F(BenchBridge, missingColodFailsNamingItAndLeavesNothingBehind) {
  const std::string missing = tmp_ + "-no-such-dir/colod";
  const auto r = test::run({test::colo_path(), "bench", "bridge", "--quick"}, 60s, options(missing));
  colo_pids_.push_back(r.pid);
  ASSERT_TRUE(r.exited) << test::describe(r);
  EXPECT_EQ(r.exit_code, 1) << test::describe(r);
  EXPECT_NE(r.err.find(missing), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("exit 127"), std::string::npos) << r.err;
  EXPECT_TRUE(nothing_left(r.pid));
}

}  // namespace
}  // namespace colo
