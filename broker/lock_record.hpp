// broker/lock_record.hpp — the body of a lock segment (private to libcolo).
//
// Layout (body of a SegmentKind::lock segment, after the 512-byte header).
// Member order is part of the format: change it only with kLockLayoutVersion.
//
//   0                                                              64
//   +--------------------------------------------------------------+
//   | robust mutex (pthread_mutex_t, 40 B) | padding               |  every grant/release: CAS
//   +--------------------------------------------------------------+ 64
//   | fencing epoch | grants | sampled hold ticks | hold samples   |  holder line: written only
//   | owner pid | owner tid | owner start | acquired (ticks) | rsv |  by the holder, under mutex
//   +--------------------------------------------------------------+ 128
//   | overflow waiters | rsv | timeouts | contended | recoveries   |  slow-path line
//   +--------------------------------------------------------------+ 192
//   | layout version | scope | cluster epoch | lease state |      |  cluster line: cohorting
//   | state signal | local grants | valid until | keeper pid/start |  with colod (cluster scope)
//   | lease losses | grant limit                                   |
//   +--------------------------------------------------------------+ 256
//   | waiter slots: 16 x { pid u32 | pad u32 | start time u64 }    |  who is blocked, for tools
//   +--------------------------------------------------------------+ 512
//
// Waiters are recorded by identity, not just counted: a waiter killed while
// blocked (Ctrl-C on `colo lock`) would leave a plain counter wrong forever,
// while a slot whose process is dead is simply not counted by tools (and is
// reused when the table is full). A waiter that finds no slot is only
// counted (overflow_waiters) and retries for a slot every 50 ms; tools add
// the overflow count only while all 16 slots hold live waiters.
//
// Timestamps: reading the TSC costs ~15 ns on this class of machine, half
// the mutex itself, so only 1 grant in kHoldSampleEvery (and every contended
// or recovering grant, already slow) is timed. Hold time is reported as the
// sampled mean; a holder's acquire time is exact when sampled, else a tool
// records when it first saw the holder, a lower bound it says as such.
//
// Memory orders: holder-line fields are relaxed atomics. The mutex orders
// every holder's writes before the next holder's reads; tools that read
// without the mutex accept a torn *snapshot* (different fields from
// neighbouring grants), never a torn field.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "colo/internal/cluster_keeper.hpp"  // the token format: kLocalGrantBits
#include "colo/lock.hpp"                      // Scope, LeaseState: the values stored here
#include "robust_mutex.hpp"
#include "segment.hpp"

namespace colo::detail {

inline constexpr std::uint32_t kLockLayoutVersion = 1;
inline constexpr std::size_t kWaiterSlots = 16;
inline constexpr std::uint64_t kHoldSampleEvery = 16;  // power of two

// cluster_flags bits.
// colod took the mutex (to yield) and found its previous owner dead: the
// next grant reports owner_died() even though colod made the mutex consistent.
inline constexpr std::uint32_t kClusterFlagOwnerDiedPending = 1;

struct alignas(shm::kCacheLine) LockRecord {
  // --- line 0: the mutex
  shm::RobustMutex mutex;
  std::uint8_t pad0[shm::kCacheLine - sizeof(shm::RobustMutex)];

  // --- line 1: holder line (every grant)
  std::atomic<std::uint64_t> fencing_epoch;
  std::atomic<std::uint64_t> grants;
  std::atomic<std::uint64_t> hold_ticks_sampled;  // summed over sampled grants
  std::atomic<std::uint64_t> hold_samples;
  std::atomic<std::uint32_t> owner_pid;
  std::atomic<std::uint32_t> owner_tid;
  std::atomic<std::uint64_t> owner_start_time;
  std::atomic<std::uint64_t> acquired_ticks;  // 0: not sampled (a tool may then store when it first saw the holder)
  std::uint64_t reserved1;

  // --- line 2: slow-path line (waits, recoveries)
  std::atomic<std::uint32_t> overflow_waiters;  // blocked waiters that found no free slot
  std::uint32_t reserved2a;
  std::atomic<std::uint64_t> timeouts;
  std::atomic<std::uint64_t> contended_grants;  // written by the holder, under the mutex
  std::atomic<std::uint64_t> recoveries;        // written by the holder, under the mutex
  std::uint8_t reserved2b[32];

  // --- line 3: cluster line. Host-scope locks use only the first two
  // fields. For cluster scope it is the whole protocol between the
  // processes of this host and colod (docs/cluster-locks.md):
  //
  //   lease_state   none --acquirer--> requested --colod--> held --colod--> yielding --colod--> none
  //                                                          \--colod (session/lease lost)--> lost
  //   (an acquirer turns lost back into requested)
  //
  // Acquirers change lease_state only under the robust mutex; colod changes
  // it without the mutex except when yielding (it then holds the mutex
  // itself, so that no local holder is left when the backend lock goes).
  // Every change bumps state_signal, the futex word both sides sleep on.
  // Fields were `reserved` (zero) in the first release of layout 1, and zero
  // means "none, no keeper", so the layout version did not change.
  std::uint32_t layout_version;
  std::uint32_t scope;                          // colo::Scope
  std::atomic<std::uint64_t> cluster_epoch;     // backend grant epoch while held (tokens: epoch << 20 | local grant)
  std::atomic<std::uint32_t> lease_state;       // colo::LeaseState
  std::atomic<std::uint32_t> state_signal;      // futex word: bumped on every lease_state change and cluster release
  std::atomic<std::uint64_t> local_grants;      // grants under the current cluster_epoch (written under the mutex)
  std::atomic<std::uint64_t> valid_until_ns;    // CLOCK_MONOTONIC: the cluster hold is ours at least until then
  std::atomic<std::uint32_t> keeper_pid;        // the colod serving this lock (0: none yet)
  std::atomic<std::uint32_t> cluster_flags;     // kClusterFlag*
  std::atomic<std::uint64_t> keeper_start_time;
  std::atomic<std::uint32_t> lease_losses;      // holds lost (session/lease gone) since creation
  std::atomic<std::uint32_t> grant_limit;       // local grants allowed under this epoch (colod's hand-off budget)

  // --- lines 4-7: waiter slots
  struct WaiterSlot {
    std::atomic<std::uint32_t> pid;  // 0: free; claimed by CAS
    std::uint32_t pad;
    std::atomic<std::uint64_t> start_time;
  };
  WaiterSlot waiter_slots[kWaiterSlots];
};
static_assert(sizeof(shm::RobustMutex) <= shm::kCacheLine, "the mutex must fit in its own cache line");
static_assert(offsetof(LockRecord, fencing_epoch) == 64, "holder line starts at byte 64");
static_assert(offsetof(LockRecord, reserved1) == 120, "holder line must fit in one cache line");
static_assert(offsetof(LockRecord, overflow_waiters) == 128, "waiter line starts at byte 128");
static_assert(offsetof(LockRecord, waiter_slots) == 256, "waiter slots start at byte 256");
static_assert(offsetof(LockRecord, layout_version) == 192, "cluster line starts at byte 192");
static_assert(offsetof(LockRecord, grant_limit) == 252, "the cluster line must fit in one cache line");
static_assert(sizeof(LockRecord) == 512, "the lock record is 512 bytes");
static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "shared counters must be lock-free atomics");

}  // namespace colo::detail
