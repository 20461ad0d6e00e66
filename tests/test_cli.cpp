// The `colo` tool, run as a real process (COLO_BIN): `colo lock` (tokens,
// exit status, owner death, timeout), usage errors, --help, `ls`/`stat`
// (--json), `rm`, `gc`, and damaged segments.
//
// Tests with "Killed" in their name SIGKILL a process; meson runs them in the
// multiproc suite, not in parallel with other tests.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "colo/node.hpp"
#include "lock_record.hpp"
#include "segment.hpp"
#include "support.hpp"

namespace colo {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using test::run_colo;
using test::describe;
using test::Process;

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

class ColoCli : public test::NamespaceTest {
 protected:
  std::string shm_name(const std::string& object) { return "colo." + ns + ".obj." + object; }

  json parse(const test::RunResult& r) {
    EXPECT_TRUE(r.exited && r.exit_code == 0) << describe(r);
    try {
      return json::parse(r.out);
    } catch (const json::exception& e) {
      ADD_FAILURE() << "not JSON (" << e.what() << "):\n" << r.out;
      return json::object();
    }
  }
};

// ------------------------------------------------------------- colo lock

TEST_F(ColoCli, lockPrintsStrictlyIncreasingFencingTokens) {
  std::string printed;
  for (int i = 0; i < 5; ++i) {
    const auto r = run_colo(ns, {"lock", "jobs", "--", "sh", "-c", "echo $COLO_FENCING_TOKEN"});
    ASSERT_TRUE(r.exited && r.exit_code == 0) << describe(r);
    printed += r.out;
  }

  EXPECT_EQ(printed, "1\n2\n3\n4\n5\n");
}

TEST_F(ColoCli, lockExitsWithTheCommandsExitStatus) {
  const auto seven = run_colo(ns, {"lock", "jobs", "--", "sh", "-c", "exit 7"});
  const auto zero = run_colo(ns, {"lock", "jobs", "--", "true"});
  const auto signalled = run_colo(ns, {"lock", "jobs", "--", "sh", "-c", "kill -TERM $$"});
  const auto missing = run_colo(ns, {"lock", "jobs", "--", "/nonexistent/command"});

  EXPECT_TRUE(seven.exited && seven.exit_code == 7) << describe(seven);
  EXPECT_TRUE(zero.exited && zero.exit_code == 0) << describe(zero);
  EXPECT_TRUE(signalled.exited && signalled.exit_code == 128 + SIGTERM) << describe(signalled);
  EXPECT_TRUE(missing.exited && missing.exit_code == 127) << describe(missing);
  EXPECT_TRUE(contains(missing.err, "cannot run '/nonexistent/command'")) << describe(missing);
}

TEST_F(ColoCli, lockDoesNotTellOwnerDiedWhenNobodyDied) {
  const auto r = run_colo(ns, {"lock", "jobs", "--", "sh", "-c", "echo died=${COLO_OWNER_DIED:-unset}"});

  ASSERT_TRUE(r.exited && r.exit_code == 0) << describe(r);
  EXPECT_EQ(r.out, "died=unset\n");
}

TEST_F(ColoCli, lockHolderKilledTellsTheNextHolderOwnerDied) {
  const std::string marker = "/tmp/colo-test-" + ns + ".holding";
  ::unlink(marker.c_str());
  // The command writes its pid, then becomes `sleep` (same pid).
  test::SpawnOptions own_group;
  own_group.own_process_group = true;
  Process holder = Process::spawn({test::colo_path(), "--ns", ns, "lock", "jobs", "--", "sh", "-c",
                                   "echo $$ > " + marker + ".tmp && mv " + marker + ".tmp " + marker + " && exec sleep 60"},
                                  own_group);
  ASSERT_TRUE(test::wait_until([&] { return test::file_exists(marker); }, 10s)) << holder.err();
  pid_t command_pid = 0;
  {
    std::ifstream in(marker);
    in >> command_pid;
  }
  ::unlink(marker.c_str());

  ::kill(holder.pid(), SIGKILL);  // `colo lock` itself, not its command
  ASSERT_TRUE(holder.wait_for(10s).has_value());
  const auto next = run_colo(ns, {"lock", "jobs", "--", "sh", "-c", "echo died=$COLO_OWNER_DIED token=$COLO_FENCING_TOKEN"});
  const auto after = run_colo(ns, {"lock", "jobs", "--", "sh", "-c", "echo died=${COLO_OWNER_DIED:-unset} token=$COLO_FENCING_TOKEN"});

  ASSERT_TRUE(next.exited && next.exit_code == 0) << describe(next);
  EXPECT_EQ(next.out, "died=1 token=2\n");
  EXPECT_EQ(after.out, "died=unset token=3\n");
  // The orphaned command got SIGTERM (PR_SET_PDEATHSIG) instead of running on unprotected.
  EXPECT_TRUE(test::wait_until([&] { return test::process_gone(command_pid); }, 10s)) << "pid " << command_pid;
  const auto stat = run_colo(ns, {"stat", "jobs", "--json"});
  const json j = parse(stat);
  EXPECT_EQ(j["lock"]["recoveries"], 1);
}

TEST_F(ColoCli, lockTimeoutExits75WithAMessageWhileAnotherProcessHolds) {
  auto node = Node::open(test::node_options(ns));
  ASSERT_TRUE(node);
  auto lock = node->lock("jobs");
  ASSERT_TRUE(lock);
  test::SharedStateFile state(ns);
  Process& holder = adopt(Process::spawn({test::worker_path(), "hold", ns, "jobs", state.path()}));
  ASSERT_TRUE(test::wait_until([&] { return state->holding_pid.load() != 0; }, 10s)) << holder.err();

  const auto r = run_colo(ns, {"lock", "--timeout", "0.2", "jobs", "--", "echo", "ran"});

  EXPECT_TRUE(r.exited && r.exit_code == 75) << describe(r);
  EXPECT_EQ(r.out, "");  // the command did not run
  EXPECT_TRUE(contains(r.err, "timed out after 0.2 s waiting for lock 'jobs'")) << r.err;
  EXPECT_TRUE(contains(r.err, "held by pid " + std::to_string(holder.pid()))) << r.err;
  EXPECT_EQ(lock->stats().timeouts, 1u);
  state->release.store(1);
  ASSERT_TRUE(holder.wait_for(10s).has_value());
}

TEST_F(ColoCli, lockTimeoutGrantsAFreeLock) {
  const auto r = run_colo(ns, {"lock", "--timeout", "0.2", "jobs", "--", "echo", "ran"});

  EXPECT_TRUE(r.exited && r.exit_code == 0) << describe(r);
  EXPECT_EQ(r.out, "ran\n");
}

// ------------------------------------------------------------ usage errors

TEST_F(ColoCli, lockRefusesBadNamesWithAMessage) {
  for (const std::string& bad : std::vector<std::string>{"a//b", "../x", "a b", "/lead", std::string(201, 'a')}) {
    const auto r = run_colo(ns, {"lock", bad, "--", "true"});

    EXPECT_TRUE(r.exited && r.exit_code == 1) << bad << ": " << describe(r);
    EXPECT_TRUE(contains(r.err, "invalid object name")) << bad << ": " << describe(r);
  }
  EXPECT_EQ(test::namespace_files(ns), std::vector<std::string>{"colo." + ns + ".registry"});
}

TEST_F(ColoCli, refusesBadNamespaceWithAMessage) {
  for (const std::string& bad : std::vector<std::string>{"a.b", "a/b", std::string(33, 'n')}) {
    const auto r = run_colo(bad, {"ls"});

    EXPECT_TRUE(r.exited && r.exit_code == 1) << bad << ": " << describe(r);
    EXPECT_TRUE(contains(r.err, "invalid namespace")) << bad << ": " << describe(r);
  }
}

TEST_F(ColoCli, lockWithoutCommandIsAUsageError) {
  const auto no_command = run_colo(ns, {"lock", "jobs"});
  const auto empty_after_dashes = run_colo(ns, {"lock", "jobs", "--"});

  EXPECT_TRUE(no_command.exited && no_command.exit_code == 2) << describe(no_command);
  EXPECT_FALSE(no_command.err.empty());
  EXPECT_TRUE(empty_after_dashes.exited && empty_after_dashes.exit_code != 0) << describe(empty_after_dashes);
  EXPECT_FALSE(empty_after_dashes.err.empty());
}

TEST_F(ColoCli, unknownSubcommandIsAUsageError) {
  const auto r = run_colo(ns, {"frobnicate"});

  EXPECT_TRUE(r.exited && r.exit_code == 2) << describe(r);
  EXPECT_TRUE(contains(r.err, "colo: ")) << describe(r);
}

TEST_F(ColoCli, missingSubcommandIsAUsageError) {
  const auto r = run_colo(ns, {});

  EXPECT_TRUE(r.exited && r.exit_code == 2) << describe(r);
  EXPECT_TRUE(contains(r.err, "subcommand is required")) << describe(r);
}

TEST_F(ColoCli, everySubcommandsHelpExitsZero) {
  const std::vector<std::vector<std::string>> commands = {
      {"--help"},         {"ls", "--help"},  {"stat", "--help"}, {"create", "--help"}, {"lock", "--help"},
      {"pub", "--help"},  {"sub", "--help"}, {"top", "--help"},  {"rm", "--help"},     {"gc", "--help"},
      {"demo", "--help"}, {"bench", "--help"}, {"bench", "lock", "--help"}, {"bench", "queue", "--help"},
      {"bench", "topic", "--help"}, {"bench", "bridge", "--help"}};
  for (const auto& args : commands) {
    const auto r = run_colo(ns, args);

    EXPECT_TRUE(r.exited && r.exit_code == 0) << args[0] << ": " << describe(r);
    EXPECT_TRUE(contains(r.out, "Usage:")) << args[0] << ": " << describe(r);
  }
  EXPECT_TRUE(test::namespace_files(ns).empty());  // --help touches nothing
}

// ---------------------------------------------------------- ls and stat

TEST_F(ColoCli, lsJsonListsTheLockWithItsCountersAndNoHolder) {
  const auto created = run_colo(ns, {"create", "lock", "jobs"});
  ASSERT_TRUE(created.exited && created.exit_code == 0) << describe(created);
  EXPECT_EQ(created.out, "created lock 'jobs' in namespace '" + ns + "'\n");
  for (int i = 0; i < 3; ++i) ASSERT_EQ(run_colo(ns, {"lock", "jobs", "--", "true"}).exit_code, 0);

  const json j = parse(run_colo(ns, {"ls", "--json"}));

  EXPECT_EQ(j["namespace"], ns);
  ASSERT_EQ(j["objects"].size(), 1u) << j.dump(2);
  const json& o = j["objects"][0];
  EXPECT_EQ(o["name"], "jobs");
  EXPECT_EQ(o["kind"], "lock");
  EXPECT_EQ(o["scope"], "host");
  EXPECT_EQ(o["state"], "ready");
  EXPECT_EQ(o["segment"], "/" + shm_name("jobs"));
  EXPECT_EQ(o["size_bytes"], sizeof(shm::SegmentHeader) + sizeof(detail::LockRecord));
  EXPECT_EQ(o["creator"]["pid"], created.pid);
  EXPECT_EQ(o["creator"]["alive"], false);
  EXPECT_EQ(o["lock"]["grants"], 3);
  EXPECT_EQ(o["lock"]["fencing_epoch"], 3);
  EXPECT_EQ(o["lock"]["recoveries"], 0);
  EXPECT_EQ(o["lock"]["timeouts"], 0);
  EXPECT_EQ(o["lock"]["waiters"], 0);
  EXPECT_TRUE(o["lock"]["holder"].is_null()) << o.dump(2);
}

TEST_F(ColoCli, statJsonShowsTheLocksCountersAndNoHolder) {
  for (int i = 0; i < 4; ++i) ASSERT_EQ(run_colo(ns, {"lock", "jobs", "--", "true"}).exit_code, 0);

  const json j = parse(run_colo(ns, {"stat", "jobs", "--json"}));

  EXPECT_EQ(j["name"], "jobs");
  EXPECT_EQ(j["kind"], "lock");
  EXPECT_EQ(j["state"], "ready");
  EXPECT_EQ(j["lock"]["grants"], 4);
  EXPECT_EQ(j["lock"]["contended_grants"], 0);
  EXPECT_EQ(j["lock"]["fencing_epoch"], 4);
  EXPECT_TRUE(j["lock"]["holder"].is_null()) << j.dump(2);
}

TEST_F(ColoCli, statJsonShowsALiveHolder) {
  auto node = Node::open(test::node_options(ns));
  ASSERT_TRUE(node);
  ASSERT_TRUE(node->lock("jobs"));
  test::SharedStateFile state(ns);
  Process& holder = adopt(Process::spawn({test::worker_path(), "hold", ns, "jobs", state.path()}));
  ASSERT_TRUE(test::wait_until([&] { return state->holding_pid.load() != 0; }, 10s)) << holder.err();

  const json j = parse(run_colo(ns, {"stat", "jobs", "--json"}));
  const auto text = run_colo(ns, {"stat", "jobs"});

  ASSERT_TRUE(j["lock"]["holder"].is_object()) << j.dump(2);
  EXPECT_EQ(j["lock"]["holder"]["pid"], holder.pid());
  EXPECT_EQ(j["lock"]["holder"]["tid"], holder.pid());
  EXPECT_EQ(j["lock"]["holder"]["alive"], true);
  EXPECT_TRUE(contains(text.out, "holder:           pid " + std::to_string(holder.pid()))) << describe(text);
  state->release.store(1);
  ASSERT_TRUE(holder.wait_for(10s).has_value());
}

TEST_F(ColoCli, statOfMissingObjectFailsNamingIt) {
  const auto r = run_colo(ns, {"stat", "absent"});

  EXPECT_TRUE(r.exited && r.exit_code == 1) << describe(r);
  EXPECT_TRUE(contains(r.err, "no object 'absent' in namespace '" + ns + "'")) << describe(r);
}

TEST_F(ColoCli, createOfExistingLockFails) {
  ASSERT_EQ(run_colo(ns, {"create", "lock", "jobs"}).exit_code, 0);

  const auto r = run_colo(ns, {"create", "lock", "jobs"});

  EXPECT_TRUE(r.exited && r.exit_code == 1) << describe(r);
  EXPECT_TRUE(contains(r.err, "already exists")) << describe(r);
}

// ---------------------------------------------------------------- rm, gc

TEST_F(ColoCli, rmRemovesTheLock) {
  ASSERT_EQ(run_colo(ns, {"create", "lock", "jobs"}).exit_code, 0);

  const auto r = run_colo(ns, {"rm", "jobs"});

  EXPECT_TRUE(r.exited && r.exit_code == 0) << describe(r);
  EXPECT_EQ(r.out, "removed 'jobs' from namespace '" + ns + "'\n");
  EXPECT_FALSE(test::file_exists(test::dev_shm(shm_name("jobs"))));
  EXPECT_EQ(parse(run_colo(ns, {"ls", "--json"}))["objects"].size(), 0u);
  const auto again = run_colo(ns, {"rm", "jobs"});
  EXPECT_TRUE(again.exited && again.exit_code == 1) << describe(again);
}

class ColoCliGc : public ColoCli {
 protected:
  // An abandoned segment ("half": its creator died before ready) and a
  // registry entry whose segment is gone ("gone").
  void SetUp() override {
    ColoCli::SetUp();
    auto seg = shm::Segment::create(shm_name("half"), "half", shm::SegmentKind::lock, sizeof(detail::LockRecord), {});
    ASSERT_TRUE(seg);
    seg->header().creator_start_time += 1;  // same pid, other start time: dead
    ASSERT_EQ(run_colo(ns, {"create", "lock", "gone"}).exit_code, 0);
    ASSERT_EQ(::unlink(test::dev_shm(shm_name("gone")).c_str()), 0);
  }
};

TEST_F(ColoCliGc, dryRunListsButRemovesNothing) {
  const auto before = test::namespace_files(ns);

  const auto r = run_colo(ns, {"gc", "--dry-run"});

  EXPECT_TRUE(r.exited && r.exit_code == 0) << describe(r);
  EXPECT_EQ(r.out, "would remove segment /" + shm_name("half") + " (its creator died before it was ready)\n" +
                       "would remove registry entry 'gone' (its segment is gone)\n");
  EXPECT_EQ(test::namespace_files(ns), before);
  EXPECT_EQ(parse(run_colo(ns, {"ls", "--json"}))["objects"].size(), 2u);
}

TEST_F(ColoCliGc, gcRemovesAbandonedSegmentsAndDanglingEntries) {
  const auto r = run_colo(ns, {"gc"});

  EXPECT_TRUE(r.exited && r.exit_code == 0) << describe(r);
  EXPECT_EQ(r.out, "removed segment /" + shm_name("half") + " (its creator died before it was ready)\n" +
                       "removed registry entry 'gone' (its segment is gone)\n");
  EXPECT_FALSE(test::file_exists(test::dev_shm(shm_name("half"))));
  EXPECT_EQ(parse(run_colo(ns, {"ls", "--json"}))["objects"].size(), 0u);
  const auto again = run_colo(ns, {"gc"});
  EXPECT_EQ(again.out, "nothing to remove in namespace '" + ns + "'\n");
}

// ---------------------------------------------------- damaged segments

class ColoCliDamaged : public ColoCli {
 protected:
  void SetUp() override {
    ColoCli::SetUp();
    ASSERT_EQ(run_colo(ns, {"create", "lock", "jobs"}).exit_code, 0);
  }

  // `colo stat` and `colo ls` exit normally and show the problem.
  void expect_shown(const std::string& problem) {
    const auto stat = run_colo(ns, {"stat", "jobs"});
    const auto ls = run_colo(ns, {"ls"});
    const auto ls_json = run_colo(ns, {"ls", "--json"});

    EXPECT_TRUE(stat.exited && stat.exit_code == 0) << describe(stat);
    EXPECT_TRUE(contains(stat.out, "state:            corrupt: ")) << describe(stat);
    EXPECT_TRUE(contains(stat.out, problem)) << describe(stat);
    EXPECT_TRUE(ls.exited && ls.exit_code == 0) << describe(ls);
    EXPECT_TRUE(contains(ls.out, "corrupt: ")) << describe(ls);
    EXPECT_TRUE(contains(ls.out, problem)) << describe(ls);
    const json j = parse(ls_json);
    ASSERT_EQ(j["objects"].size(), 1u);
    const std::string state = j["objects"][0]["state"].get<std::string>();
    EXPECT_EQ(state.rfind("corrupt: ", 0), 0u) << state;
    EXPECT_TRUE(contains(state, problem)) << state;
  }
};

TEST_F(ColoCliDamaged, statAndLsShowABadMagic) {
  test::edit_header(shm_name("jobs"), [](shm::SegmentHeader& h) { h.magic = 0x4142434445464748; });

  expect_shown("bad magic 0x4142434445464748");
}

TEST_F(ColoCliDamaged, statAndLsShowAWrongLayoutVersion) {
  test::edit_header(shm_name("jobs"), [](shm::SegmentHeader& h) { h.layout_version = 3; });

  expect_shown("segment /" + shm_name("jobs") + " has layout version 3");
}

TEST_F(ColoCliDamaged, statAndLsShowAFileTruncatedBelowTheHeader) {
  test::truncate_file(shm_name("jobs"), 100);

  expect_shown("truncated: 100 bytes");
}

TEST_F(ColoCliDamaged, statAndLsShowAFileShorterThanItsHeaderSays) {
  test::truncate_file(shm_name("jobs"), 700);

  expect_shown("segment /" + shm_name("jobs") + " header says 1024 bytes but the file has 700");
}

TEST_F(ColoCliDamaged, lockOnADamagedSegmentFailsCleanly) {
  test::edit_header(shm_name("jobs"), [](shm::SegmentHeader& h) { h.magic = 0x4142434445464748; });

  const auto r = run_colo(ns, {"lock", "jobs", "--", "echo", "ran"});

  EXPECT_TRUE(r.exited && r.exit_code == 1) << describe(r);
  EXPECT_EQ(r.out, "");
  EXPECT_TRUE(contains(r.err, "magic 0x4142434445464748")) << describe(r);
}

TEST_F(ColoCliDamaged, lsOnADamagedRegistryFailsCleanlyNamingIt) {
  const std::string registry = "colo." + ns + ".registry";
  test::edit_header(registry, [](shm::SegmentHeader& h) { h.magic = 0x4142434445464748; });

  const auto r = run_colo(ns, {"ls"});

  EXPECT_TRUE(r.exited && r.exit_code == 1) << describe(r);
  EXPECT_TRUE(contains(r.err, "/" + registry)) << describe(r);
  EXPECT_TRUE(contains(r.err, "magic 0x4142434445464748")) << describe(r);
}

TEST_F(ColoCliDamaged, lsOnATruncatedRegistryFailsCleanlyNamingIt) {
  const std::string registry = "colo." + ns + ".registry";
  test::truncate_file(registry, 1000);

  const auto r = run_colo(ns, {"ls"});

  EXPECT_TRUE(r.exited && r.exit_code == 1) << describe(r);
  EXPECT_TRUE(contains(r.err, "/" + registry)) << describe(r);
  EXPECT_TRUE(contains(r.err, "file has 1000")) << describe(r);
}

}  // namespace
}  // namespace colo
