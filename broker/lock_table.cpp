// Lock tables: the acquire and release protocol over the layout of
// lock_table_layout.hpp (which argues why it is safe).
//
// ACQUIRE(key)                               RELEASE
//   lock the key's home bucket                 CAS entry word: me -> 0
//   look for the key in its window             (fails: not ours any more:
//   absent:  claim a free entry, write the      count the damage, leave it)
//            key, token = ++bucket epoch,      flag was set: FUTEX_WAKE all
//            publish word = me; unlock         an overflowed key: home's
//   held by a dead thread (checked when a       overflow hint - 1
//            wait slice ran out, or at once
//            for try_acquire): CAS word -> me,
//            token = ++epoch, owner_died; unlock
//   held:    set the word's flag; unlock;
//            FUTEX_WAIT on the word's low half
//            (slices of 1 ms doubling to 64 ms,
//            then look again)
//   kept (cluster scope, no local holder):
//            CAS word -> me; unlock
//   cluster scope, the entry ours: admission
//            (lock_table_cluster.cpp)
//
// The common case (a free bucket lock, the key absent from its home bucket
// with no overflow, a free slot there) runs as one inline pass,
// insert_fast(); everything else goes the general way, acquire_key().
#include "colo/lock_table.hpp"

#include <sys/random.h>  // getrandom: the table's hash seed

#if defined(__SSE2__)
#include <emmintrin.h>  // slots_tagged
#endif

#include <algorithm>
#include <cstring>
#include <unordered_map>

#define XXH_INLINE_ALL  // the key hash inlined into acquire: a call would cost a fifth of it
#include <xxhash.h>

#include "clock.hpp"
#include "colo/internal/lock_wait.hpp"
#include "colo/names.hpp"  // validate_cluster_key
#include "futex.hpp"
#include "lock_table_view.hpp"
#include "owner_word.hpp"
#include "process.hpp"

namespace colo {

namespace detail {

// Makes guards for table keys (LockGuard's table constructor is private).
struct TableGrants {
  static LockGuard make(TableView* table, std::uint64_t index, std::uint32_t distance, std::uint64_t token,
                        bool owner_died, std::uint64_t sampled_ticks) noexcept {
    return LockGuard(table, index | std::uint64_t{distance} << 48, token, owner_died, sampled_ticks,
                     table->scope == Scope::cluster);
  }
};

std::uint64_t key_hash(const TableView& table, const void* key, std::size_t len) noexcept {
  return XXH3_64bits_withSeed(key, len, table.seed);
}

Result<void> check_table_options(std::string_view name, const LockTableOptions& o) {
  const std::string what = "lock table '" + std::string(name) + "': ";
  if (o.scope != Scope::host && o.scope != Scope::cluster) return Error{Errc::invalid_argument, what + "unknown scope"};
  if (o.capacity == 0 || o.capacity > kMaxTableCapacity)
    return Error{Errc::invalid_argument, what + "capacity " + std::to_string(o.capacity) + " is not in 1 .. " +
                                             std::to_string(kMaxTableCapacity)};
  if (o.max_key_bytes == 0 || o.max_key_bytes > kMaxKeyBytes)
    return Error{Errc::invalid_argument, what + "max key size " + std::to_string(o.max_key_bytes) +
                                             " is not in 1 .. " + std::to_string(kMaxKeyBytes)};
  const std::uint64_t bytes = sizeof(shm::SegmentHeader) + table_body_bytes(o.capacity, o.scope == Scope::cluster, o.max_key_bytes);
  if (bytes > shm::kMaxSegmentSize)
    return Error{Errc::invalid_argument, what + "needs " + std::to_string(bytes) + " bytes, over the segment limit"};
  return Ok{};
}

Result<void> init_table(shm::Segment& segment, const LockTableOptions& o) {
  auto& g = reinterpret_cast<TableHeader*>(segment.body())->geometry;
  const bool cluster = o.scope == Scope::cluster;
  g.scope = static_cast<std::uint32_t>(o.scope);
  g.capacity = o.capacity;
  g.home_buckets = home_buckets_for(o.capacity);
  g.max_key = o.max_key_bytes;
  g.entry_stride = entry_stride_for(cluster, o.max_key_bytes);
  g.slots_per_bucket = kSlotsPerBucket;
  g.window_buckets = kWindowBuckets;
  g.buckets_offset = kBucketsOffset;
  if (::getrandom(&g.seed, sizeof g.seed, 0) != sizeof g.seed)
    return Error{Errc::system, "cannot draw the table's hash seed (getrandom failed)"};
  g.layout_version = kLockTableLayoutVersion;
  return Ok{};
}

Result<std::unique_ptr<TableView>> open_table(std::string_view name, std::unique_ptr<MappedObject> mapping) {
  const std::string what = "lock table '" + std::string(name) + "'";
  shm::Segment& segment = mapping->segment;
  if (segment.body_size() < kBucketsOffset)
    return Error{Errc::corrupt, what + ": segment body is " + std::to_string(segment.body_size()) +
                                    " bytes, smaller than a table header"};
  // Each field read once, then checked against the others and the size.
  const auto& g = reinterpret_cast<const TableHeader*>(segment.body())->geometry;
  const std::uint32_t version = g.layout_version;
  const std::uint32_t scope = g.scope;
  const std::uint64_t capacity = g.capacity;
  const std::uint32_t max_key = g.max_key;
  if (version != kLockTableLayoutVersion)
    return Error{Errc::corrupt, what + " has layout " + std::to_string(version) + "; this build reads " +
                                    std::to_string(kLockTableLayoutVersion)};
  if (scope != static_cast<std::uint32_t>(Scope::host) && scope != static_cast<std::uint32_t>(Scope::cluster))
    return Error{Errc::corrupt, what + " has unknown scope " + std::to_string(scope)};
  const bool cluster = scope == static_cast<std::uint32_t>(Scope::cluster);
  if (capacity == 0 || capacity > kMaxTableCapacity || max_key == 0 || max_key > kMaxKeyBytes ||
      g.home_buckets != home_buckets_for(capacity) || g.entry_stride != entry_stride_for(cluster, max_key) ||
      g.slots_per_bucket != kSlotsPerBucket || g.window_buckets != kWindowBuckets || g.buckets_offset != kBucketsOffset)
    return Error{Errc::corrupt, what + " has an inconsistent geometry (capacity " + std::to_string(capacity) +
                                    ", max key " + std::to_string(max_key) + ")"};
  if (segment.body_size() < table_body_bytes(capacity, cluster, max_key))
    return Error{Errc::corrupt, what + ": segment body is " + std::to_string(segment.body_size()) + " bytes, " +
                                    std::to_string(table_body_bytes(capacity, cluster, max_key)) + " expected"};
  auto view = std::make_unique<TableView>();
  view->name = std::string(name);
  view->body = segment.body();
  view->scope = static_cast<Scope>(scope);
  view->capacity = capacity;
  view->home_buckets = home_buckets_for(capacity);
  view->all_buckets = all_buckets_for(view->home_buckets);
  view->max_key = max_key;
  view->entry_stride = entry_stride_for(cluster, max_key);
  view->bucket_stride = bucket_stride_for(view->entry_stride);
  view->seed = g.seed;
  view->mapping = std::move(mapping);
  return view;
}

}  // namespace detail

namespace {

using detail::BucketHeader;
using detail::TableEntry;
using detail::Key;
using detail::kSlotsPerBucket;
using detail::kWindowBuckets;
using detail::TableView;
constexpr auto relaxed = std::memory_order_relaxed;


constexpr std::uint64_t kFirstWaitSliceNs = 1'000'000;
constexpr std::uint64_t kLongestWaitSliceNs = 64'000'000;
// try_acquire waits this long at most for a bucket lock (held for
// nanoseconds, unless its holder is stopped) before it says "busy".
constexpr std::uint64_t kTryBucketWaitNs = 100'000'000;
constexpr std::uint64_t kHotLockWaitNs = 2'000'000;

using Wait = detail::TableWait;

// An entry that holds a key of this table: its word names a thread, its
// length fits, and it lies within reach of its key's home.
bool entry_valid(const TableView& t, TableEntry& e, std::uint64_t bucket) noexcept {
  const std::uint32_t len = e.key_len.load(relaxed);
  const std::uint32_t distance = e.home_distance.load(relaxed);
  if (len == 0 || len > t.max_key || distance >= kWindowBuckets) return false;
  return t.home_of(e.hash.load(relaxed)) + distance == bucket;
}

// Marks an entry damaged and counts it (under its bucket's lock).
void isolate(const TableView& t, TableEntry& e, std::uint64_t seen) noexcept {
  if (e.word.compare_exchange_strong(seen, detail::kEntryDamaged, std::memory_order_acq_rel, relaxed))
    t.header().counters.damaged_entries.fetch_add(1, relaxed);
}

// The bucket lock, held for a lookup-and-insert.
class BucketGuard {
 public:
  BucketGuard(const TableView& t, std::uint64_t b) noexcept : table_(t), bucket_(t.bucket(b)) {}
  // False at the deadline (0: none).
  bool lock(std::uint64_t deadline_ns) noexcept {
    const shm::OwnerLockResult r = shm::lock_owner_word(bucket_.lock, deadline_ns);
    if (r == shm::OwnerLockResult::timed_out) return false;
    // The dead owner left nothing to repair: an entry is published by the
    // single store of its word, the epoch and hints are single stores too.
    if (r == shm::OwnerLockResult::acquired_from_dead)
      table_.header().counters.bucket_recoveries.fetch_add(1, relaxed);
    held_ = true;
    return true;
  }
  void unlock() noexcept {
    if (held_) shm::unlock_owner_word(bucket_.lock);
    held_ = false;
  }
  ~BucketGuard() { unlock(); }
  BucketGuard(const BucketGuard&) = delete;
  BucketGuard& operator=(const BucketGuard&) = delete;

 private:
  const TableView& table_;
  BucketHeader& bucket_;
  bool held_ = false;
};

struct Slot {
  TableEntry* entry = nullptr;
  std::uint64_t bucket = 0;
  std::uint32_t slot = 0;
  std::uint32_t distance = 0;
  std::uint64_t word = 0;  // as seen
};

// A grant, before it becomes a LockGuard (made once, at the API's edge).
struct Grant {
  std::uint64_t index = 0;     // of the entry
  std::uint32_t distance = 0;  // of its bucket from the key's home
  std::uint64_t token = 0;
  std::uint64_t ticks = 0;     // sampled acquire time, or 0
  bool owner_died = false;
};

LockGuard guard_of(TableView& t, const Grant& g) noexcept {
  return detail::TableGrants::make(&t, g.index, g.distance, g.token, g.owner_died, g.ticks);
}

// Under the key's home lock: the entry holding the key, if any. Entries of
// the home bucket that fail validation are isolated on the way.
std::optional<Slot> find_key(const TableView& t, const Key& k) noexcept {
  BucketHeader& home = t.bucket(k.home);
  const std::uint32_t tag = detail::tag_of(k.hash);
  const std::uint32_t reach =
      home.overflow.load(relaxed) != 0 ? std::min(home.reach.load(relaxed), kWindowBuckets - 1) : 0;
  for (std::uint32_t d = 0; d <= reach && k.home + d < t.all_buckets; ++d) {
    const std::uint64_t b = k.home + d;
    BucketHeader& bucket = t.bucket(b);
    // The tags as one mask of the slots to look at (a vector compare).
    std::uint32_t tags[kSlotsPerBucket];
    for (std::uint32_t s = 0; s < kSlotsPerBucket; ++s) tags[s] = bucket.tags[s].load(relaxed);
    unsigned candidates = 0;
    for (std::uint32_t s = 0; s < kSlotsPerBucket; ++s) candidates |= (tags[s] == tag ? 1u : 0u) << s;
    for (; candidates != 0; candidates &= candidates - 1) {
      const auto s = static_cast<std::uint32_t>(__builtin_ctz(candidates));
      TableEntry& e = t.entry(b, s);
      const std::uint64_t w = e.word.load(std::memory_order_acquire);
      if (!detail::entry_live(w)) continue;
      if (d == 0 && !entry_valid(t, e, b)) {  // ours to check: we hold this bucket's lock
        isolate(t, e, w);
        continue;
      }
      if (e.hash.load(relaxed) != k.hash || e.key_len.load(relaxed) != k.len ||
          e.home_distance.load(relaxed) != d || std::memcmp(t.key_of(e), k.data, k.len) != 0)
        continue;
      return Slot{&e, b, s, d, w};
    }
  }
  return std::nullopt;
}

// A free entry of bucket `b` (whose lock the caller holds), if any. A word
// that is neither free nor valid is isolated.
std::optional<std::uint32_t> free_slot(const TableView& t, std::uint64_t b) noexcept {
  BucketHeader& bucket = t.bucket(b);
  for (std::uint32_t s = 0; s < kSlotsPerBucket; ++s) {
    TableEntry& e = t.entry(b, s);
    const std::uint64_t w = e.word.load(std::memory_order_acquire);
    if (w == 0) return s;
    if (w == detail::kEntryDamaged) continue;
    if (!detail::entry_live(w) || !entry_valid(t, e, b) ||
        bucket.tags[s].load(relaxed) != detail::tag_of(e.hash.load(relaxed)))
      isolate(t, e, w);
  }
  return std::nullopt;
}

// Without the bucket's lock: whether it looks worth locking for a free slot.
bool may_have_free_slot(const TableView& t, std::uint64_t b) noexcept {
  for (std::uint32_t s = 0; s < kSlotsPerBucket; ++s)
    if (t.entry(b, s).word.load(relaxed) == 0) return true;
  return false;
}

// Copies a key into its entry. Keys are mostly short ids ("order:42"); for
// them the C library's memcpy, a call and a size dispatch, cost more than
// the copy: 4 to 16 bytes go as two overlapping fixed-size moves.
inline void copy_key(char* to, const char* from, std::uint32_t len) noexcept {
  if (len >= 8 && len <= 16) {
    std::uint64_t head, tail;
    std::memcpy(&head, from, 8);
    std::memcpy(&tail, from + len - 8, 8);
    std::memcpy(to, &head, 8);
    std::memcpy(to + len - 8, &tail, 8);
  } else if (len >= 4 && len < 8) {
    std::uint32_t head, tail;
    std::memcpy(&head, from, 4);
    std::memcpy(&tail, from + len - 4, 4);
    std::memcpy(to, &head, 4);
    std::memcpy(to + len - 4, &tail, 4);
  } else {
    std::memcpy(to, from, len);
  }
}

// Writes the key into a free entry and publishes it held by the caller.
// Under the locks of the key's home and of the entry's bucket.
__attribute__((always_inline)) inline Grant insert(TableView& t, const Key& k, std::uint64_t b, std::uint32_t s,
                                                   std::uint32_t distance, std::uint64_t me, bool contended) noexcept {
  BucketHeader& home = t.bucket(k.home);
  TableEntry& e = t.entry(b, s);
  e.hash.store(k.hash, relaxed);
  e.key_len.store(static_cast<std::uint16_t>(k.len), relaxed);
  e.home_distance.store(static_cast<std::uint8_t>(distance), relaxed);
  copy_key(t.key_of(e), k.data, k.len);
  const shm::ProcessRef self = shm::self();
  e.holder_pid.store(self.pid, relaxed);
  const std::uint64_t token = home.epoch.load(relaxed) + 1;
  home.epoch.store(token, relaxed);
  e.token.store(token, relaxed);
  const bool timed = contended || (token & (detail::kTableHoldSampleEvery - 1)) == 0;
  const std::uint64_t ticks = timed ? shm::ticks() | 1 : 0;
  e.acquired_ticks.store(ticks, relaxed);
  t.bucket(b).tags[s].store(detail::tag_of(k.hash), relaxed);
  if (t.scope == Scope::cluster) detail::reset_cluster_line(t, e);
  if (distance != 0) {
    // Before the entry is published: a crash in between over-counts (safe).
    if (home.overflow.load(relaxed) == 0) home.reach.store(0, relaxed);
    home.overflow.fetch_add(1, relaxed);
    if (home.reach.load(relaxed) < distance) home.reach.store(distance, relaxed);
  }
  e.word.store(me, std::memory_order_release);
  if (contended) t.header().counters.contended_grants.fetch_add(1, relaxed);
  return Grant{t.entry_index(b, s), distance, token, ticks, false};
}

// The holder of `found` died: take the entry over. Under the home lock.
std::optional<Grant> take_over(TableView& t, const Key& k, const Slot& found, std::uint64_t me,
                               bool contended) noexcept {
  TableEntry& e = *found.entry;
  std::uint64_t seen = found.word;
  // Keep the flag: waiters sleeping on the word are woken by our release.
  if (!e.word.compare_exchange_strong(seen, me | (seen & shm::kOwnerFlag), std::memory_order_acq_rel, relaxed))
    return std::nullopt;
  BucketHeader& home = t.bucket(k.home);
  const shm::ProcessRef self = shm::self();
  e.holder_pid.store(self.pid, relaxed);
  const std::uint64_t token = home.epoch.load(relaxed) + 1;
  home.epoch.store(token, relaxed);
  e.token.store(token, relaxed);
  const std::uint64_t ticks = shm::ticks() | 1;
  e.acquired_ticks.store(ticks, relaxed);
  auto& counters = t.header().counters;
  counters.recoveries.fetch_add(1, relaxed);
  if (contended) counters.contended_grants.fetch_add(1, relaxed);
  return Grant{t.entry_index(found.bucket, found.slot), found.distance, token, ticks, true};
}

// Records the calling thread as blocked on `hash`, for tools. Returns the
// slot index, or kTableWaiterSlots if it could only count itself.
std::size_t register_waiter(const TableView& t, std::uint64_t hash) noexcept {
  auto& slots = t.header().waiters;
  const shm::ProcessRef me = shm::self();
  for (int pass = 0; pass < 2; ++pass) {
    for (std::size_t i = 0; i < detail::kTableWaiterSlots; ++i) {
      auto& slot = slots[i];
      std::uint32_t seen = slot.pid.load(relaxed);
      // First pass: free slots. Second: slots of dead waiters.
      if (seen != 0 && (pass == 0 || shm::liveness({seen, slot.start_time.load(relaxed)}) == shm::Liveness::alive))
        continue;
      if (slot.pid.compare_exchange_strong(seen, me.pid, std::memory_order_acq_rel)) {
        slot.tid.store(shm::self_tid(), relaxed);
        slot.start_time.store(me.start_time, relaxed);
        slot.key_hash.store(hash, relaxed);
        slot.since_ticks.store(shm::ticks(), relaxed);
        return i;
      }
    }
  }
  t.header().counters.overflow_waiters.fetch_add(1, relaxed);
  return detail::kTableWaiterSlots;
}

void unregister_waiter(const TableView& t, std::size_t slot) noexcept {
  if (slot == detail::kTableWaiterSlots) t.header().counters.overflow_waiters.fetch_sub(1, relaxed);
  else t.header().waiters[slot].pid.store(0, std::memory_order_release);
}

// Counts one wait for `k` in the hot-key sketch, unless the sketch is busy.
void record_contention(const TableView& t, const Key& k) noexcept {
  auto& h = t.header();
  if (shm::lock_owner_word(h.hot_lock, shm::monotonic_ns() + kHotLockWaitNs) == shm::OwnerLockResult::timed_out) return;
  detail::HotKey* least = &h.hot[0];
  for (auto& hot : h.hot) {
    const std::uint32_t len = hot.len.load(relaxed);
    if (hot.hash.load(relaxed) == k.hash && len == k.len && std::memcmp(hot.key, k.data, k.len) == 0) {
      hot.waits.fetch_add(1, relaxed);
      shm::unlock_owner_word(h.hot_lock);
      return;
    }
    if (hot.waits.load(relaxed) < least->waits.load(relaxed)) least = &hot;
  }
  least->seq.fetch_add(1, std::memory_order_acq_rel);  // odd: being written
  least->hash.store(k.hash, relaxed);
  least->len.store(k.len, relaxed);
  std::memcpy(least->key, k.data, k.len);
  least->waits.store(least->waits.load(relaxed) + 1, relaxed);
  least->seq.fetch_add(1, std::memory_order_release);
  shm::unlock_owner_word(h.hot_lock);
}

std::string capacity_text(const TableView& t, const Key& k) {
  const std::uint64_t window = std::min<std::uint64_t>(kWindowBuckets, t.all_buckets - k.home) * kSlotsPerBucket;
  return "lock table '" + t.name + "' is full for this key (capacity " + std::to_string(t.capacity) +
         " held keys; all " + std::to_string(window) +
         " entries where the key may live are held): release keys, or recreate the table with a larger capacity";
}

// The slots of bucket `b` whose tag is `tag`, as a mask (bit s: slot s).
// Hand-written with SSE2 (x86-64's baseline) because a loop of eight atomic
// loads and compares, which the compiler does not vectorize, was a sixth of
// an uncontended acquire. For the home bucket only, under its lock: no one
// else writes its tags then (a scribbler's value only makes a slot looked
// at, or skipped and then inserted next to: the general way and the
// entries' own checks cover both).
inline unsigned slots_tagged(const BucketHeader& b, std::uint32_t tag) noexcept {
  static_assert(sizeof(b.tags) == 32 && sizeof(b.tags[0]) == sizeof(std::uint32_t), "8 tags of 4 bytes");
#if defined(__SSE2__)
  const __m128i want = _mm_set1_epi32(static_cast<int>(tag));
  const auto* tags = reinterpret_cast<const __m128i*>(&b.tags[0]);
  const __m128i low = _mm_loadu_si128(tags), high = _mm_loadu_si128(tags + 1);
  return static_cast<unsigned>(_mm_movemask_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(low, want)))) |
         static_cast<unsigned>(_mm_movemask_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(high, want)))) << 4;
#else
  unsigned mask = 0;
  for (std::uint32_t s = 0; s < kSlotsPerBucket; ++s) mask |= (b.tags[s].load(relaxed) == tag ? 1u : 0u) << s;
  return mask;
#endif
}

// The common case, in one pass and inline: the home bucket's lock free at
// once, no key of this home overflowed, the key absent from the home bucket
// and a slot free there. Anything else (a tag that may be the key's, a word
// to validate, a wait) goes the general way, which sees the same and more.
// Picks the slot the key had last if it is free (for a hot key, a line in
// cache), else the first free one: slot 0's line is the bucket header's
// neighbour, which the CPU's adjacent-line prefetch brings along.
__attribute__((always_inline)) inline bool insert_fast(TableView& t, const Key& k, Grant& grant) noexcept {
  BucketHeader& home = t.bucket(k.home);
  const std::uint64_t me = shm::self_owner_word();
  std::uint64_t free = 0;
  if (!home.lock.compare_exchange_strong(free, me, std::memory_order_acquire, relaxed)) [[unlikely]]
    return false;
  int slot = -1;
  for (unsigned tagged = slots_tagged(home, detail::tag_of(k.hash)); tagged != 0; tagged &= tagged - 1) {
    const auto s = static_cast<std::uint32_t>(__builtin_ctz(tagged));
    if (t.entry(k.home, s).word.load(std::memory_order_acquire) != 0) goto general;  // the key, perhaps
    if (slot < 0) slot = static_cast<int>(s);
  }
  if (home.overflow.load(relaxed) != 0) [[unlikely]]
    goto general;
  for (std::uint32_t s = 0; slot < 0 && s < kSlotsPerBucket; ++s) {
    TableEntry& e = t.entry(k.home, s);
    const std::uint64_t w = e.word.load(std::memory_order_acquire);
    if (w == 0) {
      slot = static_cast<int>(s);
    } else if (w != detail::kEntryDamaged &&
               (!shm::names_a_thread(w) || !entry_valid(t, e, k.home) ||
                home.tags[s].load(relaxed) != detail::tag_of(e.hash.load(relaxed)))) {
      goto general;  // damaged or scribbled: the general way isolates it
    }
  }
  if (slot < 0) goto general;
  grant = insert(t, k, k.home, static_cast<std::uint32_t>(slot), 0, me, false);
  shm::unlock_owner_word(home.lock);
  return true;
general:
  shm::unlock_owner_word(home.lock);
  return false;
}

enum class Outcome { granted, busy, failed };

using internal::KeyWaitProgress;

// Drops the waiter record of an acquire, if it has one.
void drop_waiter_record(const TableView& t, KeyWaitProgress& progress) noexcept {
  if (progress.waiter_slot == KeyWaitProgress::kNoWaiterSlot) return;
  unregister_waiter(t, progress.waiter_slot);
  progress.waiter_slot = KeyWaitProgress::kNoWaiterSlot;
}

// Every acquire form: granted (`grant` set), busy (held elsewhere: Wait::none,
// or Wait::until at the deadline), or failed (`error` set). Wait::forever is
// never busy.
//
// `sliced`: this call is one slice of a longer acquire (internal::KeyLockWait),
// and the deadline ends the slice, not the acquire: reaching it counts no
// timeout and keeps the waiter record; `sliced` carries the acquire's state
// to the next slice. Without it, the call is the whole acquire.
Outcome acquire_key(TableView& t, const Key& k, Wait wait, std::uint64_t deadline, Grant& grant, Error& error,
                    KeyWaitProgress* sliced = nullptr) noexcept {
  const std::uint64_t me = shm::self_owner_word();
  KeyWaitProgress whole;
  KeyWaitProgress& progress = sliced != nullptr ? *sliced : whole;
  bool& contended = progress.contended;
  bool& check_owner = progress.check_owner;
  if (wait == Wait::none) check_owner = true;  // try_acquire takes a dead holder's key at once
  std::uint64_t& slice = progress.sleep_ns;
  if (slice == 0) slice = kFirstWaitSliceNs;
  auto count_timeout = [&] {
    if (sliced == nullptr) t.header().counters.timeouts.fetch_add(1, relaxed);
  };
  struct DropWaiterRecord {
    const TableView& t;
    KeyWaitProgress& progress;
    bool whole;
    ~DropWaiterRecord() {
      if (whole) drop_waiter_record(t, progress);  // a slice's record is KeyLockWait's to drop
    }
  } drop{t, progress, sliced == nullptr};

  for (;;) {
    BucketGuard home(t, k.home);
    const std::uint64_t bucket_deadline =
        wait == Wait::forever ? 0 : wait == Wait::until ? deadline : shm::monotonic_ns() + kTryBucketWaitNs;
    if (!home.lock(bucket_deadline)) {
      if (wait == Wait::until) count_timeout();
      return Outcome::busy;
    }
    const std::optional<Slot> found = find_key(t, k);
    bool local = false;  // the entry is ours now (host scope: granted)
    if (!found) [[likely]] {
      // Absent: insert it, held by us, in the home bucket or the first
      // later one of the window with room.
      if (auto s = free_slot(t, k.home)) [[likely]] {
        grant = insert(t, k, k.home, *s, 0, me, contended);
        local = true;
      }
      for (std::uint32_t d = 1; !local && d < kWindowBuckets && k.home + d < t.all_buckets; ++d) {
        const std::uint64_t b = k.home + d;
        if (!may_have_free_slot(t, b)) continue;
        BucketGuard neighbour(t, b);  // after the home lock: buckets are always locked in ascending order
        if (!neighbour.lock(bucket_deadline)) break;
        if (auto s = free_slot(t, b)) {
          grant = insert(t, k, b, *s, d, me, contended);
          local = true;
        }
      }
      if (!local) {
        t.header().counters.full_refusals.fetch_add(1, relaxed);
        error = Error{Errc::capacity, capacity_text(t, k)};
        return Outcome::failed;
      }
    } else if (shm::owner_of(found->word) == detail::kEntryKept) {
      // Cluster scope: kept by colod for this host, no local holder.
      std::uint64_t seen = found->word;
      if (!found->entry->word.compare_exchange_strong(seen, me | (seen & shm::kOwnerFlag), std::memory_order_acq_rel,
                                                      relaxed))
        continue;
      grant = Grant{t.entry_index(found->bucket, found->slot), found->distance, 0, 0, false};
      local = true;
    }
    if (local) {
      if (t.scope != Scope::cluster) return Outcome::granted;
      home.unlock();
      switch (detail::admit_cluster_key(t, grant.index, wait, deadline, grant.owner_died, grant.token, error,
                                        progress.keeper_missing_since, sliced == nullptr)) {
        case detail::Admission::granted: return Outcome::granted;  // counted contended by insert() if it was
        case detail::Admission::busy: return Outcome::busy;
        case detail::Admission::failed: return Outcome::failed;
        case detail::Admission::again: contended = true; continue;
      }
    }
    if (shm::owner_of(found->word) == me) {
      error = Error{Errc::invalid_argument, "lock table '" + t.name + "': this thread already holds the key"};
      return Outcome::failed;
    }
    if (check_owner && !shm::owner_alive(found->word)) {
      auto taken = take_over(t, k, *found, me, contended);
      if (!taken) continue;  // changed under us: look again
      grant = *taken;
      if (t.scope != Scope::cluster) return Outcome::granted;
      home.unlock();
      switch (detail::admit_cluster_key(t, grant.index, wait, deadline, grant.owner_died, grant.token, error,
                                        progress.keeper_missing_since, sliced == nullptr)) {
        case detail::Admission::granted: return Outcome::granted;
        case detail::Admission::busy: return Outcome::busy;
        case detail::Admission::failed: return Outcome::failed;
        case detail::Admission::again: continue;
      }
    }
    if (wait == Wait::none) return Outcome::busy;

    // Held: set the flag that makes its release wake us, then sleep.
    std::uint64_t flagged = found->word | shm::kOwnerFlag;
    if (flagged != found->word) {
      std::uint64_t seen = found->word;
      if (!found->entry->word.compare_exchange_strong(seen, flagged, std::memory_order_acq_rel, relaxed)) continue;
    }
    home.unlock();
    if (progress.waiter_slot == KeyWaitProgress::kNoWaiterSlot) progress.waiter_slot = register_waiter(t, k.hash);
    if (!contended) {
      contended = true;
      record_contention(t, k);
    }
    const std::uint64_t now = shm::monotonic_ns();
    std::uint64_t sleep = slice;
    if (wait == Wait::until) {
      if (now >= deadline) {
        count_timeout();
        return Outcome::busy;
      }
      sleep = std::min(sleep, deadline - now);
    }
    shm::futex_wait_low_half(found->entry->word, static_cast<std::uint32_t>(flagged), static_cast<std::int64_t>(sleep));
    // A whole slice without a release: the holder may be dead; look.
    if (shm::monotonic_ns() - now >= sleep) {
      check_owner = true;
      slice = std::min(slice * 2, kLongestWaitSliceNs);
    } else {
      check_owner = false;
      slice = kFirstWaitSliceNs;
    }
  }
}

// A key handed in by the caller must be 1 .. max_key bytes (and for
// cluster scope, fit in the backend lock's name).
bool key_fits(const TableView& t, std::string_view key) noexcept {
  return !key.empty() && key.size() <= t.max_key && (t.scope != Scope::cluster || validate_cluster_key(key));
}
Error key_size_error(const TableView& t, std::string_view key) {
  if (!key.empty() && key.size() <= t.max_key)
    return Error{Errc::invalid_argument, "lock table '" + t.name + "': " + validate_cluster_key(key).error().message};
  return Error{Errc::invalid_argument, "lock table '" + t.name + "': a key is 1 to " + std::to_string(t.max_key) +
                                           " bytes; this one is " + std::to_string(key.size())};
}
Key key_of(const TableView& t, std::string_view key, std::uint64_t hash) noexcept {
  return Key{key.data(), static_cast<std::uint32_t>(key.size()), hash, t.home_of(hash)};
}
Key key_of(const TableView& t, std::string_view key) noexcept {
  return key_of(t, key, detail::key_hash(t, key.data(), key.size()));
}

// The public forms, the guard made once.
__attribute__((noinline)) Result<LockGuard> blocking_slow(TableView& t, const Key& k) noexcept {
  Grant grant;
  Error error;
  if (acquire_key(t, k, Wait::forever, 0, grant, error) == Outcome::granted) return guard_of(t, grant);
  return error;
}
Result<LockGuard> blocking(TableView& t, const Key& k) noexcept {
  Grant grant;
  if (t.scope != Scope::cluster && insert_fast(t, k, grant)) [[likely]]
    return guard_of(t, grant);
  return blocking_slow(t, k);
}
Result<std::optional<LockGuard>> attempt(TableView& t, const Key& k, Wait wait, std::uint64_t deadline) noexcept {
  Grant grant;
  if (t.scope != Scope::cluster && insert_fast(t, k, grant)) [[likely]]
    return std::optional<LockGuard>(guard_of(t, grant));
  Error error;
  switch (acquire_key(t, k, wait, deadline, grant, error)) {
    case Outcome::granted: return std::optional<LockGuard>(guard_of(t, grant));
    case Outcome::busy: return std::optional<LockGuard>{};
    case Outcome::failed: break;
  }
  return error;
}
std::uint64_t deadline_after(std::chrono::nanoseconds timeout) noexcept {
  return shm::monotonic_ns() + static_cast<std::uint64_t>(std::max<std::int64_t>(0, timeout.count()));
}

}  // namespace

namespace detail {

void release_table_key(TableView& t, std::uint64_t index, std::uint32_t home_distance) noexcept {
  TableEntry& e = t.entry_at(index);
  const std::uint64_t me = shm::self_owner_word();
  std::uint64_t w = e.word.load(relaxed);
  do {
    if (shm::owner_of(w) != me) {
      // Not ours any more: scribbled over (or released from another
      // thread than the holder's, which the API forbids). Leave it.
      t.header().counters.damaged_entries.fetch_add(1, relaxed);
      return;
    }
  } while (t.scope != Scope::cluster && !e.word.compare_exchange_weak(w, 0, std::memory_order_release, relaxed));
  if (t.scope == Scope::cluster) {
    if (!release_cluster_key(t, e, me, w)) return;  // kept: colod frees it with the cluster lock
  } else if (w & shm::kOwnerFlag) {
    shm::futex_wake_all_low_half(e.word);
  }
  if (home_distance != 0) {
    BucketHeader& home = t.bucket(index / kSlotsPerBucket - home_distance);
    std::uint32_t n = home.overflow.load(relaxed);
    while (n != 0 && !home.overflow.compare_exchange_weak(n, n - 1, relaxed)) {
    }
  }
}

}  // namespace detail

// ------------------------------------------------------------------ KeyLock

// The key was checked by LockTable::lock(); its hash is kept.
Key KeyLock::checked() const noexcept { return key_of(*table_, key_, hash_); }

Result<LockGuard> KeyLock::acquire() const noexcept { return blocking(*table_, checked()); }

Result<std::optional<LockGuard>> KeyLock::try_acquire() const noexcept {
  return attempt(*table_, checked(), Wait::none, 0);
}

Result<std::optional<LockGuard>> KeyLock::try_acquire_for(std::chrono::nanoseconds timeout) const noexcept {
  return attempt(*table_, checked(), Wait::until, deadline_after(timeout));
}

KeyStats KeyLock::stats() const noexcept {
  KeyStats out;
  const Key key = checked();
  const TableView& t = *table_;
  {
    BucketGuard home(t, key.home);
    if (!home.lock(shm::monotonic_ns() + kTryBucketWaitNs)) return out;
    if (auto found = find_key(t, key)) {
      TableEntry& e = *found->entry;
      out.held = true;
      out.fencing_token = e.token.load(relaxed);
      out.holder.pid = e.holder_pid.load(relaxed);
      out.holder.tid = shm::owner_tid(found->word);
      const std::uint64_t since = e.acquired_ticks.load(relaxed);
      const std::uint64_t now = shm::ticks();
      out.holder.held_for_exact = since != 0;
      out.holder.held_for_ns = since != 0 && now > since ? shm::ticks_to_ns(now - since) : 0.0;
      out.holder.alive = shm::owner_alive(found->word);
    }
  }
  for (const auto& slot : t.header().waiters) {
    const std::uint32_t pid = slot.pid.load(relaxed);
    if (pid != 0 && slot.key_hash.load(relaxed) == hash_ &&
        shm::liveness({pid, slot.start_time.load(relaxed)}) == shm::Liveness::alive)
      ++out.waiters;
  }
  return out;
}

// ---------------------------------------- internal::KeyLockWait (lock_wait.hpp)

namespace internal {

KeyLockWait::~KeyLockWait() { drop_waiter_record(*key_.table_, progress_); }

Result<std::optional<LockGuard>> KeyLockWait::slice(std::uint64_t slice_end_ns) noexcept {
  TableView& t = *key_.table_;
  Grant grant;
  Error error;
  const Outcome outcome = acquire_key(t, key_.checked(), Wait::until, slice_end_ns, grant, error, &progress_);
  if (outcome == Outcome::busy) return std::optional<LockGuard>{};
  drop_waiter_record(t, progress_);  // the wait is over
  if (outcome == Outcome::failed) return error;
  return std::optional<LockGuard>(guard_of(t, grant));
}

void KeyLockWait::timed_out() noexcept { key_.table_->header().counters.timeouts.fetch_add(1, relaxed); }

}  // namespace internal

// ---------------------------------------------------------------- LockTable

LockTable::LockTable(std::unique_ptr<detail::TableView> view) noexcept : view_(std::move(view)) {}
LockTable::LockTable(LockTable&&) noexcept = default;
LockTable& LockTable::operator=(LockTable&&) noexcept = default;
LockTable::~LockTable() = default;

const std::string& LockTable::name() const noexcept { return view_->name; }
Scope LockTable::scope() const noexcept { return view_->scope; }

Result<KeyLock> LockTable::lock(std::string_view key) const {
  if (!key_fits(*view_, key)) return key_size_error(*view_, key);
  return KeyLock(view_.get(), std::string(key), key_of(*view_, key).hash);
}

Result<LockGuard> LockTable::acquire(std::string_view key) const noexcept {
  if (!key_fits(*view_, key)) [[unlikely]] return key_size_error(*view_, key);
  return blocking(*view_, key_of(*view_, key));
}

Result<std::optional<LockGuard>> LockTable::try_acquire(std::string_view key) const noexcept {
  if (!key_fits(*view_, key)) return key_size_error(*view_, key);
  return attempt(*view_, key_of(*view_, key), Wait::none, 0);
}

Result<std::optional<LockGuard>> LockTable::try_acquire_for(std::string_view key,
                                                            std::chrono::nanoseconds timeout) const noexcept {
  if (!key_fits(*view_, key)) return key_size_error(*view_, key);
  return attempt(*view_, key_of(*view_, key), Wait::until, deadline_after(timeout));
}

LockTableStats LockTable::stats() const noexcept {
  const TableView& t = *view_;
  const auto& h = t.header();
  LockTableStats s;
  s.scope = t.scope;
  s.capacity = t.capacity;
  s.entries = t.all_buckets * kSlotsPerBucket;
  s.max_key_bytes = t.max_key;
  s.bytes_per_entry = t.entry_stride;
  s.contended_grants = h.counters.contended_grants.load(relaxed);
  s.recoveries = h.counters.recoveries.load(relaxed);
  s.timeouts = h.counters.timeouts.load(relaxed);
  s.full_refusals = h.counters.full_refusals.load(relaxed);
  s.damaged_entries = h.counters.damaged_entries.load(relaxed);
  s.bucket_recoveries = h.counters.bucket_recoveries.load(relaxed);
  std::unordered_map<std::uint64_t, bool> alive;  // per holder thread: one /proc read each
  for (std::uint64_t b = 0; b < t.all_buckets; ++b) {
    if (b < t.home_buckets) s.grants += t.bucket(b).epoch.load(relaxed);
    for (std::uint32_t slot = 0; slot < kSlotsPerBucket; ++slot) {
      TableEntry& e = t.entry(b, slot);
      const std::uint64_t w = e.word.load(relaxed);
      if (!detail::entry_live(w)) continue;
      ++s.live_keys;
      if (!shm::names_a_thread(w)) {  // kept for the cluster, no local holder
        ++s.kept_keys;
        continue;
      }
      if (e.home_distance.load(relaxed) != 0) ++s.overflowed_keys;
      auto [it, fresh] = alive.try_emplace(shm::owner_of(w), false);
      if (fresh) it->second = shm::owner_alive(w);
      if (!it->second) ++s.dead_holders;
    }
  }
  for (const auto& slot : h.waiters) {
    const std::uint32_t pid = slot.pid.load(relaxed);
    if (pid != 0 && shm::liveness({pid, slot.start_time.load(relaxed)}) == shm::Liveness::alive) ++s.waiters;
  }
  // Waiters without a slot exist only while every slot holds a live one.
  if (s.waiters == detail::kTableWaiterSlots) s.waiters += h.counters.overflow_waiters.load(relaxed);
  for (const auto& hot : h.hot) {
    const std::uint32_t before = hot.seq.load(std::memory_order_acquire);
    const std::uint64_t waits = hot.waits.load(relaxed);
    const std::uint32_t len = std::min<std::uint32_t>(hot.len.load(relaxed), detail::kMaxKeyBytes);
    if ((before & 1) != 0 || waits == 0 || len == 0) continue;
    std::string key(hot.key, len);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (hot.seq.load(relaxed) != before) continue;  // rewritten while we copied
    s.most_contended.push_back({std::move(key), waits});
  }
  std::sort(s.most_contended.begin(), s.most_contended.end(),
            [](const ContendedKey& a, const ContendedKey& b) { return a.waits > b.waits; });
  return s;
}

}  // namespace colo
