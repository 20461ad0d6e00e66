#include "ring.hpp"

#include <sys/resource.h>  // getrusage: involuntary context switches

#include <immintrin.h>  // _mm_store_si128: the exclusive writer's 16-byte tail store
#include <sched.h>      // sched_yield
#include <time.h>       // nanosleep

#include <algorithm>
#include <cstring>
#include <tuple>

#include "clock.hpp"
#include "futex.hpp"
#include "owner_word.hpp"
#include "process.hpp"

#if !defined(__x86_64__)
#error "the ring's 16-byte CAS and store are written for x86-64 (cmpxchg16b, movdqa); port cas16() and store_pair() first"
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
constexpr std::uint64_t kMaxClaimBytes = std::uint64_t{1} << 31;  // and at most half the ring

// Waiting (see WAITING in ring.hpp). Polls back off exponentially (1, 2, 4
// .. kMaxBackoff pauses between polls): a waiting reader then does not pull
// the cache line a writer is filling after every store.
constexpr std::uint64_t kMinSpinNs = 1'000;
constexpr std::uint64_t kMaxSpinNs = 50'000;
constexpr std::uint64_t kSpinWorthNs = 40'000;     // gaps longer than this: spinning does not pay
constexpr std::uint64_t kInitialGapNs = 10'000;
constexpr std::uint64_t kDescheduledNs = 20'000;   // a hole this long in a spin: were we preempted?
constexpr int kMaxBackoff = 64;
constexpr std::int64_t kMaxSleepNs = 20'000'000;   // re-check liveness at least this often
constexpr std::uint64_t kStuckCheckNs = 20'000'000;  // a claim unpublished this long: is its writer alive?
constexpr std::uint64_t kRescueIntervalNs = 10'000'000;
constexpr std::uint64_t kEvictionIntervalNs = 1'000'000;  // a held-back writer's look for dead readers (make_room)
constexpr std::uint32_t kStuckPollMask = 255;      // busy readers look at the clock every 256 empty polls

// A hole of kDescheduledNs or more in a spin: did another thread take our
// CPU meanwhile (the kernel counted an involuntary context switch since the
// last hole)? Then spinning does not pay for kNoSpinNs: on a host with more
// runnable threads than CPUs it would take the CPU the writer needs.
// Interrupts and a hypervisor's steal also make holes but want nothing from
// us: spinning through those keeps an idle host's latency. One getrusage
// call per hole, never per poll. (A no-spin time that started at 1 ms and
// doubled per preemption was tried: with one busy process alongside, the
// spins it allowed cost the writer its CPU, and p50 went from 4 us to
// hundreds.)
constexpr std::uint64_t kNoSpinNs = 50'000'000;
void note_hole(SpinBackoff& spin, std::uint64_t now) noexcept {
  rusage usage{};
  const bool known = ::getrusage(RUSAGE_THREAD, &usage) == 0;
  const auto switches = known ? static_cast<std::uint64_t>(usage.ru_nivcsw) : 0;
  if (known && switches == spin.preemptions_seen) return;  // not preempted: an interrupt, steal
  spin.preemptions_seen = switches;
  spin.until_ns = now + kNoSpinNs;
}
bool may_spin(const SpinBackoff& spin, std::uint64_t now) noexcept { return now >= spin.until_ns; }
constexpr int kMaxLoop = 1 << 16;                  // bound on any retry loop in one call
constexpr std::uint32_t kCheckedStates = 64;       // a take re-checks its first records' headers exactly

constexpr std::uint64_t align_up(std::uint64_t n, std::uint64_t to) { return (n + to - 1) & ~(to - 1); }
constexpr std::uint64_t align_down(std::uint64_t n, std::uint64_t to) { return n & ~(to - 1); }

constexpr std::uint64_t make_state(std::uint64_t lap, RecordType type, bool tagged, std::uint64_t length,
                                   bool metadata = false) {
  return (lap & kLapMask) << 42 | static_cast<std::uint64_t>(type) << 40 | (tagged ? std::uint64_t{1} << 39 : 0) |
         (metadata ? std::uint64_t{1} << 38 : 0) | (length & 0xffff'ffff);
}
constexpr std::uint64_t state_lap(std::uint64_t s) { return s >> 42; }
constexpr RecordType state_type(std::uint64_t s) { return static_cast<RecordType>((s >> 40) & 3); }
constexpr bool state_tagged(std::uint64_t s) { return ((s >> 39) & 1) != 0; }
constexpr bool state_metadata(std::uint64_t s) { return ((s >> 38) & 1) != 0; }
constexpr std::uint32_t state_reserved(std::uint64_t s) { return static_cast<std::uint32_t>((s >> 32) & 0x3f); }
constexpr std::uint32_t state_length(std::uint64_t s) { return static_cast<std::uint32_t>(s); }

#if defined(__SANITIZE_THREAD__)
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#endif

// What a peeked acquire load would have told ThreadSanitizer. A consumer
// that looks ahead over published records with peek_state and then moves
// `take` carries the publication to the next consumer through `take`; TSan
// must see that acquire before the CAS, or it loses the chain.
inline void tsan_acquire([[maybe_unused]] const void* addr) noexcept {
#if defined(__SANITIZE_THREAD__)
  __tsan_acquire(const_cast<void*>(addr));
#endif
}

// 16-byte compare-and-swap (lock cmpxchg16b: a full barrier) of a {pos, seq}
// pair. ThreadSanitizer does not see inside it, so under TSan it is
// annotated as the release + acquire it is.
bool cas16(PositionPair& pair, std::uint64_t pos, std::uint64_t seq, std::uint64_t new_pos,
           std::uint64_t new_seq) noexcept {
  __extension__ typedef unsigned __int128 u128;  // GCC/Clang builtin type for cmpxchg16b
  const u128 expected = static_cast<u128>(seq) << 64 | pos;
  const u128 desired = static_cast<u128>(new_seq) << 64 | new_pos;
#if defined(__SANITIZE_THREAD__)
  __tsan_release(&pair);
#endif
  const bool swapped = __sync_bool_compare_and_swap(reinterpret_cast<u128*>(&pair), expected, desired);
#if defined(__SANITIZE_THREAD__)
  __tsan_acquire(&pair);
#endif
  return swapped;
}

// The exclusive writer's tail update: one 16-byte aligned store, atomic on
// x86-64 processors with AVX (Intel SDM 3A 8.1.1; AMD APM 7.3.2), with
// release ordering (x86 stores are ordered; the fence stops the compiler).
// Without AVX (or under TSan, which cannot see it) a CAS does it instead:
// correct, one uncontended RMW dearer.
void store_pair(PositionPair& pair, std::uint64_t pos, std::uint64_t seq) noexcept {
#if !defined(__SANITIZE_THREAD__)
  static const bool atomic_vector_store = __builtin_cpu_supports("avx");
  if (atomic_vector_store) {
    std::atomic_signal_fence(release_order);
    _mm_store_si128(reinterpret_cast<__m128i*>(&pair),
                    _mm_set_epi64x(static_cast<long long>(seq), static_cast<long long>(pos)));
    return;
  }
#endif
  for (int attempt = 0; attempt < kMaxLoop; ++attempt) {
    const std::uint64_t old_pos = pair.pos.load(relaxed);
    const std::uint64_t old_seq = pair.seq.load(relaxed);
    if (cas16(pair, old_pos, old_seq, pos, seq)) return;
  }
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

void sleep_ns(long ns) noexcept {
  timespec ts{0, ns};
  ::nanosleep(&ts, nullptr);
}

// A speculative read of a header word at a position that may be stale: by
// the time we look, the unit may lie inside a newer record whose payload a
// writer is filling with plain stores. The value is only a hint, validated
// afterwards (by a CAS, or by a hold and a re-check), so the overlap is
// harmless; ThreadSanitizer would report it as a race, so this one load is
// not instrumented.
__attribute__((no_sanitize("thread"))) std::uint64_t peek_state(const RecordHeader& header) noexcept {
  return __atomic_load_n(reinterpret_cast<const std::uint64_t*>(&header.state), __ATOMIC_ACQUIRE);
}
__attribute__((no_sanitize("thread"))) std::uint64_t peek_word(const std::atomic<std::uint64_t>& word) noexcept {
  return __atomic_load_n(reinterpret_cast<const std::uint64_t*>(&word), __ATOMIC_RELAXED);
}

// Copies bytes of a record that may be reclaimed meanwhile (for_each_tagged
// re-checks head afterwards); not instrumented for the same reason as peek_state.
__attribute__((no_sanitize("thread"))) void peek_bytes(const std::byte* from, void* to, std::size_t n) noexcept {
  std::memcpy(to, from, n);
}

// Asked in retry loops (a writer held back by a reader spins through
// make_room): the cheap form, a reaped process dead at once (process.hpp).
bool process_alive(std::uint32_t pid, std::uint64_t start) noexcept {
  return liveness_recent(ProcessRef{pid, start}) == Liveness::alive;
}

std::uint64_t payload_bytes(const View* views, std::uint32_t n) noexcept {
  std::uint64_t bytes = 0;
  for (std::uint32_t i = 0; i < n; ++i) bytes += views[i].size;
  return bytes;
}

inline void bump(std::atomic<std::uint64_t>& counter, std::uint64_t by = 1) noexcept {
  counter.store(counter.load(relaxed) + by, relaxed);  // owner-only counter
}

// A publisher's claim intent, read consistently (see PublisherSlot).
struct Intent {
  std::uint64_t pos = kNoPosition, end = 0, seq = 0;
  std::uint32_t count = 0;
  bool operator==(const Intent&) const = default;
};
Intent read_intent(const PublisherSlot& slot) noexcept {
  Intent intent;
  const std::uint64_t first = slot.claim_pos.load(acquire);
  intent.end = slot.claim_end.load(acquire);
  intent.seq = slot.claim_seq.load(acquire);
  intent.count = slot.claim_count.load(acquire);
  if (first == kNoPosition || slot.claim_pos.load(acquire) != first) return Intent{};
  intent.pos = first;
  return intent;
}
void write_intent(PublisherSlot& slot, std::uint64_t pos, std::uint64_t end, std::uint64_t seq,
                  std::uint32_t count) noexcept {
  slot.claim_pos.store(kNoPosition, relaxed);
  slot.claim_end.store(end, relaxed);
  slot.claim_seq.store(seq, relaxed);
  slot.claim_count.store(count, relaxed);
  slot.claim_pos.store(pos, release_order);
}

// Readers register the process for asymmetric barriers when they open; a
// process that cannot makes the whole ring fall back to fenced publishes.
void join_barrier(RingControl& control) noexcept {
  if (!register_asymmetric_barrier()) {
    std::uint32_t unfenced = 0;  // never lowers kFencesEstablished
    control.fenced_commits.compare_exchange_strong(unfenced, kFencesPending, seq_cst);
  }
}

// A full fence. ThreadSanitizer does not take fences; a locked RMW on a
// local word is the same instruction-level barrier on x86.
inline void full_fence() noexcept {
#if defined(__SANITIZE_THREAD__)
  std::atomic<int> local{0};
  local.exchange(1, seq_cst);
#else
  std::atomic_thread_fence(seq_cst);
#endif
}

// After a publish (or a reader's release), before reading the waiter count:
// nothing in the normal case (the sleeper's asymmetric barrier orders us),
// a full fence in the fallback.
inline void order_before_wake_check(const RingControl& control) noexcept {
  std::atomic_signal_fence(seq_cst);
  if (control.fenced_commits.load(relaxed) != 0) [[unlikely]]
    full_fence();
}

// Every publication from now on fences: set the flag, then one barrier so
// that no publication still runs on a value read before it (a publication
// reads the flag after its store, and the barrier lands between
// instructions), then tell sleepers they may skip theirs.
void establish_fences(RingControl& control) noexcept {
  std::uint32_t unfenced = 0;
  control.fenced_commits.compare_exchange_strong(unfenced, kFencesPending, seq_cst);
  if (asymmetric_barrier()) control.fenced_commits.store(kFencesEstablished, seq_cst);
}

// The heavy side, by a sleeper after it registered (a seq_cst RMW: the
// sleeper's own full barrier). Once fences are established, writers fence
// and nothing more is needed here.
inline void order_before_sleep(RingControl& control) noexcept {
  if (control.fenced_commits.load(seq_cst) == kFencesEstablished) return;
  if (!asymmetric_barrier()) {
    std::uint32_t unfenced = 0;
    control.fenced_commits.compare_exchange_strong(unfenced, kFencesPending, seq_cst);
    return;
  }
  // At or past the threshold (not only at it): a sleeper that died halfway
  // through establishing leaves the next one to finish.
  if (control.barrier_sleeps.fetch_add(1, relaxed) + 1 >= kBarrierSleepsBeforeFences) establish_fences(control);
}

}  // namespace

// ------------------------------------------------------------------ set-up

Result<void> Ring::validate(const RingConfig& c) {
  if (c.capacity < kMinRingCapacity || c.capacity > kMaxRingCapacity || (c.capacity & (c.capacity - 1)) != 0)
    return Error{Errc::invalid_argument, "ring capacity " + std::to_string(c.capacity) +
                                             " must be a power of two from 4096 to 16 GiB"};
  if (c.kind != RingKind::topic && c.kind != RingKind::queue) return Error{Errc::invalid_argument, "unknown ring kind"};
  if (c.max_message == 0) return Error{Errc::invalid_argument, "maximum message must be at least 1 byte"};
  if (c.max_message > static_cast<std::uint32_t>(INT32_MAX) - 64)
    return Error{Errc::invalid_argument, "maximum message too large"};
  if (align_up(footprint(c.max_message, true), kUnit) > c.capacity / 2)
    return Error{Errc::invalid_argument, "maximum message of " + std::to_string(c.max_message) +
                                             " bytes does not fit twice in a ring of " + std::to_string(c.capacity) +
                                             " bytes; raise the capacity or lower the maximum"};
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
  control->exclusive = config.exclusive ? 1 : 0;
  for (auto& r : control->readers) r.hold_pos.store(kNoPosition, relaxed);
  for (auto& p : control->publishers) p.claim_pos.store(kNoPosition, relaxed);
  // Zeroed memory is FREE(lap 0) everywhere: every unit free for lap 0.
  return Ring(control, static_cast<std::byte*>(memory) + sizeof(RingControl), config);
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
  c.exclusive = control->exclusive != 0;
  if (version != kRingLayoutVersion)
    return Error{Errc::corrupt, "ring layout version " + std::to_string(version) + ", this build reads " +
                                    std::to_string(kRingLayoutVersion)};
  if (kind != static_cast<std::uint32_t>(RingKind::topic) && kind != static_cast<std::uint32_t>(RingKind::queue))
    return Error{Errc::corrupt, "ring kind " + std::to_string(kind) + " is unknown"};
  if (control->exclusive > 1) return Error{Errc::corrupt, "ring flag 'exclusive' is corrupt"};
  c.kind = static_cast<RingKind>(kind);
  if (auto ok = validate(c); !ok) return Error{Errc::corrupt, "ring configuration is corrupt: " + ok.error().message};
  if (size < bytes_for(c.capacity))
    return Error{Errc::corrupt, "ring of capacity " + std::to_string(c.capacity) + " does not fit its segment"};
  return Ring(control, static_cast<std::byte*>(memory) + sizeof(RingControl), c);
}

std::pair<std::uint64_t, std::uint64_t> Ring::tail() const noexcept { return snapshot(control_->tail); }
std::pair<std::uint64_t, std::uint64_t> Ring::head() const noexcept { return snapshot(control_->head); }
std::pair<std::uint64_t, std::uint64_t> Ring::take_cursor() const noexcept { return snapshot(control_->take); }

// Inlined (here and below): called for every record a reader looks at; as
// calls they took a fifth of a 1->4 topic reader's time.
[[gnu::always_inline]] inline std::uint64_t Ring::free_marker(std::uint64_t pos) const noexcept { return make_state(lap_of(pos), RecordType::free, false, 0); }

[[gnu::always_inline]] inline std::uint64_t Ring::record_size(std::uint64_t pos, std::uint64_t state) const noexcept {
  if ((pos & (kRecordAlign - 1)) != 0 || state_reserved(state) != 0) return 0;
  const std::uint64_t to_end = config_.capacity - (pos & mask_);
  const std::uint64_t length = state_length(state);
  switch (state_type(state)) {
    case RecordType::free: return 0;
    case RecordType::data: {
      const std::uint64_t tag = state_tagged(state) ? kOriginTagSize : 0;
      // A metadata block is at least 16 bytes; its own length is checked
      // when it is read (fill_view).
      const std::uint64_t least = tag + (state_metadata(state) ? metadata_block_size(0) : 0);
      if (length < least || length > config_.max_message + tag) return 0;
      const std::uint64_t size = align_up(kRecordHeaderSize + length, kRecordAlign);
      return size <= to_end ? size : 0;
    }
    case RecordType::pad:  // always reaches the ring's end; no tag, no metadata
      return !state_tagged(state) && !state_metadata(state) && length == to_end && length % kRecordAlign == 0
                 ? length
                 : 0;
    case RecordType::skip:
      return !state_tagged(state) && !state_metadata(state) && length >= kRecordHeaderSize &&
                     length % kRecordAlign == 0 && length <= to_end &&
                     length <= std::min(kMaxClaimBytes, config_.capacity / 2)
                 ? length
                 : 0;
  }
  return 0;
}

// record_size() of the common record, or 0 for any other header: an
// untagged DATA record of this lap without metadata, of a length the ring
// allows. Every bit but the length is compared at once, so readers and
// reclaim pay one comparison per such record (the general path checks
// the fields one by one).
[[gnu::always_inline]] inline std::uint64_t Ring::common_record_size(std::uint64_t pos, std::uint64_t state) const noexcept {
  if ((state & ~std::uint64_t{0xffff'ffff}) != make_state(lap_of(pos), RecordType::data, false, 0)) return 0;
  const std::uint64_t size = align_up(kRecordHeaderSize + state_length(state), kRecordAlign);
  if ((pos & (kRecordAlign - 1)) != 0 || state_length(state) > config_.max_message || size > config_.capacity - (pos & mask_))
    return 0;
  return size;
}

// ---------------------------------------------------------------- writers

Result<PublisherHandle> Ring::open_publisher() {
  const ProcessRef me = self();
  join_barrier(*control_);
  // An exclusive ring has one slot in use, slot 0: a CAS on its pid decides
  // between two processes opening at once.
  const std::size_t slots = config_.exclusive ? 1 : kRingSlots;
  for (int pass = 0; pass < 2; ++pass) {
    for (std::size_t i = 0; i < slots; ++i) {
      auto& slot = control_->publishers[i];
      std::uint32_t seen = slot.pid.load(acquire);
      if (seen != 0) {
        if (process_alive(seen, slot.start_time.load(relaxed))) {
          if (config_.exclusive)
            return Error{Errc::busy, "it has an exclusive publisher, process " + std::to_string(seen) +
                                         "; only one process may publish at a time (created with exclusive_publisher)"};
          continue;
        }
        // Second pass: take over the slot of a dead publisher, once its
        // claim in progress (if any) is published or skipped.
        if (pass == 0) continue;
        if (!config_.exclusive) {
          const Intent intent = read_intent(slot);
          if (intent.pos != kNoPosition) {
            std::uint32_t records = 0;
            const std::uint64_t stuck = walk_published(intent.pos, intent.end, records);
            if (stuck < intent.end && resolve_stuck(stuck) == Stuck::unresolved) continue;
          }
        }
      }
      if (!slot.pid.compare_exchange_strong(seen, me.pid, std::memory_order_acq_rel)) continue;
      if (seen != 0) {
        control_->retired_published.fetch_add(slot.published.load(relaxed), relaxed);
        control_->retired_bytes.fetch_add(slot.bytes.load(relaxed), relaxed);
      }
      slot.start_time.store(me.start_time, relaxed);
      PublisherHandle handle;
      handle.slot = static_cast<int>(i);
      if (config_.exclusive) resolve_exclusive_takeover(slot);  // also a clean open: finds the tail
      slot.claim_pos.store(kNoPosition, relaxed);
      for (auto* c : {&slot.published, &slot.bytes, &slot.waits, &slot.abandoned, &slot.batches}) c->store(0, relaxed);
      if (config_.exclusive) std::tie(handle.tail_pos, handle.tail_seq) = snapshot(control_->tail);
      handle.known_reclaimed = control_->reclaimed.load(acquire);
      return handle;
    }
  }
  return Error{Errc::capacity, "all " + std::to_string(kRingSlots) + " publisher slots are in use by live processes"};
}

// The exclusive writer before us (dead, or gone) may have published records
// after its last tail store, and claimed records it never published: walk
// to the true end of what is published, count what was lost, store tail.
void Ring::resolve_exclusive_takeover(PublisherSlot& slot) noexcept {
  auto [pos, seq] = snapshot(control_->tail);
  const std::uint64_t limit = control_->reclaimed.load(acquire) + config_.capacity;
  for (std::uint64_t step = 0; step < config_.capacity / kRecordAlign && pos < limit; ++step) {
    const std::uint64_t state = header_at(pos).state.load(acquire);
    const std::uint64_t size = state_lap(state) == lap_of(pos) ? record_size(pos, state) : 0;
    if (size == 0) break;
    if (state_type(state) == RecordType::data) {
      if ((header_at(pos).seq_word.load(relaxed) & kSeqMask) != (seq & kSeqMask)) break;
      ++seq;
    } else if (state_type(state) == RecordType::skip) {
      seq += header_at(pos).seq_word.load(relaxed);
    }
    pos += size;
  }
  const Intent intent = read_intent(slot);
  if (intent.pos != kNoPosition && intent.count != 0 && seq >= intent.seq && seq - intent.seq < intent.count)
    control_->dead_claims.fetch_add(intent.count - (seq - intent.seq), relaxed);
  store_pair(control_->tail, pos, seq);
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

void Ring::store_tail(std::uint64_t pos, std::uint64_t seq) noexcept { store_pair(control_->tail, pos, seq); }

// Is [.., end) free to write? Checked against the cached `reclaimed`, which
// only grows; reloaded (a shared line) only when the cached one is short.
// Otherwise `reclaim_to` is what `reclaimed` must reach (make_room's target).
bool Ring::has_space(PublisherHandle& handle, std::uint64_t end, bool untagged, std::uint64_t& reclaim_to) noexcept {
  // Untagged writers leave a quarter to tagged ones while forwarders read.
  const std::uint64_t reserve =
      untagged && control_->block_untagged_readers.load(relaxed) != 0 ? config_.capacity / 4 : 0;
  reclaim_to = end + reserve - config_.capacity;
  if (end + reserve <= handle.known_reclaimed + config_.capacity) return true;
  handle.known_reclaimed = control_->reclaimed.load(acquire);
  return end + reserve <= handle.known_reclaimed + config_.capacity;
}

// How many of the first `want` records fit in `room` bytes (their bytes in
// `bytes`); stops before a record larger than the maximum message.
std::uint32_t Ring::fit(const ClaimShape& shape, std::uint64_t room, std::uint64_t& bytes) const noexcept {
  bytes = 0;
  if (shape.sizes == nullptr) {
    const std::uint64_t fp = footprint(shape.size, shape.tagged);
    const auto n = static_cast<std::uint32_t>(std::min<std::uint64_t>(shape.count, room / fp));
    bytes = n * fp;
    return n;
  }
  std::uint32_t n = 0;
  for (; n < shape.count && shape.sizes[n] <= config_.max_message; ++n) {
    const std::uint64_t fp = footprint(shape.sizes[n], shape.tagged);
    if (bytes + fp > room) break;
    bytes += fp;
  }
  return n;
}

ClaimStatus Ring::try_claim(PublisherHandle& handle, std::uint32_t count, std::uint32_t size, Claim& claim,
                            const std::uint32_t* sizes, bool tagged) noexcept {
  if (handle.slot < 0) return ClaimStatus::corrupt;
  if (count == 0 || count > kMaxBatch) return ClaimStatus::too_large;
  if ((sizes != nullptr ? sizes[0] : size) > config_.max_message) return ClaimStatus::too_large;
  claim = Claim{};
  claim.tagged = tagged;
  const ClaimShape shape{count, size, sizes, tagged};
  return config_.exclusive ? claim_exclusive(handle, shape, claim) : claim_shared(handle, shape, claim);
}

ClaimStatus Ring::claim_shared(PublisherHandle& handle, const ClaimShape& shape, Claim& claim) noexcept {
  auto& me = control_->publishers[handle.slot];
  const bool untagged = !shape.tagged;
  for (int attempt = 0; attempt < kMaxLoop; ++attempt) {
    const auto [pos, seq] = snapshot(control_->tail);
    if ((pos & (kUnit - 1)) != 0 || pos < handle.known_reclaimed || pos - handle.known_reclaimed > config_.capacity) {
      // A stale cached `reclaimed` first; then damage.
      handle.known_reclaimed = control_->reclaimed.load(acquire);
      if ((pos & (kUnit - 1)) != 0 || pos < handle.known_reclaimed ||
          pos - handle.known_reclaimed > config_.capacity) {
        // Our snapshot may be stale: preempted after reading it, the tail
        // moved on and `reclaimed` passed our old position. Only a tail that
        // still reads the same after `reclaimed` was loaded proves damage.
        const auto [again_pos, again_seq] = snapshot(control_->tail);
        if (again_pos != pos || again_seq != seq) continue;
        control_->bad_records.fetch_add(1, relaxed);
        return ClaimStatus::corrupt;
      }
    }
    // As many records as fit before the ring's end (the caller claims the
    // rest next); if not even one does, a PAD to the end first.
    const std::uint64_t to_end = config_.capacity - (pos & mask_);
    std::uint64_t bytes = 0;
    const std::uint32_t n = fit(shape, std::min({to_end, kMaxClaimBytes, config_.capacity / 2}), bytes);
    if (n == 0) {
      if (std::uint64_t target = 0; !has_space(handle, pos + to_end, untagged, target)) {
        if (!make_room(target, untagged, handle.counted_in_space_waiters)) return ClaimStatus::full;
        continue;
      }
      write_intent(me, pos, pos + to_end, seq, 0);
      if (cas16(control_->tail, pos, seq, pos + to_end, seq)) {
        header_at(pos).seq_word.store(0, relaxed);
        header_at(pos).state.store(make_state(lap_of(pos), RecordType::pad, false, to_end), release_order);
        me.claim_pos.store(kNoPosition, relaxed);
        order_before_wake_check(*control_);
        wake_readers();
      }
      continue;
    }
    const std::uint64_t end = pos + align_up(bytes, kUnit);
    if (std::uint64_t target = 0; !has_space(handle, end, untagged, target)) {
      if (!make_room(target, untagged, handle.counted_in_space_waiters)) return ClaimStatus::full;
      continue;
    }
    write_intent(me, pos, end, seq, n);
    if (!cas16(control_->tail, pos, seq, end, seq + n)) {
      cpu_relax();
      continue;
    }
    if (pos + bytes < end) {  // filler to the unit's end, published with the records
      auto& filler = header_at(pos + bytes);
      filler.seq_word.store(0, relaxed);
      filler.state.store(make_state(lap_of(pos + bytes), RecordType::skip, false, end - (pos + bytes)), relaxed);
    }
    claim.pos = claim.fill_pos = claim.publish_pos = pos;
    claim.end = end;
    claim.seq = seq;
    claim.count = n;
    return ClaimStatus::ok;
  }
  return ClaimStatus::full;
}

ClaimStatus Ring::claim_exclusive(PublisherHandle& handle, const ClaimShape& shape, Claim& claim) noexcept {
  auto& me = control_->publishers[handle.slot];
  const bool untagged = !shape.tagged;
  for (int attempt = 0; attempt < 8; ++attempt) {
    const std::uint64_t pos = handle.tail_pos;
    const std::uint64_t seq = handle.tail_seq;
    const std::uint64_t to_end = config_.capacity - (pos & mask_);
    std::uint64_t bytes = 0;
    const std::uint32_t n = fit(shape, std::min({to_end, kMaxClaimBytes, config_.capacity / 2}), bytes);
    if (n == 0) {
      // A PAD to the ring's end, published at once; then the next lap.
      if (std::uint64_t target = 0; !has_space(handle, pos + to_end + kRecordAlign, untagged, target)) {
        if (!make_room(target, untagged, handle.counted_in_space_waiters)) return ClaimStatus::full;
        continue;
      }
      header_at(pos).seq_word.store(0, relaxed);
      header_at(pos + to_end).state.store(free_marker(pos + to_end), relaxed);  // clean ahead
      header_at(pos).state.store(make_state(lap_of(pos), RecordType::pad, false, to_end), release_order);
      handle.tail_pos = pos + to_end;
      store_tail(handle.tail_pos, seq);
      order_before_wake_check(*control_);
      wake_readers();
      continue;
    }
    // Room for the run and for the FREE marker after it (clean ahead).
    const std::uint64_t end = pos + bytes;
    if (std::uint64_t target = 0; !has_space(handle, end + kRecordAlign, untagged, target)) {
      if (!make_room(target, untagged, handle.counted_in_space_waiters)) return ClaimStatus::full;
      continue;
    }
    write_intent(me, pos, end, seq, n);  // our own line: read only when we are dead
    claim.pos = claim.fill_pos = claim.publish_pos = pos;
    claim.end = end;
    claim.seq = seq;
    claim.count = n;
    return ClaimStatus::ok;
  }
  return ClaimStatus::full;
}

ClaimStatus Ring::claim_until(PublisherHandle& handle, std::uint32_t count, std::uint32_t size,
                              std::uint64_t deadline_ns, Claim& claim, const std::uint32_t* sizes,
                              bool tagged) noexcept {
  std::uint64_t spin_until = 0;
  std::uint64_t last = 0;
  int backoff = 1;
  for (;;) {
    const std::uint32_t signal = control_->space_signal.load(acquire);
    const ClaimStatus status = try_claim(handle, count, size, claim, sizes, tagged);
    if (status != ClaimStatus::full) return status;
    const std::uint64_t now = monotonic_ns();
    if (now >= deadline_ns) return ClaimStatus::full;
    if (last != 0 && now - last > kDescheduledNs) {
      note_hole(handle.spin, now);
      if (!may_spin(handle.spin, now)) spin_until = now;  // stop spinning now
    }
    last = now;
    if (spin_until == 0) spin_until = now + (may_spin(handle.spin, now) ? kSpinWorthNs / 2 : 0);
    if (now < spin_until) {
      for (int i = 0; i < backoff; ++i) cpu_relax();
      backoff = std::min(backoff * 2, kMaxBackoff);
      continue;
    }
    auto& me = control_->publishers[handle.slot];
    bump(me.waits);
    control_->space_woken.store(0, seq_cst);
    control_->space_waiters.fetch_add(1, seq_cst);
    order_before_sleep(*control_);
    handle.counted_in_space_waiters = true;
    const ClaimStatus last_check = try_claim(handle, count, size, claim, sizes, tagged);
    handle.counted_in_space_waiters = false;
    if (last_check == ClaimStatus::ok) {
      control_->space_waiters.fetch_sub(1, relaxed);
      return ClaimStatus::ok;
    }
    futex_wait(control_->space_signal, signal,
               std::min<std::int64_t>(kMaxSleepNs, static_cast<std::int64_t>(deadline_ns - now)));
    control_->space_waiters.fetch_sub(1, relaxed);
    spin_until = 0;
    last = 0;
    backoff = 1;
  }
}

std::byte* Ring::next_record(Claim& claim, std::uint32_t size, const OriginRef* origin,
                             std::span<const std::byte> metadata) noexcept {
  if (claim.filled >= claim.count) return nullptr;
  const std::uint64_t pos = claim.fill_pos;
  const std::uint64_t fp = footprint(size, claim.tagged);
  if (size > config_.max_message || pos + fp > claim.end) return nullptr;
  const bool has_metadata = !metadata.empty();
  if (has_metadata && (metadata.size() >= size || metadata_block_size(static_cast<std::uint32_t>(metadata.size())) > size))
    return nullptr;  // (the first test keeps the cast from truncating)
  auto& header = header_at(pos);
  const std::uint64_t length = size + (claim.tagged ? kOriginTagSize : 0);
  const std::uint64_t word = make_state(lap_of(pos), RecordType::data, claim.tagged, length, has_metadata);
  header.seq_word.store((claim.seq + claim.filled) & kSeqMask, relaxed);
  // Every header but the first unpublished one is written now; that one is
  // the publication (commit), and until then it keeps its FREE marker.
  if (claim.filled == claim.published) claim.publish_word = word;
  else header.state.store(word, relaxed);
  std::byte* payload = reinterpret_cast<std::byte*>(&header) + kRecordHeaderSize;
  if (claim.tagged) {
    const OriginTag tag{origin != nullptr ? origin->origin_seq : 0, origin != nullptr ? origin->origin : 0, 0};
    std::memcpy(payload, &tag, sizeof tag);
    payload += kOriginTagSize;
  }
  if (has_metadata) {
    const auto n = static_cast<std::uint32_t>(metadata.size());
    const std::uint32_t block = metadata_block_size(n);
    const std::uint32_t words[2] = {n, 0};
    std::memcpy(payload, words, sizeof words);
    std::memcpy(payload + kMetadataHeaderSize, metadata.data(), n);
    std::memset(payload + kMetadataHeaderSize + n, 0, block - kMetadataHeaderSize - n);
    payload += block;
  }
  claim.fill_pos = pos + fp;
  claim.bytes += size;
  ++claim.filled;
  return payload;
}

void Ring::commit(PublisherHandle& handle, Claim& claim) noexcept {
  if (claim.filled == claim.published || handle.slot < 0) return;
  // Clean ahead: the next position gets a FREE marker before the records
  // that end there are published, unless it is a real header already (a
  // shared claim's filler or its unit-aligned end).
  const bool records_remain = claim.filled < claim.count;
  if (records_remain || config_.exclusive) header_at(claim.fill_pos).state.store(free_marker(claim.fill_pos), relaxed);
  header_at(claim.publish_pos).state.store(claim.publish_word, release_order);
  const std::uint32_t n = claim.filled - claim.published;
  claim.published = claim.filled;
  claim.publish_pos = claim.fill_pos;
  auto& me = control_->publishers[handle.slot];
  bump(me.published, n);
  bump(me.bytes, claim.bytes);
  bump(me.batches);
  claim.bytes = 0;
  if (config_.exclusive) {
    handle.tail_pos = claim.fill_pos;
    handle.tail_seq = claim.seq + claim.published;
    store_tail(handle.tail_pos, handle.tail_seq);
  }
  order_before_wake_check(*control_);
  wake_readers();
}

void Ring::finish(PublisherHandle& handle, Claim& claim) noexcept {
  if (handle.slot < 0 || claim.count == 0) return;
  auto& me = control_->publishers[handle.slot];
  const std::uint32_t given_up = claim.count - claim.published;
  if (given_up != 0) {
    bump(me.abandoned, given_up);
    if (!config_.exclusive) {
      // The rest of the claim becomes one SKIP record, published now.
      auto& header = header_at(claim.publish_pos);
      header.seq_word.store(given_up, relaxed);
      header.state.store(make_state(lap_of(claim.publish_pos), RecordType::skip, false, claim.end - claim.publish_pos),
                         release_order);
      order_before_wake_check(*control_);
      wake_readers();
    }
    // Exclusive: nothing past the last publication was ever visible; the
    // FREE marker there stays, and tail is already at it.
  }
  me.claim_pos.store(kNoPosition, relaxed);
  claim = Claim{};
}

// Wakers call futex wake only when someone sleeps, and once per round of
// sleepers: the first waker after a sleeper re-armed `*_woken` wakes every
// sleeper; later ones see it set and skip the system call. Sound because a
// sleeper clears `woken` and registers before its asymmetric barrier and its
// last check of the ring (see WAITING).
void Ring::wake_readers() noexcept {
  if (control_->data_waiters.load(relaxed) != 0 && control_->data_woken.load(relaxed) == 0 &&
      control_->data_woken.exchange(1, seq_cst) == 0) {
    control_->data_signal.fetch_add(1, release_order);
    futex_wake_all(control_->data_signal);
  }
}

// `waiting_caller`: 1 when the caller is itself counted in space_waiters
// (a writer's last check before it sleeps): waking only itself would make
// its futex wait return at once, and a writer held back would loop through
// system calls instead of sleeping.
void Ring::wake_writers(std::uint32_t waiting_caller) noexcept {
  if (control_->space_waiters.load(relaxed) > waiting_caller && control_->space_woken.load(relaxed) == 0 &&
      control_->space_woken.exchange(1, seq_cst) == 0) {
    control_->space_signal.fetch_add(1, release_order);
    futex_wake_all(control_->space_signal);
  }
}

// A reader's release wakes a writer waiting for space only when there is
// room worth waking for: the slowest reader a reclaim batch (an eighth of
// the ring) past head, or every reader at tail (in its unit). Woken at
// every release, a writer held back by the slowest of several readers woke
// for the faster ones' progress and slept again, a futex call on each side
// per batch (a topic 1->4 of single messages went from 14-15 M to 17-21 M
// deliveries/s without those wakes). A writer that needs less than the
// batch waits at most kMaxSleepNs when readers stop short of it (it
// re-checks then).
void Ring::wake_writers_for_room() noexcept {
  if (control_->space_waiters.load(relaxed) == 0 || control_->space_woken.load(relaxed) != 0) return;
  const std::uint64_t tail_pos = control_->tail.pos.load(acquire);
  // A tagged writer's bound (block_untagged readers left out) is the
  // larger one: room for either kind of writer.
  const std::uint64_t bound = reclaim_bound(tail_pos, false);
  const std::uint64_t head_pos = control_->head.pos.load(acquire);
  const std::uint64_t batch = std::min<std::uint64_t>(config_.capacity / 8, kReclaimBatch);
  // A reader that read everything may stand before a shared claim's filler,
  // in tail's unit.
  if (align_up(bound, kUnit) < tail_pos && bound < head_pos + batch) return;
  wake_writers();
}

// ------------------------------------------------------ claims of the dead

// From `from`, the end of the published records (DATA of consecutive
// sequences, SKIP, PAD) before `end`; counts the messages they hold.
std::uint64_t Ring::walk_published(std::uint64_t from, std::uint64_t end, std::uint32_t& records) const noexcept {
  std::uint64_t pos = from;
  records = 0;
  for (std::uint64_t step = 0; step < config_.capacity / kRecordAlign && pos < end; ++step) {
    const std::uint64_t state = header_at(pos).state.load(acquire);
    if (state_lap(state) != lap_of(pos)) break;
    const std::uint64_t size = record_size(pos, state);
    if (size == 0 || pos + size > end) break;
    if (state_type(state) == RecordType::data) ++records;
    else if (state_type(state) == RecordType::skip) records += static_cast<std::uint32_t>(header_at(pos).seq_word.load(relaxed));
    pos += size;
  }
  return pos;
}

// `pos` holds a FREE marker below tail: a claim covers it and is not
// published there. If its writer is dead, the unpublished rest of the claim
// becomes a SKIP record.
Ring::Stuck Ring::resolve_stuck(std::uint64_t pos) noexcept {
  const auto [tail_pos, tail_seq] = snapshot(control_->tail);
  if (pos >= tail_pos) return Stuck::not_claimed;
  Intent dead[kRingSlots];
  std::size_t dead_count = 0;
  for (auto& slot : control_->publishers) {
    const std::uint32_t pid = slot.pid.load(acquire);
    if (pid == 0) continue;
    const Intent intent = read_intent(slot);
    if (intent.pos == kNoPosition || pos < intent.pos || pos >= intent.end) continue;
    if (process_alive(pid, slot.start_time.load(relaxed))) return Stuck::writer_alive;
    dead[dead_count++] = intent;
  }
  if (dead_count == 0) {
    // No claim covers it: published meanwhile, or damage (a forged marker).
    return header_at(pos).state.load(acquire) == free_marker(pos) ? Stuck::orphan : Stuck::resolved;
  }
  // Several dead intents cover `pos` only if writers died between a failed
  // tail CAS and their next intent: the claim that won is the one whose end
  // the ring continues from.
  const Intent* chosen = &dead[0];
  if (!std::all_of(dead, dead + dead_count, [&](const Intent& i) { return i == dead[0]; })) {
    chosen = nullptr;
    for (std::size_t i = 0; i < dead_count; ++i) {
      const Intent& c = dead[i];
      bool evidence = tail_pos == c.end && tail_seq == c.seq + c.count;
      const std::uint64_t next = header_at(c.end).state.load(acquire);
      if (!evidence && state_lap(next) == lap_of(c.end) && state_type(next) == RecordType::data && record_size(c.end, next) != 0)
        evidence = (header_at(c.end).seq_word.load(relaxed) & kSeqMask) == ((c.seq + c.count) & kSeqMask);
      if (!evidence) continue;
      if (chosen != nullptr) return Stuck::unresolved;
      chosen = &c;
    }
    if (chosen == nullptr) return Stuck::unresolved;
  }
  std::uint32_t published = 0;
  const std::uint64_t from = walk_published(chosen->pos, chosen->end, published);
  if (from >= chosen->end) return Stuck::resolved;
  if (from != pos && pos < from) return Stuck::resolved;  // published meanwhile up to past pos
  const std::uint32_t lost = chosen->count > published ? chosen->count - published : 0;
  auto& header = header_at(from);
  std::uint64_t expected = free_marker(from);
  if (header.state.load(acquire) != expected) return Stuck::resolved;
  header.seq_word.store(lost, relaxed);
  if (header.state.compare_exchange_strong(expected, make_state(lap_of(from), RecordType::skip, false, chosen->end - from),
                                           seq_cst))
    control_->dead_claims.fetch_add(lost, relaxed);
  wake_readers();
  return Stuck::resolved;
}

// A reader found a FREE marker at `pos`: is it a claim whose writer died?
// Looks at the clock only every kStuckPollMask+1 calls at the same position
// (busy readers poll often); resolves after kStuckCheckNs. True if it did.
bool Ring::check_stuck(ReaderHandle& handle, std::uint64_t pos) noexcept {
  if (config_.exclusive) return false;  // nothing below an exclusive tail is unpublished
  if (handle.stuck_pos != pos) {
    handle.stuck_pos = pos;
    handle.stuck_since_ns = 0;
    return false;
  }
  const std::uint64_t now = monotonic_ns();
  if (handle.stuck_since_ns == 0) {
    if (pos >= control_->tail.pos.load(acquire)) return false;  // not claimed: nothing is late
    handle.stuck_since_ns = now;
    return false;
  }
  if (now - handle.stuck_since_ns < kStuckCheckNs) return false;
  handle.stuck_since_ns = now;
  switch (resolve_stuck(pos)) {
    case Stuck::resolved: return true;
    case Stuck::orphan:  // a FREE marker no claim explains: damage; go on from tail
      if (handle.mode != ReaderMode::consumer) {
        resync_to_tail(handle);
      } else if (const auto [take_pos, take_seq] = snapshot(control_->take); take_pos == pos) {
        skip_queue_to_tail(handle, take_pos, take_seq);
      }
      return true;
    default: return false;
  }
}

// ---------------------------------------------------------------- reclaim

// How far head may advance: the slowest blocking subscriber (topic) or the
// oldest message taken and not yet released (queue), and never past tail.
std::uint64_t Ring::reclaim_bound(std::uint64_t tail_pos, bool untagged) noexcept {
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
    if (mode == ReaderMode::block_untagged && !untagged) continue;  // a tagged write may lap it
    if (mode == ReaderMode::block || mode == ReaderMode::block_untagged) bound = std::min(bound, r.cursor_pos.load(seq_cst));
    bound = std::min(bound, r.hold_pos.load(seq_cst));
  }
  return bound;
}

// Is any live reader holding a record in [low, high)? Spins a while first:
// a lossy hold lasts as long as a reader looks at one batch.
bool Ring::held_between(std::uint64_t low, std::uint64_t high, bool untagged) noexcept {
  auto counts = [&](const ReaderSlot& r) {
    return untagged || static_cast<ReaderMode>(r.mode.load(relaxed)) != ReaderMode::block_untagged;
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

// Marks the units [from, to) free for their next lap, then publishes
// reclaimed = to. Only the first word of a unit is written: a unit is where
// a shared claim may start, and a FREE marker is what a reader finds there
// until a writer publishes.
void Ring::write_free_markers(std::uint64_t from, std::uint64_t to) noexcept {
  for (std::uint64_t unit = from; unit < to; unit += kUnit)
    header_at(unit).state.store(free_marker(unit + config_.capacity), relaxed);
  control_->reclaimed.store(to, release_order);
}

void Ring::forget_block_untagged_reader() noexcept {
  std::uint32_t n = control_->block_untagged_readers.load(relaxed);
  while (n != 0 && !control_->block_untagged_readers.compare_exchange_weak(n, n - 1, relaxed)) {
  }
}

// Frees the slots of dead readers that hold writers back. A dead consumer's
// taken messages of a queue with acks stay held: the next consumer that
// looks delivers them again (rescue_dead_consumer).
void Ring::evict_dead_readers() noexcept {
  for (auto& r : control_->readers) {
    const std::uint32_t pid = r.pid.load(acquire);
    if (pid == 0 || process_alive(pid, r.start_time.load(relaxed))) continue;
    const std::uint64_t hold = r.hold_pos.load(acquire);
    if (config_.kind == RingKind::queue && hold != kNoPosition) {
      if (config_.acks) continue;
      control_->dropped_unacked.fetch_add(std::max<std::uint32_t>(1, r.hold_count.load(relaxed)), relaxed);
    }
    if (r.sleeping.exchange(0, relaxed) != 0) control_->data_waiters.fetch_sub(1, relaxed);
    r.hold_pos.store(kNoPosition, relaxed);
    control_->dead_readers.fetch_add(1, relaxed);
    std::uint32_t dead = pid;
    if (r.pid.compare_exchange_strong(dead, 0, std::memory_order_acq_rel) &&
        static_cast<ReaderMode>(r.mode.load(relaxed)) == ReaderMode::block_untagged)
      forget_block_untagged_reader();
  }
}

namespace {
// This thread's lock word: its tid (high 32 bits) and the low bits of its
// start time, so that a tid reused by a later thread is not taken for the
// owner. The same facts as its owner word (owner_word.hpp), in the order
// this lock word has had since layout 3.
std::uint64_t my_lock_word() noexcept {
  const std::uint64_t owner = self_owner_word();
  return std::uint64_t{owner_tid(owner)} << 32 | owner >> 32;
}
bool lock_owner_alive(std::uint64_t word) noexcept {
  return owner_alive((word & 0xffff'ffff) << 32 | (word >> 32 & 0x7fff'ffff) << 1);
}
}  // namespace

// Held for microseconds (one reclaim pass), so waiters spin, then yield,
// then sleep briefly; every millisecond they check that the owner lives.
bool Ring::lock_reclaim(std::uint64_t deadline_ns) noexcept {
  const std::uint64_t me = my_lock_word();
  std::uint64_t next_check = 0;
  for (int round = 0;; ++round) {
    std::uint64_t seen = 0;
    if (control_->reclaim_lock.compare_exchange_strong(seen, me, std::memory_order_acq_rel)) return true;
    if (seen == me) return true;  // only a scribble can say we hold it: we do now
    if (round < 64) {
      cpu_relax();
      continue;
    }
    const std::uint64_t now = monotonic_ns();
    if (now >= deadline_ns) return false;
    if (next_check == 0) {
      next_check = now + 1'000'000;
    } else if (now >= next_check) {
      next_check = now + 1'000'000;
      if (!lock_owner_alive(seen) && control_->reclaim_lock.compare_exchange_strong(seen, me, std::memory_order_acq_rel))
        return true;  // its holder died: what it did under the lock is finished by our pass
    }
    if (round < 256) ::sched_yield();
    else sleep_ns(50'000);
  }
}

void Ring::unlock_reclaim() noexcept {
  std::uint64_t me = my_lock_word();
  control_->reclaim_lock.compare_exchange_strong(me, 0, std::memory_order_release);
}

// Makes `reclaimed` reach at least `target` if readers allow.
bool Ring::make_room(std::uint64_t target, bool untagged, bool caller_waits) noexcept {
  // Timed: a lock word scribbled over by a buggy process must not hang us.
  if (!lock_reclaim(monotonic_ns() + kReclaimLockNs)) return false;
  // A reclaimer that died after moving head but before writing all markers
  // leaves reclaimed behind head's unit: finish its work (idempotent).
  {
    const std::uint64_t head_unit = align_down(control_->head.pos.load(acquire), kUnit);
    const std::uint64_t reclaimed_now = control_->reclaimed.load(acquire);
    if (reclaimed_now < head_unit && head_unit - reclaimed_now <= config_.capacity &&
        (reclaimed_now & (kUnit - 1)) == 0 && !held_between(reclaimed_now, head_unit, untagged))
      write_free_markers(reclaimed_now, head_unit);
  }
  // Reclaim in batches: one pass computes the bound (a scan of the reader
  // slots), walks the records it may free, moves head once, checks holds
  // once and writes the markers. A pass frees an eighth of the ring (at most
  // kReclaimBatch) beyond what was asked when it can, so that the scans and
  // the mutex are paid once per many messages. That extra never takes a
  // topic's newest `history` messages (what new subscribers start from).
  const std::uint64_t slack = std::min<std::uint64_t>(config_.capacity / 8, kReclaimBatch);
  const std::uint64_t want = align_up(target, kUnit);
  bool evicted_someone = false;
  for (int pass = 0; pass < kMaxLoop && control_->reclaimed.load(acquire) < want; ++pass) {
    const auto [head_pos, head_seq] = snapshot(control_->head);
    const auto [tail_pos, tail_seq] = snapshot(control_->tail);
    const std::uint64_t bound = reclaim_bound(tail_pos, untagged);
    if (head_pos >= bound) {
      // Held back. Evict dead readers that hold the bound: once per call,
      // and once per kEvictionIntervalNs in this process. A writer held
      // back polls here while it spins, and a liveness check is a system
      // call per reader (kill): checked at every poll, they took a third
      // of a 1->4 topic writer's CPU, which its readers needed.
      if (evicted_someone) break;
      evicted_someone = true;
      const std::uint64_t now = monotonic_ns();
      if (now < next_eviction_ns_) break;
      next_eviction_ns_ = now + kEvictionIntervalNs;
      evict_dead_readers();
      continue;
    }
    const std::uint64_t goal = std::min(bound, std::max(want, head_pos + slack));
    std::uint64_t pos = head_pos;
    std::uint64_t seq = head_seq;
    for (int step = 0; step < kMaxLoop && pos < goal; ++step) {
      // Beyond what was asked for, keep the topic's history.
      if (pos >= want && (seq >= tail_seq || tail_seq - seq <= config_.history)) break;
      auto& header = header_at(pos);
      const std::uint64_t state = header.state.load(acquire);
      // The common record first (common_record_size).
      if (const std::uint64_t size = common_record_size(pos, state); size != 0) {
        if (pos + size > bound) break;  // the record is (partly) held
        pos += size;
        ++seq;
        continue;
      }
      std::uint64_t size = 0;
      if (state == free_marker(pos)) {
        // A claim not yet published, one of a dead writer, or damage.
        const Stuck stuck = resolve_stuck(pos);
        if (stuck == Stuck::resolved && header.state.load(acquire) != state) continue;
        if (stuck != Stuck::orphan) break;
      } else if (state_lap(state) == lap_of(pos)) {
        size = record_size(pos, state);
      }
      std::uint64_t next_seq = seq;
      if (size == 0) {
        // Impossible header: free up to the next unit (counted) rather than
        // trusting a length.
        control_->bad_records.fetch_add(1, relaxed);
        size = align_up(pos + 1, kUnit) - pos;
      } else if (state_type(state) == RecordType::data) {
        next_seq = seq + 1;
      } else if (state_type(state) == RecordType::skip) {
        next_seq = seq + header.seq_word.load(relaxed);
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
    // (reclaimed behind head) for the next reclaimer, which finishes the job.
    if (held_between(head_pos, pos, untagged)) break;
    std::uint64_t from = control_->reclaimed.load(acquire);
    const std::uint64_t to = align_down(pos, kUnit);
    if (from > to || to - from > config_.capacity) {  // damage: trust the head we just moved from
      control_->bad_records.fetch_add(1, relaxed);
      from = std::min(to, align_down(head_pos, kUnit));
    }
    if (to > from) write_free_markers(from, to);
  }
  unlock_reclaim();
  wake_writers(caller_waits ? 1 : 0);
  return control_->reclaimed.load(acquire) >= want;
}

// ---------------------------------------------------------------- readers

Result<ReaderHandle> Ring::open_reader(ReaderMode mode, std::uint64_t history, std::optional<std::uint64_t> from_seq) {
  if (mode == ReaderMode::consumer && config_.kind != RingKind::queue)
    return Error{Errc::invalid_argument, "a topic has subscribers, not consumers"};
  // A queue's readers hold records only as consumers (a hold there is a
  // taken range, which rescue redelivers): its cursor readers are taps,
  // blocking ones.
  if (config_.kind == RingKind::queue && mode != ReaderMode::consumer && mode != ReaderMode::block)
    return Error{Errc::invalid_argument, "a queue has consumers and taps, not lossy subscribers"};
  const ProcessRef me = self();
  join_barrier(*control_);
  // Under the reclaim lock: a blocking subscriber's cursor must be in place
  // before any reclaimer computes its bound.
  if (!lock_reclaim(monotonic_ns() + 20 * kReclaimLockNs))
    return Error{Errc::corrupt, "the ring's reclaim lock is held for over a second by a live thread"};
  struct Unlock {
    Ring& ring;
    ~Unlock() { ring.unlock_reclaim(); }
  } unlock{*this};

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
        if (static_cast<ReaderMode>(slot.mode.load(relaxed)) == ReaderMode::block_untagged)
          forget_block_untagged_reader();
      }
      if (mode == ReaderMode::block_untagged) control_->block_untagged_readers.fetch_add(1, relaxed);
      slot.start_time.store(me.start_time, relaxed);
      slot.mode.store(static_cast<std::uint32_t>(mode), relaxed);
      slot.hold_pos.store(kNoPosition, relaxed);
      slot.hold_count.store(0, relaxed);
      slot.sleeping.store(0, relaxed);
      for (auto* c : {&slot.delivered, &slot.bytes, &slot.missed, &slot.skipped_bad, &slot.redelivered,
                      &slot.dead_lettered, &slot.waits, &slot.batches})
        c->store(0, relaxed);
      ReaderHandle handle;
      handle.slot = static_cast<int>(i);
      handle.mode = mode;
      handle.known_reclaimed = control_->reclaimed.load(acquire);
      handle.gap_ns = kInitialGapNs;
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
        // Each step moves at least one record: bounded by the ring's size.
        const std::uint64_t max_steps = config_.capacity / kRecordAlign;
        for (std::uint64_t step = 0; step < max_steps && s < want && p < pos; ++step) {
          const std::uint64_t state = peek_state(header_at(p));
          const std::uint64_t size = state_lap(state) == lap_of(p) ? record_size(p, state) : 0;
          if (size == 0) break;
          if (state_type(state) == RecordType::data) {
            ++s;
          } else if (state_type(state) == RecordType::skip) {
            const std::uint64_t n = peek_word(header_at(p).seq_word);
            if (s + n > want) break;  // `want` lies inside a skipped run: start after it
            s += n;
          }
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
  if (handle.mode == ReaderMode::block_untagged) forget_block_untagged_reader();
  slot.pid.store(0, release_order);
  handle.slot = -1;
  wake_writers();
}

void Ring::publish_cursor(ReaderHandle& handle) noexcept {
  auto& slot = control_->readers[handle.slot];
  slot.cursor_seq.store(handle.seq, relaxed);
  slot.cursor_pos.store(handle.pos, release_order);
}

void Ring::resync_to_tail(ReaderHandle& handle) noexcept {
  auto& slot = control_->readers[handle.slot];
  const auto [pos, seq] = snapshot(control_->tail);
  bump(slot.skipped_bad, seq > handle.seq ? seq - handle.seq : 1);
  handle.pos = pos;
  handle.seq = seq;
  publish_cursor(handle);
}

// Damage at the queue's front: moves take past it to the tail, counting
// what the queue skipped.
void Ring::skip_queue_to_tail(ReaderHandle& handle, std::uint64_t first, std::uint64_t first_seq) noexcept {
  const auto [tpos, tseq] = snapshot(control_->tail);
  if (tpos > first && cas16(control_->take, first, first_seq, tpos, tseq))
    bump(control_->readers[handle.slot].skipped_bad, tseq > first_seq ? tseq - first_seq : 1);
}

namespace {

// The view of a DATA record's whole payload: all of it for an untagged
// record without metadata (the common one), fill_view()'s start otherwise.
[[gnu::always_inline]] inline View payload_view(const RecordHeader& header, std::uint64_t state, std::uint64_t seq,
                                                std::uint32_t deliveries, std::uint64_t pos, bool dead_letter) noexcept {
  return View{reinterpret_cast<const std::byte*>(&header) + kRecordHeaderSize, state_length(state), seq, deliveries, pos,
              dead_letter, 0, 0, nullptr, 0};
}

}  // namespace

// The parts of a DATA record's payload, checked: false if the tag or the
// metadata block is invalid (the record is then skipped and counted).
[[gnu::always_inline]] inline bool Ring::fill_view(const RecordHeader& header, std::uint64_t state, std::uint64_t seq, std::uint32_t deliveries,
                     std::uint64_t pos, bool dead_letter, View& view) const noexcept {
  view = payload_view(header, state, seq, deliveries, pos, dead_letter);
  if (state_tagged(state)) {
    if (view.size < kOriginTagSize) return false;
    OriginTag tag;
    std::memcpy(&tag, view.data, sizeof tag);
    if (tag.origin == 0) return false;
    view.data += kOriginTagSize;
    view.size -= kOriginTagSize;
    view.origin = tag.origin;
    view.origin_seq = tag.origin_seq;
  }
  if (state_metadata(state)) {
    // Read once into locals: a writer of shared memory may change them.
    std::uint32_t words[2];
    if (view.size < kMetadataHeaderSize) return false;
    std::memcpy(words, view.data, sizeof words);
    if (words[1] != 0 || words[0] == 0 || words[0] > view.size - kMetadataHeaderSize) return false;
    const std::uint32_t block = metadata_block_size(words[0]);
    if (block > view.size) return false;
    view.metadata = view.data + kMetadataHeaderSize;
    view.metadata_size = words[0];
    view.data += block;
    view.size -= block;
  }
  return true;
}

std::uint64_t Ring::tagged_at(std::uint64_t pos, OriginTag& tag) const noexcept {
  tag.origin = 0;
  const std::uint64_t state = peek_state(header_at(pos));
  if (state_lap(state) != lap_of(pos)) return 0;
  const std::uint64_t size = record_size(pos, state);
  if (size == 0) return 0;
  if (state_type(state) == RecordType::data && state_tagged(state))
    peek_bytes(reinterpret_cast<const std::byte*>(&header_at(pos)) + kRecordHeaderSize, &tag, sizeof tag);
  return size;
}

std::uint64_t Ring::metadata_at(std::uint64_t pos, OriginTag& tag, std::vector<std::byte>& metadata) const {
  tag.origin = 0;
  tag.origin_seq = 0;
  metadata.clear();
  const std::uint64_t state = peek_state(header_at(pos));
  if (state_lap(state) != lap_of(pos)) return 0;
  const std::uint64_t size = record_size(pos, state);
  if (size == 0 || state_type(state) != RecordType::data || !state_metadata(state)) return size;
  const std::byte* payload = reinterpret_cast<const std::byte*>(&header_at(pos)) + kRecordHeaderSize;
  std::uint32_t length = state_length(state);
  if (state_tagged(state)) {
    peek_bytes(payload, &tag, sizeof tag);
    payload += kOriginTagSize;
    length -= kOriginTagSize;
  }
  std::uint32_t words[2];
  peek_bytes(payload, words, sizeof words);
  if (words[1] != 0 || words[0] == 0 || words[0] > length - kMetadataHeaderSize) return size;  // invalid: none
  metadata.resize(words[0]);
  peek_bytes(payload + kMetadataHeaderSize, metadata.data(), words[0]);
  return size;
}

std::uint32_t Ring::try_read(ReaderHandle& handle, View* views, std::uint32_t max, ReadStatus& status) noexcept {
  status = ReadStatus::empty;
  if (handle.slot < 0 || handle.holding || max == 0) {
    status = ReadStatus::corrupt;
    return 0;
  }
  max = std::min(max, kMaxBatch);
  return handle.mode == ReaderMode::consumer ? try_take(handle, views, max, status)
                                             : try_read_topic(handle, views, max, status);
}

std::uint32_t Ring::try_read_topic(ReaderHandle& handle, View* views, std::uint32_t max, ReadStatus& status) noexcept {
  auto& slot = control_->readers[handle.slot];
  const bool lappable = may_be_lapped(handle.mode);
  for (int attempt = 0; attempt < kMaxLoop; ++attempt) {
    std::uint64_t pos = handle.pos;
    std::uint64_t seq = handle.seq;
    // Past reclaimed + capacity a unit may hold anything from an earlier
    // lap; before it, a header is FREE or was written in this lap.
    if (pos >= handle.known_reclaimed + config_.capacity) {
      handle.known_reclaimed = control_->reclaimed.load(acquire);
      if (pos >= handle.known_reclaimed + config_.capacity) return 0;
    }
    if (lappable) {
      // Hold, then make sure the records were not reclaimed meanwhile
      // (pairs with the reclaimer: head CAS, then hold check). From then on
      // nothing at or after `pos` is reclaimed until the hold goes.
      slot.hold_seq.store(seq, relaxed);
      slot.hold_pos.store(pos, seq_cst);
      const auto [head_pos, head_seq] = snapshot(control_->head);
      if (head_pos > pos) {  // lapped: what we missed is gone
        slot.hold_pos.store(kNoPosition, release_order);
        bump(slot.missed, head_seq > seq ? head_seq - seq : 0);
        handle.pos = head_pos;
        handle.seq = head_seq;
        publish_cursor(handle);
        continue;
      }
    }
    std::uint32_t n = 0;
    bool resync = false;
    for (int step = 0; step < kMaxLoop && n < max; ++step) {
      if (pos >= handle.known_reclaimed + config_.capacity) break;
      auto& header = header_at(pos);
      // A blocking subscriber's cursor keeps these records from reclaim; a
      // lappable one's hold does.
      const std::uint64_t state = header.state.load(acquire);
      // The common record first (common_record_size), with the sequence
      // we expect; whatever else the header holds takes the general path.
      if (const std::uint64_t size = common_record_size(pos, state);
          size != 0 && (header.seq_word.load(relaxed) & kSeqMask) == (seq & kSeqMask)) {
        views[n++] = payload_view(header, state, seq, 1, pos, false);
        pos += size;
        ++seq;
        continue;
      }
      if (state == free_marker(pos)) {
        if (n == 0 && (++handle.stuck_polls & kStuckPollMask) == 0 && check_stuck(handle, pos)) continue;
        break;
      }
      const std::uint64_t size = state_lap(state) == lap_of(pos) ? record_size(pos, state) : 0;
      if (size == 0) {
        resync = n == 0;
        break;
      }
      const RecordType type = state_type(state);
      if (type == RecordType::pad) {
        pos += size;
        continue;
      }
      if (type == RecordType::skip) {
        const std::uint64_t skipped = header.seq_word.load(relaxed);
        if (skipped > size / kRecordAlign) {  // a SKIP stands for at most one message per 16 bytes
          resync = n == 0;
          break;
        }
        seq += skipped;
        pos += size;
        continue;
      }
      if ((header.seq_word.load(relaxed) & kSeqMask) != (seq & kSeqMask)) {
        resync = n == 0;
        break;
      }
      if (!fill_view(header, state, seq, 1, pos, false, views[n])) {
        bump(slot.skipped_bad);  // an invalid origin tag or metadata block: skipped, counted
      } else {
        ++n;
      }
      pos += size;
      ++seq;
    }
    if (n > 0) {
      handle.batch_end_pos = pos;
      handle.batch_end_seq = seq;
      handle.batch_count = n;
      handle.batch_bytes = payload_bytes(views, n);
      handle.holding = true;
      handle.stuck_pos = kNoPosition;
      status = ReadStatus::ok;
      return n;
    }
    if (lappable) slot.hold_pos.store(kNoPosition, release_order);
    if (resync) {
      // A header from no lap we know, an impossible length or sequence: a
      // lossy reader lapped while it looked, or damage.
      const std::uint64_t head_pos = control_->head.pos.load(acquire);
      if (lappable && head_pos > pos) continue;  // lapped: the next round counts it
      resync_to_tail(handle);
      continue;
    }
    if (pos != handle.pos) {  // moved over PAD/SKIP records only
      handle.pos = pos;
      handle.seq = seq;
      publish_cursor(handle);
    }
    return 0;
  }
  return 0;
}

std::uint32_t Ring::try_take(ReaderHandle& handle, View* views, std::uint32_t max, ReadStatus& status) noexcept {
  auto& slot = control_->readers[handle.slot];
  if (handle.rescue_pos != kNoPosition) {
    const std::uint32_t n = deliver_rescued(handle, views, max);
    if (n > 0) status = ReadStatus::ok;
    return n;
  }
  if (config_.acks && (++handle.stuck_polls & kStuckPollMask) == 0) {  // dead consumers, now and then
    const std::uint64_t now = monotonic_ns();
    if (now >= handle.next_rescue_ns) {
      handle.next_rescue_ns = now + kRescueIntervalNs;
      if (rescue_dead_consumer(handle)) return try_take(handle, views, max, status);
    }
  }
  for (int attempt = 0; attempt < kMaxLoop; ++attempt) {
    const auto [first, first_seq] = snapshot(control_->take);
    if (first >= handle.known_reclaimed + config_.capacity) {
      handle.known_reclaimed = control_->reclaimed.load(acquire);
      if (first >= handle.known_reclaimed + config_.capacity) return 0;
    }
    // Look ahead (headers only): records may be taken by another consumer
    // meanwhile; the take CAS below tells, and the headers are checked again.
    std::uint64_t pos = first;
    std::uint64_t seq = first_seq;
    std::uint32_t n = 0;
    bool bad = false;
    std::uint64_t states[kCheckedStates];  // the first records' header words, checked after the CAS
    for (int step = 0; step < kMaxLoop && n < max; ++step) {
      if (pos >= handle.known_reclaimed + config_.capacity) break;
      const std::uint64_t state = peek_state(header_at(pos));
      if (const std::uint64_t size = common_record_size(pos, state);
          size != 0 && (peek_word(header_at(pos).seq_word) & kSeqMask) == (seq & kSeqMask)) {
        tsan_acquire(&header_at(pos).state);
        if (n < kCheckedStates) states[n] = state;
        views[n].pos = pos;
        ++n;
        ++seq;
        pos += size;
        continue;
      }
      if (state == free_marker(pos)) {
        if (n == 0 && pos == first && (handle.stuck_polls & kStuckPollMask) == 0 && check_stuck(handle, pos)) continue;
        break;
      }
      const std::uint64_t size = state_lap(state) == lap_of(pos) ? record_size(pos, state) : 0;
      if (size == 0) {
        bad = n == 0 && pos == first;
        break;
      }
      const RecordType type = state_type(state);
      if (type == RecordType::data) {
        if ((peek_word(header_at(pos).seq_word) & kSeqMask) != (seq & kSeqMask)) {
          bad = n == 0 && pos == first;
          break;
        }
        tsan_acquire(&header_at(pos).state);
        if (n < kCheckedStates) states[n] = state;
        views[n].pos = pos;
        ++n;
        ++seq;
      } else if (type == RecordType::skip) {
        const std::uint64_t skipped = peek_word(header_at(pos).seq_word);
        if (skipped > size / kRecordAlign) {
          bad = n == 0 && pos == first;
          break;
        }
        seq += skipped;
      }
      pos += size;
    }
    if (bad) {
      if (control_->take.pos.load(acquire) != first) continue;  // taken meanwhile: look again
      skip_queue_to_tail(handle, first, first_seq);  // an impossible record at the queue's front
      continue;
    }
    if (pos == first) return 0;
    // Hold first, then take: a reclaimer reads take before holds.
    slot.hold_seq.store(first_seq, relaxed);
    slot.hold_count.store(n, relaxed);
    slot.hold_end.store(pos, relaxed);
    slot.hold_pos.store(first, seq_cst);
    if (!cas16(control_->take, first, first_seq, pos, seq)) {
      slot.hold_pos.store(kNoPosition, release_order);
      continue;
    }
    if (n == 0) {  // only PAD/SKIP records: moved past them
      slot.hold_pos.store(kNoPosition, release_order);
      continue;
    }
    // Ours now, and held: these loads order our payload reads after the publication.
    std::uint32_t kept = 0;
    for (std::uint32_t i = 0; i < n; ++i) {
      const std::uint64_t at = views[i].pos;
      auto& header = header_at(at);
      const std::uint64_t state = header.state.load(acquire);
      const std::uint64_t word = header.seq_word.load(relaxed);
      const std::uint32_t deliveries = static_cast<std::uint32_t>(word >> 56) + 1;
      const bool dead_letter = config_.acks && deliveries > config_.max_deliveries;
      const bool unchanged = i >= kCheckedStates || state == states[i];
      if (unchanged && common_record_size(at, state) != 0) {
        views[kept++] = payload_view(header, state, word & kSeqMask, deliveries, at, dead_letter);
        continue;
      }
      if (!unchanged || state_type(state) != RecordType::data || record_size(at, state) == 0) {
        bump(slot.skipped_bad);
        continue;
      }
      if (!fill_view(header, state, word & kSeqMask, deliveries, at, dead_letter, views[kept])) {
        bump(slot.skipped_bad);
        continue;
      }
      ++kept;
    }
    if (kept == 0) {
      slot.hold_pos.store(kNoPosition, release_order);
      continue;
    }
    handle.holding = true;
    handle.batch_count = kept;
    handle.batch_bytes = payload_bytes(views, kept);
    handle.stuck_pos = kNoPosition;
    status = ReadStatus::ok;
    return kept;
  }
  return 0;
}

// Takes over the messages held by a dead consumer (queue with acks): their
// range becomes ours, each counts one more delivery, and try_take delivers
// them before anything new.
bool Ring::rescue_dead_consumer(ReaderHandle& handle) noexcept {
  auto& me = control_->readers[handle.slot];
  for (auto& r : control_->readers) {
    if (&r == &me) continue;
    const std::uint32_t pid = r.pid.load(acquire);
    std::uint64_t hold = r.hold_pos.load(acquire);
    if (pid == 0 || hold == kNoPosition || process_alive(pid, r.start_time.load(relaxed))) continue;
    const std::uint64_t seq = r.hold_seq.load(relaxed);
    const std::uint64_t end = r.hold_end.load(relaxed);
    const std::uint32_t count = r.hold_count.load(relaxed);
    if (end <= hold || end - hold > config_.capacity) {
      // A damaged hold: drop it rather than walk an impossible range.
      if (r.hold_pos.compare_exchange_strong(hold, kNoPosition, seq_cst)) bump(me.skipped_bad);
      continue;
    }
    // Hold it ourselves before releasing theirs, so it is never unheld.
    me.hold_seq.store(seq, relaxed);
    me.hold_count.store(count, relaxed);
    me.hold_end.store(end, relaxed);
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
    // One more delivery for each of them (kept in the header, 8 bits).
    std::uint64_t pos = hold;
    for (std::uint64_t step = 0; step < config_.capacity / kRecordAlign && pos < end; ++step) {
      auto& header = header_at(pos);
      const std::uint64_t state = header.state.load(acquire);
      const std::uint64_t size = state_lap(state) == lap_of(pos) ? record_size(pos, state) : 0;
      if (size == 0) break;
      if (state_type(state) == RecordType::data) {
        const std::uint64_t word = header.seq_word.load(relaxed);
        if ((word >> 56) < 255) header.seq_word.store(word + (std::uint64_t{1} << 56), relaxed);
      }
      pos += size;
    }
    bump(me.redelivered, count);
    handle.rescue_pos = hold;
    handle.rescue_end = end;
    handle.rescue_seq = seq;
    return true;
  }
  return false;
}

std::uint32_t Ring::deliver_rescued(ReaderHandle& handle, View* views, std::uint32_t max) noexcept {
  auto& slot = control_->readers[handle.slot];
  std::uint64_t pos = handle.rescue_pos;
  std::uint32_t n = 0;
  for (std::uint64_t step = 0; step < config_.capacity / kRecordAlign && pos < handle.rescue_end && n < max; ++step) {
    auto& header = header_at(pos);
    const std::uint64_t state = header.state.load(acquire);
    const std::uint64_t size = state_lap(state) == lap_of(pos) ? record_size(pos, state) : 0;
    if (size == 0) {
      bump(slot.skipped_bad);
      pos = handle.rescue_end;
      break;
    }
    if (state_type(state) == RecordType::data) {
      const std::uint64_t word = header.seq_word.load(relaxed);
      const std::uint32_t deliveries = static_cast<std::uint32_t>(word >> 56) + 1;
      if (fill_view(header, state, word & kSeqMask, deliveries, pos, deliveries > config_.max_deliveries, views[n])) ++n;
      else bump(slot.skipped_bad);
    }
    pos += size;
  }
  // Our hold stays on the first record not released; release() moves it.
  slot.hold_pos.store(handle.rescue_pos, seq_cst);
  handle.batch_end_pos = pos;
  handle.batch_count = n;
  handle.batch_bytes = payload_bytes(views, n);
  if (n == 0) {
    handle.rescue_pos = kNoPosition;
    slot.hold_pos.store(kNoPosition, release_order);
    return 0;
  }
  handle.holding = true;
  return n;
}

void Ring::release(ReaderHandle& handle) noexcept {
  if (handle.slot < 0 || !handle.holding) return;
  auto& slot = control_->readers[handle.slot];
  handle.holding = false;
  bump(slot.batches);
  bump(slot.delivered, handle.batch_count);
  bump(slot.bytes, handle.batch_bytes);
  if (handle.mode == ReaderMode::consumer) {
    if (handle.rescue_pos != kNoPosition) {
      handle.rescue_pos = handle.batch_end_pos;
      if (handle.rescue_pos >= handle.rescue_end) {
        handle.rescue_pos = kNoPosition;
        slot.hold_pos.store(kNoPosition, release_order);
      } else {
        slot.hold_pos.store(handle.rescue_pos, release_order);
      }
    } else {
      slot.hold_pos.store(kNoPosition, release_order);
    }
  } else {
    handle.pos = handle.batch_end_pos;
    handle.seq = handle.batch_end_seq;
    publish_cursor(handle);
    if (may_be_lapped(handle.mode)) slot.hold_pos.store(kNoPosition, release_order);
  }
  order_before_wake_check(*control_);
  wake_writers_for_room();
}

bool Ring::wait_published(ReaderHandle& handle, std::uint64_t count, std::uint64_t deadline_ns) noexcept {
  for (;;) {
    if (tail().second >= count) return true;
    const std::uint64_t now = monotonic_ns();
    if (now >= deadline_ns) return false;
    if (const auto sleep = arm_publish_wait(handle, count))
      futex_wait(*sleep->word, sleep->value,
                 std::min<std::int64_t>(kMaxSleepNs, static_cast<std::int64_t>(deadline_ns - now)));
    end_publish_wait(handle);
  }
}

std::optional<Ring::FutexSleep> Ring::arm_publish_wait(ReaderHandle& handle, std::uint64_t count) noexcept {
  auto& slot = control_->readers[handle.slot];
  // The signal is read before the last look at the tail: a commit after
  // that look bumps it (we are registered by then), so the sleep ends.
  const std::uint32_t signal = control_->data_signal.load(acquire);
  if (tail().second >= count) return std::nullopt;
  slot.sleeping.store(1, relaxed);
  control_->data_woken.store(0, seq_cst);
  control_->data_waiters.fetch_add(1, seq_cst);
  order_before_sleep(*control_);
  if (tail().second >= count) {
    end_publish_wait(handle);
    return std::nullopt;
  }
  return FutexSleep{&control_->data_signal, signal};
}

void Ring::end_publish_wait(ReaderHandle& handle) noexcept {
  auto& slot = control_->readers[handle.slot];
  if (slot.sleeping.exchange(0, relaxed) != 0) control_->data_waiters.fetch_sub(1, relaxed);
}

std::uint32_t Ring::read_until(ReaderHandle& handle, std::uint64_t deadline_ns, View* views, std::uint32_t max,
                               ReadStatus& status) noexcept {
  std::uint32_t n = try_read(handle, views, max, status);
  if (n > 0 || status == ReadStatus::corrupt) return n;
  auto& slot = control_->readers[handle.slot];
  const std::uint64_t started = monotonic_ns();
  // Spin while it pays: for about twice the gap messages lately took to
  // come (when that is short), and not while we see ourselves descheduled.
  std::uint64_t spin_ns = 0;
  if (may_spin(handle.spin, started))
    spin_ns = handle.gap_ns <= kSpinWorthNs ? std::clamp<std::uint64_t>(2 * handle.gap_ns, kMinSpinNs, kMaxSpinNs)
                                            : kMinSpinNs;
  auto arrived = [&](std::uint64_t at) {  // the gap estimate: an average over about 8 waits
    const std::uint64_t gap = at - started;
    handle.gap_ns = handle.gap_ns - handle.gap_ns / 8 + gap / 8;
  };
  std::uint64_t now = started;
  std::uint64_t last = started;
  int backoff = 1;
  while (now - started < spin_ns) {
    for (int i = 0; i < backoff; ++i) cpu_relax();
    backoff = std::min(backoff * 2, kMaxBackoff);
    n = try_read(handle, views, max, status);
    now = monotonic_ns();
    if (n > 0 || status == ReadStatus::corrupt) {
      arrived(now);
      return n;
    }
    if (now - last > kDescheduledNs) {
      note_hole(handle.spin, now);
      if (!may_spin(handle.spin, now)) break;  // preempted: the CPU is wanted elsewhere
    }
    last = now;
    if (now >= deadline_ns) return 0;
  }
  for (;;) {
    if (now >= deadline_ns) return 0;
    // A reader about to sleep on a claim that never gets published checks
    // its writer (busy readers do it every few hundred polls).
    if (handle.mode != ReaderMode::consumer) check_stuck(handle, handle.pos);
    else check_stuck(handle, control_->take.pos.load(acquire));
    if (config_.acks && handle.mode == ReaderMode::consumer && now >= handle.next_rescue_ns) {
      handle.next_rescue_ns = now + kRescueIntervalNs;
      if (rescue_dead_consumer(handle)) {
        n = try_read(handle, views, max, status);
        if (n > 0) return n;
      }
    }
    const std::uint32_t signal = control_->data_signal.load(acquire);
    bump(slot.waits);
    slot.sleeping.store(1, relaxed);
    control_->data_woken.store(0, seq_cst);
    control_->data_waiters.fetch_add(1, seq_cst);
    order_before_sleep(*control_);
    n = try_read(handle, views, max, status);
    if (n == 0 && status != ReadStatus::corrupt)
      futex_wait(control_->data_signal, signal,
                 std::min<std::int64_t>(kMaxSleepNs, static_cast<std::int64_t>(deadline_ns - now)));
    if (slot.sleeping.exchange(0, relaxed) != 0) control_->data_waiters.fetch_sub(1, relaxed);
    if (n == 0 && status != ReadStatus::corrupt) n = try_read(handle, views, max, status);
    now = monotonic_ns();
    if (n > 0 || status == ReadStatus::corrupt) {
      arrived(now);
      return n;
    }
  }
}

}  // namespace colo::shm
