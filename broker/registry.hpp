// broker/registry.hpp — the namespace's table of objects (private to libcolo).
//
// Body of the SegmentKind::registry segment /dev/shm/colo.<ns>.registry.
// Member order is part of the format: change it only with kRegistryLayoutVersion.
//
//   0                                                               64
//   +---------------------------------------------------------------+
//   | robust mutex (serialises create/remove/gc) | padding          |
//   +---------------------------------------------------------------+ 64
//   | layout version | capacity | count | doorbell | generation | … |
//   +---------------------------------------------------------------+ 128
//   | entry 0 (384 B): state | kind | scope | creator pid |         |
//   |   creator start | created ns | params[4] | name[256] | rsvd  |
//   | entry 1 …                                                     |
//   | … entry kRegistryCapacity-1                                   |
//   +---------------------------------------------------------------+
//
// Entries are written under the mutex: state = writing, fields, then
// state = used (release). A writer that dies mid-entry leaves `writing`,
// which the next mutex holder (told by EOWNERDEAD) clears. Readers that do not
// take the mutex (tools) skip anything not `used`.
//
// The doorbell is the namespace's colod's one futex: bumped (and woken) when
// the registry changes and when a cluster-scope lock or table key wants
// colod's attention (a first request). colod sleeps on it between timers, so
// that its cost follows the locks in use, not every lock there is. It was
// `reserved` (zero) before, so the layout version did not change.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "colo/error.hpp"
#include "robust_mutex.hpp"
#include "segment.hpp"

namespace colo::detail {

inline constexpr std::uint32_t kRegistryLayoutVersion = 1;
inline constexpr std::uint32_t kRegistryCapacity = 1024;

enum class EntryState : std::uint32_t { free = 0, writing = 1, used = 2 };

struct RegistryEntry {
  std::atomic<std::uint32_t> state;  // EntryState
  std::uint32_t kind;                // shm::SegmentKind
  std::uint32_t scope;               // colo::Scope
  std::uint32_t creator_pid;
  std::uint64_t creator_start_time;
  std::uint64_t created_realtime_ns;
  std::uint64_t params[4];           // kind-specific creation parameters (none for locks)
  char name[shm::kObjectNameCapacity];
  std::uint8_t reserved[64];
};
static_assert(sizeof(RegistryEntry) == 384, "a registry entry is 6 cache lines");

struct RegistryRecord {
  shm::RobustMutex mutex;
  std::uint8_t pad0[shm::kCacheLine - sizeof(shm::RobustMutex)];
  std::uint32_t layout_version;
  std::uint32_t capacity;
  std::atomic<std::uint32_t> count;
  std::atomic<std::uint32_t> doorbell;    // futex: see above
  std::atomic<std::uint64_t> generation;  // bumped on every change
  std::uint8_t reserved1[40];
  RegistryEntry entries[kRegistryCapacity];
};
static_assert(offsetof(RegistryRecord, layout_version) == 64, "registry metadata starts at byte 64");
static_assert(offsetof(RegistryRecord, entries) == 128, "entries start at byte 128");

// A copy of a used entry, safe to keep.
struct EntrySnapshot {
  std::string name;
  shm::SegmentKind kind{};
  std::uint32_t scope = 0;
  shm::ProcessRef creator;
  std::uint64_t created_realtime_ns = 0;
  std::uint64_t params[4] = {};
};

class Registry {
 public:
  // `name`: the registry's segment name (NamespaceFiles::registry()).
  static Result<std::unique_ptr<Registry>> open_or_create(const std::string& name, const shm::Permissions& permissions,
                                                          std::chrono::milliseconds ready_timeout);

  // How long lock() waits for the mutex before it gives up with timed_out.
  static constexpr std::uint64_t kLockTimeoutNs = 5'000'000'000;

  // Holds the registry mutex for its lifetime; all mutations go through it.
  class Locked {
   public:
    RegistryEntry* find(std::string_view name) noexcept;
    Result<void> add(std::string_view name, shm::SegmentKind kind, std::uint32_t scope, const std::uint64_t (&params)[4]);
    void erase(RegistryEntry* entry) noexcept;
    std::vector<EntrySnapshot> snapshot() const;
    Locked(Locked&& other) noexcept : record_(other.record_), generation_at_lock_(other.generation_at_lock_) {
      other.record_ = nullptr;
    }
    Locked(const Locked&) = delete;
    Locked& operator=(const Locked&) = delete;
    ~Locked();

   private:
    friend class Registry;
    explicit Locked(RegistryRecord* record) noexcept
        : record_(record), generation_at_lock_(record->generation.load(std::memory_order_relaxed)) {}
    RegistryRecord* record_;
    std::uint64_t generation_at_lock_;  // a change rings the doorbell at unlock
  };
  Result<Locked> lock();

  const std::string& shm_name() const noexcept { return segment_.shm_name(); }
  // Bumped on every create, remove and repair: a cheap "did anything change".
  std::uint64_t generation() const noexcept {
    return reinterpret_cast<const RegistryRecord*>(segment_.body())->generation.load(std::memory_order_acquire);
  }
  // The doorbell (see the layout): ring() bumps it and wakes its sleepers.
  std::atomic<std::uint32_t>& doorbell() noexcept { return record().doorbell; }
  void ring() noexcept;

 private:
  explicit Registry(shm::Segment segment) : segment_(std::move(segment)) {}
  RegistryRecord& record() noexcept { return *reinterpret_cast<RegistryRecord*>(segment_.body()); }
  shm::Segment segment_;
};

EntrySnapshot snapshot_of(const RegistryEntry& entry);

}  // namespace colo::detail
