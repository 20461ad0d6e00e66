// tests/lock_table/table_state.hpp — what a lock table test shares with its
// colo-test-table-worker processes: a file in /dev/shm (colo.<ns>.table-state,
// removed with the namespace), created and sized by the test, mapped
// MAP_SHARED by everyone.
//
// Per key (KeyCell), fields written only while holding that key's table lock,
// each update a separate load and store (never an RMW): if the table ever let
// two holders of a key in at once, increments would be lost and the exact
// per-key counts would show it.
//   a, b         a holder does a++, (pause), b++: equal between holds, unless
//                a holder died in between; the next holder (told owner_died)
//                repairs b = a
//   last_token   the token of the key's latest grant: each grant checks that
//                its token is greater
//   owner_died   grants of the key that reported owner_died()
//   violations   a token not greater than the last, or a != b on a grant not
//                told owner_died
// `kills` is the test's own: victims it killed while they held the key.
//
// Per worker (WorkerSlot), the handshake that makes a victim's kill land while
// it holds its key: the victim publishes `holding` with its key, and before
// releasing it moves holding -> releasing by CAS; the test moves holding ->
// doomed by CAS, then kills. Whoever wins decides: a doomed victim never
// releases (it spins until the SIGKILL arrives).
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

#include "colo/lock.hpp"  // LockGuard: on_grant

namespace colo::test {

struct alignas(64) KeyCell {
  std::atomic<std::uint64_t> a;
  std::atomic<std::uint64_t> b;
  std::atomic<std::uint64_t> last_token;
  std::atomic<std::uint64_t> owner_died;
  std::atomic<std::uint64_t> violations;
  std::atomic<std::uint64_t> kills;
};
static_assert(sizeof(KeyCell) == 64);

enum WorkerPhase : std::uint32_t { kIdle = 0, kHolding = 1, kReleasing = 2, kDoomed = 3 };

struct alignas(64) WorkerSlot {
  std::atomic<std::uint32_t> phase;   // WorkerPhase
  std::atomic<std::uint32_t> pid;
  std::atomic<std::uint64_t> key;     // the key index held while kHolding
  std::atomic<std::uint64_t> grants;  // completed acquisitions
};

inline constexpr std::size_t kMaxTableWorkers = 64;

struct alignas(64) TableState {
  std::atomic<std::uint32_t> go;     // workers start when set
  std::atomic<std::uint32_t> stop;   // looping workers stop when set
  std::atomic<std::uint32_t> ready;  // workers set up and waiting for go
  std::uint32_t pad0;
  std::uint64_t keys;                // key indexes are 0 .. keys-1; key i is "k<i>"
  std::uint8_t pad1[48];
  WorkerSlot workers[kMaxTableWorkers];
  // KeyCell cells[keys] follows.
};

inline std::size_t table_state_bytes(std::uint64_t keys) { return sizeof(TableState) + keys * sizeof(KeyCell); }
inline KeyCell* cells(TableState* s) {
  return reinterpret_cast<KeyCell*>(reinterpret_cast<char*>(s) + sizeof(TableState));
}
inline std::string table_state_path(const std::string& ns) { return "/dev/shm/colo." + ns + ".table-state"; }
inline std::string key_name(std::uint64_t index) { return "k" + std::to_string(index); }

// Under the key's lock, first thing after a grant: the token must grow; a
// half-done update is allowed (and repaired) only when the grant says the
// previous holder died.
inline void on_grant(KeyCell& c, const LockGuard& g) {
  constexpr auto relaxed = std::memory_order_relaxed;
  const std::uint64_t token = g.fencing_token();
  if (token <= c.last_token.load(relaxed)) c.violations.store(c.violations.load(relaxed) + 1, relaxed);
  c.last_token.store(token, relaxed);
  const std::uint64_t a = c.a.load(relaxed);
  if (g.owner_died()) {
    c.owner_died.store(c.owner_died.load(relaxed) + 1, relaxed);
    if (c.b.load(relaxed) != a) c.b.store(a, relaxed);
  } else if (c.b.load(relaxed) != a) {
    c.violations.store(c.violations.load(relaxed) + 1, relaxed);
  }
}

// Maps an existing state file (workers). nullptr on failure.
inline TableState* map_table_state(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return nullptr;
  struct stat st {};
  if (::fstat(fd, &st) != 0 || static_cast<std::size_t>(st.st_size) < sizeof(TableState)) {
    ::close(fd);
    return nullptr;
  }
  void* p = ::mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) return nullptr;
  auto* state = static_cast<TableState*>(p);
  if (table_state_bytes(state->keys) > static_cast<std::size_t>(st.st_size)) return nullptr;
  return state;
}

}  // namespace colo::test
