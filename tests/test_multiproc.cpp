// Multi-process behaviour with fork/exec'd colo-test-worker processes:
// mutual exclusion with exact counts, creators SIGKILLed before publishing,
// and segments of another user (the tests run as root and switch the worker
// to `nobody`).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "colo/node.hpp"
#include "segment.hpp"
#include "support.hpp"

namespace colo {
namespace {

using namespace std::chrono_literals;
using test::Process;

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::string status_text(const std::optional<int>& status) {
  if (!status) return "still running";
  if (WIFEXITED(*status)) return "exit " + std::to_string(WEXITSTATUS(*status));
  if (WIFSIGNALED(*status)) return "signal " + std::to_string(WTERMSIG(*status));
  return "status " + std::to_string(*status);
}

class MultiProcess : public test::NamespaceTest {
 protected:
  Node open_node(std::chrono::milliseconds ready_timeout = 2000ms) {
    NodeOptions o;
    o.ns = ns;
    o.ready_timeout = ready_timeout;
    auto node = Node::open(o);
    EXPECT_TRUE(node) << node.error().message;
    return std::move(node).value();
  }
};

// ------------------------------------------------------ mutual exclusion

TEST_F(MultiProcess, fourProcessesCountExactlyToOneHundredThousandUnderOneLock) {
  constexpr int kWorkers = 4;
  constexpr std::uint64_t kEach = 25'000;
  Node node = open_node();
  auto lock = node.lock("counter", OpenMode::create);
  ASSERT_TRUE(lock) << lock.error().message;
  test::SharedStateFile state(ns);
  std::vector<Process*> workers;
  for (int i = 0; i < kWorkers; ++i)
    workers.push_back(&adopt(Process::spawn(
        {test::worker_path(), "increment", ns, "counter", state.path(), std::to_string(kEach)})));
  ASSERT_TRUE(test::wait_until([&] { return state->ready.load() == kWorkers; }, 30s));

  state->go.store(1);
  for (Process* w : workers) {
    const auto status = w->wait_for(60s);
    ASSERT_TRUE(status.has_value()) << "worker " << w->pid() << " did not finish within 60 s";
    ASSERT_EQ(status_text(status), "exit 0") << w->out() << w->err();
  }

  EXPECT_EQ(state->counter.load(), kWorkers * kEach);
  const LockStats s = lock->stats();
  EXPECT_EQ(s.grants, kWorkers * kEach);
  EXPECT_EQ(s.fencing_epoch, kWorkers * kEach);
  EXPECT_LE(s.contended_grants, s.grants);
  std::printf("contended grants: %llu of %llu\n", static_cast<unsigned long long>(s.contended_grants),
              static_cast<unsigned long long>(s.grants));
  EXPECT_EQ(s.recoveries, 0u);
  EXPECT_EQ(s.waiters, 0u);
  EXPECT_EQ(s.holder.pid, 0u);
  auto mine = lock->acquire();
  ASSERT_TRUE(mine);
  EXPECT_EQ(mine->fencing_token(), kWorkers * kEach + 1);
  EXPECT_EQ(lock->stats().grants, kWorkers * kEach + 1);
}

// Creation is serialised by the registry, and the registry's own creation
// is exclusive: processes that use a fresh namespace and the same lock name
// at the same instant all succeed and all get the one lock. Many rounds,
// because the window (an opener between the creator's shm_open and its
// ftruncate or header write) is a few microseconds wide.
TEST_F(MultiProcess, processesCreatingTheSameLockInAFreshNamespaceAtOnceAllGetTheOneLock) {
  constexpr int kRounds = 200;  // the race shows in about 1 round in 60 on 2 cores
  constexpr int kWorkers = 4;
  int failed_rounds = 0;
  std::string failures;
  for (int round = 0; round < kRounds; ++round) {
    const std::string round_ns = ns + "r" + std::to_string(round);
    test::SharedStateFile state(round_ns);
    std::vector<Process> workers;
    for (int i = 0; i < kWorkers; ++i)
      workers.push_back(Process::spawn({test::worker_path(), "race-create", round_ns, "jobs", state.path()}));
    ASSERT_TRUE(test::wait_until([&] { return state->ready.load() == kWorkers; }, 30s));

    state->go.store(1);
    std::vector<std::string> tokens;
    bool round_failed = false;
    for (Process& w : workers) {
      const auto status = w.wait_for(30s);
      ASSERT_TRUE(status.has_value()) << "round " << round << ": worker " << w.pid() << " hangs";
      if (status_text(status) != "exit 0") {
        round_failed = true;
        failures += "round " + std::to_string(round) + ": " + status_text(status) + ": " + w.out();
      } else {
        tokens.push_back(w.out());
      }
    }

    failed_rounds += round_failed ? 1 : 0;
    std::sort(tokens.begin(), tokens.end());
    EXPECT_EQ(std::adjacent_find(tokens.begin(), tokens.end()), tokens.end()) << "a token granted twice";
    EXPECT_EQ(state->counter.load(), tokens.size());
    auto node = Node::open(test::node_options(round_ns));
    ASSERT_TRUE(node) << node.error().message;
    auto list = node->list();
    ASSERT_TRUE(list) << list.error().message;
    if (!round_failed) {
      ASSERT_EQ(list->size(), 1u) << "round " << round;
      EXPECT_EQ((*list)[0].state, ObjectState::ready);
      ASSERT_TRUE((*list)[0].lock.has_value());
      EXPECT_EQ((*list)[0].lock->grants, static_cast<std::uint64_t>(kWorkers));  // one lock for all
    }
    workers.clear();
    test::remove_namespace_files(round_ns);
  }
  EXPECT_EQ(failed_rounds, 0) << failures;
}

// ------------------------------------- creator killed during initialisation

TEST_F(MultiProcess, creatorKilledBeforePublishMakesOpenFailCreatorDiedAndCreateOrOpenReclaim) {
  test::SharedStateFile state(ns);
  Node node = open_node(2000ms);
  Process& creator = adopt(Process::spawn({test::worker_path(), "create-and-hang", ns, "jobs", state.path()}));
  ASSERT_TRUE(test::wait_until([&] { return state->holding_pid.load() != 0; }, 10s)) << creator.err();
  creator.kill(SIGKILL);
  ASSERT_TRUE(creator.wait_for(10s).has_value());
  const auto start = std::chrono::steady_clock::now();

  auto opened = node.lock("jobs", OpenMode::open);
  auto reclaimed = node.lock("jobs", OpenMode::create_or_open);

  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().code, Errc::creator_died);
  EXPECT_TRUE(contains(opened.error().message, "pid " + std::to_string(creator.pid()))) << opened.error().message;
  EXPECT_TRUE(contains(opened.error().message, "died before finishing")) << opened.error().message;
  ASSERT_TRUE(reclaimed) << reclaimed.error().message;
  auto g = reclaimed->acquire();
  ASSERT_TRUE(g);
  EXPECT_EQ(g->fencing_token(), 1u);
  EXPECT_FALSE(g->owner_died());
  auto info = shm::Segment::inspect(node.shm_name_of("jobs"));
  ASSERT_TRUE(info);
  EXPECT_EQ(info->creator.pid, static_cast<std::uint32_t>(::getpid()));
}

TEST_F(MultiProcess, creatorAliveButHangingMakesOpenersFailNotReadyWithinTheBoundedWait) {
  test::SharedStateFile state(ns);
  Node node = open_node(300ms);
  Process& creator = adopt(Process::spawn({test::worker_path(), "create-and-hang", ns, "jobs", state.path()}));
  ASSERT_TRUE(test::wait_until([&] { return state->holding_pid.load() != 0; }, 10s)) << creator.err();
  const auto start = std::chrono::steady_clock::now();

  auto opened = node.lock("jobs", OpenMode::open);
  auto created = node.lock("jobs", OpenMode::create_or_open);

  const auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().code, Errc::not_ready);
  EXPECT_TRUE(contains(opened.error().message, "creator is alive")) << opened.error().message;
  ASSERT_FALSE(created);
  EXPECT_EQ(created.error().code, Errc::not_ready);  // a live creator's segment is never reclaimed
  EXPECT_GE(elapsed, 600ms);                          // two bounded waits of 300 ms
  EXPECT_LT(elapsed, 10s);
  EXPECT_TRUE(test::file_exists(test::dev_shm(node.shm_name_of("jobs"))));

  creator.kill(SIGKILL);  // now it dies: the next opener reclaims
  ASSERT_TRUE(creator.wait_for(10s).has_value());
  auto after = node.lock("jobs", OpenMode::create_or_open);
  ASSERT_TRUE(after) << after.error().message;
}

// The creator is killed at random points of Segment::create -> init ->
// publish -> unlink, so what it leaves ranges over nothing, an empty file,
// a header-less file, a `creating` segment of a dead creator and a ready
// segment. The next create_or_open must return within its bounded wait,
// and either succeed or fail with a clear error naming the segment.
TEST_F(MultiProcess, creatorKilledAtRandomPointsNeverHangsTheNextOpener) {
  constexpr int kRounds = 20;
  std::mt19937 rng(std::random_device{}());
  int succeeded = 0;
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    Node node = open_node(200ms);
    const std::string shm_name = node.shm_name_of("jobs");
    {
      Process creator = Process::spawn({test::worker_path(), "create-loop", ns, "jobs"});
      std::this_thread::sleep_for(std::chrono::microseconds(2000 + rng() % 5000));
      creator.kill(SIGKILL);
      ASSERT_TRUE(creator.wait_for(10s).has_value());
    }
    const auto start = std::chrono::steady_clock::now();

    auto lock = node.lock("jobs", OpenMode::create_or_open);

    EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
    if (lock) {
      ++succeeded;
      auto g = lock->try_acquire_for(1s);
      EXPECT_TRUE(g.has_value());
    } else {
      const Errc code = lock.error().code;
      EXPECT_TRUE(code == Errc::not_ready || code == Errc::corrupt) << lock.error().message;
      EXPECT_TRUE(contains(lock.error().message, "/" + shm_name)) << lock.error().message;
    }
    ASSERT_TRUE(node.remove("jobs") || !test::file_exists(test::dev_shm(shm_name)));
    ::unlink(test::dev_shm(shm_name).c_str());
  }
  RecordProperty("succeeded", succeeded);
}

// ---------------------------------------- registry holder killed mid-write

TEST_F(MultiProcess, registryHolderKilledMidEntryLeavesTheRegistryUsableAndRepaired) {
  test::SharedStateFile state(ns);
  Process& writer = adopt(Process::spawn({test::worker_path(), "registry-hang", ns, state.path()}));
  ASSERT_TRUE(test::wait_until([&] { return state->holding_pid.load() != 0; }, 10s)) << writer.err();
  writer.kill(SIGKILL);
  ASSERT_TRUE(writer.wait_for(10s).has_value());
  Node node = open_node();

  auto lock = node.lock("jobs", OpenMode::create);
  auto half = node.lock("half", OpenMode::create);
  auto list = node.list();

  ASSERT_TRUE(lock) << lock.error().message;
  ASSERT_TRUE(half) << half.error().message;  // the dead writer's half entry was cleared, not kept
  ASSERT_TRUE(list) << list.error().message;
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].name, "half");
  EXPECT_EQ((*list)[0].state, ObjectState::ready);
  EXPECT_EQ((*list)[1].name, "jobs");
  EXPECT_EQ((*list)[1].state, ObjectState::ready);
}

// ------------------------------------------------- segments of another user

class OtherUser : public MultiProcess {
 protected:
  void SetUp() override {
    if (!test::running_as_root()) GTEST_SKIP() << "needs root to run a worker as nobody";
    MultiProcess::SetUp();
  }
  // `nobody` runs a copy of the worker made for it (test::worker_for_any_user):
  // the build tree may be closed to it.
  test::RunResult run_as_nobody(std::vector<std::string> args) {
    test::SpawnOptions o;
    o.uid = test::nobody_uid();
    o.gid = test::nogroup_gid();
    args.insert(args.begin(), test::worker_for_any_user(o));
    return test::run(args, 30s, o);
  }
  std::string nobody_text() const { return "uid " + std::to_string(test::nobody_uid()) + " (nobody)"; }
};

TEST_F(OtherUser, segmentsCreatedByNobodyWithMode0600AreRefusedToRootNamingOwnerAndMode) {
  const auto made = run_as_nobody({"node-create-lock", ns, "jobs"});
  ASSERT_TRUE(made.exited && made.exit_code == 0) << test::describe(made);
  const std::string lock_shm = "colo." + ns + ".obj.jobs";
  const struct stat st = test::stat_of(test::dev_shm(lock_shm));
  ASSERT_EQ(st.st_uid, test::nobody_uid());
  ASSERT_EQ(st.st_mode & 07777, 0600u);

  auto node = Node::open(test::node_options(ns));
  auto segment = shm::Segment::open(lock_shm, shm::SegmentKind::lock, 200ms);

  ASSERT_FALSE(node);
  EXPECT_EQ(node.error().code, Errc::permission_denied);
  EXPECT_TRUE(contains(node.error().message, "/colo." + ns + ".registry")) << node.error().message;
  EXPECT_TRUE(contains(node.error().message, nobody_text())) << node.error().message;
  EXPECT_TRUE(contains(node.error().message, "mode 0600")) << node.error().message;
  ASSERT_FALSE(segment);
  EXPECT_EQ(segment.error().code, Errc::permission_denied);
  EXPECT_TRUE(contains(segment.error().message, "/" + lock_shm)) << segment.error().message;
  EXPECT_TRUE(contains(segment.error().message, nobody_text())) << segment.error().message;
  EXPECT_TRUE(contains(segment.error().message, "mode 0600")) << segment.error().message;
}

TEST_F(OtherUser, segmentsCreatedByRootWithMode0600AreRefusedToNobodyNamingOwnerAndMode) {
  auto node = Node::open(test::node_options(ns));
  ASSERT_TRUE(node) << node.error().message;
  ASSERT_TRUE(node->lock("jobs", OpenMode::create));
  const std::string lock_shm = node->shm_name_of("jobs");

  const auto via_node = run_as_nobody({"node-open-lock", ns, "jobs"});
  const auto via_segment = run_as_nobody({"segment-open", lock_shm});

  EXPECT_TRUE(via_node.exited && via_node.exit_code == 3) << test::describe(via_node);
  EXPECT_TRUE(contains(via_node.out, "error permission denied: namespace '" + ns + "': segment /colo." + ns +
                                         ".registry was created by uid 0 (root)"))
      << test::describe(via_node);
  EXPECT_TRUE(contains(via_node.out, "mode 0600")) << test::describe(via_node);
  EXPECT_TRUE(via_segment.exited && via_segment.exit_code == 3) << test::describe(via_segment);
  EXPECT_TRUE(contains(via_segment.out, "error permission denied: segment /" + lock_shm + " was created by uid 0 (root)"))
      << test::describe(via_segment);
  EXPECT_TRUE(contains(via_segment.out, "mode 0600")) << test::describe(via_segment);
  EXPECT_EQ(node->lock("jobs", OpenMode::open)->stats().grants, 0u);  // nobody got in
}

TEST_F(OtherUser, segmentsSharedWithAGroupAtMode0660OpenForAMemberOfTheGroup) {
  NodeOptions o;
  o.ns = ns;
  o.group = test::nogroup_gid();
  auto node = Node::open(o);
  ASSERT_TRUE(node) << node.error().message;
  auto lock = node->lock("jobs", OpenMode::create);
  ASSERT_TRUE(lock) << lock.error().message;

  const auto r = run_as_nobody({"node-open-lock", ns, "jobs"});

  EXPECT_TRUE(r.exited && r.exit_code == 0) << test::describe(r);
  EXPECT_EQ(r.out, "token=1\n");
  EXPECT_EQ(lock->stats().grants, 1u);
}

// A namespace taken first by another user ("squatting"): the owner's error
// says who has it and how to clear it; once its files are removed, the
// owner creates it. In a namespace directory only root may write to, the
// other user cannot take it first at all.
TEST_F(OtherUser, aNamespaceTakenFirstByAnotherUserIsExplainedAndClearedAndADirectoryPreventsIt) {
  const auto squat = run_as_nobody({"node-create-lock", ns, "x"});
  ASSERT_TRUE(squat.exited && squat.exit_code == 0) << test::describe(squat);

  auto refused = Node::open(test::node_options(ns));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::permission_denied);
  EXPECT_EQ(refused.error().message,
            "namespace '" + ns + "': segment /colo." + ns + ".registry was created by " + nobody_text() +
                ", group gid " + std::to_string(test::nogroup_gid()) + " (nogroup), with mode 0600; run as that "
                "user, or have it created with a group this user is in (`colo create --group GROUP`, "
                "NodeOptions::group): remove it first if it exists. Whoever creates a namespace's registry first "
                "owns the namespace. If that is not its rightful owner, remove its files as root (rm /dev/shm/colo." +
                ns + ".*) and create it again; a namespace directory only its owner may write to (COLO_SHM_DIR, "
                "NodeOptions::shm_dir) cannot be taken first (docs/security.md)");
  test::remove_namespace_files(ns);  // what the message says to do
  auto cleared = Node::open(test::node_options(ns));
  ASSERT_TRUE(cleared) << cleared.error().message;
  EXPECT_TRUE(cleared->lock("x", OpenMode::create));

  char tmpl[] = "/dev/shm/colo-test-dir-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  ASSERT_EQ(::chmod(dir.c_str(), 0755), 0);  // root's: others may read it, not write
  test::SpawnOptions in_dir;
  in_dir.env.push_back("COLO_SHM_DIR=" + dir);
  in_dir.uid = test::nobody_uid();
  in_dir.gid = test::nogroup_gid();
  const std::string worker = test::worker_for_any_user(in_dir);
  const auto denied = test::run({worker, "node-create-lock", ns, "x"}, 30s, in_dir);
  NodeOptions mine = test::node_options(ns);
  mine.shm_dir = dir;
  auto owner = Node::open(mine);
  (void)std::system(("rm -rf " + dir).c_str());

  EXPECT_TRUE(denied.exited && denied.exit_code == 3) << test::describe(denied);
  EXPECT_TRUE(contains(denied.out, "error permission denied: creating segment " + dir + "/colo." + ns +
                                       ".registry: permission denied\n"))
      << test::describe(denied);
  EXPECT_TRUE(owner) << owner.error().message;
}

// The worker runs as another user wherever the build tree is: here its
// binary sits in a directory only root may enter (as a checkout in root's
// home), and `nobody` still runs the copy made for it.
TEST_F(OtherUser, theWorkerRunsAsAnotherUserFromABuildTreeClosedToIt) {
  char tmpl[] = "/tmp/colo-test-closed-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);  // mode 0700
  const std::string closed = std::string(tmpl) + "/colo-test-worker";
  ASSERT_EQ(std::system(("cp '" + test::worker_path() + "' '" + closed + "'").c_str()), 0);
  test::SpawnOptions direct;
  direct.uid = test::nobody_uid();
  direct.gid = test::nogroup_gid();

  const auto from_closed = test::run({closed, "segment-open", "none"}, 30s, direct);
  const auto copy = run_as_nobody({"segment-open", "none"});
  (void)std::system(("rm -rf " + std::string(tmpl)).c_str());

  EXPECT_TRUE(from_closed.exited && from_closed.exit_code == 127) << test::describe(from_closed);
  EXPECT_EQ(from_closed.err, "colo-test: execve failed\n");
  EXPECT_TRUE(copy.exited && copy.exit_code == 3) << test::describe(copy);
  EXPECT_EQ(copy.out, "error not found: segment /none does not exist\n");
}

}  // namespace
}  // namespace colo
