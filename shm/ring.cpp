#include "ring.hpp"

#include <algorithm>
#include <cstring>

#include "clock.hpp"
#include "futex.hpp"
#include "process.hpp"

#if !defined(__x86_64__)
#error "the ring's 16-byte CAS is written for x86-64 (cmpxchg16b); port cas16() first"
#endif

namespace colo::shm {
namespace {

constexpr auto relaxed = std::memory_order_relaxed;
constexpr auto acquire = std::memory_order_acquire;
constexpr auto release_order = std::memory_order_release;
constexpr auto seq_cst = std::memory_order_seq_cst;

constexpr std::uint64_t kLapBits = 22;
constexpr std::uint64_t kLapMask = (std::uint64_t{1} << kLapBits) - 1;  // Ring::lap_of has the same 22 bits
constexpr std::uint64_t kSeqMask = (std::uint64_t{1} << 56) - 1;
// Waiting: poll with exponential backoff (1, 2, 4 .. kMaxBackoff pauses of
// ~30 ns between polls) for kSpinNs, then sleep on the futex. The backoff
// keeps a waiting reader from pulling the cache lines a writer is filling
// after every store (on this class of VM a line moving between cores costs
// ~250 ns), so a writer that is ahead runs at its own speed.
constexpr std::uint64_t kSpinNs = 30'000;
constexpr int kMaxBackoff = 64;
constexpr std::int64_t kMaxSleepNs = 20'000'000;   // re-check liveness at least this often
constexpr std::uint64_t kStuckCheckNs = 20'000'000;  // a record in progress this long: is its writer alive?
constexpr std::uint64_t kRescueIntervalNs = 10'000'000;
constexpr int kMaxLoop = 1 << 16;                  // bound on any retry loop in one call

constexpr std::uint64_t align_record(std::uint64_t n) { return (n + kRecordAlign - 1) & ~std::uint64_t{kRecordAlign - 1}; }

constexpr std::uint64_t make_state(std::uint64_t lap, RecordType type, std::uint32_t slot, std::int32_t length) {
  return (lap & kLapMask) << 42 | static_cast<std::uint64_t>(type) << 40 | static_cast<std::uint64_t>(slot & 0xff) << 32 |
         static_cast<std::uint32_t>(length);
}
constexpr std::uint64_t state_lap(std::uint64_t s) { return s >> 42; }
constexpr RecordType state_type(std::uint64_t s) { return static_cast<RecordType>((s >> 40) & 3); }
constexpr std::uint32_t state_slot(std::uint64_t s) { return static_cast<std::uint32_t>((s >> 32) & 0x3f); }
constexpr std::uint32_t kRelayedBit = 0x40;  // in the slot byte: the R bit (38) of the header
constexpr bool state_relayed(std::uint64_t s) { return ((s >> 32) & kRelayedBit) != 0; }
constexpr std::int32_t state_length(std::uint64_t s) { return static_cast<std::int32_t>(static_cast<std::uint32_t>(s)); }

#if defined(__SANITIZE_THREAD__)
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#endif

// 16-byte compare-and-swap (lock cmpxchg16b: a full barrier) of two adjacent
// 64-bit words: a {pos, seq} pair, or a record header {state, seq_word}.
// ThreadSanitizer does not see inside it, so under TSan it is annotated as
// the release + acquire it is.
bool cas16(void* words, std::uint64_t expected_lo, std::uint64_t expected_hi, std::uint64_t desired_lo,
           std::uint64_t desired_hi) noexcept {
  __extension__ typedef unsigned __int128 u128;  // GCC/Clang builtin type for cmpxchg16b
  const u128 expected = static_cast<u128>(expected_hi) << 64 | expected_lo;
  const u128 desired = static_cast<u128>(desired_hi) << 64 | desired_lo;
#if defined(__SANITIZE_THREAD__)
  __tsan_release(words);
#endif
  const bool swapped = __sync_bool_compare_and_swap(static_cast<u128*>(words), expected, desired);
#if defined(__SANITIZE_THREAD__)
  __tsan_acquire(words);
#endif
  return swapped;
}
// The claim of a free unit. A writer with a stale snapshot may aim this CAS
// at a unit that has since become payload (it then fails, changing
// nothing), which ThreadSanitizer would report as a race with the plain
// payload accesses; like peek_state it is therefore not instrumented, and a
// successful claim is annotated as the acquire it is (of the reclaimer's
// release-stored FREE marker).
__attribute__((no_sanitize("thread"))) bool claim_unit(RecordHeader& header, std::uint64_t expected_state,
                                                      std::uint64_t expected_pos, std::uint64_t state,
                                                      std::uint64_t seq_word) noexcept {
  __extension__ typedef unsigned __int128 u128;
  const u128 expected = static_cast<u128>(expected_pos) << 64 | expected_state;
  const u128 desired = static_cast<u128>(seq_word) << 64 | state;
  const bool claimed = __sync_bool_compare_and_swap(reinterpret_cast<u128*>(&header), expected, desired);
#if defined(__SANITIZE_THREAD__)
  if (claimed) __tsan_acquire(&header);
#endif
  return claimed;
}

bool cas16(PositionPair& pair, std::uint64_t pos, std::uint64_t seq, std::uint64_t new_pos, std::uint64_t new_seq) noexcept {
  return cas16(static_cast<void*>(&pair), pos, seq, new_pos, new_seq);
}

std::pair<std::uint64_t, std::uint64_t> snapshot(const PositionPair& pair) noexcept {
  std::uint64_t pos = 0, seq = 0;
  for (int attempt = 0; attempt < 1024; ++attempt) {  // bounded even if something rewrites pos nonstop
    pos = pair.pos.load(acquire);
    seq = pair.seq.load(acquire);
    if (pair.pos.load(acquire) == pos) break;
  }
  return {pos, seq};
}

constexpr std::uint64_t kReclaimLockNs = 50'000'000;  // the reclaim mutex is held for microseconds
constexpr std::uint64_t kReclaimBatch = 4 << 20;      // bytes freed beyond need per reclaim, at most

inline void cpu_relax() noexcept { __builtin_ia32_pause(); }

// A speculative read of a header word at a position that may be stale: by
// the time we look, the unit may lie inside a newer record whose payload a
// writer is filling with plain stores. The value is only a hint, validated
// afterwards by a CAS or by re-checking the position under a hold, so the
// overlap is harmless; ThreadSanitizer would report it as a race, so this one
// load is not instrumented. Every load that establishes ordering for a later
// payload access is an ordinary instrumented atomic load.
__attribute__((no_sanitize("thread"))) std::uint64_t peek_state(const RecordHeader& header) noexcept {
  return __atomic_load_n(reinterpret_cast<const std::uint64_t*>(&header.state), __ATOMIC_ACQUIRE);
}

// Copies bytes of a record that may be reclaimed meanwhile (for_each_relayed
// re-checks head afterwards); not instrumented for the same reason as peek_state.
__attribute__((no_sanitize("thread"))) void peek_bytes(const std::byte* from, void* to, std::size_t n) noexcept {
  std::memcpy(to, from, n);
}

bool process_alive(std::uint32_t pid, std::uint64_t start) noexcept {
  return liveness(ProcessRef{pid, start}) == Liveness::alive;
}

inline void bump(std::atomic<std::uint64_t>& counter, std::uint64_t by = 1) noexcept {
  counter.store(counter.load(relaxed) + by, relaxed);  // owner-only counter
}

}  // namespace

// ------------------------------------------------------------------ set-up

Result<void> Ring::validate(const RingConfig& c) {
  if (c.capacity < kMinRingCapacity || c.capacity > kMaxRingCapacity || (c.capacity & (c.capacity - 1)) != 0)
    return Error{Errc::invalid_argument, "ring capacity " + std::to_string(c.capacity) +
                                             " must be a power of two from 4096 to 16 GiB"};
  if (c.kind != RingKind::topic && c.kind != RingKind::queue) return Error{Errc::invalid_argument, "unknown ring kind"};
  if (align_record(kRecordHeaderSize + kRelayPrefixSize + std::uint64_t{c.max_message}) > c.capacity / 2)
    return Error{Errc::invalid_argument, "maximum message of " + std::to_string(c.max_message) +
                                             " bytes does not fit twice in a ring of " + std::to_string(c.capacity) +
                                             " bytes; raise the capacity or lower the maximum"};
  if (c.max_message > static_cast<std::uint32_t>(INT32_MAX) - 64)
    return Error{Errc::invalid_argument, "maximum message too large"};
  if (c.acks && c.kind != RingKind::queue) return Error{Errc::invalid_argument, "acknowledgements are for queues"};
  if (c.history != 0 && c.kind != RingKind::topic) return Error{Errc::invalid_argument, "history is for topics"};
  if (c.acks && (c.max_deliveries == 0 || c.max_deliveries > 255))
    return Error{Errc::invalid_argument, "max deliveries must be 1-255"};
  return Ok{};
}

Result<Ring> Ring::create(void* memory, std::size_t size, const RingConfig& config) {
  if (auto ok = validate(config); !ok) return std::move(ok).error();
  if (size < bytes_for(config.capacity)) return Error{Errc::invalid_argument, "ring memory too small"};
  auto* control = static_cast<RingControl*>(memory);
  control->layout_version = kRingLayoutVersion;
  control->kind = static_cast<std::uint32_t>(config.kind);
  control->capacity = config.capacity;
  control->max_message = config.max_message;
  control->acks = config.acks ? 1 : 0;
  control->max_deliveries = config.max_deliveries;
  control->history = config.history;
  if (int rc = control->reclaim_mutex.init(); rc != 0) return Error{Errc::system, "cannot initialise the ring mutex"};
  for (auto& r : control->readers) r.hold_pos.store(kNoPosition, relaxed);
  Ring ring(control, static_cast<std::byte*>(memory) + sizeof(RingControl), config);
  // Every unit free for lap 0: {FREE(0) == 0, its position}.
  for (std::uint64_t unit = 0; unit < config.capacity; unit += kRecordAlign) {
    ring.header_at(unit).state.store(0, relaxed);
    ring.header_at(unit).seq_word.store(unit, relaxed);
  }
  return ring;
}

Result<Ring> Ring::attach(void* memory, std::size_t size) {
  if (size < sizeof(RingControl)) return Error{Errc::corrupt, "ring memory smaller than its control block"};
  auto* control = static_cast<RingControl*>(memory);
  RingConfig c;
  const std::uint32_t version = control->layout_version;
  const std::uint32_t kind = control->kind;
  c.capacity = control->capacity;
  c.max_message = control->max_message;
  c.acks = control->acks != 0;
  c.max_deliveries = control->max_deliveries;
  c.history = control->history;
  if (version != kRingLayoutVersion)
    return Error{Errc::corrupt, "ring layout version " + std::to_string(version) + ", this build reads " +
                                    std::to_string(kRingLayoutVersion)};
  if (kind != static_cast<std::uint32_t>(RingKind::topic) && kind != static_cast<std::uint32_t>(RingKind::queue))
    return Error{Errc::corrupt, "ring kind " + std::to_string(kind) + " is unknown"};
  c.kind = static_cast<RingKind>(kind);
  if (auto ok = validate(c); !ok) return Error{Errc::corrupt, "ring configuration is corrupt: " + ok.error().message};
  if (size < bytes_for(c.capacity))
    return Error{Errc::corrupt, "ring of capacity " + std::to_string(c.capacity) + " does not fit its segment"};
  return Ring(control, static_cast<std::byte*>(memory) + sizeof(RingControl), c);
}

std::pair<std::uint64_t, std::uint64_t> Ring::tail() const noexcept { return snapshot(control_->tail); }
std::pair<std::uint64_t, std::uint64_t> Ring::head() const noexcept { return snapshot(control_->head); }
std::pair<std::uint64_t, std::uint64_t> Ring::take_cursor() const noexcept { return snapshot(control_->take); }

std::uint64_t Ring::record_size(std::uint64_t pos, std::uint64_t state) const noexcept {
  const std::int32_t length = state_length(state);
  const std::uint64_t magnitude = length < 0 ? static_cast<std::uint64_t>(-static_cast<std::int64_t>(length))
                                             : static_cast<std::uint64_t>(length);
  const std::uint64_t offset = pos & mask_;
  if (state_type(state) == RecordType::pad) {
    const std::uint64_t size = kRecordHeaderSize + magnitude;
    return size == config_.capacity - offset ? size : 0;  // a pad always ends at the ring's end
  }
  if (magnitude > config_.max_message + (state_relayed(state) ? kRelayPrefixSize : 0)) return 0;
  const std::uint64_t size = align_record(kRecordHeaderSize + magnitude);
  return offset + size <= config_.capacity ? size : 0;
}

// ---------------------------------------------------------------- writers

Result<PublisherHandle> Ring::open_publisher() {
  const ProcessRef me = self();
  for (int pass = 0; pass < 2; ++pass) {
    for (std::size_t i = 0; i < kRingSlots; ++i) {
      auto& slot = control_->publishers[i];
      std::uint32_t seen = slot.pid.load(acquire);
      if (seen != 0) {
        // Second pass: take over the slot of a dead publisher. Its claim in
        // progress, if any, is skipped by readers (slot alive but claim_pos
        // elsewhere, or slot dead): see writer_is_gone.
        if (pass == 0 || process_alive(seen, slot.start_time.load(relaxed))) continue;
      }
      if (!slot.pid.compare_exchange_strong(seen, me.pid, std::memory_order_acq_rel)) continue;
      if (seen != 0) {
        control_->retired_published.fetch_add(slot.published.load(relaxed), relaxed);
        control_->retired_bytes.fetch_add(slot.bytes.load(relaxed), relaxed);
      }
      slot.start_time.store(me.start_time, relaxed);
      slot.claim_pos.store(kNoPosition, relaxed);
      slot.published.store(0, relaxed);
      slot.bytes.store(0, relaxed);
      slot.waits.store(0, relaxed);
      slot.abandoned.store(0, relaxed);
      return PublisherHandle{static_cast<int>(i)};
    }
  }
  return Error{Errc::capacity, "all " + std::to_string(kRingSlots) + " publisher slots are in use by live processes"};
}

void Ring::close_publisher(PublisherHandle& handle) noexcept {
  if (handle.slot < 0) return;
  auto& slot = control_->publishers[handle.slot];
  control_->retired_published.fetch_add(slot.published.load(relaxed), relaxed);
  control_->retired_bytes.fetch_add(slot.bytes.load(relaxed), relaxed);
  slot.published.store(0, relaxed);
  slot.bytes.store(0, relaxed);
  slot.claim_pos.store(kNoPosition, relaxed);
  slot.pid.store(0, release_order);
  handle.slot = -1;
}

void Ring::help_tail(std::uint64_t pos, std::uint64_t seq) noexcept {
  const std::uint64_t state = peek_state(header_at(pos));
  if (state_lap(state) != lap_of(pos) || state_type(state) == RecordType::free) return;
  const std::uint64_t size = record_size(pos, state);
  if (size == 0) return;
  const std::uint64_t next_seq = state_type(state) == RecordType::pad ? seq : seq + 1;
  cas16(control_->tail, pos, seq, pos + size, next_seq);
}

ClaimStatus Ring::try_claim(PublisherHandle& handle, std::uint32_t size, Loan& loan, const RelayTag* relay) noexcept {
  if (size > config_.max_message) return ClaimStatus::too_large;
  if (handle.slot < 0) return ClaimStatus::corrupt;
  auto& me = control_->publishers[handle.slot];
  const std::uint32_t length = size + (relay != nullptr ? kRelayPrefixSize : 0);
  const std::uint32_t slot_bits = static_cast<std::uint32_t>(handle.slot) | (relay != nullptr ? kRelayedBit : 0);
  const std::uint64_t record = align_record(kRecordHeaderSize + length);
  for (int attempt = 0; attempt < kMaxLoop; ++attempt) {
    const auto [pos, seq] = snapshot(control_->tail);
    const std::uint64_t head_pos = control_->reclaimed.load(acquire);
    if (pos < head_pos) continue;  // stale snapshot: tail moved on while we read reclaimed
    if ((pos & (kRecordAlign - 1)) != 0 || pos - head_pos > config_.capacity) {
      control_->bad_records.fetch_add(1, relaxed);
      return ClaimStatus::corrupt;
    }
    const std::uint64_t offset = pos & mask_;
    const std::uint64_t to_end = config_.capacity - offset;
    const bool wrap = to_end < record;
    const std::uint64_t need = wrap ? to_end : record;
    // Local writers leave a quarter to relayed ones while colod federates this ring.
    const std::uint64_t reserve =
        relay == nullptr && control_->bridge_readers.load(relaxed) != 0 ? config_.capacity / 4 : 0;
    if (pos + need + reserve > head_pos + config_.capacity) {
      if (!make_room(pos + need + reserve - config_.capacity, relay != nullptr)) return ClaimStatus::full;
      continue;
    }
    // A free unit holds {FREE(lap), its own position}: the claim CAS expects
    // both, so a writer with a stale snapshot (even a lap old, with `pos`
    // now inside some payload) cannot match unless that payload spells out
    // this exact position, and exactly one writer wins the unit.
    const std::uint64_t expected = make_state(lap_of(pos), RecordType::free, 0, 0);
    auto& header = header_at(pos);
    // Look before the CAS: a load of a stale unit is harmless.
    if (peek_state(header) != expected) {
      if (control_->tail.pos.load(acquire) == pos) help_tail(pos, seq);
      cpu_relax();
      continue;
    }
    if (wrap) {
      const auto pad = make_state(lap_of(pos), RecordType::pad, static_cast<std::uint32_t>(handle.slot),
                                  static_cast<std::int32_t>(to_end - kRecordHeaderSize));
      claim_unit(header, expected, pos, pad, 0);
      if (control_->tail.pos.load(acquire) == pos) help_tail(pos, seq);
      continue;
    }
    // Intent before the claim: a reader that finds this claim stuck can tell
    // it is ours (and whether we still live).
    me.claim_pos.store(pos, relaxed);
    const auto claimed = make_state(lap_of(pos), RecordType::data, slot_bits, -static_cast<std::int32_t>(length));
    if (!claim_unit(header, expected, pos, claimed, seq & kSeqMask)) {
      if (control_->tail.pos.load(acquire) == pos) help_tail(pos, seq);
      cpu_relax();
      continue;
    }
    cas16(control_->tail, pos, seq, pos + record, seq + 1);
    std::byte* payload = reinterpret_cast<std::byte*>(&header) + kRecordHeaderSize;
    if (relay != nullptr) {
      const RelayPrefix prefix{relay->origin_seq, relay->origin, 0};
      std::memcpy(payload, &prefix, sizeof prefix);
      payload += kRelayPrefixSize;
    }
    loan = Loan{payload, size, pos, seq, relay != nullptr};
    return ClaimStatus::ok;
  }
  return ClaimStatus::full;
}

ClaimStatus Ring::claim_until(PublisherHandle& handle, std::uint32_t size, std::uint64_t deadline_ns, Loan& loan,
                              const RelayTag* relay) noexcept {
  std::uint64_t spin_until = 0;
  int backoff = 1;
  for (;;) {
    const std::uint32_t signal = control_->space_signal.load(acquire);
    const ClaimStatus status = try_claim(handle, size, loan, relay);
    if (status != ClaimStatus::full) return status;
    const std::uint64_t now = monotonic_ns();
    if (now >= deadline_ns) return ClaimStatus::full;
    if (spin_until == 0) spin_until = now + kSpinNs;
    if (now < spin_until) {
      for (int i = 0; i < backoff; ++i) cpu_relax();
      backoff = std::min(backoff * 2, kMaxBackoff);
      continue;
    }
    auto& me = control_->publishers[handle.slot];
    bump(me.waits);
    control_->space_woken.store(0, seq_cst);
    control_->space_waiters.fetch_add(1, seq_cst);
    if (try_claim(handle, size, loan, relay) == ClaimStatus::ok) {
      control_->space_waiters.fetch_sub(1, relaxed);
      return ClaimStatus::ok;
    }
    futex_wait(control_->space_signal, signal,
               std::min<std::int64_t>(kMaxSleepNs, static_cast<std::int64_t>(deadline_ns - now)));
    control_->space_waiters.fetch_sub(1, relaxed);
    spin_until = 0;
    backoff = 1;
  }
}

// The slot bits and length of a loan's record, as its header holds them.
static std::pair<std::uint32_t, std::int32_t> loan_fields(const PublisherHandle& handle, const Loan& loan) noexcept {
  const std::uint32_t slot_bits = static_cast<std::uint32_t>(handle.slot) | (loan.relayed ? kRelayedBit : 0);
  return {slot_bits, static_cast<std::int32_t>(loan.size + (loan.relayed ? kRelayPrefixSize : 0))};
}

void Ring::commit(PublisherHandle& handle, const Loan& loan) noexcept {
  auto& header = header_at(loan.pos);
  const auto [slot_bits, length] = loan_fields(handle, loan);
  std::uint64_t expected = make_state(lap_of(loan.pos), RecordType::data, slot_bits, -length);
  const auto committed = make_state(lap_of(loan.pos), RecordType::data, slot_bits, length);
  // CAS, not store: if a reader wrongly judged us dead and skipped the
  // record, the commit must not resurrect it over whatever came after.
  if (header.state.compare_exchange_strong(expected, committed, seq_cst)) {
    auto& me = control_->publishers[handle.slot];
    bump(me.published);
    bump(me.bytes, loan.size);
  }
  control_->publishers[handle.slot].claim_pos.store(kNoPosition, relaxed);
  wake_readers();
}

void Ring::abandon(PublisherHandle& handle, const Loan& loan) noexcept {
  auto& header = header_at(loan.pos);
  const auto [slot_bits, length] = loan_fields(handle, loan);
  std::uint64_t expected = make_state(lap_of(loan.pos), RecordType::data, slot_bits, -length);
  const auto skipped = make_state(lap_of(loan.pos), RecordType::skip, slot_bits, length);
  header.state.compare_exchange_strong(expected, skipped, seq_cst);
  auto& me = control_->publishers[handle.slot];
  bump(me.abandoned);
  me.claim_pos.store(kNoPosition, relaxed);
  wake_readers();
}

// Wakers call futex wake only when someone sleeps, and once per round of
// sleepers: the first waker after a sleeper re-armed `*_woken` wakes every
// sleeper; later ones see it set and skip the system call. Sound because a
// sleeper clears `woken` and registers (seq_cst) before its last check of the
// ring: a waker that still sees `woken` set read it before that clear, so
// what it published is visible to that last check.
void Ring::wake_readers() noexcept {
  if (control_->data_waiters.load(seq_cst) != 0 && control_->data_woken.load(seq_cst) == 0 &&
      control_->data_woken.exchange(1, seq_cst) == 0) {
    control_->data_signal.fetch_add(1, release_order);
    futex_wake_all(control_->data_signal);
  }
}

void Ring::wake_writers() noexcept {
  if (control_->space_waiters.load(seq_cst) != 0 && control_->space_woken.load(seq_cst) == 0 &&
      control_->space_woken.exchange(1, seq_cst) == 0) {
    control_->space_signal.fetch_add(1, release_order);
    futex_wake_all(control_->space_signal);
  }
}

// A record at `pos` in progress (negative length): is its writer gone?
bool Ring::writer_is_gone(std::uint64_t pos, std::uint64_t state) const noexcept {
  const std::uint32_t slot_index = state_slot(state);
  if (slot_index >= kRingSlots) return true;
  const auto& slot = control_->publishers[slot_index];
  const std::uint32_t pid = slot.pid.load(acquire);
  if (pid == 0) return true;                                   // slot closed: nobody will commit
  if (slot.claim_pos.load(acquire) != pos) return true;        // slot owned by a later process
  return !process_alive(pid, slot.start_time.load(relaxed));  // writer died
}

// ---------------------------------------------------------------- reclaim

// How far head may advance: the slowest blocking subscriber (topic) or the
// oldest message taken and not yet released (queue), and never past tail.
std::uint64_t Ring::reclaim_bound(std::uint64_t tail_pos, bool relayed) noexcept {
  std::uint64_t bound = tail_pos;
  if (config_.kind == RingKind::queue) {
    // Read take before the holds: a consumer stores its hold before moving
    // take, so either we see take not yet moved, or we see its hold.
    bound = std::min(bound, control_->take.pos.load(seq_cst));
  }
  for (auto& r : control_->readers) {
    const std::uint32_t pid = r.pid.load(seq_cst);
    if (pid == 0) continue;
    const auto mode = static_cast<ReaderMode>(r.mode.load(relaxed));
    if (mode == ReaderMode::bridge && relayed) continue;  // a relayed write may lap colod's cursors
    if (mode == ReaderMode::block || mode == ReaderMode::bridge) bound = std::min(bound, r.cursor_pos.load(seq_cst));
    bound = std::min(bound, r.hold_pos.load(seq_cst));
  }
  return bound;
}

// Is any live reader holding a record in [low, high)? Spins a while first:
// holds last as long as a reader looks at one message.
bool Ring::held_between(std::uint64_t low, std::uint64_t high, bool relayed) noexcept {
  auto counts = [&](const ReaderSlot& r) {
    return !relayed || static_cast<ReaderMode>(r.mode.load(relaxed)) != ReaderMode::bridge;
  };
  for (int wait = 0; wait < kMaxLoop; ++wait) {
    bool held = false;
    for (auto& r : control_->readers) {
      const std::uint64_t hold = r.hold_pos.load(seq_cst);
      if (hold >= low && hold < high && r.pid.load(relaxed) != 0 && counts(r)) held = true;
    }
    if (!held) return false;
    cpu_relax();
  }
  // Still held: by a live reader, it stays held (writers wait for it); a
  // dead reader's hold is dropped.
  bool held = false;
  for (auto& r : control_->readers) {
    const std::uint64_t hold = r.hold_pos.load(seq_cst);
    const std::uint32_t pid = r.pid.load(acquire);
    if (hold < low || hold >= high || pid == 0 || !counts(r)) continue;
    if (process_alive(pid, r.start_time.load(relaxed))) {
      held = true;
    } else if (config_.kind == RingKind::topic) {
      std::uint64_t expected = hold;
      r.hold_pos.compare_exchange_strong(expected, kNoPosition, seq_cst);
    }
  }
  return held;
}

// Marks [from, to) free for the next lap, then publishes reclaimed = to.
// Markers go from the last unit back to the first, each a release store: a
// writer that finds FREE at unit X (its claim CAS acquires it) then writes
// only units above X, all of which are already marked.
void Ring::write_free_markers(std::uint64_t from, std::uint64_t to) noexcept {
  for (std::uint64_t unit = to - kRecordAlign;; unit -= kRecordAlign) {
    auto& h = header_at(unit);
    h.seq_word.store(unit + config_.capacity, relaxed);  // the position it is free for
    h.state.store(make_state(lap_of(unit) + 1, RecordType::free, 0, 0), release_order);
    if (unit == from) break;
  }
  control_->reclaimed.store(to, release_order);
}

// Frees the slots of dead readers that hold writers back. A dead consumer's
// taken message of a queue with acks stays held: the next consumer that
// looks redelivers it (rescue_dead_consumer).
// One bridge reader fewer; never below zero (the count is a hint, see RingControl).
void Ring::forget_bridge_reader() noexcept {
  std::uint32_t n = control_->bridge_readers.load(relaxed);
  while (n != 0 && !control_->bridge_readers.compare_exchange_weak(n, n - 1, relaxed)) {
  }
}

void Ring::evict_dead_readers() noexcept {
  for (auto& r : control_->readers) {
    const std::uint32_t pid = r.pid.load(acquire);
    if (pid == 0 || process_alive(pid, r.start_time.load(relaxed))) continue;
    const std::uint64_t hold = r.hold_pos.load(acquire);
    if (config_.kind == RingKind::queue && hold != kNoPosition) {
      if (config_.acks) continue;
      control_->dropped_unacked.fetch_add(1, relaxed);
    }
    if (r.sleeping.exchange(0, relaxed) != 0) control_->data_waiters.fetch_sub(1, relaxed);
    r.hold_pos.store(kNoPosition, relaxed);
    control_->dead_readers.fetch_add(1, relaxed);
    std::uint32_t dead = pid;
    if (r.pid.compare_exchange_strong(dead, 0, std::memory_order_acq_rel) &&
        static_cast<ReaderMode>(r.mode.load(relaxed)) == ReaderMode::bridge)
      forget_bridge_reader();
  }
}

bool Ring::make_room(std::uint64_t target, bool relayed) noexcept {
  auto& mutex = control_->reclaim_mutex;
  // Timed: a mutex word scribbled over by a buggy process must not hang us.
  switch (mutex.lock_until(monotonic_ns() + kReclaimLockNs)) {
    case MutexResult::acquired: break;
    case MutexResult::acquired_owner_died: mutex.make_consistent(); break;  // all steps below are idempotent
    default: return false;
  }
  // A reclaimer that died after moving head but before writing all markers
  // leaves reclaimed < head: finish its work (markers are idempotent).
  {
    const std::uint64_t head_now = control_->head.pos.load(acquire);
    const std::uint64_t reclaimed_now = control_->reclaimed.load(acquire);
    if (reclaimed_now < head_now && head_now - reclaimed_now <= config_.capacity && (reclaimed_now & (kRecordAlign - 1)) == 0 &&
        !held_between(reclaimed_now, head_now, relayed)) {
      write_free_markers(reclaimed_now, head_now);
    }
  }
  // Reclaim in batches: one pass computes the bound (a scan of the reader
  // slots), walks the records it may free, moves head once, checks holds
  // once and writes the markers. A pass frees an eighth of the ring (at most
  // kReclaimBatch) beyond what was asked when it can, so that the scans and
  // the mutex are paid once per many messages. That extra never takes a
  // topic's newest `history` messages (what new subscribers start from).
  const std::uint64_t slack = std::min<std::uint64_t>(config_.capacity / 8, kReclaimBatch);
  bool evicted_someone = false;
  for (int pass = 0; pass < kMaxLoop; ++pass) {
    const auto [head_pos, head_seq] = snapshot(control_->head);
    if (head_pos >= target) break;
    const auto [tail_pos, tail_seq] = snapshot(control_->tail);
    const std::uint64_t bound = reclaim_bound(tail_pos, relayed);
    if (head_pos >= bound) {
      // Held back. Evict dead readers that hold the bound, once per call.
      if (evicted_someone) break;
      evicted_someone = true;
      evict_dead_readers();
      continue;
    }
    const std::uint64_t goal = std::min(bound, std::max(target, head_pos + slack));
    std::uint64_t pos = head_pos;
    std::uint64_t seq = head_seq;
    for (int step = 0; step < kMaxLoop && pos < goal; ++step) {
      // Beyond what was asked for, keep the topic's history.
      if (pos >= target && (seq >= tail_seq || tail_seq - seq <= config_.history)) break;
      auto& header = header_at(pos);
      const std::uint64_t state = header.state.load(acquire);
      std::uint64_t size = 0;
      std::uint64_t next_seq = seq;
      if (state_lap(state) == lap_of(pos) && state_type(state) != RecordType::free) {
        size = record_size(pos, state);
        if (size != 0 && state_type(state) == RecordType::data && state_length(state) < 0) {
          // In progress: wait for the writer, unless it is gone.
          if (!writer_is_gone(pos, state)) break;
          std::uint64_t expected = state;
          const auto skipped = make_state(state_lap(state), RecordType::skip, state_slot(state), -state_length(state));
          if (header.state.compare_exchange_strong(expected, skipped, seq_cst))
            control_->dead_claims.fetch_add(1, relaxed);
          continue;  // look at it again, now SKIP
        }
        if (state_type(state) != RecordType::pad) next_seq = seq + 1;
      }
      if (size == 0) {
        // Impossible header: free one unit at a time (counted) rather than
        // trusting a length.
        control_->bad_records.fetch_add(1, relaxed);
        size = kRecordAlign;
      }
      if (pos + size > bound) break;  // the record is (partly) held
      pos += size;
      seq = next_seq;
    }
    if (pos == head_pos) break;  // a live writer's record in progress at head: nothing to free yet
    if (!cas16(control_->head, head_pos, head_seq, pos, seq)) continue;
    // Head moved: no new hold can start in [head_pos, pos). Wait for holds
    // that started before (a lossy reader reading one of these records),
    // then free them. If a live reader still holds one, leave the range
    // (reclaimed < head) for the next reclaimer, which finishes the job.
    if (held_between(head_pos, pos, relayed)) break;
    write_free_markers(head_pos, pos);
  }
  mutex.unlock();
  wake_writers();
  return control_->reclaimed.load(acquire) >= target;
}

// ---------------------------------------------------------------- readers

Result<ReaderHandle> Ring::open_reader(ReaderMode mode, std::uint64_t history, std::optional<std::uint64_t> from_seq) {
  if ((mode == ReaderMode::consumer) != (config_.kind == RingKind::queue))
    return Error{Errc::invalid_argument, config_.kind == RingKind::queue ? "a queue has consumers, not subscribers"
                                                                         : "a topic has subscribers, not consumers"};
  const ProcessRef me = self();
  // Under the reclaim mutex: a blocking subscriber's cursor must be in place
  // before any reclaimer computes its bound.
  auto& mutex = control_->reclaim_mutex;
  const MutexResult locked = mutex.lock_until(monotonic_ns() + 20 * kReclaimLockNs);
  if (!granted(locked)) return Error{Errc::corrupt, "the ring's reclaim mutex is unusable or held for over a second"};
  if (locked == MutexResult::acquired_owner_died) mutex.make_consistent();
  struct Unlock {
    RobustMutex& m;
    ~Unlock() { m.unlock(); }
  } unlock{mutex};

  for (int pass = 0; pass < 2; ++pass) {
    for (std::size_t i = 0; i < kRingSlots; ++i) {
      auto& slot = control_->readers[i];
      std::uint32_t seen = slot.pid.load(acquire);
      if (seen != 0) {
        if (pass == 0 || process_alive(seen, slot.start_time.load(relaxed))) continue;
        if (slot.hold_pos.load(acquire) != kNoPosition && config_.acks) continue;  // awaiting rescue
      }
      if (!slot.pid.compare_exchange_strong(seen, me.pid, std::memory_order_acq_rel)) continue;
      if (seen != 0) {  // took over a dead reader's slot: it is evicted now, by us
        if (slot.sleeping.exchange(0, relaxed) != 0) control_->data_waiters.fetch_sub(1, relaxed);
        control_->dead_readers.fetch_add(1, relaxed);
        if (static_cast<ReaderMode>(slot.mode.load(relaxed)) == ReaderMode::bridge) forget_bridge_reader();
      }
      if (mode == ReaderMode::bridge) control_->bridge_readers.fetch_add(1, relaxed);
      slot.start_time.store(me.start_time, relaxed);
      slot.mode.store(static_cast<std::uint32_t>(mode), relaxed);
      slot.hold_pos.store(kNoPosition, relaxed);
      slot.sleeping.store(0, relaxed);
      for (auto* c : {&slot.delivered, &slot.bytes, &slot.missed, &slot.skipped_bad, &slot.redelivered,
                      &slot.dead_lettered, &slot.waits})
        c->store(0, relaxed);
      ReaderHandle handle;
      handle.slot = static_cast<int>(i);
      handle.mode = mode;
      auto [pos, seq] = snapshot(control_->tail);
      if ((history > 0 || from_seq) && mode != ReaderMode::consumer) {
        // Walk from head to the record `history` messages before tail (or
        // the one of sequence from_seq).
        auto [hpos, hseq] = snapshot(control_->head);
        std::uint64_t want = seq > history ? std::max(seq - history, hseq) : hseq;
        if (from_seq) {
          want = std::min(std::max(*from_seq, hseq), seq);
          if (*from_seq < hseq) slot.missed.store(hseq - *from_seq, relaxed);  // no longer retained
        }
        std::uint64_t p = hpos, s = hseq;
        // Each step moves at least one unit: bounded by the ring's units.
        const std::uint64_t max_steps = config_.capacity / kRecordAlign;
        for (std::uint64_t step = 0; step < max_steps && s < want && p < pos; ++step) {
          const std::uint64_t state = peek_state(header_at(p));
          const std::uint64_t size = state_lap(state) == lap_of(p) ? record_size(p, state) : 0;
          if (size == 0) break;
          if (state_type(state) != RecordType::pad) ++s;
          p += size;
        }
        if (s == want) {
          pos = p;
          seq = s;
        }
      }
      handle.pos = pos;
      handle.seq = seq;
      slot.cursor_seq.store(seq, relaxed);
      slot.cursor_pos.store(pos, seq_cst);
      return handle;
    }
  }
  return Error{Errc::capacity, "all " + std::to_string(kRingSlots) + " reader slots are in use by live processes"};
}

void Ring::close_reader(ReaderHandle& handle) noexcept {
  if (handle.slot < 0) return;
  auto& slot = control_->readers[handle.slot];
  slot.hold_pos.store(kNoPosition, release_order);
  if (handle.mode == ReaderMode::bridge) forget_bridge_reader();
  slot.pid.store(0, release_order);
  handle.slot = -1;
  wake_writers();
}

void Ring::resync_to_tail(ReaderHandle& handle) noexcept {
  auto& slot = control_->readers[handle.slot];
  const auto [pos, seq] = snapshot(control_->tail);
  bump(slot.skipped_bad, seq > handle.seq ? seq - handle.seq : 1);
  handle.pos = pos;
  handle.seq = seq;
  slot.cursor_seq.store(seq, relaxed);
  slot.cursor_pos.store(pos, release_order);
}

bool Ring::skip_if_writer_gone(ReaderHandle& handle, std::uint64_t pos, std::uint64_t state) noexcept {
  const std::uint64_t now = monotonic_ns();
  if (handle.stuck_pos != pos) {
    handle.stuck_pos = pos;
    handle.stuck_since_ns = now;
    return false;
  }
  if (now - handle.stuck_since_ns < kStuckCheckNs) return false;
  handle.stuck_since_ns = now;
  // Make sure `pos` is still a record we may touch: a blocking subscriber's
  // cursor already keeps it from reclaim; others hold it first, then check
  // it is still current (the same handshake as a read).
  auto& slot = control_->readers[handle.slot];
  const bool needs_hold = handle.mode != ReaderMode::block;
  if (needs_hold) {
    slot.hold_pos.store(pos, seq_cst);
    const bool current = handle.mode == ReaderMode::consumer ? control_->take.pos.load(seq_cst) == pos
                                                             : control_->head.pos.load(seq_cst) <= pos;
    if (!current) {
      slot.hold_pos.store(kNoPosition, release_order);
      return false;
    }
  }
  auto& header = header_at(pos);
  bool skipped = false;
  if (header.state.load(acquire) == state && writer_is_gone(pos, state)) {
    std::uint64_t expected = state;
    const auto skip = make_state(state_lap(state), RecordType::skip, state_slot(state), -state_length(state));
    skipped = header.state.compare_exchange_strong(expected, skip, seq_cst);
    if (skipped) control_->dead_claims.fetch_add(1, relaxed);
  }
  if (needs_hold) slot.hold_pos.store(kNoPosition, release_order);
  return skipped;
}

// Is `pos` below tail, i.e. claimed by a writer? Tail only grows, so a tail
// once seen stays a valid lower bound: the reader reloads the shared tail
// (whose cache line every writer's claim moves) only when it has caught up
// with the last value it saw, once per batch of messages rather than once
// per message when writers are ahead.
bool Ring::below_tail(ReaderHandle& handle, std::uint64_t pos) noexcept {
  if (pos < handle.known_tail) return true;
  handle.known_tail = control_->tail.pos.load(acquire);
  return pos < handle.known_tail;
}

bool Ring::fill_view(RecordHeader& header, std::uint64_t state, std::uint64_t seq, std::uint32_t deliveries,
                     std::uint64_t pos, bool dead_letter, View& view) const noexcept {
  const auto length = static_cast<std::uint32_t>(state_length(state));
  const std::byte* payload = reinterpret_cast<const std::byte*>(&header) + kRecordHeaderSize;
  view = View{payload, length, seq, deliveries, pos, dead_letter, length, 0, 0};
  if (!state_relayed(state)) return true;
  if (length < kRelayPrefixSize) return false;
  RelayPrefix prefix;
  std::memcpy(&prefix, payload, sizeof prefix);
  view.data = payload + kRelayPrefixSize;
  view.size = length - kRelayPrefixSize;
  view.origin = prefix.origin;
  view.origin_seq = prefix.origin_seq;
  return true;
}

std::uint64_t Ring::relayed_at(std::uint64_t pos, RelayPrefix& prefix) const noexcept {
  prefix.origin = 0;
  const std::uint64_t state = peek_state(header_at(pos));
  if (state_lap(state) != lap_of(pos) || state_type(state) == RecordType::free) return 0;
  const std::uint64_t size = record_size(pos, state);
  if (size == 0) return 0;
  if (state_type(state) == RecordType::data && state_relayed(state) && state_length(state) >= 0 &&
      static_cast<std::uint32_t>(state_length(state)) >= kRelayPrefixSize)
    peek_bytes(reinterpret_cast<const std::byte*>(&header_at(pos)) + kRecordHeaderSize, &prefix, sizeof prefix);
  return size;
}

ReadStatus Ring::try_read(ReaderHandle& handle, View& view) noexcept {
  if (handle.slot < 0 || handle.holding) return ReadStatus::corrupt;
  return handle.mode == ReaderMode::consumer ? try_take(handle, view) : try_read_topic(handle, view);
}

ReadStatus Ring::try_read_topic(ReaderHandle& handle, View& view) noexcept {
  auto& slot = control_->readers[handle.slot];
  for (int step = 0; step < kMaxLoop; ++step) {
    const std::uint64_t pos = handle.pos;
    // Tail first: past it the unit may hold anything from an earlier lap;
    // before it, the header was claimed before tail moved (and we see it).
    if (!below_tail(handle, pos)) return ReadStatus::empty;
    auto& header = header_at(pos);
    // A blocking subscriber's cursor keeps its record from reclaim; a lossy
    // one's does not until it holds it (below), so its first look is a peek.
    const std::uint64_t state = may_be_lapped(handle.mode) ? peek_state(header) : header.state.load(acquire);
    if (state_lap(state) != lap_of(pos) || state_type(state) == RecordType::free) {
      const auto [head_pos, head_seq] = snapshot(control_->head);
      if (head_pos > pos) {  // lapped: what we missed is gone
        bump(slot.missed, head_seq - handle.seq);
        handle.pos = head_pos;
        handle.seq = head_seq;
        slot.cursor_seq.store(head_seq, relaxed);
        slot.cursor_pos.store(head_pos, release_order);
        continue;
      }
      resync_to_tail(handle);  // a header from no lap we know
      continue;
    }
    const std::uint64_t size = record_size(pos, state);
    if (size == 0) {
      resync_to_tail(handle);
      continue;
    }
    const RecordType type = state_type(state);
    if (type == RecordType::data && state_length(state) < 0) {
      skip_if_writer_gone(handle, pos, state);
      return ReadStatus::empty;
    }
    if (type != RecordType::data) {
      handle.pos = pos + size;
      if (type == RecordType::skip) ++handle.seq;
      slot.cursor_seq.store(handle.seq, relaxed);
      slot.cursor_pos.store(handle.pos, release_order);
      continue;
    }
    if (may_be_lapped(handle.mode)) {
      // Hold the record, then make sure it was not reclaimed meanwhile
      // (pairs with the reclaimer: head CAS, then hold check). If it was,
      // the next round finds us lapped.
      slot.hold_pos.store(pos, seq_cst);
      if (control_->head.pos.load(seq_cst) > pos || header.state.load(acquire) != state) {
        slot.hold_pos.store(kNoPosition, release_order);
        continue;
      }
    }
    if ((header.seq_word.load(relaxed) & kSeqMask) != (handle.seq & kSeqMask)) {
      if (may_be_lapped(handle.mode)) slot.hold_pos.store(kNoPosition, release_order);
      resync_to_tail(handle);
      continue;
    }
    if (!fill_view(header, state, handle.seq, 1, pos, false, view)) {
      // Marked relayed but shorter than its prefix: skip it, counted.
      if (may_be_lapped(handle.mode)) slot.hold_pos.store(kNoPosition, release_order);
      bump(slot.skipped_bad);
      handle.pos = pos + size;
      ++handle.seq;
      slot.cursor_seq.store(handle.seq, relaxed);
      slot.cursor_pos.store(handle.pos, release_order);
      continue;
    }
    handle.holding = true;
    return ReadStatus::ok;
  }
  return ReadStatus::empty;
}

ReadStatus Ring::try_take(ReaderHandle& handle, View& view) noexcept {
  auto& slot = control_->readers[handle.slot];
  const std::uint64_t now_check = config_.acks ? monotonic_ns() : 0;
  if (config_.acks && now_check >= handle.next_rescue_ns) {
    handle.next_rescue_ns = now_check + kRescueIntervalNs;
    if (rescue_dead_consumer(handle, view)) return ReadStatus::ok;
  }
  for (int step = 0; step < kMaxLoop; ++step) {
    const auto [pos, seq] = snapshot(control_->take);
    if (!below_tail(handle, pos)) return ReadStatus::empty;
    auto& header = header_at(pos);
    const std::uint64_t state = peek_state(header);  // validated by the take CAS and the reload below
    if (state_lap(state) != lap_of(pos) || state_type(state) == RecordType::free) {
      if (control_->take.pos.load(acquire) != pos) continue;
      return ReadStatus::empty;  // claimed, header not yet visible
    }
    const std::uint64_t size = record_size(pos, state);
    if (size == 0) {
      // Impossible record: skip the queue past it to the tail, counted.
      const auto [tpos, tseq] = snapshot(control_->tail);
      if (cas16(control_->take, pos, seq, tpos, tseq)) bump(slot.skipped_bad, tseq > seq ? tseq - seq : 1);
      continue;
    }
    const RecordType type = state_type(state);
    if (type == RecordType::data && state_length(state) < 0) {
      skip_if_writer_gone(handle, pos, state);
      return ReadStatus::empty;
    }
    if (type != RecordType::data) {
      cas16(control_->take, pos, seq, pos + size, type == RecordType::skip ? seq + 1 : seq);
      continue;
    }
    // Hold first, then take: a reclaimer reads take before holds.
    slot.hold_seq.store(seq, relaxed);
    slot.hold_pos.store(pos, seq_cst);
    if (!cas16(control_->take, pos, seq, pos + size, seq + 1)) {
      slot.hold_pos.store(kNoPosition, release_order);
      continue;
    }
    // Ours now, and held: this load orders our payload reads after the commit.
    const std::uint64_t word = header.seq_word.load(relaxed);
    if (header.state.load(acquire) != state || (word & kSeqMask) != (seq & kSeqMask)) {
      bump(slot.skipped_bad);
      slot.hold_pos.store(kNoPosition, release_order);
      continue;
    }
    const std::uint32_t deliveries = static_cast<std::uint32_t>(word >> 56) + 1;
    header.seq_word.store((word & kSeqMask) | static_cast<std::uint64_t>(deliveries & 0xff) << 56, relaxed);
    if (!fill_view(header, state, seq, deliveries, pos, config_.acks && deliveries > config_.max_deliveries, view)) {
      bump(slot.skipped_bad);
      slot.hold_pos.store(kNoPosition, release_order);
      continue;
    }
    handle.holding = true;
    return ReadStatus::ok;
  }
  return ReadStatus::empty;
}

// Takes over a message held by a dead consumer (queue with acks).
bool Ring::rescue_dead_consumer(ReaderHandle& handle, View& view) noexcept {
  auto& me = control_->readers[handle.slot];
  for (auto& r : control_->readers) {
    if (&r == &me) continue;
    const std::uint32_t pid = r.pid.load(acquire);
    std::uint64_t hold = r.hold_pos.load(acquire);
    if (pid == 0 || hold == kNoPosition || process_alive(pid, r.start_time.load(relaxed))) continue;
    const std::uint64_t seq = r.hold_seq.load(relaxed);
    // Hold it ourselves before releasing theirs, so it is never unheld.
    me.hold_seq.store(seq, relaxed);
    me.hold_pos.store(hold, seq_cst);
    if (!r.hold_pos.compare_exchange_strong(hold, kNoPosition, seq_cst)) {
      me.hold_pos.store(kNoPosition, release_order);
      continue;
    }
    // Free the dead consumer's slot, unless an evicting writer or a new
    // reader got to it first: only the one whose CAS succeeds counts it.
    std::uint32_t dead_pid = pid;
    if (r.pid.compare_exchange_strong(dead_pid, 0, std::memory_order_acq_rel)) {
      if (r.sleeping.exchange(0, relaxed) != 0) control_->data_waiters.fetch_sub(1, relaxed);
      control_->dead_readers.fetch_add(1, relaxed);
    }
    auto& header = header_at(hold);
    const std::uint64_t state = header.state.load(acquire);
    const std::uint64_t word = header.seq_word.load(relaxed);
    if (state_lap(state) != lap_of(hold) || state_type(state) != RecordType::data || state_length(state) < 0 ||
        record_size(hold, state) == 0 || (word & kSeqMask) != (seq & kSeqMask)) {
      bump(me.skipped_bad);
      me.hold_pos.store(kNoPosition, release_order);
      continue;
    }
    const std::uint32_t deliveries = static_cast<std::uint32_t>(word >> 56) + 1;
    header.seq_word.store((word & kSeqMask) | static_cast<std::uint64_t>(deliveries & 0xff) << 56, relaxed);
    if (!fill_view(header, state, seq, deliveries, hold, deliveries > config_.max_deliveries, view)) {
      bump(me.skipped_bad);
      me.hold_pos.store(kNoPosition, release_order);
      continue;
    }
    bump(me.redelivered);
    handle.holding = true;
    return true;
  }
  return false;
}

void Ring::release(ReaderHandle& handle, const View& view) noexcept {
  if (handle.slot < 0 || !handle.holding) return;
  auto& slot = control_->readers[handle.slot];
  handle.holding = false;
  bump(slot.delivered);
  bump(slot.bytes, view.size);
  if (view.dead_letter) bump(slot.dead_lettered);
  if (handle.mode == ReaderMode::consumer) {
    slot.hold_pos.store(kNoPosition, seq_cst);
  } else {
    handle.pos = view.pos + align_record(kRecordHeaderSize + view.record_length);
    handle.seq = view.seq + 1;
    slot.cursor_seq.store(handle.seq, relaxed);
    if (may_be_lapped(handle.mode)) {
      slot.cursor_pos.store(handle.pos, relaxed);
      slot.hold_pos.store(kNoPosition, seq_cst);
    } else {
      slot.cursor_pos.store(handle.pos, seq_cst);
    }
  }
  wake_writers();
}

bool Ring::wait_published(ReaderHandle& handle, std::uint64_t count, std::uint64_t deadline_ns) noexcept {
  auto& slot = control_->readers[handle.slot];
  for (;;) {
    const std::uint32_t signal = control_->data_signal.load(acquire);
    if (tail().second >= count) return true;
    const std::uint64_t now = monotonic_ns();
    if (now >= deadline_ns) return false;
    slot.sleeping.store(1, relaxed);
    control_->data_woken.store(0, seq_cst);
    control_->data_waiters.fetch_add(1, seq_cst);
    if (tail().second < count)
      futex_wait(control_->data_signal, signal,
                 std::min<std::int64_t>(kMaxSleepNs, static_cast<std::int64_t>(deadline_ns - now)));
    if (slot.sleeping.exchange(0, relaxed) != 0) control_->data_waiters.fetch_sub(1, relaxed);
  }
}

ReadStatus Ring::read_until(ReaderHandle& handle, std::uint64_t deadline_ns, View& view) noexcept {
  auto& slot = control_->readers[handle.slot];
  std::uint64_t spin_until = 0;
  int backoff = 1;
  for (;;) {
    const std::uint32_t signal = control_->data_signal.load(acquire);
    const ReadStatus status = try_read(handle, view);
    if (status != ReadStatus::empty) return status;
    const std::uint64_t now = monotonic_ns();
    if (now >= deadline_ns) return ReadStatus::empty;
    if (spin_until == 0) spin_until = now + kSpinNs;
    if (now < spin_until) {
      for (int i = 0; i < backoff; ++i) cpu_relax();
      backoff = std::min(backoff * 2, kMaxBackoff);
      continue;
    }
    bump(slot.waits);
    slot.sleeping.store(1, relaxed);
    control_->data_woken.store(0, seq_cst);
    control_->data_waiters.fetch_add(1, seq_cst);
    const ReadStatus again = try_read(handle, view);
    if (again == ReadStatus::empty)
      futex_wait(control_->data_signal, signal,
                 std::min<std::int64_t>(kMaxSleepNs, static_cast<std::int64_t>(deadline_ns - now)));
    if (slot.sleeping.exchange(0, relaxed) != 0) control_->data_waiters.fetch_sub(1, relaxed);
    if (again != ReadStatus::empty) return again;
    spin_until = 0;
    backoff = 1;
  }
}

}  // namespace colo::shm
