#include "segment.hpp"

#include <fcntl.h>      // open, posix_fallocate
#include <grp.h>        // getgrgid: group names in messages
#include <pwd.h>        // getpwuid: user names in messages
#include <sys/mman.h>   // mmap, munmap
#include <sys/stat.h>   // fstat, stat
#include <unistd.h>     // close, fchown, getgroups, unlink
#include <time.h>       // nanosleep

#include <cerrno>
#include <cstdio>       // snprintf
#include <cstring>      // memcpy, strerror, strnlen
#include <utility>      // exchange
#include <vector>

#include "clock.hpp"

namespace colo::shm {
namespace {

// A file descriptor closed when it goes out of scope.
class Fd {
 public:
  explicit Fd(int fd) noexcept : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const noexcept { return fd_; }

 private:
  int fd_;
};

// Flags of every open of a segment file: as shm_open(3) (never through a
// symbolic link, not inherited by exec), and never blocking on a FIFO
// planted under a segment's name.
constexpr int kOpenFlags = O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK;

std::string user_name(uid_t uid) {
  const passwd* pw = ::getpwuid(uid);
  std::string out = "uid " + std::to_string(uid);
  if (pw != nullptr) out += " (" + std::string(pw->pw_name) + ")";
  return out;
}

std::string group_name(gid_t gid) {
  const group* gr = ::getgrgid(gid);
  std::string out = "gid " + std::to_string(gid);
  if (gr != nullptr) out += " (" + std::string(gr->gr_name) + ")";
  return out;
}

std::string mode_string(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

bool in_group(gid_t gid) {
  if (gid == ::getegid()) return true;
  int n = ::getgroups(0, nullptr);
  if (n <= 0) return false;
  std::vector<gid_t> groups(static_cast<std::size_t>(n));
  n = ::getgroups(n, groups.data());
  for (int i = 0; i < n; ++i)
    if (groups[static_cast<std::size_t>(i)] == gid) return true;
  return false;
}

Error system_error(Errc code, const std::string& what, int err) {
  return Error{code, what + ": " + std::strerror(err)};
}

// Message for a segment this process may not open, from stat(2) of its file.
Error access_error(const std::string& shm_name, const struct stat& st) {
  return Error{Errc::permission_denied,
               "segment " + segment_label(shm_name) + " was created by " + user_name(st.st_uid) + ", group " +
                   group_name(st.st_gid) + ", with mode " + mode_string(st.st_mode) +
                   "; run as that user, or have it created with a group this user is in (`colo create --group "
                   "GROUP`, NodeOptions::group): remove it first if it exists"};
}

// Owner, mode and size checks made before mapping (opening protocol, step 1).
std::optional<Error> check_file(const std::string& shm_name, const struct stat& st) {
  if ((st.st_mode & 0007) != 0)
    return Error{Errc::permission_denied, "segment " + segment_label(shm_name) + " has mode " + mode_string(st.st_mode) +
                                              ", open to other users; colo never creates such segments, "
                                              "so it refuses to use it (remove it with `colo rm`)"};
  if (st.st_uid != ::geteuid()) {
    const bool group_shared = (st.st_mode & 0060) == 0060 && in_group(st.st_gid);
    if (!group_shared) return access_error(shm_name, st);
  }
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (size < sizeof(SegmentHeader))
    return Error{Errc::corrupt, "segment " + segment_label(shm_name) + " is truncated: " + std::to_string(size) +
                                    " bytes, smaller than the " + std::to_string(sizeof(SegmentHeader)) +
                                    "-byte header; remove it with `colo rm` or `colo gc`"};
  if (size > kMaxSegmentSize)
    return Error{Errc::corrupt, "segment " + segment_label(shm_name) + " is " + std::to_string(size) +
                                    " bytes, larger than any colo segment (1 TiB)"};
  return std::nullopt;
}

// Validates the header fields that never change after creation. Each field
// is read once into a local: shared memory is untrusted.
std::optional<Error> check_header(const std::string& shm_name, const SegmentHeader& h, std::uint64_t file_size) {
  const std::uint32_t version = h.layout_version;
  const std::uint64_t total = h.total_size;
  const std::uint64_t body_offset = h.body_offset;
  if (version != kSegmentLayoutVersion)
    return Error{Errc::corrupt, "segment " + segment_label(shm_name) + " has layout version " + std::to_string(version) +
                                    "; this build of colo reads version " + std::to_string(kSegmentLayoutVersion)};
  if (total != file_size)
    return Error{Errc::corrupt, "segment " + segment_label(shm_name) + " header says " + std::to_string(total) +
                                    " bytes but the file has " + std::to_string(file_size) +
                                    " (truncated or resized); remove it with `colo rm`"};
  if (body_offset != sizeof(SegmentHeader))
    return Error{Errc::corrupt, "segment " + segment_label(shm_name) + " has body offset " + std::to_string(body_offset) +
                                    ", expected " + std::to_string(sizeof(SegmentHeader))};
  if (::strnlen(h.object_name, kObjectNameCapacity) == kObjectNameCapacity)
    return Error{Errc::corrupt, "segment " + segment_label(shm_name) + " has an unterminated object name"};
  return std::nullopt;
}

std::uint64_t load_magic(const SegmentHeader& h) noexcept {
  return std::atomic_ref<const std::uint64_t>(h.magic).load(std::memory_order_acquire);
}

bool creator_alive(const SegmentHeader& h) noexcept {
  if (std::memcmp(h.boot_id, boot_id().data(), sizeof h.boot_id) != 0) return false;  // from another boot
  return liveness(ProcessRef{h.creator_pid, h.creator_start_time}) == Liveness::alive;
}

std::string magic_hex(std::uint64_t magic) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(magic));
  return buf;
}

// An open(2) or mmap(2) failure as an Error; `doing` is "creating",
// "opening" ...
Error file_error(int err, const std::string& shm_name, const char* doing) {
  const std::string label = segment_label(shm_name);
  if (err == ENOENT) return Error{Errc::not_found, "segment " + label + " does not exist"};
  if (err == EEXIST) return Error{Errc::already_exists, "segment " + label + " already exists"};
  if (err == EACCES || err == EPERM) {
    struct stat st{};
    if (::stat(segment_file(shm_name).c_str(), &st) == 0) return access_error(shm_name, st);
    return Error{Errc::permission_denied, std::string(doing) + " segment " + label + ": permission denied"};
  }
  if (err == ELOOP)
    return Error{Errc::corrupt, "segment " + label + " is a symbolic link; colo never makes one, so it refuses "
                                "to follow it (remove it)"};
  return system_error(Errc::system, std::string(doing) + " segment " + label, err);
}

// Opens a segment file (O_RDWR or O_RDONLY) and checks that it is a regular
// file; fills `st`.
Result<int> open_file(const std::string& shm_name, int access, const char* doing, struct stat& st) {
  const int fd = ::open(segment_file(shm_name).c_str(), access | kOpenFlags);
  if (fd < 0) return file_error(errno, shm_name, doing);
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return system_error(Errc::system, "fstat of segment " + segment_label(shm_name), err);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Error{Errc::corrupt, "segment " + segment_label(shm_name) +
                                    " is not a regular file; colo never makes one (remove it)"};
  }
  return fd;
}

// Maps `size` bytes of `fd` from offset 0, shared. A writable mapping (one
// that carries data: a ring, a lock table) of at most kPopulateMaxBytes is
// populated now: every page is in this process's page tables before the
// first message, so the data path takes no page faults on its first lap.
// Measured on a 2-vCPU VM for 64 MiB: 4 ms here at open, against 17 ms of
// faults (16,384 of them, each a stall of the writer or a reader) spread
// over the first lap; `colo bench bridge`'s cells of 200,000 messages
// went from 3.3-3.8 to 3.7-4.9 M msg/s (six alternating pairs). The pages were reserved by the
// creator's posix_fallocate, but tmpfs zeroes each on its first mapping,
// so the first process to map a segment pays for zeroing all of it here:
// for the 1.5 GiB of rings of `colo bench kafka` that was 3-4 s of colod's
// start on that VM (with the page cache full), and its 64-byte mirror cell
// ran at half speed. Larger mappings stay lazy: their first lap faults, a
// page at a time. Read-only mappings (inspection) too.
constexpr std::size_t kPopulateMaxBytes = std::size_t{65} << 20;  // a 64 MiB ring, its header and control block

Result<std::byte*> map_file(int fd, std::size_t size, bool writable, const std::string& shm_name) {
  const int flags = MAP_SHARED | (writable && size <= kPopulateMaxBytes ? MAP_POPULATE : 0);
  void* p = ::mmap(nullptr, size, writable ? PROT_READ | PROT_WRITE : PROT_READ, flags, fd, 0);
  if (p == MAP_FAILED) return system_error(Errc::system, "mapping segment " + segment_label(shm_name), errno);
  return static_cast<std::byte*>(p);
}

// A mapping of part of a file, unmapped when it goes out of scope.
class Mapping {
 public:
  Mapping(std::byte* base, std::size_t size) noexcept : base_(base), size_(size) {}
  ~Mapping() {
    if (base_ != nullptr) ::munmap(base_, size_);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  std::byte* get() const noexcept { return base_; }
  std::byte* release() noexcept { return std::exchange(base_, nullptr); }

 private:
  std::byte* base_;
  std::size_t size_;
};

void sleep_us(long us) noexcept {
  timespec ts{0, us * 1000};
  ::nanosleep(&ts, nullptr);
}

std::uint64_t file_age_ns(const struct stat& st) {
  const auto newest = std::max(st.st_ctim.tv_sec, st.st_mtim.tv_sec);
  const auto now = static_cast<std::int64_t>(realtime_ns() / 1'000'000'000u);
  return now > newest ? static_cast<std::uint64_t>(now - newest) * 1'000'000'000u : 0;
}

}  // namespace

std::string segment_file(const std::string& shm_name) {
  return shm_name.starts_with('/') ? shm_name : std::string(kDefaultShmDir) + "/" + shm_name;
}

std::string segment_label(const std::string& shm_name) { return shm_name.starts_with('/') ? shm_name : "/" + shm_name; }

const char* kind_name(SegmentKind kind) noexcept {
  switch (kind) {
    case SegmentKind::registry: return "registry";
    case SegmentKind::lock: return "lock";
    case SegmentKind::queue: return "queue";
    case SegmentKind::topic: return "topic";
    case SegmentKind::lock_table: return "lock-table";
  }
  return "unknown";
}

Result<Segment> Segment::create(const std::string& shm_name, std::string_view object_name, SegmentKind kind,
                                std::size_t body_size, const Permissions& permissions) {
  const std::string label = segment_label(shm_name);
  if (object_name.size() >= kObjectNameCapacity)
    return Error{Errc::invalid_argument, "object name is " + std::to_string(object_name.size()) + " bytes, too long"};
  if (body_size > kMaxSegmentSize - sizeof(SegmentHeader))
    return Error{Errc::invalid_argument, "segment " + label + ": body of " + std::to_string(body_size) +
                                             " bytes exceeds the 1 TiB limit"};
  if ((permissions.mode & ~mode_t{0660}) != 0 || (permissions.mode & 0600) != 0600)
    return Error{Errc::invalid_argument, "segment mode " + mode_string(permissions.mode) +
                                             " is not allowed: use 0600, or 0660 with a group"};
  const std::size_t total = sizeof(SegmentHeader) + body_size;
  const std::string file = segment_file(shm_name);
  const Fd fd(::open(file.c_str(), O_RDWR | O_CREAT | O_EXCL | kOpenFlags, permissions.mode));
  if (fd.get() < 0) return file_error(errno, shm_name, "creating");
  // From here on, a failure removes what we made: never leave a headerless segment.
  auto fail = [&](Error error) -> Result<Segment> {
    ::unlink(file.c_str());
    return error;
  };
  // fchmod after open: the mode asked for, whatever the umask.
  if (permissions.group && ::fchown(fd.get(), static_cast<uid_t>(-1), *permissions.group) != 0)
    return fail(system_error(Errc::permission_denied,
                             "cannot give segment " + label + " to " + group_name(*permissions.group), errno));
  if (::fchmod(fd.get(), permissions.mode) != 0)
    return fail(system_error(Errc::system, "cannot set the mode of segment " + label, errno));
  // Every page now: on a full tmpfs the first touch of an unbacked page is a
  // SIGBUS in whoever touches it (a user's process, in a library).
  if (const int err = ::posix_fallocate(fd.get(), 0, static_cast<off_t>(total)); err != 0) {
    if (err == ENOSPC) {
      return fail(Error{Errc::no_space, "no room for segment " + label + " (" + std::to_string(total) +
                                            " bytes) in " + file.substr(0, file.rfind('/') + 1) +
                                            ": the file system is full (free space there, remove unused objects "
                                            "with `colo rm`, or give it more room, e.g. docker run --shm-size)"});
    }
    return fail(system_error(Errc::system, "cannot size segment " + label + " to " + std::to_string(total) + " bytes",
                             err));
  }
  auto mapped = map_file(fd.get(), total, true, shm_name);
  if (!mapped) return fail(std::move(mapped).error());
  auto* h = reinterpret_cast<SegmentHeader*>(*mapped);
  const ProcessRef me = self();
  h->layout_version = kSegmentLayoutVersion;
  h->kind = static_cast<std::uint32_t>(kind);
  h->total_size = total;
  h->creator_pid = me.pid;
  h->creator_start_time = me.start_time;
  std::memcpy(h->boot_id, boot_id().data(), sizeof h->boot_id);
  h->created_realtime_ns = realtime_ns();
  h->state.store(static_cast<std::uint32_t>(SegmentState::creating), std::memory_order_relaxed);
  h->body_offset = sizeof(SegmentHeader);
  std::memcpy(h->object_name, object_name.data(), object_name.size());
  // Magic last, with release: an opener that sees it sees the creator's
  // identity, so it can tell "still creating" from "creator died".
  std::atomic_ref<std::uint64_t>(h->magic).store(kSegmentMagic, std::memory_order_release);
  return Segment(shm_name, *mapped, total);
}

Result<Segment> Segment::open(const std::string& shm_name, SegmentKind kind, std::chrono::milliseconds ready_timeout) {
  struct stat st{};
  auto opened = open_file(shm_name, O_RDWR, "opening", st);
  if (!opened) return std::move(opened).error();
  const Fd fd(*opened);
  const std::uint64_t deadline = monotonic_ns() + static_cast<std::uint64_t>(ready_timeout.count()) * 1'000'000u;
  // Size 0: the creator has opened the file but not sized it yet (its
  // posix_fallocate sets the whole size at once). Wait for it, within the bound.
  for (unsigned attempt = 0; st.st_size == 0; ++attempt) {
    if (monotonic_ns() >= deadline)
      return Error{Errc::corrupt, "segment " + segment_label(shm_name) + " is truncated: 0 bytes, still empty after " +
                                      std::to_string(ready_timeout.count()) +
                                      " ms (its creator may have died before sizing it; `colo gc` removes it)"};
    sleep_us(attempt < 10 ? 50 : 1000);
    if (::fstat(fd.get(), &st) != 0)
      return system_error(Errc::system, "fstat of segment " + segment_label(shm_name), errno);
  }
  if (auto problem = check_file(shm_name, st)) return std::move(*problem);
  const auto file_size = static_cast<std::uint64_t>(st.st_size);
  auto mapped = map_file(fd.get(), file_size, true, shm_name);
  if (!mapped) return std::move(mapped).error();
  Mapping mapping(*mapped, file_size);
  const auto& h = *reinterpret_cast<const SegmentHeader*>(mapping.get());

  for (unsigned attempt = 0;; ++attempt) {
    const std::uint64_t magic = load_magic(h);
    if (magic == kSegmentMagic) {
      if (auto problem = check_header(shm_name, h, file_size)) return std::move(*problem);
      const std::uint32_t found_kind = h.kind;
      if (found_kind != static_cast<std::uint32_t>(kind))
        return Error{Errc::kind_mismatch, "object '" + std::string(h.object_name) + "' is a " +
                                              kind_name(static_cast<SegmentKind>(found_kind)) + ", not a " +
                                              kind_name(kind)};
      const std::uint32_t state = h.state.load(std::memory_order_acquire);
      if (state == static_cast<std::uint32_t>(SegmentState::ready))
        return Segment(shm_name, mapping.release(), file_size);
      if (state != static_cast<std::uint32_t>(SegmentState::creating))
        return Error{Errc::corrupt, "segment " + segment_label(shm_name) + " has unknown state " + std::to_string(state)};
      if (!creator_alive(h))
        return Error{Errc::creator_died, "segment " + segment_label(shm_name) + " was being created by pid " +
                                             std::to_string(h.creator_pid) +
                                             ", which died before finishing; `colo gc` removes it, "
                                             "and create-or-open reclaims it"};
    } else if (magic != 0) {
      return Error{Errc::corrupt, "segment " + segment_label(shm_name) + " has magic " + magic_hex(magic) +
                                      ", not a colo segment (or corrupted); remove it with `colo rm`"};
    }
    if (monotonic_ns() >= deadline)
      return Error{Errc::not_ready,
                   "segment " + segment_label(shm_name) + " is not ready after " + std::to_string(ready_timeout.count()) +
                       " ms" + (magic == 0 ? " (no header written: its creator may have died; `colo gc` removes it)"
                                           : " (its creator is alive but has not finished)")};
    sleep_us(attempt < 10 ? 50 : 1000);
  }
}

Result<SegmentInfo> Segment::inspect(const std::string& shm_name) {
  struct stat st{};
  auto opened = open_file(shm_name, O_RDONLY, "inspecting", st);
  if (!opened) return std::move(opened).error();
  const Fd fd(*opened);
  SegmentInfo info;
  info.owner_uid = st.st_uid;
  info.owner_gid = st.st_gid;
  info.mode = st.st_mode & 07777;
  info.file_size = static_cast<std::uint64_t>(st.st_size);
  if (info.file_size < sizeof(SegmentHeader)) {
    info.header_problem = "truncated: " + std::to_string(info.file_size) + " bytes";
    return info;
  }
  // Map the header only: a body may be truncated under us, the header not.
  auto mapped = map_file(fd.get(), sizeof(SegmentHeader), false, shm_name);
  if (!mapped) return std::move(mapped).error();
  const Mapping mapping(*mapped, sizeof(SegmentHeader));
  const auto& h = *reinterpret_cast<const SegmentHeader*>(mapping.get());
  const std::uint64_t magic = load_magic(h);
  if (magic != kSegmentMagic) {
    info.header_problem = magic == 0 ? "no header (creator died before writing it?)" : "bad magic " + magic_hex(magic);
    return info;
  }
  if (auto problem = check_header(shm_name, h, info.file_size)) {
    info.header_problem = problem->message;
    return info;
  }
  info.header_valid = true;
  info.kind = static_cast<SegmentKind>(h.kind);
  info.state = static_cast<SegmentState>(h.state.load(std::memory_order_acquire));
  info.object_name = h.object_name;
  info.creator = ProcessRef{h.creator_pid, h.creator_start_time};
  info.creator_alive = creator_alive(h);
  info.created_realtime_ns = h.created_realtime_ns;
  return info;
}

Result<bool> Segment::reclaim_if_abandoned(const std::string& shm_name, std::chrono::milliseconds grace) {
  struct stat st{};
  auto opened = open_file(shm_name, O_RDWR, "reclaiming", st);
  if (!opened) {
    if (opened.error().code == Errc::not_found) return false;
    return std::move(opened).error();
  }
  const Fd fd(*opened);
  if (st.st_uid != ::geteuid() && !((st.st_mode & 0060) == 0060 && in_group(st.st_gid)))
    return access_error(shm_name, st);
  const bool old_enough = file_age_ns(st) >= static_cast<std::uint64_t>(grace.count()) * 1'000'000u;
  // Only removes what is provably not in use: the name still refers to the
  // inode we examined (a newer segment of the same name is left alone).
  auto unlink_if_same_inode = [&]() -> Result<bool> {
    struct stat now{};
    if (::lstat(segment_file(shm_name).c_str(), &now) != 0 || now.st_ino != st.st_ino) return false;
    if (::unlink(segment_file(shm_name).c_str()) != 0 && errno != ENOENT)
      return system_error(Errc::system, "removing segment " + segment_label(shm_name), errno);
    return true;
  };
  if (static_cast<std::uint64_t>(st.st_size) < sizeof(SegmentHeader))
    return old_enough ? unlink_if_same_inode() : Result<bool>(false);
  auto mapped = map_file(fd.get(), sizeof(SegmentHeader), true, shm_name);
  if (!mapped) return std::move(mapped).error();
  const Mapping mapping(*mapped, sizeof(SegmentHeader));
  auto& h = *reinterpret_cast<SegmentHeader*>(mapping.get());
  const std::uint64_t magic = load_magic(h);
  bool abandoned = false;
  if (magic == 0) {
    abandoned = old_enough;
  } else if (magic == kSegmentMagic) {
    abandoned = h.state.load(std::memory_order_acquire) == static_cast<std::uint32_t>(SegmentState::creating) &&
                !creator_alive(h);
  }
  if (!abandoned) return false;
  std::uint32_t expected = 0;
  if (!h.reclaimer.compare_exchange_strong(expected, self().pid, std::memory_order_acq_rel)) {
    // Someone else claimed it; if that reclaimer died, take over from it.
    const auto start = start_time_of(static_cast<pid_t>(expected));
    if (start.has_value()) return false;
    if (!h.reclaimer.compare_exchange_strong(expected, self().pid, std::memory_order_acq_rel)) return false;
  }
  return unlink_if_same_inode();
}

Result<void> Segment::unlink(const std::string& shm_name) {
  if (::unlink(segment_file(shm_name).c_str()) != 0) {
    const int err = errno;
    if (err == ENOENT) return Error{Errc::not_found, "segment " + segment_label(shm_name) + " does not exist"};
    return system_error(err == EACCES || err == EPERM ? Errc::permission_denied : Errc::system,
                        "removing segment " + segment_label(shm_name), err);
  }
  return Ok{};
}

Segment::Segment(Segment&& other) noexcept
    : shm_name_(std::move(other.shm_name_)), base_(std::exchange(other.base_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

Segment& Segment::operator=(Segment&& other) noexcept {
  if (this != &other) {
    if (base_ != nullptr) ::munmap(base_, size_);
    shm_name_ = std::move(other.shm_name_);
    base_ = std::exchange(other.base_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

Segment::~Segment() {
  if (base_ != nullptr) ::munmap(base_, size_);
}

void Segment::publish() noexcept {
  header().state.store(static_cast<std::uint32_t>(SegmentState::ready), std::memory_order_release);
}

}  // namespace colo::shm
