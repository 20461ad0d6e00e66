// colo/internal/cluster_keeper.hpp — colod's side of cluster-scope locks
// and lock table keys (internal to colo: not installed; user processes
// never use it).
//
// The protocol is the lock record's cluster line (broker/lock_record.hpp,
// drawn there; docs/cluster-locks.md tells the whole story), and for a
// table key its entry's cluster line (broker/lock_table_layout.hpp), the
// same with the entry word as the local mutex. Acquirers move
// none/lost -> requested under the local mutex; this side moves
// requested -> held, held -> lost, and held -> yielding -> none, the last
// while holding the local mutex itself, so that no local holder is left
// when the backend lock is released. Every change bumps the state signal.
//
// colod sleeps on the namespace's doorbell (wait_doorbell): acquirers ring
// it when they ask for a cluster lock, the registry when it changes.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>
#include <memory>
#include <vector>

#include "colo/lock.hpp"
#include "colo/lock_table.hpp"
#include "colo/node.hpp"

namespace colo::detail {
struct LockRecord;
struct TableView;
}

namespace colo::internal {

// A cluster-wide fencing token is epoch << kLocalGrantBits | local grant.
// colod yields the cluster lock well before 2^20 local grants (its hand-off
// budget is capped below this), so the local part never carries into the
// epoch.
inline constexpr unsigned kLocalGrantBits = 20;
inline constexpr std::uint64_t kMaxLocalGrants = (std::uint64_t{1} << kLocalGrantBits) - 1;
inline constexpr std::uint64_t kMaxClusterEpoch = std::uint64_t{1} << 44;

// colod's side of one cluster hold: a named lock's record or a table key's
// entry. One colod thread at a time drives it.
class ClusterHold {
 public:
  virtual ~ClusterHold() = default;
  // The backend lock's name: the lock's name, or TABLE/KEY.
  virtual const std::string& backend_name() const noexcept = 0;
  // The record's state; for a key, `invalid` once another key took its entry.
  virtual LeaseState state() const noexcept = 0;
  // requested -> held: this host holds the cluster lock under `epoch`
  // (1 <= epoch < 2^44), at least until valid_until_ns; local acquirers get
  // at most `grant_limit` grants under it. False if it was no longer
  // requested (a key: its entry holds another key now).
  virtual bool grant_cluster(std::uint64_t epoch, std::uint64_t valid_until_ns, std::uint32_t grant_limit) noexcept = 0;
  // A renewed lease: no signal (holders read it when they check).
  virtual void extend(std::uint64_t valid_until_ns) noexcept = 0;
  // held or yielding -> lost; holders are told (signal) and it is counted.
  virtual void mark_lost() noexcept = 0;
  // Local grants under the current epoch (the hand-off budget's count).
  virtual std::uint64_t local_grants() const noexcept = 0;
  // A live local process holds it (granted, not yet released).
  virtual bool has_local_holder() const noexcept = 0;
  // A local process waits for it.
  virtual bool has_local_waiters() const noexcept = 0;
  // Idle release: takes the local mutex only if free at once. True: held.
  virtual bool try_take_local_mutex() noexcept = 0;
  // Budget release: held -> yielding (acquirers step aside), then the mutex
  // is waited for in slices with take_local_mutex() (false at the deadline).
  virtual void begin_yield() noexcept = 0;
  virtual bool take_local_mutex(std::uint64_t deadline_ns) noexcept = 0;
  // With the local mutex: the backend lock is released; epoch 0, `next`,
  // signal, unlock (a key's entry is freed). Also ends a yield that found
  // the lease lost.
  virtual void finish_release(LeaseState next = LeaseState::none) noexcept = 0;
  // colod stops: a held lock is marked lost, the keeper cleared.
  virtual void step_down() noexcept = 0;
};

class ClusterLockKeeper final : public ClusterHold {
 public:
  // Opens the cluster-scope lock `name` and records this process as its
  // keeper. A record left held or yielding by an earlier keeper is marked
  // lost (that keeper's backend session died with it), so no local grant
  // outlives the session that backed it.
  static Result<ClusterLockKeeper> adopt(Node& node, std::string_view name);

  const std::string& name() const noexcept { return lock_.name(); }
  const std::string& backend_name() const noexcept override { return lock_.name(); }
  LeaseState state() const noexcept override;
  std::uint32_t signal() const noexcept;
  // Sleeps while the state signal is `seen`, at most timeout_ns.
  void wait(std::uint32_t seen, std::uint64_t timeout_ns) noexcept;

  bool grant_cluster(std::uint64_t epoch, std::uint64_t valid_until_ns,
                     std::uint32_t grant_limit = static_cast<std::uint32_t>(kMaxLocalGrants)) noexcept override;
  void extend(std::uint64_t valid_until_ns) noexcept override;
  void mark_lost() noexcept override;
  std::uint64_t local_grants() const noexcept override;
  bool has_local_holder() const noexcept override;
  bool has_local_waiters() const noexcept override;  // live waiter slot or overflow
  bool try_take_local_mutex() noexcept override;
  void begin_yield() noexcept override;
  bool take_local_mutex(std::uint64_t deadline_ns) noexcept override;
  void finish_release(LeaseState next = LeaseState::none) noexcept override;
  void step_down() noexcept override;

 private:
  explicit ClusterLockKeeper(Lock lock) noexcept : lock_(std::move(lock)) {}
  detail::LockRecord& record() const noexcept { return *lock_.record_; }
  void set_state(LeaseState state) noexcept;
  Lock lock_;
};

// colod's side of a cluster-scope lock table: the requests its acquirers
// post, and a ClusterHold per key in use.
class ClusterTableKeeper {
 public:
  // Opens `table` and records this process as its keeper. Keys an earlier
  // keeper left held or yielding are marked lost (its session is gone);
  // kept keys with no hold are freed; kept keys still requested are
  // returned by the first take_requests().
  static Result<ClusterTableKeeper> adopt(Node& node, std::string_view table);

  const std::string& name() const noexcept { return table_.name(); }
  // Entry indexes whose keys asked for their cluster lock since the last
  // call (each once).
  std::vector<std::uint64_t> take_requests();
  // colod's side of the key in entry `index` if it is requested now, else
  // nullptr (taken back, freed, or another key's).
  std::unique_ptr<ClusterHold> key_at(std::uint64_t index);
  // colod stops: no keeper any more (held keys are stepped down by their holds).
  void step_down() noexcept;

  ClusterTableKeeper(ClusterTableKeeper&&) noexcept = default;
  ClusterTableKeeper& operator=(ClusterTableKeeper&&) noexcept = default;

 private:
  explicit ClusterTableKeeper(LockTable table) noexcept : table_(std::move(table)) {}
  detail::TableView& view() const noexcept;
  LockTable table_;
  std::vector<std::uint64_t> adopted_requests_;
};

// The namespace's doorbell (see the file comment): its value; a sleep while
// it still has it and a process-local word `wake` (colod's own threads bump
// and wake it) still has `wake_seen`, at most timeout_ns; a ring.
std::uint32_t doorbell(const Node& node) noexcept;
void wait_doorbell(const Node& node, std::uint32_t seen, std::atomic<std::uint32_t>& wake, std::uint32_t wake_seen,
                   std::uint64_t timeout_ns) noexcept;
void ring_doorbell(const Node& node) noexcept;
// Bumps a process-local word and wakes its sleepers (wait_doorbell's `wake`).
void wake_word(std::atomic<std::uint32_t>& word) noexcept;

}  // namespace colo::internal
