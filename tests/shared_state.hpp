// tests/shared_state.hpp — the state a test shares with its colo-test-worker
// processes: a plain file in /dev/shm (named colo.<ns>.test-state, so the
// fixture's TearDown removes it with the namespace), created and sized by the
// test, mapped MAP_SHARED by everyone.
//
// Two kinds of fields:
// - control fields (go, stop, ready, holding_pid, release): plain atomics,
//   written and read without the lock;
// - protected fields (counter, a/b, last_token, ... and the grant log): only
//   written while holding the colo lock under test. They are atomics too, but
//   every update is a separate load and store (never a fetch_add), so if the
//   lock ever let two holders in at once, updates would be lost and the exact
//   counts would show it. The test reads them after every worker has stopped,
//   or reads the monotonic ones (owner_died_grants) racily for progress.
//
// Grant log: every grant made by a worker appends {token, pid, flags} in grant
// order, so the test checks afterwards that tokens strictly increase (in fact
// by exactly one per grant) and that each killed holder's grant is followed by
// exactly one owner_died grant.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

namespace colo::test {

enum GrantFlags : std::uint32_t {
  kGrantOwnerDied = 1,  // the grant reported owner_died()
  kGrantVictim = 2,     // made by a victim worker (which is then killed holding the lock)
  kGrantRepaired = 4,   // the holder found the protected state half-updated and repaired it
};

struct GrantRecord {
  std::uint64_t token;
  std::uint32_t pid;
  std::uint32_t flags;
};
static_assert(sizeof(GrantRecord) == 16);

struct alignas(64) SharedState {
  // --- control (no lock)
  std::atomic<std::uint32_t> go;           // workers start when set
  std::atomic<std::uint32_t> stop;         // looping workers stop when set
  std::atomic<std::uint32_t> ready;        // workers that are set up and waiting for go
  std::atomic<std::uint32_t> holding_pid;  // a holder/victim stores its pid once granted
  std::atomic<std::uint32_t> release;      // `hold` workers release when set
  std::atomic<std::uint32_t> waiting;      // workers about to block in acquire
  std::uint8_t pad0[40];

  // --- protected by the colo lock under test
  std::atomic<std::uint64_t> counter;            // `increment` workers
  std::atomic<std::uint64_t> a;                  // invariant a == b between updates
  std::atomic<std::uint64_t> b;
  std::atomic<std::uint64_t> last_token;         // token of the latest grant
  std::atomic<std::uint64_t> owner_died_grants;  // grants that reported owner_died()
  std::atomic<std::uint64_t> repairs;            // owner_died grants that found a != b
  std::atomic<std::uint64_t> violations;         // a != b on a normal grant, or a token not increasing
  std::atomic<std::uint64_t> log_count;          // entries written to the log
  std::atomic<std::uint64_t> log_overflow;       // grants that found the log full
  std::uint64_t log_capacity;                    // set by the test before any worker starts
  std::uint8_t pad1[48];
  // GrantRecord log[log_capacity] follows.
};
static_assert(sizeof(SharedState) % 64 == 0);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

inline std::size_t shared_state_bytes(std::uint64_t log_capacity) {
  return sizeof(SharedState) + static_cast<std::size_t>(log_capacity) * sizeof(GrantRecord);
}

inline GrantRecord* grant_log(SharedState* s) {
  return reinterpret_cast<GrantRecord*>(reinterpret_cast<char*>(s) + sizeof(SharedState));
}

inline std::string shared_state_path(const std::string& ns) { return "/dev/shm/colo." + ns + ".test-state"; }

// Maps an existing state file (workers). Returns nullptr on failure.
inline SharedState* map_shared_state(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return nullptr;
  struct stat st {};
  if (::fstat(fd, &st) != 0 || static_cast<std::size_t>(st.st_size) < sizeof(SharedState)) {
    ::close(fd);
    return nullptr;
  }
  void* p = ::mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  return p == MAP_FAILED ? nullptr : static_cast<SharedState*>(p);
}

}  // namespace colo::test
