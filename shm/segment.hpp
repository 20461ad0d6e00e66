// shm/segment.hpp — named shared-memory segments with a validated header.
//
// Every colo object lives in its own shared-memory segment: a file on a
// tmpfs, /dev/shm/colo.<ns>.… by default (what shm_open(3) would make), or
// in a namespace directory the owner chose (NodeOptions::shm_dir). This
// layer creates them exclusively and atomically,
// opens them only after checking owner, mode and size, waits a bounded time
// for a creator to finish, and reclaims segments whose creator died before
// finishing. docs/design.md ("Shared-memory invariants") gives the reasons.
//
// Plain open(2), posix_fallocate(2) and mmap(2), not Boost.Interprocess:
// its shared_memory_object sizes with ftruncate, which reserves no pages
// (a full /dev/shm then raises SIGBUS later, in whoever touches a page), and
// it opens only in /dev/shm, never with O_NOFOLLOW in another directory.
//
// Creation protocol (creator):
//   1. open(O_CREAT|O_EXCL|O_NOFOLLOW, mode) -- exclusive: one creator wins
//   2. fchmod/fchown to the asked mode/group, then posix_fallocate to the
//      final size: every page is reserved now, so a full /dev/shm is an
//      error here (Errc::no_space, the file removed), never a SIGBUS when a
//      page is first touched. The size becomes visible only once all pages
//      are there (tmpfs sets it last).
//   3. write the header (state = creating), then the body (caller)
//   4. publish(): state.store(ready, release)
// A read-write mapping of up to 64 MiB is populated at once (MAP_POPULATE):
// the data path's first lap takes no page faults (segment.cpp, map_file,
// says why, and why larger ones stay lazy).
// Opening protocol (opener):
//   1. open(O_RDWR|O_NOFOLLOW); fstat: a regular file, owner or allowed group, no "other" bits,
//      size >= header and <= kMaxSegmentSize          else permission/corrupt
//   2. map; read each header field once; check magic, layout version, kind,
//      total size == file size, name                    else corrupt
//   3. state.load(acquire) == ready?  yes: done.  Otherwise poll until the
//      ready timeout; if the creator (pid + start time + boot id) is dead,
//      fail with creator_died (the caller may reclaim and create again).
// Reclaim protocol: the first process to CAS `reclaimer` from 0 to its pid
// unlinks the name; everyone else closes and retries open. Since only the
// CAS winner of an inode unlinks, a reclaim never removes a newer segment.
#pragma once

#include <sys/types.h>  // mode_t, gid_t, uid_t

#include <atomic>    // header state words
#include <chrono>    // ready timeout
#include <cstddef>   // std::byte, size_t
#include <cstdint>   // fixed-width header fields
#include <optional>  // group
#include <string>
#include <string_view>

#include "colo/error.hpp"
#include "process.hpp"

namespace colo::shm {

inline constexpr std::size_t kCacheLine = 64;  // fixed: part of the format
inline constexpr std::uint64_t kSegmentMagic = 0x0147'4553'4f4c'4f43;  // "COLOSEG\x01" little-endian
inline constexpr std::uint32_t kSegmentLayoutVersion = 1;
inline constexpr std::size_t kMaxSegmentSize = std::size_t{1} << 40;
inline constexpr std::size_t kObjectNameCapacity = 256;  // 200-byte names + NUL, padded

// Where a segment's file is. A segment is named by `shm_name`: either a file
// name in /dev/shm ("colo.ns.registry", what shm_open(3) takes without its
// leading '/'), or the absolute path of a file in another directory on a
// tmpfs (a namespace directory: NodeOptions::shm_dir).
inline constexpr const char* kDefaultShmDir = "/dev/shm";
std::string segment_file(const std::string& shm_name);   // the path: "/dev/shm/colo.ns.registry"
std::string segment_label(const std::string& shm_name);  // in messages: "/colo.ns.registry", or the path

enum class SegmentKind : std::uint32_t {
  registry = 1,
  lock = 2,
  queue = 3,       // a queue's ring (shm/ring.hpp)
  topic = 4,       // a topic's ring
  lock_table = 5,  // a lock table (broker/lock_table_layout.hpp)
};
const char* kind_name(SegmentKind kind) noexcept;

enum class SegmentState : std::uint32_t {
  creating = 1,
  ready = 2,
};

// Segment header, at offset 0 of every segment. 512 bytes; the body follows.
// Member order and sizes are part of the on-disk (on-tmpfs) format: change
// them only together with kSegmentLayoutVersion.
//
//  0               8               16              24              32
//  +---------------+-------+-------+---------------+-------+-------+
//  | magic         |version| kind  | total_size    |crt pid|reserv.|
//  +---------------+-------+-------+---------------+-------+-------+
//  | creator start | boot id (16 bytes)            | created (ns,  |
//  |   (ticks)     |                               |  realtime)    |
//  +-------+-------+---------------+---------------+---------------+  64
//  | state |reclmr | body_offset   | reserved (48 bytes)           |
//  +-------+-------+---------------+-------------------------------+ 128
//  | object name, NUL-terminated, zero-padded (256 bytes)          |
//  +---------------------------------------------------------------+ 384
//  | reserved (128 bytes)                                          |
//  +---------------------------------------------------------------+ 512
//  | body (kind-specific record, see its own header)               |
struct SegmentHeader {
  std::uint64_t magic;
  std::uint32_t layout_version;
  std::uint32_t kind;                  // SegmentKind
  std::uint64_t total_size;            // header + body, bytes; equals the file size
  std::uint32_t creator_pid;
  std::uint32_t reserved0;
  std::uint64_t creator_start_time;    // /proc/<pid>/stat field 22
  std::uint8_t boot_id[16];
  std::uint64_t created_realtime_ns;
  std::atomic<std::uint32_t> state;    // SegmentState; release-stored by publish()
  std::atomic<std::uint32_t> reclaimer;  // pid of the process unlinking an abandoned segment
  std::uint64_t body_offset;           // always sizeof(SegmentHeader) in version 1
  std::uint8_t reserved1[48];
  char object_name[kObjectNameCapacity];
  std::uint8_t reserved2[128];
};
static_assert(sizeof(SegmentHeader) == 512, "the segment header is exactly 512 bytes: body offsets depend on it");
static_assert(offsetof(SegmentHeader, state) == 64, "state starts the second cache line of the header");
static_assert(offsetof(SegmentHeader, object_name) == 128, "the object name starts at byte 128");
static_assert(std::atomic<std::uint32_t>::is_always_lock_free, "header atomics must be lock-free to be shared between processes");

struct Permissions {
  mode_t mode = 0600;              // 0600, or 0660 with a group
  std::optional<gid_t> group;      // chown the segment to this group
};

// What fstat and the header say about a segment, without waiting (for tools).
struct SegmentInfo {
  uid_t owner_uid = 0;
  gid_t owner_gid = 0;
  mode_t mode = 0;
  std::uint64_t file_size = 0;
  bool header_valid = false;       // magic, version, size all check out
  std::string header_problem;      // why not, if !header_valid
  SegmentKind kind{};
  SegmentState state{};
  std::string object_name;
  ProcessRef creator;
  bool creator_alive = false;
  std::uint64_t created_realtime_ns = 0;
};

// An open, mapped segment. Owning handle: move-only; unmaps on destruction
// (the segment itself lives on until unlinked and unmapped by everyone).
class Segment {
 public:
  // Creates `shm_name` exclusively, sized for `body_size` bytes of body, with
  // the header filled and state = creating. The body is zero. The caller
  // initialises it and calls publish(). Every page is reserved: when the
  // file system has no room, Errc::no_space and nothing is left behind.
  static Result<Segment> create(const std::string& shm_name, std::string_view object_name, SegmentKind kind,
                                std::size_t body_size, const Permissions& permissions);

  // Opens an existing segment of the given kind and waits up to
  // `ready_timeout` for it to be ready. Errors: not_found, permission_denied,
  // corrupt, kind_mismatch, not_ready, creator_died.
  static Result<Segment> open(const std::string& shm_name, SegmentKind kind, std::chrono::milliseconds ready_timeout);

  // Reads fstat and header of a segment without waiting, read-only.
  static Result<SegmentInfo> inspect(const std::string& shm_name);

  // Unlinks `shm_name` if its creator died before marking it ready (or never
  // wrote a header and the file is older than `grace`). Returns true if this
  // call removed it, false if it was not abandoned or another process is
  // already reclaiming it.
  static Result<bool> reclaim_if_abandoned(const std::string& shm_name, std::chrono::milliseconds grace);

  // Removes the name; mapped copies stay valid until unmapped.
  static Result<void> unlink(const std::string& shm_name);

  Segment(Segment&& other) noexcept;
  Segment& operator=(Segment&& other) noexcept;
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;
  ~Segment();

  // Marks the segment ready (release store): everything written before is
  // visible to any opener that sees `ready`.
  void publish() noexcept;

  SegmentHeader& header() noexcept { return *reinterpret_cast<SegmentHeader*>(base_); }
  const SegmentHeader& header() const noexcept { return *reinterpret_cast<const SegmentHeader*>(base_); }
  std::byte* body() noexcept { return base_ + sizeof(SegmentHeader); }
  const std::byte* body() const noexcept { return base_ + sizeof(SegmentHeader); }
  std::size_t body_size() const noexcept { return size_ - sizeof(SegmentHeader); }
  const std::string& shm_name() const noexcept { return shm_name_; }

 private:
  Segment(std::string shm_name, std::byte* base, std::size_t size) noexcept
      : shm_name_(std::move(shm_name)), base_(base), size_(size) {}

  std::string shm_name_;
  std::byte* base_ = nullptr;  // the whole file, mapped shared read-write; unmapped by the destructor
  std::size_t size_ = 0;
};

}  // namespace colo::shm
