// broker/lock_table_view.hpp — a process's view of a lock table (private to
// libcolo and the tests): the mapping and the geometry, read and checked
// once at open, so that nothing written later into the segment can move an
// index out of bounds.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "colo/error.hpp"
#include "colo/lock_table.hpp"
#include "lock_table_layout.hpp"
#include "mapped_object.hpp"

namespace colo::detail {

class Registry;

struct TableView {
  std::string name;
  std::unique_ptr<MappedObject> mapping;
  std::byte* body = nullptr;
  Scope scope = Scope::host;
  std::uint64_t capacity = 0;
  std::uint64_t home_buckets = 0;
  std::uint64_t all_buckets = 0;  // homes + the overflow tail
  std::uint32_t max_key = 0;
  std::uint32_t entry_stride = 0;
  std::uint64_t bucket_stride = 0;
  std::uint64_t seed = 0;
  std::shared_ptr<Registry> registry;  // cluster scope: its doorbell calls colod

  TableHeader& header() const noexcept { return *reinterpret_cast<TableHeader*>(body); }
  BucketHeader& bucket(std::uint64_t b) const noexcept {
    return *reinterpret_cast<BucketHeader*>(body + kBucketsOffset + b * bucket_stride);
  }
  TableEntry& entry(std::uint64_t b, std::uint32_t slot) const noexcept {
    return *reinterpret_cast<TableEntry*>(body + kBucketsOffset + b * bucket_stride + sizeof(BucketHeader) +
                                          std::uint64_t{slot} * entry_stride);
  }
  std::uint64_t entry_index(std::uint64_t b, std::uint32_t slot) const noexcept { return b * kSlotsPerBucket + slot; }
  TableEntry& entry_at(std::uint64_t index) const noexcept {
    return entry(index / kSlotsPerBucket, static_cast<std::uint32_t>(index % kSlotsPerBucket));
  }
  // The key's bytes: max_key of them from the state line on.
  char* key_of(TableEntry& e) const noexcept { return reinterpret_cast<char*>(&e) + kKeyOffset; }
  // Cluster scope: the entry's last line.
  ClusterLine& cluster_line_of(TableEntry& e) const noexcept {
    return *reinterpret_cast<ClusterLine*>(reinterpret_cast<std::byte*>(&e) + entry_stride - 64);
  }
  // hash x home_buckets / 2^64: the high bits of the hash pick the home
  // (the tag is made of its low bits), with no division.
  std::uint64_t home_of(std::uint64_t hash) const noexcept {
    __extension__ typedef unsigned __int128 u128;
    return static_cast<std::uint64_t>((static_cast<u128>(hash) * home_buckets) >> 64);
  }
};

// Validates what the opener asked for (creation only): scope, capacity, key size.
Result<void> check_table_options(std::string_view name, const LockTableOptions& options);
// Writes the geometry of a new table into its zeroed body (the creator, before publish).
Result<void> init_table(shm::Segment& segment, const LockTableOptions& options);
// Reads and checks the geometry of an opened table; the view keeps the mapping.
Result<std::unique_ptr<TableView>> open_table(std::string_view name, std::unique_ptr<MappedObject> mapping);

// A word that holds a key: held by a thread, or kept (cluster scope).
inline bool entry_live(std::uint64_t word) noexcept {
  return (word & 0xffff'fffe) != 0 || (word & ~std::uint64_t{1}) == kEntryKept;
}

enum class TableWait { none, until, forever };

// Cluster scope (lock_table_cluster.cpp). The acquirer holds entry `index`
// locally (its word names the calling thread); admission waits until this
// host holds the key's cluster lock and makes the grant's token, or gives
// the entry back (kept, or freed) and says why not. `keeper_missing_since`
// carries the grace for a missing colod across calls of one acquire (0 at
// its start); `count_timeouts` false: the deadline ends a slice of a longer
// acquire (internal::KeyLockWait), not the acquire.
enum class Admission { granted, busy, failed, again };
Admission admit_cluster_key(TableView& t, std::uint64_t index, TableWait wait, std::uint64_t deadline,
                            bool& owner_died, std::uint64_t& token, Error& error,
                            std::uint64_t& keeper_missing_since, bool count_timeouts) noexcept;
// A new key's cluster line (the inserter, before publishing the entry).
void reset_cluster_line(TableView& t, TableEntry& e) noexcept;
// Cluster scope release: kept while the host holds or wants the key's
// cluster lock, else freed. True if the entry was freed.
bool release_cluster_key(TableView& t, TableEntry& e, std::uint64_t me, std::uint64_t word) noexcept;
// LockGuard::lease_lost() for a key.
bool table_lease_lost(const TableView& t, std::uint64_t index, std::uint64_t token) noexcept;

// The tag a slot holds for a key of this hash: never 0 (0 = never used).
inline std::uint32_t tag_of(std::uint64_t hash) noexcept { return static_cast<std::uint32_t>(hash) | 1; }

// The key's hash in this table.
std::uint64_t key_hash(const TableView& table, const void* key, std::size_t len) noexcept;

// Releases the grant of entry `index` (LockGuard::unlock). `home_distance`:
// the entry's bucket minus the key's home (0 for most keys).
void release_table_key(TableView& table, std::uint64_t index, std::uint32_t home_distance) noexcept;

}  // namespace colo::detail
