// `colo bench cluster-lock`, run as a real process against the Redis server
// of tests/services (suite `services`): exact checks, never timings. Speed is
// the benchmark's business; here every grant it made must have been
// exclusive with increasing fencing tokens, every colod-side process served,
// and nothing left behind, after a normal end or a SIGINT.
//
// The server comes from COLO_REDIS (tests/services/services.sh env); without
// it the tests skip, or fail under COLO_REQUIRE_SERVICES=1.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "support.hpp"

namespace colo {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

constexpr int kProcesses = 8;        // the bench's default
constexpr int kQuickIterations = 50;  // --quick

std::string env(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr ? value : "";
}

// What the bench names its scratch namespace: clbench-<kind><pid of colo>.
std::string ns_of(pid_t colo_pid) { return "clbench-redis" + std::to_string(colo_pid); }

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

class BenchClusterLock : public ::testing::Test {
 protected:
  void SetUp() override {
    if (env("COLO_REDIS").empty()) {
      if (env("COLO_REQUIRE_SERVICES") == "1") FAIL() << "COLO_REDIS is not set, and COLO_REQUIRE_SERVICES=1";
      GTEST_SKIP() << "COLO_REDIS is not set (eval \"$(tests/services/services.sh env)\")";
    }
  }
  void TearDown() override {
    for (pid_t pid : colo_pids_) test::remove_namespace_files(ns_of(pid));
  }

  test::SpawnOptions options() const {
    test::SpawnOptions o;
    o.env = {"COLOD_BIN=" + env("COLOD_BIN")};
    return o;
  }

  std::vector<pid_t> colo_pids_;
};

// One side's contended figures: every grant checked and clean.
void expect_clean_contention(const json& side, const char* which) {
  SCOPED_TRACE(which);
  EXPECT_TRUE(side["error"].is_null()) << side.dump();
  EXPECT_EQ(side["exclusion_violations"], 0) << side.dump();
  EXPECT_EQ(side["token_regressions"], 0) << side.dump();
  EXPECT_EQ(side["tokens_increasing"], true) << side.dump();
  EXPECT_GT(side["grants"].get<std::uint64_t>(), 0u) << side.dump();
  ASSERT_EQ(side["per_process_grants"].size(), static_cast<std::size_t>(kProcesses)) << side.dump();
  std::uint64_t sum = 0;
  for (const auto& g : side["per_process_grants"]) sum += g.get<std::uint64_t>();
  EXPECT_EQ(sum, side["grants"].get<std::uint64_t>());
  // Every timed grant was checked, and so was each process's untimed first one.
  EXPECT_GE(side["grants_checked"].get<std::uint64_t>(), sum + kProcesses);
}

TEST_F(BenchClusterLock, quickRunOnRedisIsExclusiveWithIncreasingTokensAndLeavesNothingBehind) {
  const auto r = test::run({test::colo_path(), "bench", "cluster-lock", "--quick", "--json", "--backends", "redis"},
                           180s, options());
  colo_pids_.push_back(r.pid);
  ASSERT_TRUE(r.exited) << test::describe(r);
  ASSERT_EQ(r.exit_code, 0) << test::describe(r);
  const json j = json::parse(r.out);
  EXPECT_EQ(j["benchmark"], "cluster-lock");
  EXPECT_EQ(j["correct"], true);
  EXPECT_EQ(j["settings"]["processes"], kProcesses);
  ASSERT_EQ(j["backends"].size(), 1u) << j.dump(2);

  const json& b = j["backends"][0];
  EXPECT_EQ(b["kind"], "redis");
  ASSERT_EQ(b["status"], "ran") << b.dump(2);  // the server is up: it may not be skipped
  EXPECT_EQ(b["correct"], true) << b.dump(2);
  EXPECT_EQ(b["namespace"], ns_of(r.pid));
  EXPECT_NE(b["lock_names"]["colod"], b["lock_names"]["direct"]);

  expect_clean_contention(b["contended"]["colod"], "contended, colod");
  expect_clean_contention(b["contended"]["direct"], "contended, direct");
  // Fairness through colod: each of the 8 processes was granted in the window.
  EXPECT_EQ(b["contended"]["colod"]["processes_without_grant"], 0);
  for (const auto& g : b["contended"]["colod"]["per_process_grants"]) EXPECT_GT(g.get<std::uint64_t>(), 0u);
  EXPECT_GT(b["contended"]["colod"]["backend_acquisitions"].get<std::uint64_t>(), 0u);

  const json& u = b["uncontended"];
  EXPECT_EQ(u["token_regressions"], 0) << u.dump();
  for (const char* figure : {"colod_cold", "colod_warm", "direct"}) {
    EXPECT_EQ(u[figure]["samples"], kQuickIterations) << figure;
    EXPECT_FALSE(u[figure]["p50_us"].is_null()) << figure;
  }

  // Both goals are measured (whether they are met is a matter of speed).
  for (const auto& [name, goal] : b["goals"].items()) EXPECT_FALSE(goal["met"].is_null()) << name;

  EXPECT_EQ(b["leftovers"], json::array());
  EXPECT_EQ(test::namespace_files(ns_of(r.pid)), std::vector<std::string>{});
}

TEST_F(BenchClusterLock, interruptedRunKillsColodAndItsProcessesAndRemovesTheNamespace) {
  // Long enough to be interrupted while 8 processes contend through colod.
  auto colo = test::Process::spawn(
      {test::colo_path(), "bench", "cluster-lock", "--backends", "redis", "--seconds", "30"}, options());
  colo_pids_.push_back(colo.pid());
  // `colo bench` runs colo-bench in its place (same pid): the contending
  // processes it forks carry that name.
  std::vector<pid_t> colods;
  ASSERT_TRUE(test::wait_until(
      [&] {
        colods = children_named(colo.pid(), "colod");
        return colods.size() == 1 && children_named(colo.pid(), "colo-bench").size() == kProcesses;
      },
      30s, 20ms))
      << colo.err();
  const std::vector<pid_t> contenders = children_named(colo.pid(), "colo-bench");
  std::this_thread::sleep_for(500ms);
  ASSERT_FALSE(colo.reaped());
  colo.kill(SIGINT);
  const auto status = colo.wait_for(15s);
  ASSERT_TRUE(status.has_value()) << "colo did not end after SIGINT";
  EXPECT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGINT) << "wait status " << *status;
  for (pid_t pid : colods)
    EXPECT_TRUE(test::wait_until([&] { return test::process_gone(pid); }, 5s, 10ms)) << "colod " << pid << " survived";
  for (pid_t pid : contenders)
    EXPECT_TRUE(test::wait_until([&] { return test::process_gone(pid); }, 5s, 10ms))
        << "process " << pid << " survived";
  EXPECT_EQ(test::namespace_files(ns_of(colo.pid())), std::vector<std::string>{});
}

}  // namespace
}  // namespace colo
