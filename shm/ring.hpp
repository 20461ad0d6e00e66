// shm/ring.hpp — the multi-writer, multi-reader byte ring under topics and queues.
//
// Why our own ring: Boost.Lockfree's queues carry fixed-size elements, and
// its spsc_queue has one writer; a topic needs variable-size records written
// in place (zero copy) by many processes, read by many cursors, and robust to
// any of them dying mid-record. No library does that over shared memory.
//
// ALGORITHM
//   Positions are 64-bit byte offsets that only grow; offset = pos & (cap-1).
//   Records are aligned to 64 bytes, a cache line ("units"): a reader never
//   shares a line with the record a writer is filling next, which would
//   cost a coherence miss per message. (DESIGN.md 5 says 8: a 16-byte
//   header and line alignment are what the measurements favoured.) Every
//   free unit starts with a FREE marker naming the lap it is free for, so a
//   header can never be forged by stale payload bytes of an earlier lap.
//
//   Claim (lock-free, many writers): read tail {pos P, seq S}; check space
//   (P + size <= head + cap); CAS the header word at P from FREE(lap(P)) to
//   DATA(lap(P), writer slot, -len). Exactly one writer wins P; a writer with
//   a stale P fails, since that unit no longer holds FREE(lap(P)). Then
//   anyone (the writer, or a helper that sees the claimed header) moves tail
//   from {P, S} to {P + size, S + 1} with a 16-byte CAS. A writer that does
//   not fit before the end of the ring claims a PAD record up to it first.
//   Commit: payload, then CAS the header to +len (seq_cst), then wake
//   sleeping readers if any registered (no system call otherwise).
//
//   Reclaim (writers that need space, one at a time under a robust mutex,
//   in batches of up to an eighth of the ring beyond the need, sparing a
//   topic's `history` newest messages): advance head over committed
//   records, never past the slowest blocking subscriber (topic) or the
//   oldest taken-but-unreleased message (queue), then write FREE(lap+1)
//   markers over the freed units, then publish `reclaimed` = head. Writers check space against `reclaimed`, never head:
//   they must not write where markers are still being written. Readers use
//   head to tell they were lapped.
//
//   Topic readers keep a cursor {pos, seq}; queue consumers take records
//   with a 16-byte CAS on a shared `take` cursor and hold them (in their slot)
//   until released or acknowledged.
//
// WAITING
//   A reader with nothing to read (a writer with no space) polls with
//   exponential backoff for ~30 us, then registers in data_waiters
//   (space_waiters) and futex-waits on data_signal (space_signal), at most
//   20 ms at a time so that liveness is re-checked. A writer's commit (a
//   reader's release) wakes only if someone is registered, and only once per
//   round of sleepers (data_woken / space_woken): no system call on the fast
//   path, one per sleep otherwise. Readers also cache the last tail they saw
//   and reload it only when they reach it.
//
// CRASH SAFETY
//   A writer dead between claim and commit: its header names its slot, the
//   slot names its process (pid + start time) and its current claim; a
//   reader stuck on the record for kStuckCheckNs checks, and if the writer is
//   dead turns the record into SKIP (counted in dead_claims). A consumer dead
//   with a message taken: with acks the message is redelivered (deliveries+1)
//   by the next consumer that looks; without acks it is dropped (at most
//   once). A dead blocking subscriber stops holding writers back when a
//   writer finds it blocking and checks its liveness.
//
// UNTRUSTED MEMORY (DESIGN.md 3.4)
//   Every shared index and length is read once into a local and checked:
//   positions against each other and the capacity, lengths against the
//   configured maximum and the ring end, sequences against the reader's own.
//   A bad record makes the reader resynchronise to the tail, counting what
//   it skipped; nothing is read or written out of bounds; every loop is
//   bounded.
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "colo/error.hpp"
#include "robust_mutex.hpp"
#include "segment.hpp"

namespace colo::shm {

inline constexpr std::size_t kRecordAlign = 64;
inline constexpr std::size_t kRecordHeaderSize = 16;
inline constexpr std::size_t kRingSlots = 64;        // publishers; and readers
inline constexpr std::uint64_t kMinRingCapacity = 4096;
inline constexpr std::uint64_t kMaxRingCapacity = std::uint64_t{1} << 34;  // 16 GiB
inline constexpr std::uint64_t kNoPosition = ~std::uint64_t{0};
inline constexpr std::uint32_t kRingLayoutVersion = 2;

enum class RingKind : std::uint32_t { topic = 1, queue = 2 };
// `bridge`: colod's cursor for a peer. It holds back local writers like
// `block`, but a writer of a relayed record (from another host) may lap it
// like `lossy`: inbound federation never waits for outbound federation, so
// two hosts that both publish faster than they can exchange cannot
// deadlock (what the bridge cursor lost is then counted, as for lossy).
enum class ReaderMode : std::uint32_t { block = 1, lossy = 2, consumer = 3, bridge = 4 };

// Readers that may be lapped read through a hold (see try_read_topic).
constexpr bool may_be_lapped(ReaderMode mode) noexcept { return mode == ReaderMode::lossy || mode == ReaderMode::bridge; }

// Record header, at every record's 64-byte aligned start.
//
//   word 0 (atomic, the commit word):
//    63            42 41  40 39 38 37     32 31                              0
//   +----------------+------+--+--+--------+--------------------------------+
//   | lap (22 bits)  | type |0 |R | writer | length (int32, payload bytes;  |
//   |                |      |  |  | slot   |  negative while being written) |
//   +----------------+------+--+--+--------+--------------------------------+
//     type: 0 FREE (unit free for `lap`), 1 DATA, 2 PAD (to ring end), 3 SKIP
//     R (relayed): written by colod for a message that came from another
//     host; the payload then starts with a RelayPrefix, which readers strip
//     and report as the message's origin. colod never forwards such a
//     record again, so federated messages cannot loop.
//   word 1 (a free unit holds its own position here, see try_claim):
//    63        56 55                                                    0
//   +------------+-------------------------------------------------------+
//   | deliveries | sequence (low 56 bits of the ring's message sequence)  |
//   +------------+-------------------------------------------------------+
//   payload, then padding to the next 64-byte boundary (not cleared).
enum class RecordType : std::uint32_t { free = 0, data = 1, pad = 2, skip = 3 };

// First 16 bytes of a relayed record's payload (R set): where it came from.
//    0               8          12         16
//   +---------------+----------+----------+
//   | origin_seq    | origin   | reserved |   origin: the origin node's id
//   +---------------+----------+----------+   (nonzero); origin_seq: the
//   sequence of the message in the origin host's ring.
struct RelayPrefix {
  std::uint64_t origin_seq;
  std::uint32_t origin;
  std::uint32_t reserved;
};
inline constexpr std::uint32_t kRelayPrefixSize = 16;
static_assert(sizeof(RelayPrefix) == kRelayPrefixSize, "a relay prefix is 16 bytes");

struct alignas(16) RecordHeader {
  std::atomic<std::uint64_t> state;
  std::atomic<std::uint64_t> seq_word;
};
static_assert(sizeof(RecordHeader) == kRecordHeaderSize, "a record header is 16 bytes");

// {pos, seq} pairs are updated together with a 16-byte CAS (cmpxchg16b) and
// read consistently by reading pos, seq, pos again (pos only grows, so an
// unchanged pos means seq belongs to it).
struct alignas(16) PositionPair {
  std::atomic<std::uint64_t> pos;
  std::atomic<std::uint64_t> seq;
};

struct PublisherSlot {
  std::atomic<std::uint32_t> pid;        // 0: free; claimed by CAS
  std::uint32_t reserved0;
  std::atomic<std::uint64_t> start_time;
  std::atomic<std::uint64_t> claim_pos;  // position of the claim in progress (set before the claim CAS)
  std::atomic<std::uint64_t> published;  // written by the owner only
  std::atomic<std::uint64_t> bytes;
  std::atomic<std::uint64_t> waits;      // times it waited for space
  std::atomic<std::uint64_t> abandoned;  // loans given up
  std::uint64_t reserved1;
};
static_assert(sizeof(PublisherSlot) == 64, "a publisher slot is one cache line");

struct ReaderSlot {
  // line 0: identity and positions
  std::atomic<std::uint32_t> pid;         // 0: free
  std::atomic<std::uint32_t> mode;        // ReaderMode
  std::atomic<std::uint64_t> start_time;
  std::atomic<std::uint64_t> cursor_pos;  // topic: next record to read
  std::atomic<std::uint64_t> cursor_seq;
  std::atomic<std::uint64_t> hold_pos;    // record being read (lossy view / queue take); kNoPosition if none
  std::atomic<std::uint64_t> hold_seq;
  std::atomic<std::uint32_t> sleeping;    // 1 while counted in data_waiters
  std::uint32_t reserved0;
  std::uint64_t reserved1;
  // line 1: counters, written by the owner only
  std::atomic<std::uint64_t> delivered;
  std::atomic<std::uint64_t> bytes;
  std::atomic<std::uint64_t> missed;       // lossy: overwritten before read
  std::atomic<std::uint64_t> skipped_bad;  // invalid records skipped
  std::atomic<std::uint64_t> redelivered;  // queue: taken over from a dead consumer
  std::atomic<std::uint64_t> dead_lettered;
  std::atomic<std::uint64_t> waits;        // futex sleeps
  std::uint64_t reserved2;
};
static_assert(sizeof(ReaderSlot) == 128, "a reader slot is two cache lines");

// The ring's control block, at the start of the ring's memory.
//
//   0      config (immutable after creation)                       64
//   64     tail {pos, seq}                                        128
//   128    head {pos, seq}     (oldest retained record), reclaimed 192
//   192    take {pos, seq}     (queue: next record to hand out)   256
//   256    data_signal, data_waiters, space_signal, space_waiters,
//          data_woken, space_woken                                 320
//   320    reclaim mutex (robust)                                  384
//   384    ring counters (RMW, rare events)                        448
//   448    reserved                                               1024
//   1024   PublisherSlot[64]                                      5120
//   5120   ReaderSlot[64]                                        13312
//   13312  data[capacity]
struct RingControl {
  std::uint32_t layout_version;
  std::uint32_t kind;            // RingKind
  std::uint64_t capacity;        // power of two
  std::uint32_t max_message;     // payload bytes
  std::uint32_t acks;            // queue: 1 if consumers acknowledge
  std::uint32_t max_deliveries;  // queue with acks: then dead-letter
  std::uint32_t history;         // topic: newest messages kept for new subscribers when there is room
  std::uint8_t pad0[32];

  PositionPair tail;
  std::uint8_t pad1[48];
  PositionPair head;
  std::atomic<std::uint64_t> reclaimed;  // head after its FREE markers are written: writers' space limit
  std::uint8_t pad2[40];
  PositionPair take;
  std::uint8_t pad3[48];

  std::atomic<std::uint32_t> data_signal;  // futex: bumped when data is committed and someone sleeps
  std::atomic<std::uint32_t> data_waiters;
  std::atomic<std::uint32_t> space_signal;  // futex: bumped when space is freed and a writer sleeps
  std::atomic<std::uint32_t> space_waiters;
  // 1 once a waker has woken the current sleepers; a sleeper clears it before
  // it sleeps. So a writer committing many messages to a sleeping reader
  // makes one futex call, not one per message (Ring::wake_readers).
  std::atomic<std::uint32_t> data_woken;
  std::atomic<std::uint32_t> space_woken;
  std::uint8_t pad4[40];

  RobustMutex reclaim_mutex;
  std::uint8_t pad5[64 - sizeof(RobustMutex)];

  std::atomic<std::uint64_t> dead_claims;    // records of dead writers turned into SKIP
  std::atomic<std::uint64_t> bad_records;    // invalid headers met by writers/reclaimers
  std::atomic<std::uint64_t> retired_published;  // counters of closed publisher slots
  std::atomic<std::uint64_t> retired_bytes;
  std::atomic<std::uint64_t> dead_readers;   // readers evicted after dying
  std::atomic<std::uint64_t> dropped_unacked;  // queue without acks: taken by a consumer that died
  // Open bridge readers (colod's cursors for peers). While there are any,
  // local writers leave the last quarter of the ring to relayed ones, so
  // inbound federation finds room without lapping what peers have not yet
  // confirmed (see ReaderMode::bridge). A hint: never below the truth.
  std::atomic<std::uint32_t> bridge_readers;
  std::uint8_t pad6[12];

  std::uint8_t reserved[576];
  PublisherSlot publishers[kRingSlots];
  ReaderSlot readers[kRingSlots];
};
static_assert(offsetof(RingControl, tail) == 64, "tail starts at byte 64");
static_assert(offsetof(RingControl, head) == 128, "head starts at byte 128");
static_assert(offsetof(RingControl, take) == 192, "take starts at byte 192");
static_assert(offsetof(RingControl, data_signal) == 256, "wait words start at byte 256");
static_assert(offsetof(RingControl, reclaim_mutex) == 320, "reclaim mutex starts at byte 320");
static_assert(offsetof(RingControl, dead_claims) == 384, "ring counters start at byte 384");
static_assert(offsetof(RingControl, publishers) == 1024, "publisher slots start at byte 1024");
static_assert(offsetof(RingControl, readers) == 5120, "reader slots start at byte 5120");
static_assert(sizeof(RingControl) == 13312, "the control block is 13 KiB");

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
};

// A writable region of the ring, from claim() until commit() or abandon().
struct Loan {
  std::byte* data = nullptr;  // the caller's payload (after the relay prefix, if any)
  std::uint32_t size = 0;     // the caller's payload bytes
  std::uint64_t pos = 0;
  std::uint64_t seq = 0;
  bool relayed = false;       // claimed with a RelayPrefix before `data`
};

// Where a relayed message came from (colod's claims only).
struct RelayTag {
  std::uint32_t origin = 0;  // nonzero
  std::uint64_t origin_seq = 0;
};

// A committed message, readable until release().
struct View {
  const std::byte* data = nullptr;
  std::uint32_t size = 0;
  std::uint64_t seq = 0;
  std::uint32_t deliveries = 1;  // queue: 1 on first delivery
  std::uint64_t pos = 0;
  bool dead_letter = false;      // queue: delivered max_deliveries times already
  std::uint32_t record_length = 0;  // payload bytes in the ring (size + the relay prefix, if any)
  std::uint32_t origin = 0;         // relayed: the origin node's id; 0: published on this host
  std::uint64_t origin_seq = 0;     // relayed: its sequence at the origin
};

enum class ClaimStatus { ok, full, too_large, corrupt };
enum class ReadStatus { ok, empty, corrupt };

// Process-local state of a publisher or a reader; the shared part is its slot.
struct PublisherHandle {
  int slot = -1;
};
struct ReaderHandle {
  int slot = -1;
  ReaderMode mode = ReaderMode::block;
  std::uint64_t pos = 0;  // topic cursor (mirrors the slot)
  std::uint64_t seq = 0;
  std::uint64_t stuck_pos = kNoPosition;  // record seen in progress since stuck_since_ns
  std::uint64_t stuck_since_ns = 0;
  std::uint64_t next_rescue_ns = 0;       // queue: next scan for dead consumers
  std::uint64_t known_tail = 0;           // the last tail position seen (a lower bound of tail)
  bool holding = false;
};

// A view over a ring in mapped memory. Copyable: it owns nothing.
class Ring {
 public:
  static std::size_t bytes_for(std::uint64_t capacity) noexcept { return sizeof(RingControl) + capacity; }
  static Result<void> validate(const RingConfig& config);
  // Initialises zeroed memory of bytes_for(capacity) bytes; the creator
  // calls it before publishing the segment.
  static Result<Ring> create(void* memory, std::size_t size, const RingConfig& config);
  // Checks the control block of an existing ring.
  static Result<Ring> attach(void* memory, std::size_t size);

  RingConfig config() const noexcept { return config_; }

  // ---- publishers (any thread of any process; one loan at a time per handle)
  Result<PublisherHandle> open_publisher();
  void close_publisher(PublisherHandle& handle) noexcept;
  // `relay` (colod only): the record is marked relayed and carries the tag.
  ClaimStatus try_claim(PublisherHandle& handle, std::uint32_t size, Loan& loan,
                        const RelayTag* relay = nullptr) noexcept;
  // Waits for space until the deadline (CLOCK_MONOTONIC ns): spin, then futex.
  ClaimStatus claim_until(PublisherHandle& handle, std::uint32_t size, std::uint64_t deadline_ns, Loan& loan,
                          const RelayTag* relay = nullptr) noexcept;
  void commit(PublisherHandle& handle, const Loan& loan) noexcept;
  void abandon(PublisherHandle& handle, const Loan& loan) noexcept;

  // ---- readers: topic subscribers (block or lossy) and queue consumers
  // `history`: topic only, start at most that many retained messages back.
  // `from_seq` (topic only, instead of history): start at the message with
  // that sequence, or the oldest retained one if it is gone (what was gone
  // is counted in the slot's `missed`); past tail: at tail.
  Result<ReaderHandle> open_reader(ReaderMode mode, std::uint64_t history = 0,
                                   std::optional<std::uint64_t> from_seq = std::nullopt);
  // Calls fn(origin, origin_seq) for each retained committed relayed record,
  // oldest first (colod's restart: what was already delivered from where).
  // Best effort against concurrent reclaim: a record is reported only if
  // head had not passed it after its prefix was read.
  template <typename Fn>
  void for_each_relayed(Fn&& fn) const noexcept {
    std::uint64_t pos = control_->head.pos.load(std::memory_order_acquire);
    const std::uint64_t tail_pos = control_->tail.pos.load(std::memory_order_acquire);
    for (std::uint64_t step = 0; step < config_.capacity / kRecordAlign && pos < tail_pos; ++step) {
      RelayPrefix prefix{};
      const std::uint64_t size = relayed_at(pos, prefix);
      if (size == 0) return;
      if (prefix.origin != 0 && control_->head.pos.load(std::memory_order_acquire) <= pos)
        fn(prefix.origin, prefix.origin_seq);
      pos += size;
    }
  }
  void close_reader(ReaderHandle& handle) noexcept;
  ReadStatus try_read(ReaderHandle& handle, View& view) noexcept;
  ReadStatus read_until(ReaderHandle& handle, std::uint64_t deadline_ns, View& view) noexcept;
  // Sleeps (as a registered data waiter of `handle`'s slot, so writers wake
  // it on commit) until `count` messages have been claimed (the tail's
  // sequence is at least `count`) or the deadline; reads nothing. True if
  // they have. For colod's wake-up threads: they tell its event loop that
  // something was published.
  bool wait_published(ReaderHandle& handle, std::uint64_t count, std::uint64_t deadline_ns) noexcept;
  // Topic: moves past the message. Queue: the message is done (acknowledged).
  void release(ReaderHandle& handle, const View& view) noexcept;

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
  // Size of the record whose header word is `state`, or 0 if impossible.
  std::uint64_t record_size(std::uint64_t pos, std::uint64_t state) const noexcept;
  void help_tail(std::uint64_t pos, std::uint64_t seq) noexcept;
  bool make_room(std::uint64_t target, bool relayed) noexcept;
  void write_free_markers(std::uint64_t from, std::uint64_t to) noexcept;
  void evict_dead_readers() noexcept;
  void forget_bridge_reader() noexcept;
  // `relayed`: for a relayed claim, bridge readers' holds do not count
  // (colod only looks at the origin of what its bridge cursor holds).
  bool held_between(std::uint64_t low, std::uint64_t high, bool relayed) noexcept;
  std::uint64_t reclaim_bound(std::uint64_t tail_pos, bool relayed) noexcept;
  bool writer_is_gone(std::uint64_t pos, std::uint64_t state) const noexcept;
  bool skip_if_writer_gone(ReaderHandle& handle, std::uint64_t pos, std::uint64_t state) noexcept;
  bool below_tail(ReaderHandle& handle, std::uint64_t pos) noexcept;
  // Size of the record at `pos` (0 if none valid); fills `prefix` if it is a
  // committed relayed record (else leaves origin 0).
  std::uint64_t relayed_at(std::uint64_t pos, RelayPrefix& prefix) const noexcept;
  // A view of the committed DATA record at `header`; false if it claims to
  // be relayed but is too short for the prefix.
  bool fill_view(RecordHeader& header, std::uint64_t state, std::uint64_t seq, std::uint32_t deliveries,
                 std::uint64_t pos, bool dead_letter, View& view) const noexcept;
  ReadStatus try_read_topic(ReaderHandle& handle, View& view) noexcept;
  ReadStatus try_take(ReaderHandle& handle, View& view) noexcept;
  bool rescue_dead_consumer(ReaderHandle& handle, View& view) noexcept;
  void resync_to_tail(ReaderHandle& handle) noexcept;
  void wake_readers() noexcept;
  void wake_writers() noexcept;

  RingControl* control_;
  std::byte* data_;
  RingConfig config_;
  std::uint64_t mask_;
  unsigned lap_shift_;  // log2(capacity)
};

}  // namespace colo::shm
