// Node and its registry: open modes, errors that name the object and the
// namespace, list(), remove(), gc() (and its dry run), reclaiming segments
// whose creator died before `ready`, scopes, group sharing.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/mman.h>  // mmap: scribbling on a ring's slots
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <string>

#include "colo/node.hpp"
#include "lock_record.hpp"
#include "registry.hpp"
#include "ring.hpp"  // RingControl: the slots a scribbler damages
#include "segment.hpp"
#include "support.hpp"

namespace colo {
namespace {

using namespace std::chrono_literals;
using test::dev_shm;

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// A segment file of /dev/shm mapped writable, as a scribbling process
// would: `body` is past its SegmentHeader (nullptr if it cannot be mapped).
struct WritableMapping {
  explicit WritableMapping(const std::string& file) {
    const int fd = ::open(file.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return;
    size = static_cast<std::size_t>(test::stat_of(file).st_size);
    void* mapped = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    if (mapped == MAP_FAILED) return;
    base = static_cast<std::byte*>(mapped);
    body = base + sizeof(shm::SegmentHeader);
  }
  ~WritableMapping() {
    if (base != nullptr) ::munmap(base, size);
  }
  WritableMapping(const WritableMapping&) = delete;
  WritableMapping& operator=(const WritableMapping&) = delete;
  std::byte* base = nullptr;
  std::byte* body = nullptr;
  std::size_t size = 0;
};

class NodeTest : public test::NamespaceTest {
 protected:
  void SetUp() override {
    NamespaceTest::SetUp();
    auto node = Node::open(options());
    ASSERT_TRUE(node) << node.error().message;
    sut.emplace(std::move(node).value());
  }
  void TearDown() override {
    sut.reset();
    NamespaceTest::TearDown();
  }

  NodeOptions options() const {
    NodeOptions o;
    o.ns = ns;
    o.ready_timeout = 200ms;
    return o;
  }

  // What a creator killed after Segment::create but before publish leaves:
  // an unregistered lock segment in state `creating` whose creator is dead
  // (same pid as ours, other start time: a reused pid).
  void leave_abandoned_segment(const std::string& object) {
    auto seg = shm::Segment::create(sut->shm_name_of(object), object, shm::SegmentKind::lock,
                                    sizeof(detail::LockRecord), {});
    ASSERT_TRUE(seg) << seg.error().message;
    seg->header().creator_start_time += 1;
  }

  const ObjectInfo* find(const std::vector<ObjectInfo>& list, const std::string& name) {
    auto it = std::find_if(list.begin(), list.end(), [&](const ObjectInfo& o) { return o.name == name; });
    return it == list.end() ? nullptr : &*it;
  }

  std::optional<Node> sut;
};

// ------------------------------------------------------------ open modes

TEST_F(NodeTest, openCreatesTheNamespaceRegistryWithMode0600) {
  const struct stat st = test::stat_of("/dev/shm/colo." + ns + ".registry");

  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(sut->ns(), ns);
}

TEST_F(NodeTest, createOfExistingLockFailsWithAlreadyExistsNamingLockAndNamespace) {
  auto first = sut->lock("jobs", OpenMode::create);
  ASSERT_TRUE(first) << first.error().message;

  auto second = sut->lock("jobs", OpenMode::create);

  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, Errc::already_exists);
  EXPECT_TRUE(contains(second.error().message, "lock 'jobs' in namespace '" + ns + "'")) << second.error().message;
}

TEST_F(NodeTest, createOrOpenOfExistingLockOpensTheSameLock) {
  auto first = sut->lock("jobs", OpenMode::create);
  ASSERT_TRUE(first) << first.error().message;
  { auto g = first->acquire(); ASSERT_TRUE(g); }

  auto second = sut->lock("jobs", OpenMode::create_or_open);

  ASSERT_TRUE(second) << second.error().message;
  auto g = second->acquire();
  ASSERT_TRUE(g) << g.error().message;
  EXPECT_EQ(g->fencing_token(), 2u);  // the same fencing epoch
  EXPECT_EQ(second->stats().grants, 2u);
}

TEST_F(NodeTest, openOfMissingLockIsNotFoundNamingLockAndNamespace) {
  auto lock = sut->lock("absent", OpenMode::open);

  ASSERT_FALSE(lock);
  EXPECT_EQ(lock.error().code, Errc::not_found);
  EXPECT_TRUE(contains(lock.error().message, "lock 'absent' in namespace '" + ns + "' does not exist"))
      << lock.error().message;
  EXPECT_FALSE(test::file_exists(dev_shm(sut->shm_name_of("absent"))));
}

TEST_F(NodeTest, openOfExistingLockWorksAcrossNodes) {
  auto created = sut->lock("jobs", OpenMode::create);
  ASSERT_TRUE(created) << created.error().message;
  auto other = Node::open(options());
  ASSERT_TRUE(other) << other.error().message;

  auto lock = other->lock("jobs", OpenMode::open);

  ASSERT_TRUE(lock) << lock.error().message;
  auto g = created->acquire();
  EXPECT_FALSE(lock->try_acquire().has_value());  // the same mutex
}

TEST_F(NodeTest, clusterScopeIsRecordedInTheRegistryAndTheLock) {
  auto lock = sut->lock("global", OpenMode::create_or_open, LockOptions{Scope::cluster});
  ASSERT_TRUE(lock) << lock.error().message;
  EXPECT_EQ(lock->scope(), Scope::cluster);
  auto info = sut->info("global");
  ASSERT_TRUE(info) << info.error().message;
  EXPECT_EQ(info->scope, Scope::cluster);
  ASSERT_TRUE(info->lock);
  ASSERT_TRUE(info->lock->cluster);
  EXPECT_EQ(info->lock->cluster->lease_state, LeaseState::none);
  EXPECT_EQ(info->lock->cluster->keeper_pid, 0u);
  const std::uint64_t before = sut->generation();
  ASSERT_TRUE(sut->remove("global"));
  EXPECT_NE(sut->generation(), before);
}

TEST_F(NodeTest, openingALockAsAQueueIsKindMismatch) {
  auto lock = sut->lock("thing", OpenMode::create);
  ASSERT_TRUE(lock) << lock.error().message;

  auto queue = sut->queue("thing", OpenMode::create_or_open);
  auto opened = sut->queue("thing", OpenMode::open);

  ASSERT_FALSE(queue);
  EXPECT_EQ(queue.error().code, Errc::kind_mismatch);
  EXPECT_TRUE(contains(queue.error().message, "exists as a lock, not a queue")) << queue.error().message;
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().code, Errc::kind_mismatch);
}

TEST_F(NodeTest, lockRecordOfAnotherLayoutIsRefusedAsCorrupt) {
  auto lock = sut->lock("jobs", OpenMode::create);
  ASSERT_TRUE(lock) << lock.error().message;
  const int fd = ::open(dev_shm(sut->shm_name_of("jobs")).c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  const std::uint32_t bad = 9;
  ASSERT_EQ(::pwrite(fd, &bad, sizeof bad, sizeof(shm::SegmentHeader) + offsetof(detail::LockRecord, layout_version)),
            static_cast<ssize_t>(sizeof bad));
  ::close(fd);

  auto opened = sut->lock("jobs", OpenMode::open);

  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().code, Errc::corrupt);
  EXPECT_TRUE(contains(opened.error().message, "lock 'jobs' has lock layout 9")) << opened.error().message;
}

TEST_F(NodeTest, groupOptionSharesRegistryAndLockAtMode0660) {
  const gid_t group = test::running_as_root() ? test::nogroup_gid() : ::getegid();
  NodeOptions o = options();
  o.ns = ns + "g";
  o.group = group;
  auto node = Node::open(o);
  ASSERT_TRUE(node) << node.error().message;

  auto lock = node->lock("shared", OpenMode::create);

  ASSERT_TRUE(lock) << lock.error().message;
  for (const std::string& file : std::vector<std::string>{"colo." + o.ns + ".registry", node->shm_name_of("shared")}) {
    const struct stat st = test::stat_of(dev_shm(file));
    EXPECT_EQ(st.st_mode & 07777, 0660u) << file;
    EXPECT_EQ(st.st_gid, group) << file;
  }
  test::remove_namespace_files(o.ns);
}

// ------------------------------------------------------------------ list

TEST_F(NodeTest, listShowsKindScopeCreatorAndState) {
  auto a = sut->lock("a/one", OpenMode::create);
  auto b = sut->lock("b", OpenMode::create);
  ASSERT_TRUE(a && b);
  auto g = b->acquire();

  auto list = sut->list();

  ASSERT_TRUE(list) << list.error().message;
  ASSERT_EQ(list->size(), 2u);
  const ObjectInfo& first = (*list)[0];
  EXPECT_EQ(first.name, "a/one");
  EXPECT_EQ(first.kind, ObjectKind::lock);
  EXPECT_EQ(first.scope, Scope::host);
  EXPECT_EQ(first.state, ObjectState::ready);
  EXPECT_EQ(first.creator_pid, static_cast<std::uint32_t>(::getpid()));
  EXPECT_TRUE(first.creator_alive);
  EXPECT_EQ(first.shm_name, "colo." + ns + ".obj.a^one");
  EXPECT_EQ(first.size_bytes, sizeof(shm::SegmentHeader) + sizeof(detail::LockRecord));
  EXPECT_GT(first.created_realtime_ns, 0u);
  ASSERT_TRUE(first.lock.has_value());
  EXPECT_EQ(first.lock->holder.pid, 0u);
  const ObjectInfo& second = (*list)[1];
  EXPECT_EQ(second.name, "b");
  ASSERT_TRUE(second.lock.has_value());
  EXPECT_EQ(second.lock->grants, 1u);
  EXPECT_EQ(second.lock->holder.pid, static_cast<std::uint32_t>(::getpid()));
}

TEST_F(NodeTest, listShowsSegmentRemovedBehindTheRegistrysBackAsMissing) {
  auto lock = sut->lock("gone", OpenMode::create);
  ASSERT_TRUE(lock);
  ASSERT_EQ(::unlink(dev_shm(sut->shm_name_of("gone")).c_str()), 0);

  auto list = sut->list();

  ASSERT_TRUE(list) << list.error().message;
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].state, ObjectState::missing);
  EXPECT_EQ((*list)[0].kind, ObjectKind::lock);
}

TEST_F(NodeTest, listShowsUnregisteredAndAbandonedSegments) {
  leave_abandoned_segment("half");
  {
    auto seg = shm::Segment::create(sut->shm_name_of("stray"), "stray", shm::SegmentKind::lock,
                                    sizeof(detail::LockRecord), {});
    ASSERT_TRUE(seg);
    reinterpret_cast<detail::LockRecord*>(seg->body())->layout_version = detail::kLockLayoutVersion;
    seg->publish();
  }

  auto list = sut->list();

  ASSERT_TRUE(list) << list.error().message;
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ(find(*list, "half")->state, ObjectState::abandoned);
  EXPECT_FALSE(find(*list, "half")->creator_alive);
  EXPECT_EQ(find(*list, "stray")->state, ObjectState::unregistered);
}

TEST_F(NodeTest, listShowsCorruptSegmentWithTheProblem) {
  auto lock = sut->lock("bad", OpenMode::create);
  ASSERT_TRUE(lock);
  test::edit_header(sut->shm_name_of("bad"), [](shm::SegmentHeader& h) { h.magic = 0xbad; });

  auto list = sut->list();

  ASSERT_TRUE(list) << list.error().message;
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].state, ObjectState::corrupt);
  EXPECT_EQ((*list)[0].problem, "bad magic 0x0000000000000bad");
}

// ---------------------------------------------------------------- remove

TEST_F(NodeTest, removeDeletesSegmentAndRegistryEntry) {
  auto lock = sut->lock("jobs", OpenMode::create);
  ASSERT_TRUE(lock);

  auto removed = sut->remove("jobs");

  ASSERT_TRUE(removed) << removed.error().message;
  EXPECT_FALSE(test::file_exists(dev_shm(sut->shm_name_of("jobs"))));
  EXPECT_TRUE(sut->list()->empty());
  EXPECT_EQ(sut->lock("jobs", OpenMode::open).error().code, Errc::not_found);
  EXPECT_TRUE(sut->lock("jobs", OpenMode::create));  // the name is free again
}

TEST_F(NodeTest, removedLockStaysUsableThroughExistingMappings) {
  auto lock = sut->lock("jobs", OpenMode::create);
  ASSERT_TRUE(lock);
  ASSERT_TRUE(sut->remove("jobs"));

  auto g = lock->acquire();

  ASSERT_TRUE(g) << g.error().message;
  EXPECT_EQ(g->fencing_token(), 1u);
}

TEST_F(NodeTest, removeOfMissingObjectIsNotFound) {
  auto removed = sut->remove("absent");

  ASSERT_FALSE(removed);
  EXPECT_EQ(removed.error().code, Errc::not_found);
  EXPECT_TRUE(contains(removed.error().message, "'absent' in namespace '" + ns + "'")) << removed.error().message;
}

// -------------------------------------------------------------------- gc

TEST_F(NodeTest, gcRemovesAbandonedSegmentsAndEntriesWhoseSegmentIsGone) {
  leave_abandoned_segment("half");
  auto gone = sut->lock("gone", OpenMode::create);
  auto kept = sut->lock("kept", OpenMode::create);
  ASSERT_TRUE(gone && kept);
  ASSERT_EQ(::unlink(dev_shm(sut->shm_name_of("gone")).c_str()), 0);

  auto report = sut->gc(false);

  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report->removed_segments, std::vector<std::string>{sut->shm_name_of("half")});
  EXPECT_EQ(report->removed_registry_entries, std::vector<std::string>{"gone"});
  EXPECT_FALSE(test::file_exists(dev_shm(sut->shm_name_of("half"))));
  auto list = sut->list();
  ASSERT_TRUE(list);
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].name, "kept");
  EXPECT_EQ((*list)[0].state, ObjectState::ready);
  auto again = sut->gc(false);
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->removed_segments.empty());
  EXPECT_TRUE(again->removed_registry_entries.empty());
}

TEST_F(NodeTest, gcDryRunReportsTheSameButRemovesNothing) {
  leave_abandoned_segment("half");
  auto gone = sut->lock("gone", OpenMode::create);
  ASSERT_TRUE(gone);
  ASSERT_EQ(::unlink(dev_shm(sut->shm_name_of("gone")).c_str()), 0);
  const auto files_before = test::namespace_files(ns);

  auto report = sut->gc(true);

  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report->removed_segments, std::vector<std::string>{sut->shm_name_of("half")});
  EXPECT_EQ(report->removed_registry_entries, std::vector<std::string>{"gone"});
  EXPECT_EQ(test::namespace_files(ns), files_before);
  auto list = sut->list();
  ASSERT_TRUE(list);
  EXPECT_EQ(list->size(), 2u);  // "gone" (missing) and "half" (abandoned) are still there
  EXPECT_EQ(find(*list, "gone")->state, ObjectState::missing);
}

TEST_F(NodeTest, gcLeavesSegmentsStillBeingCreatedByALiveCreator) {
  auto creating = shm::Segment::create(sut->shm_name_of("busy"), "busy", shm::SegmentKind::lock,
                                       sizeof(detail::LockRecord), {});
  ASSERT_TRUE(creating);

  auto report = sut->gc(false);

  ASSERT_TRUE(report) << report.error().message;
  EXPECT_TRUE(report->removed_segments.empty());
  EXPECT_TRUE(test::file_exists(dev_shm(sut->shm_name_of("busy"))));
}

TEST_F(NodeTest, gcRemovesHeaderlessSegmentOfACreatorKilledBeforeWritingTheHeader) {
  NodeOptions o = options();
  o.ready_timeout = 0ms;  // gc's grace for header-less segments
  auto node = Node::open(o);
  ASSERT_TRUE(node);
  test::create_raw_file(sut->shm_name_of("nohdr"), sizeof(shm::SegmentHeader) + sizeof(detail::LockRecord));

  auto report = node->gc(false);

  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report->removed_segments, std::vector<std::string>{sut->shm_name_of("nohdr")});
  EXPECT_FALSE(test::file_exists(dev_shm(sut->shm_name_of("nohdr"))));
}

// A creator killed between shm_open(O_CREAT|O_EXCL) and ftruncate leaves an
// empty file. Segment::open calls it "truncated ... remove it with `colo rm`
// or `colo gc`", so gc must remove it. (Regression test: Node::gc once only
// considered segments whose header_problem starts with "no header".)
TEST_F(NodeTest, gcRemovesEmptySegmentOfACreatorKilledBeforeSizingIt) {
  NodeOptions o = options();
  o.ready_timeout = 0ms;
  auto node = Node::open(o);
  ASSERT_TRUE(node);
  test::create_raw_file(sut->shm_name_of("empty"), 0);

  auto report = node->gc(false);

  ASSERT_TRUE(report) << report.error().message;
  EXPECT_EQ(report->removed_segments, std::vector<std::string>{sut->shm_name_of("empty")});
  EXPECT_FALSE(test::file_exists(dev_shm(sut->shm_name_of("empty"))));
}

// ------------------------------------------- reclaim on create_or_open

TEST_F(NodeTest, createOrOpenReclaimsSegmentWhoseCreatorDiedBeforeReady) {
  leave_abandoned_segment("jobs");
  EXPECT_EQ(sut->lock("jobs", OpenMode::open).error().code, Errc::creator_died);

  auto lock = sut->lock("jobs", OpenMode::create_or_open);

  ASSERT_TRUE(lock) << lock.error().message;
  auto info = shm::Segment::inspect(sut->shm_name_of("jobs"));
  ASSERT_TRUE(info);
  EXPECT_EQ(info->state, shm::SegmentState::ready);
  EXPECT_TRUE(info->creator_alive);  // ours now, not the dead creator's
  auto g = lock->acquire();
  ASSERT_TRUE(g) << g.error().message;
  EXPECT_EQ(g->fencing_token(), 1u);
  auto list = sut->list();
  ASSERT_TRUE(list);
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].state, ObjectState::ready);  // and registered
}

TEST_F(NodeTest, createReclaimsSegmentWhoseCreatorDiedBeforeReady) {
  leave_abandoned_segment("jobs");

  auto lock = sut->lock("jobs", OpenMode::create);

  ASSERT_TRUE(lock) << lock.error().message;
}

TEST_F(NodeTest, createOrOpenRecreatesRegisteredLockWhoseSegmentVanished) {
  auto first = sut->lock("jobs", OpenMode::create);
  ASSERT_TRUE(first);
  { auto g = first->acquire(); }
  ASSERT_EQ(::unlink(dev_shm(sut->shm_name_of("jobs")).c_str()), 0);

  auto lock = sut->lock("jobs", OpenMode::create_or_open);

  ASSERT_TRUE(lock) << lock.error().message;
  EXPECT_TRUE(test::file_exists(dev_shm(sut->shm_name_of("jobs"))));
  EXPECT_EQ(lock->stats().grants, 0u);  // a new lock
  auto list = sut->list();
  ASSERT_TRUE(list);
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].state, ObjectState::ready);
}

TEST_F(NodeTest, createOrOpenAdoptsAReadyUnregisteredSegment) {
  // What a creator killed between publish and registering leaves behind.
  auto seg = shm::Segment::create(sut->shm_name_of("jobs"), "jobs", shm::SegmentKind::lock,
                                  sizeof(detail::LockRecord), {});
  ASSERT_TRUE(seg);
  auto* record = reinterpret_cast<detail::LockRecord*>(seg->body());
  ASSERT_EQ(record->mutex.init(), 0);
  record->layout_version = detail::kLockLayoutVersion;
  record->scope = static_cast<std::uint32_t>(Scope::host);
  seg->publish();

  auto lock = sut->lock("jobs", OpenMode::create_or_open);
  auto exclusive = sut->lock("jobs", OpenMode::create);

  ASSERT_TRUE(lock) << lock.error().message;
  ASSERT_FALSE(exclusive);
  EXPECT_EQ(exclusive.error().code, Errc::already_exists);
  auto list = sut->list();
  ASSERT_TRUE(list);
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].state, ObjectState::ready);
}

TEST_F(NodeTest, openReclaimsARegistryWhoseCreatorDiedBeforeReady) {
  NodeOptions o = options();
  o.ns = ns + "x";
  const std::string registry = "colo." + o.ns + ".registry";
  {
    auto seg = shm::Segment::create(registry, "registry", shm::SegmentKind::registry, sizeof(detail::RegistryRecord), {});
    ASSERT_TRUE(seg) << seg.error().message;
    seg->header().creator_start_time += 1;
  }

  auto node = Node::open(o);

  ASSERT_TRUE(node) << node.error().message;
  auto info = shm::Segment::inspect(registry);
  ASSERT_TRUE(info);
  EXPECT_EQ(info->state, shm::SegmentState::ready);
  EXPECT_TRUE(info->creator_alive);
  EXPECT_TRUE(node->lock("jobs", OpenMode::create));
  test::remove_namespace_files(o.ns);
}

// The registry's lock word scribbled with a thread that does not exist (a
// robust mutex only recovers from an owner that died holding it): creating
// an object fails after the registry's lock timeout with an error that
// names the thread, instead of waiting forever.
TEST_F(NodeTest, aRegistryMutexHeldByAnInventedThreadIsAnErrorNotAHang) {
  ASSERT_TRUE(sut->lock("before", OpenMode::create));
  WritableMapping registry(dev_shm("colo." + ns + ".registry"));
  ASSERT_NE(registry.body, nullptr);
  auto* lock_word = reinterpret_cast<std::atomic<std::uint32_t>*>(registry.body);
  ASSERT_EQ(lock_word->load(), 0u) << "the registry is free";
  lock_word->store(4'000'000);  // beyond PID_MAX_LIMIT: no thread has it

  auto made = sut->lock("after", OpenMode::create);

  lock_word->store(0);
  ASSERT_FALSE(made);
  EXPECT_EQ(made.error().code, Errc::timed_out);
  EXPECT_TRUE(contains(made.error().message, "has been locked for 5 s by thread 4000000: a process stopped or stuck"))
      << made.error().message;
  EXPECT_TRUE(sut->lock("after", OpenMode::create)) << "usable again once the word is free";
}

TEST_F(NodeTest, infoOfMissingObjectIsNotFound) {
  auto info = sut->info("absent");

  ASSERT_FALSE(info);
  EXPECT_EQ(info.error().code, Errc::not_found);
  EXPECT_TRUE(contains(info.error().message, "no object 'absent' in namespace '" + ns + "'")) << info.error().message;
}

// ------------------------------------------- creation is all or nothing

// A queue with acks comes with its dead-letter queue: when there is room in
// the registry for the queue but not for NAME.dlq, neither is created, and a
// retry once there is room succeeds (not "already exists").
TEST_F(NodeTest, queueWithAcksIsCreatedWithItsDeadLetterQueueOrNotAtAll) {
  for (std::uint32_t i = 0; i + 1 < detail::kRegistryCapacity; ++i)
    ASSERT_TRUE(sut->lock("l" + std::to_string(i), OpenMode::create)) << i;

  auto full = sut->queue("jobs", OpenMode::create, {.acks = true});

  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code, Errc::capacity);
  EXPECT_EQ(full.error().message, "dead-letter queue of 'jobs': the namespace registry is full (1024 objects); "
                                  "remove unused objects with `colo rm`; so the queue was not created either");
  EXPECT_EQ(sut->info("jobs").error().code, Errc::not_found);
  EXPECT_FALSE(test::file_exists(dev_shm(sut->shm_name_of("jobs"))));
  EXPECT_FALSE(test::file_exists(dev_shm(sut->shm_name_of("jobs.dlq"))));
  ASSERT_TRUE(sut->remove("l0"));
  ASSERT_TRUE(sut->remove("l1"));
  auto retry = sut->queue("jobs", OpenMode::create, {.acks = true});
  ASSERT_TRUE(retry) << retry.error().message;
  EXPECT_TRUE(sut->info("jobs.dlq"));
}

// ---------------------------------------------- scribbled-on reader slots

// Slots are shared memory, so any process of the namespace may scribble on
// them: a slot whose words no reader can have (a pid beyond PID_MAX_LIMIT,
// an unknown mode) is counted as damaged, not shown as a reader.
TEST_F(NodeTest, readerSlotsHoldingImpossibleWordsAreCountedAndNotListed) {
  auto topic = sut->topic("t", OpenMode::create, {4096, 100});
  ASSERT_TRUE(topic) << topic.error().message;
  auto reader = topic->subscribe();
  ASSERT_TRUE(reader) << reader.error().message;
  WritableMapping ring(dev_shm(sut->shm_name_of("t")));
  ASSERT_NE(ring.body, nullptr);
  auto& control = *reinterpret_cast<shm::RingControl*>(ring.body);
  std::vector<shm::ReaderSlot*> scribbled;
  for (auto& slot : control.readers)
    if (slot.pid.load() == 0 && scribbled.size() < 2) scribbled.push_back(&slot);
  ASSERT_EQ(scribbled.size(), 2u);
  scribbled[0]->mode.store(static_cast<std::uint32_t>(shm::ReaderMode::block));
  scribbled[0]->pid.store(5'000'000);  // no Linux process has it
  scribbled[1]->mode.store(99);        // no such mode
  scribbled[1]->pid.store(static_cast<std::uint32_t>(::getpid()));

  const ChannelStats stats = topic->stats();
  for (auto* slot : scribbled) {
    slot->pid.store(0);
    slot->mode.store(0);
  }

  EXPECT_EQ(stats.damaged_slots, 2u);
  ASSERT_EQ(stats.readers.size(), 1u);  // the real one
  EXPECT_EQ(stats.readers[0].pid, static_cast<std::uint32_t>(::getpid()));
  EXPECT_EQ(stats.readers[0].mode, ReaderMode::block);
}

// ------------------------------------------------- namespace directories

// A namespace directory (NodeOptions::shm_dir, COLO_SHM_DIR): the
// namespace's segments are files there and nowhere else, and a directory
// another user could write to, or own, is refused with the remedy.
class NamespaceDirectory : public test::NamespaceTest {
 protected:
  void SetUp() override {
    NamespaceTest::SetUp();
    char tmpl[] = "/dev/shm/colo-test-dir-XXXXXX";  // /dev/shm: a tmpfs
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir = tmpl;
  }
  void TearDown() override {
    (void)std::system(("rm -rf " + dir).c_str());
    NamespaceTest::TearDown();
  }
  NodeOptions in_dir() const {
    NodeOptions o;
    o.ns = ns;
    o.shm_dir = dir;
    return o;
  }
  std::string dir;
};

TEST_F(NamespaceDirectory, segmentsAreFilesInTheDirectoryOnly) {
  auto node = Node::open(in_dir());
  ASSERT_TRUE(node) << node.error().message;
  ASSERT_TRUE(node->lock("jobs/a", OpenMode::create));
  auto list = node->list();

  EXPECT_EQ(node->shm_name_of("jobs/a"), dir + "/colo." + ns + ".obj.jobs^a");
  EXPECT_TRUE(test::file_exists(dir + "/colo." + ns + ".registry"));
  EXPECT_TRUE(test::file_exists(dir + "/colo." + ns + ".obj.jobs^a"));
  EXPECT_TRUE(test::namespace_files(ns).empty());  // nothing in /dev/shm itself
  ASSERT_TRUE(list);
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].name, "jobs/a");
  EXPECT_EQ((*list)[0].state, ObjectState::ready);
  EXPECT_EQ(Node::file_of((*list)[0].shm_name), dir + "/colo." + ns + ".obj.jobs^a");
  auto other = Node::open(test::node_options(ns));  // /dev/shm: another namespace of the same name
  ASSERT_TRUE(other);
  EXPECT_EQ(other->info("jobs/a").error().code, Errc::not_found);
}

TEST_F(NamespaceDirectory, aDirectoryOthersMayWriteToIsRefused) {
  ASSERT_EQ(::chmod(dir.c_str(), 01777), 0);

  auto node = Node::open(in_dir());

  ASSERT_FALSE(node);
  EXPECT_EQ(node.error().code, Errc::permission_denied);
  EXPECT_EQ(node.error().message, "namespace directory '" + dir + "' has mode 1777: any user may create files in "
                                  "it, so any user could put a file there first (chmod o-w it)");
  EXPECT_FALSE(test::file_exists(dir + "/colo." + ns + ".registry"));
}

TEST_F(NamespaceDirectory, aDirectoryOfAnotherUserIsRefused) {
  if (!test::running_as_root()) GTEST_SKIP() << "needs root to give the directory to nobody";
  ASSERT_EQ(::chown(dir.c_str(), test::nobody_uid(), test::nogroup_gid()), 0);

  auto node = Node::open(in_dir());

  ASSERT_FALSE(node);
  EXPECT_EQ(node.error().code, Errc::permission_denied);
  EXPECT_EQ(node.error().message, "namespace directory '" + dir + "' belongs to uid " +
                                      std::to_string(test::nobody_uid()) +
                                      ", neither root nor this user (uid 0): its owner could replace the "
                                      "files in it");
}

TEST_F(NamespaceDirectory, aMissingOrRelativeDirectoryIsRefused) {
  NodeOptions missing = in_dir();
  missing.shm_dir = dir + "/absent";
  NodeOptions relative = in_dir();
  relative.shm_dir = "shm";

  auto a = Node::open(missing);
  auto b = Node::open(relative);

  ASSERT_FALSE(a);
  EXPECT_EQ(a.error().code, Errc::not_found);
  EXPECT_EQ(a.error().message, "namespace directory '" + dir + "/absent': No such file or directory (create it on "
                               "a tmpfs, owned by the namespace's user, mode 0700 or 0770 with a group)");
  ASSERT_FALSE(b);
  EXPECT_EQ(b.error().message, "namespace directory 'shm' is not an absolute path of at most 200 bytes");
}

}  // namespace
}  // namespace colo
