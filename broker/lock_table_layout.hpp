// broker/lock_table_layout.hpp — the body of a lock table segment (private to
// libcolo and the tests).
//
// A lock table is a hash table of lock entries keyed by byte strings, in one
// segment (SegmentKind::lock_table). Member order is part of the format:
// change it only with kLockTableLayoutVersion.
//
// SEGMENT BODY (after the 512-byte segment header)
//
//   +------------------------------------------------------------------+ 0
//   | TableHeader                                                      |
//   |   line 0   geometry: written once by the creator, then only read |
//   |   line 1   counters: slow paths only (waits, deaths, refusals)   |
//   |   line 2   cluster line (cluster scope: colod's keeper, doorbell) |
//   |   lines 3-34   waiter slots: 64 x {pid, tid, start, key hash}    |
//   |   line 35  hot-key lock                                          |
//   |   16 hot keys x 320 B: the keys waited for most (space-saving)   |
//   +------------------------------------------------------------------+ kBucketsOffset
//   | bucket 0      | bucket 1      | ... | bucket home_buckets-1      |  homes
//   | tail: min(kWindowBuckets - 1, home_buckets) buckets              |  overflow only
//   +------------------------------------------------------------------+
//
// BUCKET: a header line and kSlotsPerBucket entries
//
//   0        8        16       20       24                          56   64
//   +--------+--------+--------+--------+---------------------------+----+
//   | lock   | epoch  |overflow| reach  | tags[8]: u32 per slot     |rsvd|
//   +--------+--------+--------+--------+---------------------------+----+
//   | entry 0 (entry_stride bytes) | entry 1 | ... | entry 7               |
//
//   lock      owner word (shm/owner_word.hpp): held for the nanoseconds of a
//             lookup-and-insert of a key whose home this is (and while an
//             insert writes a slot of this bucket). Never while blocked.
//   epoch     fencing high-water mark of the keys whose home this is: every
//             grant of such a key takes ++epoch under the lock.
//   overflow  keys of this home living in a later bucket (a hint: it may
//             over-count after a crash, which only costs a longer look).
//   reach     the farthest bucket (distance from home) such a key went to.
//   tags      per slot: (uint32)hash | 1 of the key last inserted there,
//             0 never used. Written only under this bucket's lock, only
//             for a free slot; a freed entry keeps its stale tag (the next
//             insert that looks at it finds the entry free and reuses it).
//
// ENTRY (entry_stride = 64 x ceil((40 + max_key) / 64), + 64 for cluster scope)
//
//   0        8        16       24       32   36  38 39 40                  64
//   +--------+--------+--------+--------+----+---+--+--+-------------------+
//   | word   | hash   | token  |acquired|pid |len|d |  | key bytes 0..23   |  state line
//   +--------+--------+--------+--------+----+---+--+--+-------------------+
//   | key bytes 24.. (max_key > 24 only)                                  |
//   +----------------------------------------------------------------------+
//   | cluster line (cluster scope only, see ClusterLine)                  |
//   +----------------------------------------------------------------------+
//
//   word      0 free; an owner word (flag bit = "waiters sleep on me"):
//             held by that thread; kEntryDamaged: isolated, never reused.
//             The futex of blocked acquirers is its low half.
//   hash      the key's 64-bit hash (XXH3 with the table's seed)
//   token     the fencing token of the current grant (for tools)
//   acquired  ticks at the grant if sampled (1 in 16, and every contended
//             or recovering grant), else 0
//   pid       the holder's process (the word names its thread)
//   len, d    key length; distance of this bucket from the key's home
//   A key of up to 24 bytes lives in the state line: an acquire and release
//   of a new key then touch two cache lines, its bucket header and its entry.
//
// WHY THESE STATES ARE ENOUGH
//   - An entry is live exactly while held: release is one CAS, word ->
//     0, and frees the entry at the same time. Waiters sleep on the word;
//     the release wakes them and the first back inserts the key again.
//     So only held keys occupy the table, and a waiter killed while
//     blocked leaves nothing behind (at most a flag bit that costs the
//     holder one spare FUTEX_WAKE).
//   - Every grant happens under the key's home bucket lock: a key is
//     looked up and inserted by one process at a time (no duplicates), and
//     its token is ++epoch of that bucket. Tokens of a key are therefore
//     strictly increasing for the life of the table, across releases,
//     deaths, and the entry being freed and inserted again anywhere in the
//     window (all under the same home).
//   - A process killed at any step leaves: the bucket lock naming a dead
//     thread (the next user takes it over; the bucket needs no repair: an
//     entry is published by the single store of its word, after its key);
//     or an entry held by a dead thread (the next acquirer of the key takes
//     it over, told owner_died); or a stale overflow hint (harmless).
//   - Scribbled memory: geometry is read once at open and kept in the
//     process; every index read from shared memory is bounded; entries that
//     fail validation (a word naming no thread, a length over max_key, a
//     hash whose home is out of reach of its bucket) are marked damaged and
//     counted. Scribbling can break the exclusion of the keys whose entries
//     it hits; it cannot crash or hang the processes using the table.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "segment.hpp"

namespace colo::detail {

inline constexpr std::uint32_t kLockTableLayoutVersion = 1;
inline constexpr std::uint32_t kSlotsPerBucket = 8;
// A key lives in its home bucket or one of the next kWindowBuckets - 1.
// With 8 slots per bucket and the table sized for 3/4 load at capacity, no
// key needs more than ~20 buckets in simulations of tens of millions of
// inserts; 32 leaves room.
inline constexpr std::uint32_t kWindowBuckets = 32;
inline constexpr std::uint64_t kLoadPercentAtCapacity = 75;
inline constexpr std::uint32_t kMaxKeyBytes = 256;
inline constexpr std::uint64_t kMaxTableCapacity = std::uint64_t{1} << 26;
inline constexpr std::size_t kTableWaiterSlots = 64;
inline constexpr std::size_t kHotKeys = 16;
inline constexpr std::size_t kRequestSlots = 64;
inline constexpr std::uint64_t kTableHoldSampleEvery = 16;  // power of two

// Entry words that name no thread (tid field 0):
// an isolated entry, never used again;
inline constexpr std::uint64_t kEntryDamaged = 0xDA3A'6ED0'0000'0000;
// cluster scope: a key no local process holds while the host holds (or
// asked for) its cluster lock; colod frees it when it gives that up. An
// acquirer takes it by CAS, as a free mutex. The flag bit may be set.
inline constexpr std::uint64_t kEntryKept = 0x4B45'5054'0000'0000;

struct TableGeometry {          // line 0
  std::uint32_t layout_version;
  std::uint32_t scope;          // colo::Scope
  std::uint64_t capacity;       // as asked at creation
  std::uint64_t home_buckets;
  std::uint32_t max_key;        // bytes
  std::uint32_t entry_stride;   // bytes
  std::uint64_t seed;           // of the key hash: keys chosen to collide need it
  std::uint32_t slots_per_bucket;
  std::uint32_t window_buckets;
  std::uint64_t buckets_offset; // bytes from the body's start
  std::uint8_t reserved[8];
};
static_assert(sizeof(TableGeometry) == 64, "the geometry is one cache line");

struct TableCounters {          // line 1: written on slow paths only (relaxed RMW)
  std::atomic<std::uint64_t> contended_grants;  // grants that had to wait
  std::atomic<std::uint64_t> recoveries;        // grants that found the holder dead
  std::atomic<std::uint64_t> timeouts;
  std::atomic<std::uint64_t> full_refusals;     // acquires refused: no free entry in the key's window
  std::atomic<std::uint64_t> damaged_entries;   // isolated
  std::atomic<std::uint64_t> bucket_recoveries; // bucket locks taken from a dead owner
  std::atomic<std::uint32_t> overflow_waiters;  // blocked waiters that found no free slot
  std::uint32_t reserved0;
  std::uint64_t reserved1;
};
static_assert(sizeof(TableCounters) == 64, "the counters are one cache line");

// Cluster scope: the colod keeping the table (see ClusterLine for the
// per-key protocol).
struct TableClusterLine {       // line 2
  std::atomic<std::uint32_t> keeper_pid;       // 0: none yet
  std::uint32_t reserved0;
  std::atomic<std::uint64_t> keeper_start_time;
  std::atomic<std::uint64_t> lease_losses;     // holds lost, all keys
  std::uint8_t reserved[40];
};
static_assert(sizeof(TableClusterLine) == 64, "the cluster line is one cache line");

struct TableWaiterSlot {
  std::atomic<std::uint32_t> pid;   // 0: free; claimed by CAS
  std::atomic<std::uint32_t> tid;
  std::atomic<std::uint64_t> start_time;
  std::atomic<std::uint64_t> key_hash;
  std::atomic<std::uint64_t> since_ticks;
};
static_assert(sizeof(TableWaiterSlot) == 32, "a waiter slot is 32 bytes");

// The keys waited for most: a space-saving sketch (a key not in it replaces
// the one with the fewest waits and inherits its count + 1), updated only by
// blocking acquirers that get hot_lock at once (a busy sketch skips a
// sample, never waits). Readers take seq before and after (odd: being
// written) and skip torn entries.
struct HotKey {
  std::atomic<std::uint32_t> seq;
  std::atomic<std::uint32_t> len;
  std::atomic<std::uint64_t> waits;
  std::atomic<std::uint64_t> hash;
  char key[kMaxKeyBytes];
  std::uint8_t reserved[40];
};
static_assert(sizeof(HotKey) == 320, "a hot key is 5 cache lines");

struct TableHeader {
  TableGeometry geometry;
  TableCounters counters;
  TableClusterLine cluster;
  TableWaiterSlot waiters[kTableWaiterSlots];
  std::atomic<std::uint64_t> hot_lock;  // owner word
  std::uint8_t pad_hot[56];
  HotKey hot[kHotKeys];
  // Cluster scope: an acquirer that asks colod for a key's cluster lock
  // posts its entry's index + 1 in a free slot (CAS 0 ->) and rings the
  // namespace's doorbell; colod takes the slots (exchange -> 0). A request
  // lost to full slots or a colod restart is posted again: the acquirer
  // re-posts every wait slice while its key is still requested.
  std::atomic<std::uint64_t> requests[kRequestSlots];
};
static_assert(offsetof(TableHeader, waiters) == 192, "waiter slots start at line 3");
static_assert(offsetof(TableHeader, hot) == 192 + 64 * 32 + 64, "hot keys follow the waiter slots and their lock");
static_assert(offsetof(TableHeader, requests) == offsetof(TableHeader, hot) + kHotKeys * sizeof(HotKey),
              "request slots follow the hot keys");
inline constexpr std::uint64_t kBucketsOffset = (sizeof(TableHeader) + 4095) / 4096 * 4096;

struct BucketHeader {
  std::atomic<std::uint64_t> lock;      // owner word
  std::atomic<std::uint64_t> epoch;     // written under lock
  std::atomic<std::uint32_t> overflow;  // hint
  std::atomic<std::uint32_t> reach;     // written under lock
  std::atomic<std::uint32_t> tags[kSlotsPerBucket];
  std::uint64_t reserved;
};
static_assert(sizeof(BucketHeader) == 64, "a bucket header is one cache line");

struct TableEntry {
  std::atomic<std::uint64_t> word;
  std::atomic<std::uint64_t> hash;
  std::atomic<std::uint64_t> token;
  std::atomic<std::uint64_t> acquired_ticks;
  std::atomic<std::uint32_t> holder_pid;
  std::atomic<std::uint16_t> key_len;
  std::atomic<std::uint8_t> home_distance;
  std::uint8_t reserved0;
  char key_start[24];  // the key's first bytes; the rest follows in the next lines
};
static_assert(sizeof(TableEntry) == 64, "an entry's state is one cache line");
inline constexpr std::uint32_t kKeyOffset = offsetof(TableEntry, key_start);
static_assert(offsetof(TableEntry, word) == 0, "the word (and its futex half) opens the line");
static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "shared words must be lock-free atomics");

// Cluster scope: the per-key protocol with colod, in the entry's last line.
// The same as a named cluster lock's (broker/lock_record.hpp, drawn there),
// with the entry word as the local mutex and one more field: `state` holds
// the key's incarnation (high 32 bits, + 1 at every insert of a key into
// this entry) beside the LeaseState (low 32 bits), and both sides change
// it by CAS with the incarnation they know. So colod, which keeps keys by
// entry index, can never act on a key that has left the entry and been
// replaced by another: its CAS fails.
//
//   none/lost --acquirer--> requested --colod--> held --colod--> yielding --colod--> none
//                                                  \--colod--> lost
//
// The acquirer asks only while it holds the entry; colod moves held ->
// yielding -> none holding the entry itself (its owner word in the word),
// and so frees the entry: a key stays in the table while this host holds
// its cluster lock, and no longer.
struct ClusterLine {
  std::atomic<std::uint64_t> state;           // incarnation << 32 | LeaseState
  std::atomic<std::uint32_t> signal;          // futex: bumped on every state change
  std::atomic<std::uint32_t> grant_limit;     // local grants allowed under this epoch
  std::atomic<std::uint64_t> cluster_epoch;   // the backend's grant epoch while held
  std::atomic<std::uint64_t> local_grants;    // grants under it (written by local holders)
  std::atomic<std::uint64_t> valid_until_ns;  // CLOCK_MONOTONIC: held at least until then
  std::atomic<std::uint32_t> flags;           // kKeyFlag*
  std::uint32_t reserved0;
  std::uint64_t reserved1[2];
};
// flags: colod took the entry from a dead holder: the next grant says owner_died.
inline constexpr std::uint32_t kKeyFlagOwnerDiedPending = 1;
static_assert(sizeof(ClusterLine) == 64, "the cluster line is one cache line");

// Bytes of one entry for a table of this scope and key size.
constexpr std::uint32_t entry_stride_for(bool cluster, std::uint32_t max_key) noexcept {
  return 64 * ((kKeyOffset + max_key + 63) / 64 + (cluster ? 1 : 0));
}
// Home buckets for `capacity` live keys at kLoadPercentAtCapacity load.
constexpr std::uint64_t home_buckets_for(std::uint64_t capacity) noexcept {
  const std::uint64_t slots = (capacity * 100 + kLoadPercentAtCapacity - 1) / kLoadPercentAtCapacity;
  return (slots + kSlotsPerBucket - 1) / kSlotsPerBucket;
}
// Buckets in all: the homes, and a tail that only takes overflow (a key's
// window never wraps around, so buckets are always locked in ascending order).
constexpr std::uint64_t all_buckets_for(std::uint64_t home_buckets) noexcept {
  return home_buckets + (home_buckets < kWindowBuckets - 1 ? home_buckets : kWindowBuckets - 1);
}
constexpr std::uint64_t bucket_stride_for(std::uint32_t entry_stride) noexcept {
  return sizeof(BucketHeader) + std::uint64_t{kSlotsPerBucket} * entry_stride;
}
constexpr std::uint64_t table_body_bytes(std::uint64_t capacity, bool cluster, std::uint32_t max_key) noexcept {
  return kBucketsOffset +
         all_buckets_for(home_buckets_for(capacity)) * bucket_stride_for(entry_stride_for(cluster, max_key));
}

}  // namespace colo::detail
