// colo-test-table-worker — the other processes of the lock table tests.
//
// Tests fork/exec it with a subcommand; it talks to the test through the
// table-state file (table_state.hpp) and its exit status and output. Exit
// status: 0 done, 2 usage, 3 a colo call failed (stdout says "error <errc>:
// <message>"), 4 the state file is unusable.
//
//   keys NS TABLE STATE WORKER SEED COUNT MODE
//       wait for go; then COUNT acquisitions (0: until stop) of random keys
//       k<rng() % keys>, rng = mt19937_64(SEED): each grant is checked and
//       logged in the key's cell (on_grant), then a++ and b++. MODE:
//         plain   nothing else (the replayable counts of the 8-process test)
//         churn   random pauses inside and between holds (kills land anywhere)
//         victim  publishes holding/key in its worker slot, pauses between
//                 a++ and b++, and releases only if it wins the CAS
//                 holding -> releasing (the test dooms it first, then kills)
//       prints "done N" (N grants)
//   hold NS TABLE KEY STATE WORKER
//       acquire KEY, publish holding, wait for stop (at most 120 s), release;
//       prints "token=T owner_died=0|1"
//   scribble NS TABLE STATE SEED WRITES
//       WRITES random 8-byte values at random 8-aligned offsets of the table's
//       segment past its geometry line (a third of them words that name no
//       thread, a third small numbers), 20 us apart in groups of 16; prints
//       "scribbled WRITES"
//   owner-word
//       prints this thread's owner word in decimal (a dead owner, once exited)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cstring>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <random>
#include <string>

#include "colo/node.hpp"
#include "lock_table_layout.hpp"
#include "owner_word.hpp"
#include "table_state.hpp"
#include "worker_pauses.hpp"

namespace {

using namespace std::chrono_literals;
using colo::test::KeyCell;
using colo::test::TableState;
using colo::test::pause_us;
using colo::test::spin;
using colo::test::wait_flag;
constexpr auto relaxed = std::memory_order_relaxed;

[[noreturn]] void die(int code, const std::string& message) {
  std::fprintf(stdout, "%s\n", message.c_str());
  std::fprintf(stderr, "colo-test-table-worker[%d]: %s\n", static_cast<int>(::getpid()), message.c_str());
  std::fflush(stdout);
  std::_Exit(code);
}

[[noreturn]] void die(const colo::Error& e) { die(3, "error " + std::string(colo::errc_name(e.code)) + ": " + e.message); }

TableState* state_or_die(const std::string& path) {
  TableState* s = colo::test::map_table_state(path);
  if (s == nullptr) die(4, "cannot map table state " + path);
  return s;
}

colo::LockTable table_or_die(const std::string& ns, const std::string& name) {
  colo::NodeOptions o;
  o.ns = ns;
  auto node = colo::Node::open(o);
  if (!node) die(node.error());
  auto table = node->lock_table(name, colo::OpenMode::open);
  if (!table) die(table.error());
  return std::move(table).value();
}

void random_pause(std::mt19937_64& rng) {
  switch (rng() % 4) {
    case 0: break;
    case 1: spin(static_cast<std::uint32_t>(rng() % 5000)); break;
    case 2: spin(static_cast<std::uint32_t>(rng() % 50000)); break;
    default: pause_us(rng() % 200); break;
  }
}

int run_keys(const std::string& ns, const std::string& name, const std::string& path, std::size_t worker,
             std::uint64_t seed, std::uint64_t count, const std::string& mode) {
  TableState* s = state_or_die(path);
  if (worker >= colo::test::kMaxTableWorkers || s->keys == 0) die(2, "bad worker index or key count");
  const bool churn = mode == "churn";
  const bool victim = mode == "victim";
  if (!churn && !victim && mode != "plain") die(2, "unknown mode " + mode);
  auto table = table_or_die(ns, name);
  auto& slot = s->workers[worker];
  slot.pid.store(static_cast<std::uint32_t>(::getpid()), relaxed);
  std::mt19937_64 rng(seed);
  s->ready.fetch_add(1);
  if (!wait_flag(s->go, 60s)) die(5, "no go within 60 s");
  std::uint64_t done = 0;
  while (count == 0 ? s->stop.load(relaxed) == 0 : done < count) {
    const std::uint64_t k = rng() % s->keys;
    KeyCell& c = colo::test::cells(s)[k];
    auto guard = table.acquire(colo::test::key_name(k));
    if (!guard) die(guard.error());
    colo::test::on_grant(c, *guard);
    if (victim) {
      slot.key.store(k, relaxed);
      slot.phase.store(colo::test::kHolding, std::memory_order_release);
    }
    c.a.store(c.a.load(relaxed) + 1, relaxed);
    if (churn || victim) random_pause(rng);
    c.b.store(c.b.load(relaxed) + 1, relaxed);
    if (victim) {
      std::uint32_t holding = colo::test::kHolding;
      if (!slot.phase.compare_exchange_strong(holding, colo::test::kReleasing))
        for (;;) pause_us(1000);  // doomed: hold the key until the SIGKILL
    }
    guard->unlock();
    if (victim) slot.phase.store(colo::test::kIdle, std::memory_order_release);
    ++done;
    slot.grants.store(done, relaxed);
    if (churn) random_pause(rng);
  }
  std::printf("done %llu\n", static_cast<unsigned long long>(done));
  return 0;
}

int run_hold(const std::string& ns, const std::string& name, const std::string& key, const std::string& path,
             std::size_t worker) {
  TableState* s = state_or_die(path);
  if (worker >= colo::test::kMaxTableWorkers) die(2, "bad worker index");
  auto table = table_or_die(ns, name);
  auto guard = table.acquire(key);
  if (!guard) die(guard.error());
  s->workers[worker].pid.store(static_cast<std::uint32_t>(::getpid()), relaxed);
  s->workers[worker].phase.store(colo::test::kHolding, std::memory_order_release);
  wait_flag(s->stop, 120s);
  std::printf("token=%llu owner_died=%d\n", static_cast<unsigned long long>(guard->fencing_token()),
              guard->owner_died() ? 1 : 0);
  return 0;
}

int run_scribble(const std::string& ns, const std::string& name, std::uint64_t seed, std::uint64_t writes) {
  std::string file = "/dev/shm/colo." + ns + ".obj." + name;
  const int fd = ::open(file.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) die(4, "cannot open " + file);
  struct stat st {};
  if (::fstat(fd, &st) != 0) die(4, "cannot stat " + file);
  const auto size = static_cast<std::size_t>(st.st_size);
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) die(4, "cannot map " + file);
  auto* bytes = static_cast<unsigned char*>(p);
  // Past the segment header and the table's geometry line: processes read
  // the geometry once at open, and the test opens the table again later.
  const std::size_t first = 512 + sizeof(colo::detail::TableGeometry);
  const std::size_t words = (size - first) / 8;
  std::mt19937_64 rng(seed);
  std::uint64_t n = 0;
  while (n < writes) {
    const std::size_t at = first + (rng() % words) * 8;
    std::uint64_t value = rng();
    switch (rng() % 3) {
      case 0: value &= 0xff; break;                       // small numbers: lengths, distances, counts
      case 1: value &= ~std::uint64_t{0xffff'fffe}; break;  // a word that names no thread
      default: break;
    }
    std::memcpy(bytes + at, &value, sizeof value);
    ++n;
    if (n % 16 == 0) pause_us(20);
  }
  std::printf("scribbled %llu\n", static_cast<unsigned long long>(n));
  return 0;
}

std::uint64_t number(const char* text) { return std::strtoull(text, nullptr, 10); }

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) die(2, "usage: colo-test-table-worker SUBCOMMAND ARGS...");
  const std::string cmd = argv[1];
  if (cmd == "keys" && argc == 9)
    return run_keys(argv[2], argv[3], argv[4], number(argv[5]), number(argv[6]), number(argv[7]), argv[8]);
  if (cmd == "hold" && argc == 7) return run_hold(argv[2], argv[3], argv[4], argv[5], number(argv[6]));
  if (cmd == "scribble" && argc == 6) return run_scribble(argv[2], argv[3], number(argv[4]), number(argv[5]));
  if (cmd == "owner-word" && argc == 2) {
    std::printf("%llu\n", static_cast<unsigned long long>(colo::shm::self_owner_word()));
    return 0;
  }
  die(2, "unknown subcommand or wrong arguments: " + cmd);
}
