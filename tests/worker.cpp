// colo-test-worker — the other processes of the multi-process tests.
//
// Tests fork/exec this binary with a subcommand; it talks to the test through
// the shared-state file (tests/shared_state.hpp) and its exit status/output.
// Exit status: 0 done, 2 usage, 3 a colo call failed (stdout says
// "error <errc>: <message>"), 4 the shared state is unusable, 5 a check failed.
//
//   increment NS LOCK STATE COUNT        wait for go; COUNT x {acquire; counter = counter + 1; release}
//   hold NS LOCK STATE                   acquire; holding_pid = me; wait for `release` (max 120 s); release
//   acquire NS LOCK STATE                waiting++; acquire (blocking); print "token=T owner_died=0|1"
//   churn NS LOCK STATE MAX_PAUSE_US     until stop: grant (logged, checked, repaired); update a, b; release; pause
//   victim NS LOCK STATE SEED            grant (logged); a++; holding_pid = me; then update a, b in steps with
//                                        random pauses, forever (the test SIGKILLs it mid-update)
//   create-and-hang NS NAME STATE        shm::Segment::create of lock NAME's segment, never published;
//                                        holding_pid = me; sleep (max 120 s)
//   registry-hang NS STATE               lock the registry, begin an entry "half" (state writing), holding_pid = me,
//                                        sleep (max 120 s)
//   create-loop NS NAME                  forever: Segment::create NAME's segment, init, publish, unlink
//   race-create NS NAME STATE            busy-wait for go; Node::open + lock(NAME, create_or_open) + acquire;
//                                        counter++; print "token=T"
//   node-create-lock NS NAME [GROUP]     Node::open (with group GID) + lock(NAME, create); print "created"
//   node-open-lock NS NAME               Node::open + lock(NAME, open) + acquire; print "token=T"
//   segment-open SHM_NAME                shm::Segment::open(SHM_NAME, lock, 200 ms); print "opened"
//   create-topic NS NAME CAPACITY        Node::open + topic(NAME, create, capacity); publish one message;
//                                        print "created"
#include <sched.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "colo/lock.hpp"
#include "colo/node.hpp"
#include "lock_record.hpp"
#include "registry.hpp"
#include "segment.hpp"
#include "shared_state.hpp"
#include "worker_pauses.hpp"

namespace {

using namespace std::chrono_literals;
using colo::test::SharedState;
using colo::test::pause_us;
using colo::test::spin;
using colo::test::wait_flag;
constexpr auto relaxed = std::memory_order_relaxed;

[[noreturn]] void die(int code, const std::string& message) {
  std::fprintf(stdout, "%s\n", message.c_str());
  std::fprintf(stderr, "colo-test-worker[%d]: %s\n", static_cast<int>(::getpid()), message.c_str());
  std::fflush(stdout);
  std::_Exit(code);
}

[[noreturn]] void die(const colo::Error& e) {
  die(3, "error " + std::string(colo::errc_name(e.code)) + ": " + e.message);
}

SharedState* state_or_die(const std::string& path) {
  SharedState* s = colo::test::map_shared_state(path);
  if (s == nullptr) die(4, "cannot map shared state " + path);
  return s;
}

colo::Node node_or_die(const std::string& ns, std::optional<gid_t> group = std::nullopt) {
  colo::NodeOptions o;
  o.ns = ns;
  o.group = group;
  auto node = colo::Node::open(o);
  if (!node) die(node.error());
  return std::move(node).value();
}

colo::Lock lock_or_die(colo::Node& node, const std::string& name, colo::OpenMode mode = colo::OpenMode::open) {
  auto lock = node.lock(name, mode);
  if (!lock) die(lock.error());
  return std::move(lock).value();
}

// A pause of a random kind and length: none, a busy spin, or a sleep.
void random_pause(std::mt19937_64& rng) {
  switch (rng() % 3) {
    case 0: break;
    case 1: spin(static_cast<std::uint32_t>(rng() % 20000)); break;
    default: pause_us(rng() % 300); break;
  }
}

// Everything a grant does first, under the lock: check the token, repair if
// the previous holder died mid-update, append to the grant log.
void on_grant(SharedState& s, const colo::LockGuard& g, std::uint32_t flags) {
  const std::uint64_t token = g.fencing_token();
  if (token <= s.last_token.load(relaxed)) s.violations.store(s.violations.load(relaxed) + 1, relaxed);
  s.last_token.store(token, relaxed);
  const std::uint64_t a = s.a.load(relaxed);
  const std::uint64_t b = s.b.load(relaxed);
  if (g.owner_died()) {
    flags |= colo::test::kGrantOwnerDied;
    s.owner_died_grants.store(s.owner_died_grants.load(relaxed) + 1, relaxed);
    if (a != b) {
      s.b.store(a, relaxed);
      s.repairs.store(s.repairs.load(relaxed) + 1, relaxed);
      flags |= colo::test::kGrantRepaired;
    }
  } else if (a != b) {
    s.violations.store(s.violations.load(relaxed) + 1, relaxed);  // half-updated, and nobody told us
  }
  const std::uint64_t n = s.log_count.load(relaxed);
  if (n < s.log_capacity) {
    colo::test::grant_log(&s)[n] = colo::test::GrantRecord{token, static_cast<std::uint32_t>(::getpid()), flags};
    s.log_count.store(n + 1, relaxed);
  } else {
    s.log_overflow.store(s.log_overflow.load(relaxed) + 1, relaxed);
  }
}

int cmd_increment(const std::string& ns, const std::string& name, const std::string& path, std::uint64_t count) {
  SharedState& s = *state_or_die(path);
  auto node = node_or_die(ns);
  auto lock = lock_or_die(node, name);
  s.ready.fetch_add(1);
  if (!wait_flag(s.go, 60s)) die(5, "no go within 60 s");
  std::mt19937 rng(static_cast<std::uint32_t>(::getpid()));
  for (std::uint64_t i = 0; i < count; ++i) {
    {
      auto g = lock.acquire();
      if (!g) die(g.error());
      if (g->owner_died()) die(5, "owner_died in a run where nobody dies");
      // A plain read-modify-write with a gap: exact only if the lock excludes.
      const std::uint64_t v = s.counter.load(relaxed);
      spin(100);
      if (i % 64 == 0) ::sched_yield();  // now and then, let the others run (and block) mid-update
      s.counter.store(v + 1, relaxed);
    }
    spin(rng() % 200);  // work outside the lock, so that the processes overlap
  }
  return 0;
}

int cmd_hold(const std::string& ns, const std::string& name, const std::string& path) {
  SharedState& s = *state_or_die(path);
  auto node = node_or_die(ns);
  auto lock = lock_or_die(node, name);
  auto g = lock.acquire();
  if (!g) die(g.error());
  std::printf("token=%llu owner_died=%d\n", static_cast<unsigned long long>(g->fencing_token()), g->owner_died() ? 1 : 0);
  std::fflush(stdout);
  s.holding_pid.store(static_cast<std::uint32_t>(::getpid()), std::memory_order_release);
  if (!wait_flag(s.release, 120s)) die(5, "not released within 120 s");
  return 0;
}

int cmd_acquire(const std::string& ns, const std::string& name, const std::string& path) {
  SharedState& s = *state_or_die(path);
  auto node = node_or_die(ns);
  auto lock = lock_or_die(node, name);
  s.waiting.fetch_add(1);
  auto g = lock.acquire();
  if (!g) die(g.error());
  std::printf("token=%llu owner_died=%d\n", static_cast<unsigned long long>(g->fencing_token()), g->owner_died() ? 1 : 0);
  return 0;
}

int cmd_churn(const std::string& ns, const std::string& name, const std::string& path, std::uint32_t max_pause_us) {
  SharedState& s = *state_or_die(path);
  auto node = node_or_die(ns);
  auto lock = lock_or_die(node, name);
  std::mt19937_64 rng(static_cast<std::uint64_t>(::getpid()) * 0x9e3779b97f4a7c15ull);
  s.ready.fetch_add(1);
  while (s.stop.load(std::memory_order_acquire) == 0) {
    auto g = lock.try_acquire_for(200ms);  // bounded, so `stop` is seen even while a victim holds forever
    if (!g) continue;
    on_grant(s, *g, 0);
    s.a.store(s.a.load(relaxed) + 1, relaxed);
    spin(static_cast<std::uint32_t>(rng() % 200));
    s.b.store(s.b.load(relaxed) + 1, relaxed);
    g->unlock();
    pause_us(rng() % (max_pause_us + 1));
  }
  return 0;
}

int cmd_victim(const std::string& ns, const std::string& name, const std::string& path, std::uint64_t seed) {
  SharedState& s = *state_or_die(path);
  auto node = node_or_die(ns);
  auto lock = lock_or_die(node, name);
  std::mt19937_64 rng(seed);
  auto g = lock.acquire();
  if (!g) die(g.error());
  on_grant(s, *g, colo::test::kGrantVictim);
  s.a.store(s.a.load(relaxed) + 1, relaxed);  // update begun: a != b from here on, most of the time
  s.holding_pid.store(static_cast<std::uint32_t>(::getpid()), std::memory_order_release);
  for (;;) {
    // Steps with pauses of random kinds and lengths, so the SIGKILL lands
    // at all sorts of points: mid-spin, mid-sleep, between the two stores.
    random_pause(rng);
    s.b.store(s.b.load(relaxed) + 1, relaxed);  // consistent again
    random_pause(rng);
    s.a.store(s.a.load(relaxed) + 1, relaxed);  // next update begun
  }
}

std::string lock_shm_name(const std::string& ns, const std::string& name) {
  std::string encoded = name;
  for (char& c : encoded)
    if (c == '/') c = '^';
  return "colo." + ns + ".obj." + encoded;
}

int cmd_create_and_hang(const std::string& ns, const std::string& name, const std::string& path) {
  SharedState& s = *state_or_die(path);
  auto seg = colo::shm::Segment::create(lock_shm_name(ns, name), name, colo::shm::SegmentKind::lock,
                                        sizeof(colo::detail::LockRecord), colo::shm::Permissions{});
  if (!seg) die(seg.error());
  s.holding_pid.store(static_cast<std::uint32_t>(::getpid()), std::memory_order_release);
  std::this_thread::sleep_for(120s);  // never publishes
  return 0;
}

// Holds the namespace's registry mutex, having begun an entry ("half",
// state writing) it never finishes, and hangs: the test SIGKILLs it there.
int cmd_registry_hang(const std::string& ns, const std::string& path) {
  SharedState& s = *state_or_die(path);
  auto registry = colo::detail::Registry::open_or_create("colo." + ns + ".registry", colo::shm::Permissions{}, 2000ms);
  if (!registry) die(registry.error());
  auto locked = (*registry)->lock();
  if (!locked) die(locked.error());
  auto segment = colo::shm::Segment::open("colo." + ns + ".registry", colo::shm::SegmentKind::registry, 2000ms);
  if (!segment) die(segment.error());
  auto* record = reinterpret_cast<colo::detail::RegistryRecord*>(segment->body());
  for (auto& e : record->entries) {
    if (e.state.load() != static_cast<std::uint32_t>(colo::detail::EntryState::free)) continue;
    e.state.store(static_cast<std::uint32_t>(colo::detail::EntryState::writing));
    e.kind = static_cast<std::uint32_t>(colo::shm::SegmentKind::lock);
    std::strcpy(e.name, "half");
    break;
  }
  s.holding_pid.store(static_cast<std::uint32_t>(::getpid()), std::memory_order_release);
  std::this_thread::sleep_for(120s);
  return 0;
}

int cmd_create_loop(const std::string& ns, const std::string& name) {
  const std::string shm_name = lock_shm_name(ns, name);
  for (;;) {
    auto seg = colo::shm::Segment::create(shm_name, name, colo::shm::SegmentKind::lock,
                                          sizeof(colo::detail::LockRecord), colo::shm::Permissions{});
    if (!seg) continue;  // the previous one is still being removed
    auto* record = reinterpret_cast<colo::detail::LockRecord*>(seg->body());
    record->mutex.init();
    record->layout_version = colo::detail::kLockLayoutVersion;
    record->scope = static_cast<std::uint32_t>(colo::Scope::host);
    seg->publish();
    (void)colo::shm::Segment::unlink(shm_name);
  }
}

// Many of these start at the same instant on a fresh namespace: first use of
// the namespace (registry creation) and of the lock race between processes.
int cmd_race_create(const std::string& ns, const std::string& name, const std::string& path) {
  SharedState& s = *state_or_die(path);
  s.ready.fetch_add(1);
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (s.go.load(std::memory_order_acquire) == 0)  // busy: start as close together as possible
    if (std::chrono::steady_clock::now() > deadline) die(5, "no go within 60 s");
  auto node = node_or_die(ns);
  auto lock = lock_or_die(node, name, colo::OpenMode::create_or_open);
  auto g = lock.acquire();
  if (!g) die(g.error());
  s.counter.store(s.counter.load(relaxed) + 1, relaxed);
  std::printf("token=%llu\n", static_cast<unsigned long long>(g->fencing_token()));
  return 0;
}

int cmd_node_create_lock(const std::string& ns, const std::string& name, std::optional<gid_t> group) {
  auto node = node_or_die(ns, group);
  auto lock = lock_or_die(node, name, colo::OpenMode::create);
  std::printf("created\n");
  return 0;
}

int cmd_node_open_lock(const std::string& ns, const std::string& name) {
  auto node = node_or_die(ns);
  auto lock = lock_or_die(node, name);
  auto g = lock.acquire();
  if (!g) die(g.error());
  std::printf("token=%llu\n", static_cast<unsigned long long>(g->fencing_token()));
  return 0;
}

int cmd_segment_open(const std::string& shm_name) {
  auto seg = colo::shm::Segment::open(shm_name, colo::shm::SegmentKind::lock, 200ms);
  if (!seg) die(seg.error());
  std::printf("opened\n");
  return 0;
}

std::uint64_t number(const char* s) {
  char* end = nullptr;
  const unsigned long long v = std::strtoull(s, &end, 10);
  if (end == s || *end != '\0') die(2, std::string("not a number: ") + s);
  return v;
}

int cmd_create_topic(const std::string& ns, const std::string& name, std::uint64_t capacity) {
  auto node = node_or_die(ns);
  colo::TopicOptions options;
  options.capacity = capacity;
  options.max_message = 1024;
  auto topic = node.topic(name, colo::OpenMode::create, options);
  if (!topic) die(topic.error());
  auto publisher = topic->publisher();
  if (!publisher) die(publisher.error());
  const std::byte message[16] = {};
  if (publisher->publish(message, 1s) != colo::SendStatus::ok) die(5, "publish failed");
  std::printf("created\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> a(argv + 1, argv + argc);
  auto need = [&](std::size_t n) {
    if (a.size() != n + 1) die(2, "usage: see tests/worker.cpp (" + (a.empty() ? std::string("?") : a[0]) + ")");
  };
  if (a.empty()) die(2, "usage: colo-test-worker SUBCOMMAND ARGS (see tests/worker.cpp)");
  const std::string& cmd = a[0];
  if (cmd == "increment") {
    need(4);
    return cmd_increment(a[1], a[2], a[3], number(argv[5]));
  }
  if (cmd == "hold") {
    need(3);
    return cmd_hold(a[1], a[2], a[3]);
  }
  if (cmd == "acquire") {
    need(3);
    return cmd_acquire(a[1], a[2], a[3]);
  }
  if (cmd == "churn") {
    need(4);
    return cmd_churn(a[1], a[2], a[3], static_cast<std::uint32_t>(number(argv[5])));
  }
  if (cmd == "victim") {
    need(4);
    return cmd_victim(a[1], a[2], a[3], number(argv[5]));
  }
  if (cmd == "create-and-hang") {
    need(3);
    return cmd_create_and_hang(a[1], a[2], a[3]);
  }
  if (cmd == "registry-hang") {
    need(2);
    return cmd_registry_hang(a[1], a[2]);
  }
  if (cmd == "create-loop") {
    need(2);
    return cmd_create_loop(a[1], a[2]);
  }
  if (cmd == "race-create") {
    need(3);
    return cmd_race_create(a[1], a[2], a[3]);
  }
  if (cmd == "node-create-lock") {
    if (a.size() == 4) return cmd_node_create_lock(a[1], a[2], static_cast<gid_t>(number(argv[4])));
    need(2);
    return cmd_node_create_lock(a[1], a[2], std::nullopt);
  }
  if (cmd == "node-open-lock") {
    need(2);
    return cmd_node_open_lock(a[1], a[2]);
  }
  if (cmd == "segment-open") {
    need(1);
    return cmd_segment_open(a[1]);
  }
  if (cmd == "create-topic") {
    need(3);
    return cmd_create_topic(a[1], a[2], number(argv[4]));
  }
  die(2, "unknown subcommand " + cmd);
}
