// shm/ring.hpp — the byte ring under topics and queues: many writers (or one
// exclusive writer), many readers, variable-size records written in place,
// batches as the unit of cost, crash-safe, every shared word validated.
//
// Why our own ring: Boost.Lockfree's queues carry fixed-size elements, and
// its spsc_queue has one writer; a topic needs variable-size records written
// in place (zero copy) by many processes, read by many cursors, and robust to
// any of them dying mid-record. No library does that over shared memory.
//
// ALGORITHM
//   Positions are 64-bit byte offsets that only grow; offset = pos & (cap-1).
//   Records are 16-byte aligned: a 16-byte header, the payload, padding.
//   Memory is reclaimed in 64-byte units; reclaim writes a FREE marker
//   naming the next lap into the first word of every unit it frees, so a
//   reader can always tell "not written yet" from a record, and stale payload
//   bytes of an earlier lap can never pass for a header (see CLEAN AHEAD).
//
//   Claim. A writer claims a run of `count` records (a batch; one message is
//   a batch of one) in one step:
//   - shared ring (any number of writers): ONE 16-byte CAS on tail
//     {pos, seq} -> {pos + bytes, seq + count}, the only atomic
//     read-modify-write of a publication. Before it, the writer writes its
//     intent (pos, end, seq, count) into its slot, so that a claim whose
//     writer dies before publishing can be found and skipped (CRASH SAFETY).
//     A shared claim starts and ends on a 64-byte unit; what the records do
//     not fill at the end is a filler record (SKIP of 0 messages).
//   - exclusive ring (one writer at a time, declared at creation, enforced):
//     no atomic read-modify-write at all. The writer owns tail; it appends
//     records packed at 16 bytes and stores tail {pos, seq} (one 16-byte
//     store) after each publication.
//   Publish (commit). Every header of the run is written as committed except
//   the first one not yet published; one release store of that header then
//   publishes the whole run: a reader reaches a record only through the one
//   before it, so it cannot see a later record before the first. A run may be
//   published in parts (commit, fill more, commit again); what a writer gives
//   up becomes a SKIP record counting the messages it stands for.
//
//   Clean ahead. A reader arriving at position P after a record reads P's
//   header. P is either a unit start (reclaim's FREE marker is there, or a
//   real header) or inside a run, where the publishing writer stored a FREE
//   marker at P before publishing the record that ends at P. So a reader
//   never interprets stale bytes as a header.
//
//   Reclaim (writers that need space, one at a time under a robust mutex, in
//   batches of up to an eighth of the ring beyond the need, sparing a topic's
//   `history` newest messages): advance head over published records, never
//   past the slowest blocking subscriber (topic) or the oldest taken but
//   unreleased message (queue), then write FREE(lap+1) markers over the freed
//   units, then publish `reclaimed` = head rounded down to a unit. Writers
//   check space against `reclaimed` (cached per writer, reloaded only when it
//   seems short); readers use head to tell they were lapped.
//
//   Topic readers keep a cursor {pos, seq}, published (release store) once
//   per batch they release. Queue consumers take a batch of records with one
//   16-byte CAS on the shared `take` cursor and hold the range in their slot
//   until they release (acknowledge) it. A queue may also have taps: cursor
//   readers in block mode (colod's mirror of a queue) that see every record
//   enqueued, take nothing, and hold reclaim back like a blocking subscriber.
//
// COST PER MESSAGE (64-byte payload, writers and readers keeping up)
//   exclusive writer: payload, header stores, a 16-byte tail store, no
//   atomic read-modify-write, no fence. Shared writers: one 16-byte CAS per
//   run. Readers: a header load per record, a cursor store per batch; queue
//   consumers one 16-byte CAS per batch. Waking a sleeper costs a futex call
//   only when one sleeps (WAITING). All other shared lines are read-mostly.
//
// WAITING
//   A reader with nothing to read (a writer with no space) spins while it
//   pays: for about twice the gap it has lately waited for a message (at
//   least a microsecond, at most 50 us), and not at all for 50 ms after it
//   saw itself preempted by another thread (a hole in its polling that the
//   kernel counts as an involuntary context switch: a host with more
//   runnable threads than CPUs, where a spinning reader would take the CPU
//   its writer needs; holes of interrupts or of the hypervisor do not
//   count; SpinBackoff). Then it registers
//   in data_waiters (space_waiters), issues an asymmetric memory barrier
//   (membarrier(2), global expedited) and futex-waits on data_signal
//   (space_signal), at most 20 ms at a time so that liveness is re-checked.
//   The barrier is what lets writers publish with a plain release store and
//   then read data_waiters without a fence of their own: either the writer
//   sees the registered sleeper, or the sleeper's last check sees the record.
//   (Where membarrier is unavailable, the ring's `fenced_commits` flag makes
//   every writer issue a full fence after publishing instead.) The barrier
//   is cheap on an idle host but not on a busy one: it interrupts every CPU
//   that runs a process of the ring, 11 us per sleep on a 2-vCPU VM with
//   the other CPU busy, against 0.6 us with it idle. So a ring whose
//   waiters keep sleeping turns to fenced commits for good: after
//   kBarrierSleepsBeforeFences sleeps, a sleeper sets `fenced_commits`,
//   issues one more barrier (every publication after it sees the flag) and
//   marks it established; from then on writers pay a fence per publication
//   (tens of ns; one per batch with the batch API) and sleepers no barrier.
//   A ring whose readers never sleep keeps fence-free commits. A waker calls
//   futex wake only if someone is registered, and once per round of sleepers
//   (data_woken / space_woken). A writer's own reclaim in its last check
//   before sleeping does not wake it (it is registered already). A reader's
//   release wakes sleeping writers only when there is room worth waking
//   for: the slowest reader an eighth of the ring past head, or every reader
//   at tail; a writer that needs less and sees readers stop short re-checks
//   after its 20 ms sleep.
//
// CRASH SAFETY
//   A shared writer dead between claim and publication: a reader (or a
//   reclaimer, or the process taking over its slot) that finds a FREE marker
//   below tail for kStuckCheckNs looks for the claim covering it among the
//   writers' intents; if its writer is dead, it turns what was not published
//   into a SKIP record (counted in dead_claims). An exclusive writer that
//   dies leaves nothing published past its last commit; the next exclusive
//   writer counts what it had claimed and not published. A consumer dead
//   with messages taken: with acks they are delivered again (deliveries+1) to
//   the next consumer that looks; without acks they are dropped (at most
//   once, counted). A dead blocking subscriber stops holding writers back
//   when a writer finds it blocking and checks its liveness (a process does
//   so at most once a millisecond: the check is a system call per reader).
//
// UNTRUSTED MEMORY
//   Every shared index and length is read once into a local and checked:
//   positions against each other and the capacity, lengths against the
//   configured maximum and the ring end, sequences against the reader's own.
//   A bad record makes the reader resynchronise to the tail, counting what it
//   skipped; nothing is read or written out of bounds; every loop is bounded.
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "colo/error.hpp"
#include "segment.hpp"

namespace colo::shm {

inline constexpr std::size_t kRecordAlign = 16;      // records start on 16 bytes
inline constexpr std::size_t kUnit = 64;             // reclaim's unit, a cache line; shared claims start on one
inline constexpr std::size_t kRecordHeaderSize = 16;
inline constexpr std::size_t kRingSlots = 64;        // publishers; and readers
inline constexpr std::uint64_t kMinRingCapacity = 4096;
inline constexpr std::uint64_t kMaxRingCapacity = std::uint64_t{1} << 34;  // 16 GiB
inline constexpr std::uint32_t kMaxBatch = 1u << 16;  // records per claim or read
inline constexpr std::uint64_t kNoPosition = ~std::uint64_t{0};
inline constexpr std::uint32_t kRingLayoutVersion = 3;
// RingControl::fenced_commits (WAITING).
inline constexpr std::uint32_t kFencesPending = 1;
inline constexpr std::uint32_t kFencesEstablished = 2;
// Sleeps with a membarrier each before a ring turns to fenced commits: a
// ring whose waiters sleep this often pays less in fences than in barriers.
inline constexpr std::uint32_t kBarrierSleepsBeforeFences = 64;

enum class RingKind : std::uint32_t { topic = 1, queue = 2 };
// Readers of a queue ring are consumers, or taps (block: a cursor that
// takes nothing). Topic rings have block, lossy and block_untagged readers.
// `block_untagged`: holds back writers of untagged records like `block`, but
// a writer of an origin-tagged record may lap it like `lossy`. A forwarder
// that reads a ring to carry its untagged (locally published) records
// elsewhere, and writes tagged records it received, uses it: its writes
// never wait for its own reads, so two forwarders feeding each other cannot
// deadlock (what it was lapped of is counted, as for lossy).
enum class ReaderMode : std::uint32_t { block = 1, lossy = 2, consumer = 3, block_untagged = 4 };

// Readers that may be lapped read through a hold (see try_read_topic).
constexpr bool may_be_lapped(ReaderMode mode) noexcept {
  return mode == ReaderMode::lossy || mode == ReaderMode::block_untagged;
}

// Record header, at every record's 16-byte aligned start.
//
//   word 0 (atomic; its release store publishes the record):
//    63             42 41  40 39 38 37      32 31                             0
//   +-----------------+------+--+--+----------+-------------------------------+
//   | lap (22 bits)   | type |O |M | 0 (6)    | length                        |
//   +-----------------+------+--+--+----------+-------------------------------+
//     type: 0 FREE (nothing here yet, for `lap`; length 0), 1 DATA,
//           2 PAD (fills to the ring's end), 3 SKIP (given up, or filler)
//     length: DATA: payload bytes (with the origin tag if O, and the
//             metadata block if M); PAD, SKIP: bytes the record covers,
//             header included
//     O (origin tag): the payload starts with an OriginTag, which readers
//       strip and report as the message's origin.
//     M (metadata): a metadata block follows (after the tag, if O); readers
//       strip it and report its bytes as the message's metadata.
//     PAD, SKIP and FREE have neither O nor M.
//   word 1:
//     DATA:  | deliveries - 1 (8 bits) | sequence (low 56 bits)      |
//            (deliveries: a queue's earlier deliveries of it that were
//             not acknowledged; 0 until one is taken over)
//     SKIP:  the number of messages it stands for (0: filler)
//     PAD, FREE: 0
//   payload, then padding to the next 16-byte boundary (not cleared).
//
// A DATA record covers align16(16 + length) bytes; it never crosses the
// ring's end (a PAD does, up to it).
enum class RecordType : std::uint32_t { free = 0, data = 1, pad = 2, skip = 3 };

// First 16 bytes of a tagged record's payload (O set): where it came from.
//    0               8          12         16
//   +---------------+----------+----------+
//   | origin_seq    | origin   | reserved |   origin: nonzero id of the
//   +---------------+----------+----------+   source; origin_seq: the
//   message's sequence there.
struct OriginTag {
  std::uint64_t origin_seq;
  std::uint32_t origin;
  std::uint32_t reserved;
};
inline constexpr std::uint32_t kOriginTagSize = 16;
static_assert(sizeof(OriginTag) == kOriginTagSize, "an origin tag is 16 bytes");

// A DATA record's payload, in order (each part 16-byte aligned, so the
// message's own bytes are too):
//   [OriginTag, if O][metadata block, if M][the message's bytes]
// The metadata block: its byte count n, 0, n bytes, zero padding to 16.
//    0        4        8                    8+n       align16(8+n)
//   +--------+--------+--------------------+---------+
//   | n      | 0      | n bytes (metadata) | padding |
//   +--------+--------+--------------------+---------+
// The bytes are opaque to the ring (colo/metadata.hpp gives them a meaning).
// The block counts against max_message: it travels in the same record.
inline constexpr std::uint32_t kMetadataHeaderSize = 8;
constexpr std::uint32_t metadata_block_size(std::uint32_t metadata_bytes) noexcept {
  return (kMetadataHeaderSize + metadata_bytes + 15u) & ~15u;
}

struct alignas(16) RecordHeader {
  std::atomic<std::uint64_t> state;
  std::atomic<std::uint64_t> seq_word;
};
static_assert(sizeof(RecordHeader) == kRecordHeaderSize, "a record header is 16 bytes");

// {pos, seq} pairs move together: by a 16-byte CAS (cmpxchg16b), or for an
// exclusive ring's tail by one 16-byte aligned vector store (atomic on x86-64
// processors with AVX). Read consistently by reading pos, seq, pos again
// (pos only grows, so an unchanged pos means seq belongs to it).
struct alignas(16) PositionPair {
  std::atomic<std::uint64_t> pos;
  std::atomic<std::uint64_t> seq;
};

// A publisher's slot: two cache lines, written by their owner only (a
// reclaimer or a new owner resolves a dead owner's claim).
struct PublisherSlot {
  // line 0: identity, and the claim in progress (its intent, written before
  // the tail CAS; claim_pos last, kNoPosition while being rewritten)
  std::atomic<std::uint32_t> pid;  // 0: free; claimed by CAS
  std::uint32_t reserved0;
  std::atomic<std::uint64_t> start_time;
  std::atomic<std::uint64_t> claim_pos;  // first record of the claim; kNoPosition: none
  std::atomic<std::uint64_t> claim_end;  // position after the claim
  std::atomic<std::uint64_t> claim_seq;  // sequence of its first record
  std::atomic<std::uint32_t> claim_count;
  std::uint32_t reserved1;
  std::uint64_t reserved2[2];
  // line 1: counters
  std::atomic<std::uint64_t> published;  // messages
  std::atomic<std::uint64_t> bytes;
  std::atomic<std::uint64_t> waits;      // times it slept waiting for space
  std::atomic<std::uint64_t> abandoned;  // messages loaned and given up
  std::atomic<std::uint64_t> batches;    // publications (a batch of one included)
  std::uint64_t reserved3[3];
};
static_assert(sizeof(PublisherSlot) == 128, "a publisher slot is two cache lines");

struct ReaderSlot {
  // line 0: identity and positions
  std::atomic<std::uint32_t> pid;         // 0: free
  std::atomic<std::uint32_t> mode;        // ReaderMode
  std::atomic<std::uint64_t> start_time;
  std::atomic<std::uint64_t> cursor_pos;  // topic: next record to read (published once per batch)
  std::atomic<std::uint64_t> cursor_seq;
  std::atomic<std::uint64_t> hold_pos;    // first record held (lossy read / queue take); kNoPosition if none
  std::atomic<std::uint64_t> hold_seq;    // its sequence
  std::atomic<std::uint32_t> sleeping;    // 1 while counted in data_waiters
  std::atomic<std::uint32_t> hold_count;  // queue: messages taken in the held range
  std::atomic<std::uint64_t> hold_end;    // queue: position after the held range
  // line 1: counters, written by the owner only
  std::atomic<std::uint64_t> delivered;
  std::atomic<std::uint64_t> bytes;
  std::atomic<std::uint64_t> missed;       // lossy: overwritten before read
  std::atomic<std::uint64_t> skipped_bad;  // invalid records skipped
  std::atomic<std::uint64_t> redelivered;  // queue: taken over from a dead consumer
  std::atomic<std::uint64_t> dead_lettered;
  std::atomic<std::uint64_t> waits;        // futex sleeps
  std::atomic<std::uint64_t> batches;      // reads that returned messages
};
static_assert(sizeof(ReaderSlot) == 128, "a reader slot is two cache lines");

// The ring's control block, at the start of the ring's memory.
//
//   0      config (immutable after creation)                       64
//   64     tail {pos, seq}                                        128
//   128    head {pos, seq}     (oldest retained record), reclaimed 192
//   192    take {pos, seq}     (queue: next record to hand out)   256
//   256    data_signal, data_waiters, space_signal, space_waiters,
//          data_woken, space_woken, fenced_commits, barrier_sleeps 320
//   320    reclaim lock {owner thread, its start time}             384
//   384    ring counters (RMW, rare events)                        448
//   448    reserved                                               1024
//   1024   PublisherSlot[64]                                      9216
//   9216   ReaderSlot[64]                                        17408
//   17408  data[capacity]
//
// Member order is part of the shared format (kRingLayoutVersion).
struct RingControl {
  std::uint32_t layout_version;
  std::uint32_t kind;            // RingKind
  std::uint64_t capacity;        // power of two
  std::uint32_t max_message;     // payload bytes
  std::uint32_t acks;            // queue: 1 if consumers acknowledge
  std::uint32_t max_deliveries;  // queue with acks: then dead-letter
  std::uint32_t history;         // topic: newest messages kept for new subscribers when there is room
  std::uint32_t exclusive;       // 1: one publisher at a time (no atomic RMW on the write path)
  std::uint8_t pad0[28];

  PositionPair tail;
  std::uint8_t pad1[48];
  PositionPair head;
  std::atomic<std::uint64_t> reclaimed;  // head rounded down to a unit, after its FREE markers: writers' limit
  std::uint8_t pad2[40];
  PositionPair take;
  std::uint8_t pad3[48];

  std::atomic<std::uint32_t> data_signal;  // futex: bumped when data is published and someone sleeps
  std::atomic<std::uint32_t> data_waiters;
  std::atomic<std::uint32_t> space_signal;  // futex: bumped when space is freed and a writer sleeps
  std::atomic<std::uint32_t> space_waiters;
  // 1 once a waker has woken the current sleepers; a sleeper clears it before
  // it sleeps. So a writer publishing many messages to a sleeping reader
  // makes one futex call, not one per message (Ring::wake_readers).
  std::atomic<std::uint32_t> data_woken;
  std::atomic<std::uint32_t> space_woken;
  // Non-zero: writers and readers fence after publishing and releasing
  // (WAITING). kFencesPending (1): set, or some process of this ring could
  // not use membarrier(2); kFencesEstablished (2): set, and a membarrier
  // since then has made every later publication see it, so sleepers need
  // no membarrier of their own. Never cleared.
  std::atomic<std::uint32_t> fenced_commits;
  // Sleeps that paid a membarrier; at kBarrierSleepsBeforeFences the ring
  // turns to fenced commits (WAITING).
  std::atomic<std::uint32_t> barrier_sleeps;
  std::uint8_t pad4[32];

  // Serialises reclaim (and a blocking reader's arrival). Not a pthread
  // robust mutex: glibc keeps a robust mutex's list pointers inside the
  // mutex, in shared memory, where a process scribbling over them makes the
  // holder crash in unlock. This word holds no pointer: the owner's thread
  // id (high 32 bits) and the low 32 bits of its start time; 0 when free. A
  // waiter that finds the owner dead takes it over (every step under it is
  // idempotent).
  std::atomic<std::uint64_t> reclaim_lock;
  std::uint8_t pad5[56];

  std::atomic<std::uint64_t> dead_claims;    // messages of dead writers skipped
  std::atomic<std::uint64_t> bad_records;    // invalid headers met by writers/reclaimers
  std::atomic<std::uint64_t> retired_published;  // counters of closed publisher slots
  std::atomic<std::uint64_t> retired_bytes;
  std::atomic<std::uint64_t> dead_readers;   // readers evicted after dying
  std::atomic<std::uint64_t> dropped_unacked;  // queue without acks: taken by a consumer that died
  // Open block_untagged readers. While there are any, writers of untagged
  // records leave the last quarter of the ring to tagged ones, so that a
  // forwarder's inbound writes find room without lapping what it has not yet
  // carried (see ReaderMode::block_untagged). A hint: never below the truth.
  std::atomic<std::uint32_t> block_untagged_readers;
  std::uint8_t pad6[12];

  std::uint8_t reserved[576];
  PublisherSlot publishers[kRingSlots];
  ReaderSlot readers[kRingSlots];
};
static_assert(offsetof(RingControl, tail) == 64, "tail starts at byte 64");
static_assert(offsetof(RingControl, head) == 128, "head starts at byte 128");
static_assert(offsetof(RingControl, take) == 192, "take starts at byte 192");
static_assert(offsetof(RingControl, data_signal) == 256, "wait words start at byte 256");
static_assert(offsetof(RingControl, reclaim_lock) == 320, "the reclaim lock starts at byte 320");
static_assert(offsetof(RingControl, dead_claims) == 384, "ring counters start at byte 384");
static_assert(offsetof(RingControl, publishers) == 1024, "publisher slots start at byte 1024");
static_assert(offsetof(RingControl, readers) == 9216, "reader slots start at byte 9216");
static_assert(sizeof(RingControl) == 17408, "the control block is 17 KiB");

struct RingConfig {
  RingKind kind = RingKind::topic;
  std::uint64_t capacity = 1 << 20;       // bytes of record space, power of two
  std::uint32_t max_message = 64 * 1024;  // payload bytes
  bool acks = false;                      // queue only
  std::uint32_t max_deliveries = 5;       // queue with acks
  // Topic: keep at least the newest `history` messages when reclaiming ahead
  // of need, and start new subscribers that many back by default. Writers
  // never wait for history: when the ring is full, the oldest go.
  std::uint32_t history = 0;
  // One publisher at a time (a second open_publisher is refused while the
  // first lives); its writes need no atomic read-modify-write.
  bool exclusive = false;
};

// Where a tagged message came from (see OriginTag).
struct OriginRef {
  std::uint32_t origin = 0;  // nonzero
  std::uint64_t origin_seq = 0;
};

// A claimed run of records, from claim until finish(). Process-local; the
// caller fills records in order (next_record), publishes with commit (as
// often as it likes), and ends with finish (what was not filled is given up).
struct Claim {
  std::uint64_t pos = 0;         // first record
  std::uint64_t end = 0;         // position after the claim
  std::uint64_t seq = 0;         // first record's sequence
  std::uint32_t count = 0;       // records claimed
  std::uint32_t filled = 0;      // records begun (next_record)
  std::uint32_t published = 0;   // records published
  std::uint64_t fill_pos = 0;    // where the next record goes
  std::uint64_t publish_pos = 0; // first record not yet published
  std::uint64_t publish_word = 0;  // its header word 0, stored last
  std::uint64_t bytes = 0;       // payload bytes begun (counters)
  bool tagged = false;           // records carry an OriginTag
};

// A committed message, readable until released.
struct View {
  const std::byte* data = nullptr;  // the message's bytes (after tag and metadata)
  std::uint32_t size = 0;
  std::uint64_t seq = 0;
  std::uint32_t deliveries = 1;  // queue: 1 on first delivery
  std::uint64_t pos = 0;
  bool dead_letter = false;      // queue: delivered max_deliveries times already
  std::uint32_t origin = 0;      // tagged: the origin's id; 0: untagged
  std::uint64_t origin_seq = 0;  // tagged: its sequence at the origin
  const std::byte* metadata = nullptr;  // M: the metadata block's bytes
  std::uint32_t metadata_size = 0;
};

enum class ClaimStatus { ok, full, too_large, corrupt };
enum class ReadStatus { ok, empty, corrupt };

// Whether a waiter may spin (see WAITING): not for 50 ms after it saw
// itself preempted while spinning.
struct SpinBackoff {
  std::uint64_t until_ns = 0;          // no spinning before
  std::uint64_t preemptions_seen = 0;  // the thread's involuntary switches at the last hole
};

// Process-local state of a publisher or a reader; the shared part is its slot.
struct PublisherHandle {
  int slot = -1;
  std::uint64_t known_reclaimed = 0;  // last `reclaimed` seen (a lower bound of it)
  // exclusive ring: the writer's own tail
  std::uint64_t tail_pos = 0;
  std::uint64_t tail_seq = 0;
  // waiting
  SpinBackoff spin;
  bool counted_in_space_waiters = false;  // its last check before sleeping: its own reclaim wakes no one for it
};

struct ReaderHandle {
  int slot = -1;
  ReaderMode mode = ReaderMode::block;
  std::uint64_t pos = 0;  // topic cursor (mirrors the slot once per batch)
  std::uint64_t seq = 0;
  // the batch being read (holding): where the cursor goes on release
  std::uint64_t batch_end_pos = 0;
  std::uint64_t batch_end_seq = 0;
  std::uint32_t batch_count = 0;
  std::uint64_t batch_bytes = 0;   // payload bytes of the batch (counters, on release)
  bool holding = false;
  // queue: a range taken over from a dead consumer, delivered in order
  std::uint64_t rescue_pos = kNoPosition;
  std::uint64_t rescue_end = 0;
  std::uint64_t rescue_seq = 0;
  // stuck claims
  std::uint64_t stuck_pos = kNoPosition;  // FREE marker seen below tail since stuck_since_ns
  std::uint64_t stuck_since_ns = 0;
  std::uint64_t next_rescue_ns = 0;       // queue: next scan for dead consumers
  std::uint32_t stuck_polls = 0;          // empty polls: the clock is read every few hundred
  std::uint64_t known_reclaimed = 0;      // last `reclaimed` seen (a lower bound of it)
  // waiting: how long messages lately took to come, and whether spinning pays
  std::uint64_t gap_ns = 0;
  SpinBackoff spin;
};

// A view over a ring in mapped memory. Copyable: it owns nothing.
class Ring {
 public:
  static std::size_t bytes_for(std::uint64_t capacity) noexcept { return sizeof(RingControl) + capacity; }
  static Result<void> validate(const RingConfig& config);
  // Bytes of ring a record of `size` payload bytes takes (header, tag, padding).
  static std::uint64_t footprint(std::uint32_t size, bool tagged) noexcept {
    return (kRecordHeaderSize + (tagged ? kOriginTagSize : 0) + std::uint64_t{size} + kRecordAlign - 1) &
           ~std::uint64_t{kRecordAlign - 1};
  }
  // Initialises zeroed memory of bytes_for(capacity) bytes; the creator
  // calls it before publishing the segment.
  static Result<Ring> create(void* memory, std::size_t size, const RingConfig& config);
  // Checks the control block of an existing ring.
  static Result<Ring> attach(void* memory, std::size_t size);

  RingConfig config() const noexcept { return config_; }

  // ---- publishers (any thread of any process; one claim at a time per handle)
  // Exclusive ring: Errc::busy while another live process publishes.
  Result<PublisherHandle> open_publisher();
  void close_publisher(PublisherHandle& handle) noexcept;
  // Claims `count` records of `size` payload bytes each, or of sizes[i] if
  // `sizes` is given (count entries). `tagged`: each record carries an
  // OriginTag before the payload (next_record writes it). On a shared ring
  // the claim may be shortened to fit before the ring's end (claim.count
  // tells); `count` 0 is too_large.
  ClaimStatus try_claim(PublisherHandle& handle, std::uint32_t count, std::uint32_t size, Claim& claim,
                        const std::uint32_t* sizes = nullptr, bool tagged = false) noexcept;
  // Waits for space until the deadline (CLOCK_MONOTONIC ns): spin, then futex.
  ClaimStatus claim_until(PublisherHandle& handle, std::uint32_t count, std::uint32_t size, std::uint64_t deadline_ns,
                          Claim& claim, const std::uint32_t* sizes = nullptr, bool tagged = false) noexcept;
  // The payload of the claim's next record (`size` bytes, as claimed), after
  // its origin tag if tagged. Null when every record is begun. With
  // `metadata` (non-empty), the record carries a metadata block (M) of those
  // bytes, written here: `size` as claimed includes the block
  // (metadata_block_size), and the pointer returned is past it, to
  // size - block bytes of the message. Null if the block does not fit.
  std::byte* next_record(Claim& claim, std::uint32_t size, const OriginRef* origin = nullptr,
                         std::span<const std::byte> metadata = {}) noexcept;
  // Payload of record `index` of a claim whose records all have `size`
  // bytes (begun or not): for writing a batch in any order.
  std::byte* payload_at(const Claim& claim, std::uint32_t index, std::uint32_t size) const noexcept {
    const std::uint64_t pos = claim.pos + std::uint64_t{index} * footprint(size, claim.tagged);
    return data_ + (pos & mask_) + kRecordHeaderSize + (claim.tagged ? kOriginTagSize : 0);
  }
  // Publishes every record begun so far.
  void commit(PublisherHandle& handle, Claim& claim) noexcept;
  // Gives up the records not begun-and-published (one SKIP record), and ends
  // the claim. A claim whose records are all published just ends.
  void finish(PublisherHandle& handle, Claim& claim) noexcept;

  // ---- readers: topic subscribers (block, lossy, block_untagged), queue
  // consumers, and queue taps (block on a queue ring: a cursor over every
  // record enqueued, taking nothing; writers wait for it like for a blocking
  // subscriber; it never rescues a dead consumer's messages).
  // `history`: cursor readers only, start at most that many retained messages back.
  // `from_seq` (cursor readers only, instead of history): start at the message with
  // that sequence, or the oldest retained one if it is gone (what was gone
  // is counted in the slot's `missed`); past tail: at tail.
  Result<ReaderHandle> open_reader(ReaderMode mode, std::uint64_t history = 0,
                                   std::optional<std::uint64_t> from_seq = std::nullopt);
  void close_reader(ReaderHandle& handle) noexcept;
  // Reads up to `max` (1..kMaxBatch) available messages into views[0..n) and
  // holds them until release(); n == 0 with `empty` (nothing yet) or
  // `corrupt`. One batch at a time per handle.
  std::uint32_t try_read(ReaderHandle& handle, View* views, std::uint32_t max, ReadStatus& status) noexcept;
  std::uint32_t read_until(ReaderHandle& handle, std::uint64_t deadline_ns, View* views, std::uint32_t max,
                           ReadStatus& status) noexcept;
  // Topic: moves past the batch. Queue: the batch is done (acknowledged).
  void release(ReaderHandle& handle) noexcept;
  // Sleeps (as a registered data waiter of `handle`'s slot, so writers wake
  // it on publish) until `count` messages have been claimed (the tail's
  // sequence is at least `count`) or the deadline; reads nothing. True if
  // they have. For a forwarder's wake-up thread.
  bool wait_published(ReaderHandle& handle, std::uint64_t count, std::uint64_t deadline_ns) noexcept;
  // wait_published in two halves, for a caller that sleeps elsewhere (colod's
  // event loop sleeps in io_uring on this word and its sockets at once).
  // arm_publish_wait registers `handle` as a data waiter and returns the
  // futex word and the value to sleep while it holds, or nullopt (nothing
  // registered) when `count` messages have been claimed already.
  // end_publish_wait ends the registration after the sleep, whatever ended it.
  struct FutexSleep {
    std::atomic<std::uint32_t>* word;
    std::uint32_t value;
  };
  std::optional<FutexSleep> arm_publish_wait(ReaderHandle& handle, std::uint64_t count) noexcept;
  void end_publish_wait(ReaderHandle& handle) noexcept;

  // Calls fn(origin, origin_seq) for each retained published tagged record,
  // oldest first (a forwarder's restart: what it already wrote from where).
  // Best effort against concurrent reclaim: a record is reported only if
  // head had not passed it after its tag was read.
  template <typename Fn>
  void for_each_tagged(Fn&& fn) const noexcept {
    std::uint64_t pos = control_->head.pos.load(std::memory_order_acquire);
    const std::uint64_t tail_pos = control_->tail.pos.load(std::memory_order_acquire);
    for (std::uint64_t step = 0; step < config_.capacity / kRecordAlign && pos < tail_pos; ++step) {
      OriginTag tag{};
      const std::uint64_t size = tagged_at(pos, tag);
      if (size == 0) return;
      if (tag.origin != 0 && control_->head.pos.load(std::memory_order_acquire) <= pos) fn(tag.origin, tag.origin_seq);
      pos += size;
    }
  }
  // Calls fn(origin, origin_seq, metadata) for each retained published
  // record with a metadata block, oldest first (origin 0: untagged). The
  // metadata is a copy (a record may be reclaimed while it is read), valid
  // during the call; reported only if head had not passed the record after
  // it was copied. For a restart that resumes from what the ring holds.
  template <typename Fn>
  void for_each_metadata(Fn&& fn) const {
    std::vector<std::byte> copy;
    std::uint64_t pos = control_->head.pos.load(std::memory_order_acquire);
    const std::uint64_t tail_pos = control_->tail.pos.load(std::memory_order_acquire);
    for (std::uint64_t step = 0; step < config_.capacity / kRecordAlign && pos < tail_pos; ++step) {
      OriginTag tag{};
      const std::uint64_t size = metadata_at(pos, tag, copy);
      if (size == 0) return;
      if (!copy.empty() && control_->head.pos.load(std::memory_order_acquire) <= pos)
        fn(tag.origin, tag.origin_seq, std::span<const std::byte>(copy));
      pos += size;
    }
  }

  RingControl& control() noexcept { return *control_; }
  const RingControl& control() const noexcept { return *control_; }
  // Snapshot of {pos, seq} of tail / head / take.
  std::pair<std::uint64_t, std::uint64_t> tail() const noexcept;
  std::pair<std::uint64_t, std::uint64_t> head() const noexcept;
  std::pair<std::uint64_t, std::uint64_t> take_cursor() const noexcept;

 private:
  Ring(RingControl* control, std::byte* data, RingConfig config) noexcept
      : control_(control), data_(data), config_(config), mask_(config.capacity - 1),
        lap_shift_(static_cast<unsigned>(std::countr_zero(config.capacity))) {}

  // Always an aligned header inside the ring, whatever `pos` holds (a
  // position read from shared memory may be garbage).
  RecordHeader& header_at(std::uint64_t pos) const noexcept {
    return *reinterpret_cast<RecordHeader*>(data_ + (pos & mask_ & ~std::uint64_t{kRecordAlign - 1}));
  }
  // Which lap of the ring `pos` is on (22 bits, as in a record header).
  std::uint64_t lap_of(std::uint64_t pos) const noexcept { return (pos >> lap_shift_) & ((std::uint64_t{1} << 22) - 1); }
  // Bytes the record at `pos` with header word `state` covers, or 0 if the
  // header is impossible there (FREE included).
  std::uint64_t record_size(std::uint64_t pos, std::uint64_t state) const noexcept;
  std::uint64_t free_marker(std::uint64_t pos) const noexcept;
  std::uint64_t common_record_size(std::uint64_t pos, std::uint64_t state) const noexcept;

  struct ClaimShape {
    std::uint32_t count;
    std::uint32_t size;             // every record's, unless sizes
    const std::uint32_t* sizes;     // count entries, or null
    bool tagged;
  };
  std::uint32_t fit(const ClaimShape& shape, std::uint64_t room, std::uint64_t& bytes) const noexcept;
  ClaimStatus claim_shared(PublisherHandle& handle, const ClaimShape& shape, Claim& claim) noexcept;
  ClaimStatus claim_exclusive(PublisherHandle& handle, const ClaimShape& shape, Claim& claim) noexcept;
  bool has_space(PublisherHandle& handle, std::uint64_t end, bool untagged, std::uint64_t& reclaim_to) noexcept;
  void store_tail(std::uint64_t pos, std::uint64_t seq) noexcept;
  bool make_room(std::uint64_t target, bool untagged, bool caller_waits) noexcept;
  bool lock_reclaim(std::uint64_t deadline_ns) noexcept;
  void unlock_reclaim() noexcept;
  void write_free_markers(std::uint64_t from, std::uint64_t to) noexcept;
  void evict_dead_readers() noexcept;
  void forget_block_untagged_reader() noexcept;
  // `untagged`: for a tagged write, block_untagged readers' holds do not count.
  bool held_between(std::uint64_t low, std::uint64_t high, bool untagged) noexcept;
  std::uint64_t reclaim_bound(std::uint64_t tail_pos, bool untagged) noexcept;

  // Crash recovery of claims (see CRASH SAFETY).
  // not_claimed: past tail; writer_alive: wait; resolved: published or
  // skipped now; unresolved: dead writers, no telling whose claim it is
  // (wait); orphan: no claim covers it at all (damage).
  enum class Stuck { not_claimed, writer_alive, resolved, unresolved, orphan };
  Stuck resolve_stuck(std::uint64_t pos) noexcept;
  std::uint64_t walk_published(std::uint64_t from, std::uint64_t end, std::uint32_t& records) const noexcept;
  void resolve_exclusive_takeover(PublisherSlot& slot) noexcept;
  bool check_stuck(ReaderHandle& handle, std::uint64_t pos) noexcept;

  std::uint64_t tagged_at(std::uint64_t pos, OriginTag& tag) const noexcept;
  // As tagged_at, and the record's metadata copied into `metadata` (empty if none).
  std::uint64_t metadata_at(std::uint64_t pos, OriginTag& tag, std::vector<std::byte>& metadata) const;
  bool fill_view(const RecordHeader& header, std::uint64_t state, std::uint64_t seq, std::uint32_t deliveries,
                 std::uint64_t pos, bool dead_letter, View& view) const noexcept;
  std::uint32_t try_read_topic(ReaderHandle& handle, View* views, std::uint32_t max, ReadStatus& status) noexcept;
  std::uint32_t try_take(ReaderHandle& handle, View* views, std::uint32_t max, ReadStatus& status) noexcept;
  std::uint32_t deliver_rescued(ReaderHandle& handle, View* views, std::uint32_t max) noexcept;
  bool rescue_dead_consumer(ReaderHandle& handle) noexcept;
  void resync_to_tail(ReaderHandle& handle) noexcept;
  void skip_queue_to_tail(ReaderHandle& handle, std::uint64_t first, std::uint64_t first_seq) noexcept;
  void publish_cursor(ReaderHandle& handle) noexcept;

  void wake_readers() noexcept;
  void wake_writers(std::uint32_t waiting_caller = 0) noexcept;
  void wake_writers_for_room() noexcept;
  void sleep_on(std::atomic<std::uint32_t>& signal, std::uint32_t seen, std::atomic<std::uint32_t>& woken,
                std::uint64_t timeout_ns) noexcept;

  RingControl* control_;
  std::byte* data_;
  RingConfig config_;
  std::uint64_t mask_;
  unsigned lap_shift_;  // log2(capacity)
  // When this process may next look for dead readers holding writers back
  // (make_room; read and written under the reclaim lock only).
  std::uint64_t next_eviction_ns_ = 0;
};

}  // namespace colo::shm
