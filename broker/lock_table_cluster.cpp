// Lock tables of cluster scope: a key's cluster hold through colod.
//
// The protocol of a named cluster lock (lock.cpp's admit_cluster and
// cluster_keeper.cpp), per key, in the key entry's cluster line
// (lock_table_layout.hpp draws it). The entry word plays the local mutex:
// an acquirer holds the entry while it waits for colod, so the other local
// acquirers of the key queue behind it and one process per host waits for
// the backend. Releases keep the entry (kEntryKept) while the host holds or
// wants the cluster lock; colod frees it when it lets the cluster lock go.
//
// ACQUIRER (holding the entry)                 COLOD (ClusterTableKeeper)
//   held, lease valid, budget left:              take_requests(): entry indexes
//     token = epoch << 20 | ++local_grants       key_at(i): a hold if requested
//   none/lost: CAS -> requested, signal,         grant_cluster: CAS requested -> held
//     post the entry in a request slot,          idle: take the kept entry, release
//     ring the namespace doorbell                  the backend lock, free the entry
//   requested: sleep on the line's signal        budget: held -> yielding, wait for
//     (20 ms slices: re-post, check colod)         the entry, release, free it
//   yielding: give the entry back (kept),        lost: CAS held -> lost
//     wait for the state to change, again
#include <algorithm>
#include <cstring>

#include "clock.hpp"
#include "colo/internal/cluster_keeper.hpp"
#include "futex.hpp"
#include "lock_table_view.hpp"
#include "owner_word.hpp"
#include "process.hpp"
#include "registry.hpp"

namespace colo {

namespace detail {

// A Node's registry, for its doorbell.
struct NodeAccess {
  static Registry& registry(const Node& node) noexcept { return *node.registry_; }
};

namespace {

constexpr auto relaxed = std::memory_order_relaxed;
// As for named cluster locks (lock.cpp): how long an acquirer waits for a
// live colod before it says none serves the namespace, and how often it
// looks again while it waits.
constexpr std::uint64_t kKeeperGraceNs = 5'000'000'000;
constexpr std::uint64_t kClusterWaitSliceNs = 20'000'000;

constexpr std::uint64_t state_word(std::uint32_t incarnation, LeaseState state) noexcept {
  return std::uint64_t{incarnation} << 32 | static_cast<std::uint32_t>(state);
}
std::uint32_t incarnation_of(std::uint64_t word) noexcept { return static_cast<std::uint32_t>(word >> 32); }
LeaseState lease_of(std::uint64_t word) noexcept { return static_cast<LeaseState>(static_cast<std::uint32_t>(word)); }

void bump(ClusterLine& c) noexcept {
  c.signal.fetch_add(1, std::memory_order_acq_rel);
  shm::futex_wake_all(c.signal);
}

bool keeper_alive(const TableView& t) noexcept {
  const auto& k = t.header().cluster;
  const std::uint32_t pid = k.keeper_pid.load(std::memory_order_acquire);
  return pid != 0 && shm::liveness({pid, k.keeper_start_time.load(relaxed)}) == shm::Liveness::alive;
}

// Tells colod that entry `index` wants its key's cluster lock.
void post_request(TableView& t, std::uint64_t index) noexcept {
  for (auto& slot : t.header().requests) {
    std::uint64_t free = 0;
    if (slot.compare_exchange_strong(free, index + 1, std::memory_order_acq_rel, relaxed)) break;
  }
  // All slots taken: colod drains them at the ring; this acquirer posts
  // again at its next slice.
  if (t.registry) t.registry->ring();
}

// Gives the locally held entry back: kept while the host holds or wants the
// cluster lock, else freed. Local waiters are woken either way.
bool give_back(TableView& t, TableEntry& e, std::uint64_t me) noexcept {
  std::uint64_t w = e.word.load(relaxed);
  return release_cluster_key(t, e, me, w);
}

}  // namespace

void reset_cluster_line(TableView& t, TableEntry& e) noexcept {
  ClusterLine& c = t.cluster_line_of(e);
  const std::uint32_t incarnation = incarnation_of(c.state.load(relaxed)) + 1;
  c.cluster_epoch.store(0, relaxed);
  c.local_grants.store(0, relaxed);
  c.valid_until_ns.store(0, relaxed);
  c.grant_limit.store(0, relaxed);
  c.flags.store(0, relaxed);
  c.state.store(state_word(incarnation, LeaseState::none), std::memory_order_release);
}

bool release_cluster_key(TableView& t, TableEntry& e, std::uint64_t me, std::uint64_t w) noexcept {
  ClusterLine& c = t.cluster_line_of(e);
  for (;;) {
    if (shm::owner_of(w) != me) {
      t.header().counters.damaged_entries.fetch_add(1, relaxed);
      return false;
    }
    const LeaseState state = lease_of(c.state.load(std::memory_order_acquire));
    const bool keep = state == LeaseState::requested || state == LeaseState::held || state == LeaseState::yielding;
    if (e.word.compare_exchange_weak(w, keep ? kEntryKept : 0, std::memory_order_release, relaxed)) {
      if (w & shm::kOwnerFlag) shm::futex_wake_all_low_half(e.word);
      return !keep;
    }
  }
}

Admission admit_cluster_key(TableView& t, std::uint64_t index, TableWait wait, std::uint64_t deadline,
                            bool& owner_died, std::uint64_t& token, Error& error,
                            std::uint64_t& keeper_missing_since, bool count_timeouts) noexcept {
  TableEntry& e = t.entry_at(index);
  ClusterLine& c = t.cluster_line_of(e);
  const std::uint64_t me = shm::self_owner_word();
  if (c.flags.load(relaxed) & kKeyFlagOwnerDiedPending) owner_died = true;
  std::uint64_t next_post = 0;
  for (;;) {
    const std::uint32_t seen = c.signal.load(std::memory_order_acquire);
    std::uint64_t word = c.state.load(std::memory_order_acquire);
    const std::uint64_t now = shm::monotonic_ns();
    switch (lease_of(word)) {
      case LeaseState::held: {
        const std::uint64_t local = c.local_grants.load(relaxed);
        const std::uint64_t epoch = c.cluster_epoch.load(std::memory_order_acquire);
        if (now < c.valid_until_ns.load(std::memory_order_acquire) &&
            local < std::min<std::uint64_t>(c.grant_limit.load(relaxed), internal::kMaxLocalGrants) && epoch != 0 &&
            epoch < internal::kMaxClusterEpoch) {
          c.local_grants.store(local + 1, relaxed);  // we hold the entry: the only writer
          c.flags.fetch_and(~kKeyFlagOwnerDiedPending, relaxed);
          token = epoch << internal::kLocalGrantBits | (local + 1);
          return Admission::granted;
        }
        break;  // run out, or the budget spent: colod renews or yields
      }
      case LeaseState::yielding: {
        // colod needs the entry to give the cluster lock up: hand it over,
        // wait for the state to move on, then queue again.
        if (owner_died) c.flags.fetch_or(kKeyFlagOwnerDiedPending, relaxed);
        give_back(t, e, me);
        while (lease_of(c.state.load(std::memory_order_acquire)) == LeaseState::yielding) {
          const std::uint64_t at = shm::monotonic_ns();
          if (wait == TableWait::none || (wait == TableWait::until && at >= deadline)) {
            if (wait == TableWait::until && count_timeouts) t.header().counters.timeouts.fetch_add(1, relaxed);
            return Admission::busy;
          }
          std::uint64_t slice = kClusterWaitSliceNs;
          if (wait == TableWait::until) slice = std::min(slice, deadline - at);
          shm::futex_wait(c.signal, c.signal.load(std::memory_order_acquire), static_cast<std::int64_t>(slice));
        }
        return Admission::again;
      }
      case LeaseState::requested:
        if (now >= next_post) {  // again each slice: a request may have been lost
          post_request(t, index);
          next_post = now + kClusterWaitSliceNs;
        }
        break;
      default: {  // none, lost, or not a state (written by something else): ask colod
        if (c.state.compare_exchange_strong(word, state_word(incarnation_of(word), LeaseState::requested),
                                            std::memory_order_acq_rel)) {
          bump(c);
          post_request(t, index);
          next_post = now + kClusterWaitSliceNs;
        }
        continue;
      }
    }
    if (wait == TableWait::none || (wait == TableWait::until && now >= deadline)) {
      if (wait == TableWait::until && count_timeouts) t.header().counters.timeouts.fetch_add(1, relaxed);
      if (owner_died) c.flags.fetch_or(kKeyFlagOwnerDiedPending, relaxed);
      give_back(t, e, me);  // requested: kept, colod takes it from here
      return Admission::busy;
    }
    if (keeper_alive(t)) {
      keeper_missing_since = 0;
    } else if (keeper_missing_since == 0) {
      keeper_missing_since = now;
    } else if (now - keeper_missing_since >= kKeeperGraceNs) {
      // Nobody will answer: take the request back and free the key.
      word = c.state.load(std::memory_order_acquire);
      if (lease_of(word) == LeaseState::requested)
        c.state.compare_exchange_strong(word, state_word(incarnation_of(word), LeaseState::none),
                                        std::memory_order_acq_rel);
      if (owner_died) c.flags.fetch_or(kKeyFlagOwnerDiedPending, relaxed);
      give_back(t, e, me);
      error = Error{Errc::not_ready, "lock table '" + t.name +
                                         "': no colod serves this namespace's cluster locks (start colod with a "
                                         "[[lock_backend]] for it, or check that it runs)"};
      return Admission::failed;
    }
    std::uint64_t slice = kClusterWaitSliceNs;
    if (wait == TableWait::until) slice = std::min(slice, deadline - now);
    shm::futex_wait(c.signal, seen, static_cast<std::int64_t>(slice));
  }
}

bool table_lease_lost(const TableView& t, std::uint64_t index, std::uint64_t token) noexcept {
  ClusterLine& c = t.cluster_line_of(t.entry_at(index));
  const LeaseState state = lease_of(c.state.load(std::memory_order_acquire));
  if (state != LeaseState::held && state != LeaseState::yielding) return true;
  if (c.cluster_epoch.load(std::memory_order_acquire) != token >> internal::kLocalGrantBits) return true;
  return shm::monotonic_ns() >= c.valid_until_ns.load(std::memory_order_acquire);
}

}  // namespace detail

// ------------------------------------------------------------ colod's side

namespace internal {
namespace {

using detail::ClusterLine;
using detail::TableEntry;
using detail::TableView;
using detail::incarnation_of;
using detail::lease_of;
using detail::state_word;
constexpr auto relaxed = std::memory_order_relaxed;

// colod's side of one key: entry `index` while it holds incarnation
// `incarnation` of the key.
class TableKeyHold final : public ClusterHold {
 public:
  TableKeyHold(TableView& t, std::uint64_t index, std::uint32_t incarnation, std::string backend_name)
      : t_(t), index_(index), incarnation_(incarnation), backend_name_(std::move(backend_name)) {}
  ~TableKeyHold() override = default;

  const std::string& backend_name() const noexcept override { return backend_name_; }

  LeaseState state() const noexcept override {
    const std::uint64_t word = line().state.load(std::memory_order_acquire);
    return incarnation_of(word) == incarnation_ ? lease_of(word) : LeaseState::invalid;
  }

  bool grant_cluster(std::uint64_t epoch, std::uint64_t valid_until_ns, std::uint32_t grant_limit) noexcept override {
    ClusterLine& c = line();
    // Published before the state: an acquirer that sees held reads these.
    c.local_grants.store(0, relaxed);
    c.grant_limit.store(grant_limit, relaxed);
    c.valid_until_ns.store(valid_until_ns, std::memory_order_release);
    c.cluster_epoch.store(epoch, std::memory_order_release);
    return move(LeaseState::requested, LeaseState::held);
  }

  void extend(std::uint64_t valid_until_ns) noexcept override {
    if (state() == LeaseState::held || state() == LeaseState::yielding)
      line().valid_until_ns.store(valid_until_ns, std::memory_order_release);
  }

  void mark_lost() noexcept override {
    ClusterLine& c = line();
    c.valid_until_ns.store(0, std::memory_order_release);
    if (move(LeaseState::held, LeaseState::lost) || move(LeaseState::yielding, LeaseState::lost))
      t_.header().cluster.lease_losses.fetch_add(1, relaxed);
    free_if_unused();
  }

  std::uint64_t local_grants() const noexcept override { return line().local_grants.load(relaxed); }

  bool has_local_holder() const noexcept override {
    const std::uint64_t w = entry().word.load(relaxed);
    // A dead holder does not count: colod then takes the entry (owner died)
    // and lets the cluster lock go rather than keep it for nobody.
    return shm::names_a_thread(w) && shm::owner_of(w) != mine() && shm::owner_alive(w);
  }

  bool has_local_waiters() const noexcept override {
    const std::uint64_t hash = entry().hash.load(relaxed);
    const auto& h = t_.header();
    if (h.counters.overflow_waiters.load(relaxed) != 0) return true;
    for (const auto& slot : h.waiters) {
      const std::uint32_t pid = slot.pid.load(relaxed);
      if (pid != 0 && slot.key_hash.load(relaxed) == hash &&
          shm::liveness({pid, slot.start_time.load(relaxed)}) == shm::Liveness::alive)
        return true;
    }
    return false;
  }

  bool try_take_local_mutex() noexcept override {
    if (state() == LeaseState::invalid) return false;
    TableEntry& e = entry();
    std::uint64_t w = e.word.load(std::memory_order_acquire);
    const bool kept = shm::owner_of(w) == detail::kEntryKept;
    const bool dead = shm::names_a_thread(w) && shm::owner_of(w) != mine() && !shm::owner_alive(w);
    if (shm::owner_of(w) == mine()) return true;
    if (!kept && !dead) return false;
    if (!e.word.compare_exchange_strong(w, mine() | (w & shm::kOwnerFlag), std::memory_order_acq_rel, relaxed))
      return false;
    // A user holder died: the next grant is told, even though colod took it.
    if (dead) line().flags.fetch_or(detail::kKeyFlagOwnerDiedPending, relaxed);
    return true;
  }

  void begin_yield() noexcept override { move(LeaseState::held, LeaseState::yielding); }

  bool take_local_mutex(std::uint64_t deadline_ns) noexcept override {
    for (;;) {
      if (try_take_local_mutex()) return true;
      const std::uint64_t now = shm::monotonic_ns();
      if (now >= deadline_ns || state() == LeaseState::invalid) return false;
      const std::uint64_t w = entry().word.load(std::memory_order_acquire);
      // The holder's release changes the word; 1 ms slices to see a death.
      shm::futex_wait_low_half(entry().word, static_cast<std::uint32_t>(w),
                               static_cast<std::int64_t>(std::min<std::uint64_t>(deadline_ns - now, 1'000'000)));
    }
  }

  void finish_release(LeaseState next) noexcept override {
    ClusterLine& c = line();
    c.cluster_epoch.store(0, std::memory_order_release);
    c.valid_until_ns.store(0, std::memory_order_release);
    c.local_grants.store(0, relaxed);
    std::uint64_t word = c.state.load(std::memory_order_acquire);
    if (incarnation_of(word) == incarnation_)
      c.state.compare_exchange_strong(word, state_word(incarnation_, next), std::memory_order_acq_rel);
    detail::bump(c);
    free_entry();
  }

  void step_down() noexcept override {
    const LeaseState s = state();
    if (s == LeaseState::held || s == LeaseState::yielding) mark_lost();
  }

 private:
  TableEntry& entry() const noexcept { return t_.entry_at(index_); }
  ClusterLine& line() const noexcept { return t_.cluster_line_of(entry()); }
  static std::uint64_t mine() noexcept { return shm::self_owner_word(); }

  // CAS of the state, for this incarnation only; signals a change.
  bool move(LeaseState from, LeaseState to) noexcept {
    std::uint64_t expected = state_word(incarnation_, from);
    if (!line().state.compare_exchange_strong(expected, state_word(incarnation_, to), std::memory_order_acq_rel))
      return false;
    detail::bump(line());
    return true;
  }

  // The entry colod holds (or a kept one) leaves the table; local waiters
  // are woken and insert the key again.
  void free_entry() noexcept {
    TableEntry& e = entry();
    std::uint64_t w = e.word.load(std::memory_order_acquire);
    for (;;) {
      const std::uint64_t owner = shm::owner_of(w);
      if (owner != mine() && owner != detail::kEntryKept) return;  // not ours to free
      if (e.word.compare_exchange_weak(w, 0, std::memory_order_release, relaxed)) break;
    }
    if (w & shm::kOwnerFlag) shm::futex_wake_all_low_half(e.word);
    const std::uint32_t distance = e.home_distance.load(relaxed);
    if (distance != 0 && distance < detail::kWindowBuckets && index_ / detail::kSlotsPerBucket >= distance) {
      auto& home = t_.bucket(index_ / detail::kSlotsPerBucket - distance);
      std::uint32_t n = home.overflow.load(relaxed);
      while (n != 0 && !home.overflow.compare_exchange_weak(n, n - 1, relaxed)) {
      }
    }
  }

  // After a loss: a kept entry nobody holds leaves the table (a later
  // acquirer of the key asks again).
  void free_if_unused() noexcept {
    if (shm::owner_of(entry().word.load(std::memory_order_acquire)) == detail::kEntryKept) free_entry();
  }

  TableView& t_;
  std::uint64_t index_;
  std::uint32_t incarnation_;
  std::string backend_name_;
};

}  // namespace

detail::TableView& ClusterTableKeeper::view() const noexcept { return *table_.view_; }

Result<ClusterTableKeeper> ClusterTableKeeper::adopt(Node& node, std::string_view table) {
  auto opened = node.lock_table(table, OpenMode::open);
  if (!opened) return std::move(opened).error();
  if (opened->scope() != Scope::cluster)
    return Error{Errc::invalid_argument, "lock table '" + std::string(table) + "' is not of cluster scope"};
  ClusterTableKeeper keeper(std::move(opened).value());
  TableView& t = keeper.view();
  auto& k = t.header().cluster;
  const shm::ProcessRef me = shm::self();
  k.keeper_start_time.store(me.start_time, relaxed);
  k.keeper_pid.store(me.pid, std::memory_order_release);
  // What an earlier keeper left: its holds died with its session.
  for (std::uint64_t i = 0; i < t.all_buckets * detail::kSlotsPerBucket; ++i) {
    TableEntry& e = t.entry_at(i);
    const std::uint64_t w = e.word.load(std::memory_order_acquire);
    if (!detail::entry_live(w)) continue;
    const std::uint64_t word = t.cluster_line_of(e).state.load(std::memory_order_acquire);
    TableKeyHold hold(t, i, incarnation_of(word), {});
    switch (lease_of(word)) {
      case LeaseState::held:
      case LeaseState::yielding: hold.mark_lost(); break;
      case LeaseState::requested: keeper.adopted_requests_.push_back(i); break;
      default:
        if (shm::owner_of(w) == detail::kEntryKept) hold.mark_lost();  // frees it
        break;
    }
  }
  return keeper;
}

std::vector<std::uint64_t> ClusterTableKeeper::take_requests() {
  std::vector<std::uint64_t> out = std::move(adopted_requests_);
  adopted_requests_.clear();
  TableView& t = view();
  const std::uint64_t entries = t.all_buckets * detail::kSlotsPerBucket;
  for (auto& slot : t.header().requests) {
    const std::uint64_t posted = slot.exchange(0, std::memory_order_acq_rel);
    if (posted != 0 && posted - 1 < entries) out.push_back(posted - 1);  // bounded: the slot may be scribbled
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::unique_ptr<ClusterHold> ClusterTableKeeper::key_at(std::uint64_t index) {
  TableView& t = view();
  if (index >= t.all_buckets * detail::kSlotsPerBucket) return nullptr;
  TableEntry& e = t.entry_at(index);
  if (!detail::entry_live(e.word.load(std::memory_order_acquire))) return nullptr;
  const std::uint64_t word = t.cluster_line_of(e).state.load(std::memory_order_acquire);
  if (lease_of(word) != LeaseState::requested) return nullptr;
  const std::uint32_t len = e.key_len.load(relaxed);
  if (len == 0 || len > t.max_key) return nullptr;
  std::string key(t.key_of(e), len);
  // The key's bytes as read may be torn by a concurrent free and insert:
  // then the incarnation moved on, and every move of the hold fails.
  if (incarnation_of(t.cluster_line_of(e).state.load(std::memory_order_acquire)) != incarnation_of(word)) return nullptr;
  if (!validate_cluster_key(key)) return nullptr;
  return std::make_unique<TableKeyHold>(t, index, incarnation_of(word), t.name + "/" + key);
}

void ClusterTableKeeper::step_down() noexcept {
  auto& k = view().header().cluster;
  k.keeper_pid.store(0, std::memory_order_release);
}

std::uint32_t doorbell(const Node& node) noexcept {
  return detail::NodeAccess::registry(node).doorbell().load(std::memory_order_acquire);
}

void wait_doorbell(const Node& node, std::uint32_t seen, std::atomic<std::uint32_t>& wake, std::uint32_t wake_seen,
                   std::uint64_t timeout_ns) noexcept {
  shm::futex_wait_either(detail::NodeAccess::registry(node).doorbell(), seen, wake, wake_seen,
                         static_cast<std::int64_t>(timeout_ns));
}

void wake_word(std::atomic<std::uint32_t>& word) noexcept {
  word.fetch_add(1, std::memory_order_acq_rel);
  shm::futex_wake_all(word);
}

void ring_doorbell(const Node& node) noexcept { detail::NodeAccess::registry(node).ring(); }

}  // namespace internal
}  // namespace colo
