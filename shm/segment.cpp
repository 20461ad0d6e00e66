#include "segment.hpp"

#include <grp.h>        // getgrgid: group names in messages
#include <pwd.h>        // getpwuid: user names in messages
#include <sys/mman.h>   // shm_unlink
#include <sys/stat.h>   // fstat, stat
#include <unistd.h>     // fchown, getgroups
#include <time.h>       // nanosleep

#include <cerrno>
#include <cstdio>       // snprintf
#include <cstring>      // memcpy, strerror, strnlen
#include <vector>

#include <boost/interprocess/exceptions.hpp>
#include <boost/interprocess/permissions.hpp>
#include <boost/interprocess/shared_memory_object.hpp>

#include "clock.hpp"

namespace colo::shm {
namespace bip = boost::interprocess;
namespace {

std::string dev_shm_path(const std::string& shm_name) { return "/dev/shm/" + shm_name; }

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
               "segment /" + shm_name + " was created by " + user_name(st.st_uid) + ", group " +
                   group_name(st.st_gid) + ", with mode " + mode_string(st.st_mode) +
                   "; run as that user, or recreate it with a group this user is in (--group)"};
}

// Owner, mode and size checks made before mapping (opening protocol, step 1).
std::optional<Error> check_file(const std::string& shm_name, const struct stat& st) {
  if ((st.st_mode & 0007) != 0)
    return Error{Errc::permission_denied, "segment /" + shm_name + " has mode " + mode_string(st.st_mode) +
                                              ", open to other users; colo never creates such segments, "
                                              "so it refuses to use it (remove it with `colo rm`)"};
  if (st.st_uid != ::geteuid()) {
    const bool group_shared = (st.st_mode & 0060) == 0060 && in_group(st.st_gid);
    if (!group_shared) return access_error(shm_name, st);
  }
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (size < sizeof(SegmentHeader))
    return Error{Errc::corrupt, "segment /" + shm_name + " is truncated: " + std::to_string(size) +
                                    " bytes, smaller than the " + std::to_string(sizeof(SegmentHeader)) +
                                    "-byte header; remove it with `colo rm` or `colo gc`"};
  if (size > kMaxSegmentSize)
    return Error{Errc::corrupt, "segment /" + shm_name + " is " + std::to_string(size) +
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
    return Error{Errc::corrupt, "segment /" + shm_name + " has layout version " + std::to_string(version) +
                                    "; this build of colo reads version " + std::to_string(kSegmentLayoutVersion)};
  if (total != file_size)
    return Error{Errc::corrupt, "segment /" + shm_name + " header says " + std::to_string(total) +
                                    " bytes but the file has " + std::to_string(file_size) +
                                    " (truncated or resized); remove it with `colo rm`"};
  if (body_offset != sizeof(SegmentHeader))
    return Error{Errc::corrupt, "segment /" + shm_name + " has body offset " + std::to_string(body_offset) +
                                    ", expected " + std::to_string(sizeof(SegmentHeader))};
  if (::strnlen(h.object_name, kObjectNameCapacity) == kObjectNameCapacity)
    return Error{Errc::corrupt, "segment /" + shm_name + " has an unterminated object name"};
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

Error from_boost(const bip::interprocess_exception& e, const std::string& shm_name, const char* doing) {
  const int err = e.get_native_error();
  if (err == ENOENT) return Error{Errc::not_found, "segment /" + shm_name + " does not exist"};
  if (err == EEXIST) return Error{Errc::already_exists, "segment /" + shm_name + " already exists"};
  if (err == EACCES || err == EPERM) {
    struct stat st{};
    if (::stat(dev_shm_path(shm_name).c_str(), &st) == 0) return access_error(shm_name, st);
    return Error{Errc::permission_denied, std::string(doing) + " segment /" + shm_name + ": permission denied"};
  }
  if (err != 0) return system_error(Errc::system, std::string(doing) + " segment /" + shm_name, err);
  return Error{Errc::system, std::string(doing) + " segment /" + shm_name + ": " + e.what()};
}

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
  if (object_name.size() >= kObjectNameCapacity)
    return Error{Errc::invalid_argument, "object name is " + std::to_string(object_name.size()) + " bytes, too long"};
  if (body_size > kMaxSegmentSize - sizeof(SegmentHeader))
    return Error{Errc::invalid_argument, "segment /" + shm_name + ": body of " + std::to_string(body_size) +
                                             " bytes exceeds the 1 TiB limit"};
  if ((permissions.mode & ~mode_t{0660}) != 0 || (permissions.mode & 0600) != 0600)
    return Error{Errc::invalid_argument, "segment mode " + mode_string(permissions.mode) +
                                             " is not allowed: use 0600, or 0660 with a group"};
  const std::size_t total = sizeof(SegmentHeader) + body_size;
  bool created = false;  // if set and we fail, remove what we made: never leave a headerless segment
  try {
    bip::permissions perm(static_cast<unsigned>(permissions.mode));
    bip::shared_memory_object object(bip::create_only, shm_name.c_str(), bip::read_write, perm);
    created = true;
    const int fd = object.get_mapping_handle().handle;
    if (permissions.group) {
      if (::fchown(fd, static_cast<uid_t>(-1), *permissions.group) != 0 ||
          ::fchmod(fd, permissions.mode) != 0) {
        const int err = errno;
        bip::shared_memory_object::remove(shm_name.c_str());
        return system_error(Errc::permission_denied,
                            "cannot give segment /" + shm_name + " to " + group_name(*permissions.group), err);
      }
    }
    object.truncate(static_cast<bip::offset_t>(total));
    bip::mapped_region region(object, bip::read_write);
    auto* h = static_cast<SegmentHeader*>(region.get_address());
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
    return Segment(shm_name, std::move(region));
  } catch (const bip::interprocess_exception& e) {
    if (created) bip::shared_memory_object::remove(shm_name.c_str());
    return from_boost(e, shm_name, "creating");
  }
}

Result<Segment> Segment::open(const std::string& shm_name, SegmentKind kind, std::chrono::milliseconds ready_timeout) {
  try {
    bip::shared_memory_object object(bip::open_only, shm_name.c_str(), bip::read_write);
    const std::uint64_t deadline = monotonic_ns() + static_cast<std::uint64_t>(ready_timeout.count()) * 1'000'000u;
    struct stat st{};
    // Size 0: the creator has opened the file but not sized it yet (its
    // ftruncate sets the whole size at once). Wait for it, within the bound.
    for (unsigned attempt = 0;; ++attempt) {
      if (::fstat(object.get_mapping_handle().handle, &st) != 0)
        return system_error(Errc::system, "fstat of segment /" + shm_name, errno);
      if (st.st_size != 0) break;
      if (monotonic_ns() >= deadline)
        return Error{Errc::corrupt, "segment /" + shm_name + " is truncated: 0 bytes, still empty after " +
                                        std::to_string(ready_timeout.count()) +
                                        " ms (its creator may have died before sizing it; `colo gc` removes it)"};
      sleep_us(attempt < 10 ? 50 : 1000);
    }
    if (auto problem = check_file(shm_name, st)) return std::move(*problem);
    const auto file_size = static_cast<std::uint64_t>(st.st_size);
    bip::mapped_region region(object, bip::read_write);
    const auto& h = *static_cast<const SegmentHeader*>(region.get_address());

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
        if (state == static_cast<std::uint32_t>(SegmentState::ready)) return Segment(shm_name, std::move(region));
        if (state != static_cast<std::uint32_t>(SegmentState::creating))
          return Error{Errc::corrupt, "segment /" + shm_name + " has unknown state " + std::to_string(state)};
        if (!creator_alive(h))
          return Error{Errc::creator_died, "segment /" + shm_name + " was being created by pid " +
                                               std::to_string(h.creator_pid) +
                                               ", which died before finishing; `colo gc` removes it, "
                                               "and create-or-open reclaims it"};
      } else if (magic != 0) {
        return Error{Errc::corrupt, "segment /" + shm_name + " has magic " + magic_hex(magic) +
                                        ", not a colo segment (or corrupted); remove it with `colo rm`"};
      }
      if (monotonic_ns() >= deadline)
        return Error{Errc::not_ready,
                     "segment /" + shm_name + " is not ready after " + std::to_string(ready_timeout.count()) +
                         " ms" + (magic == 0 ? " (no header written: its creator may have died; `colo gc` removes it)"
                                             : " (its creator is alive but has not finished)")};
      sleep_us(attempt < 10 ? 50 : 1000);
    }
  } catch (const bip::interprocess_exception& e) {
    return from_boost(e, shm_name, "opening");
  }
}

Result<SegmentInfo> Segment::inspect(const std::string& shm_name) {
  try {
    bip::shared_memory_object object(bip::open_only, shm_name.c_str(), bip::read_only);
    struct stat st{};
    if (::fstat(object.get_mapping_handle().handle, &st) != 0)
      return system_error(Errc::system, "fstat of segment /" + shm_name, errno);
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
    bip::mapped_region region(object, bip::read_only, 0, sizeof(SegmentHeader));
    const auto& h = *static_cast<const SegmentHeader*>(region.get_address());
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
  } catch (const bip::interprocess_exception& e) {
    return from_boost(e, shm_name, "inspecting");
  }
}

Result<bool> Segment::reclaim_if_abandoned(const std::string& shm_name, std::chrono::milliseconds grace) {
  try {
    bip::shared_memory_object object(bip::open_only, shm_name.c_str(), bip::read_write);
    struct stat st{};
    if (::fstat(object.get_mapping_handle().handle, &st) != 0)
      return system_error(Errc::system, "fstat of segment /" + shm_name, errno);
    if (st.st_uid != ::geteuid() && !((st.st_mode & 0060) == 0060 && in_group(st.st_gid)))
      return access_error(shm_name, st);
    const bool old_enough = file_age_ns(st) >= static_cast<std::uint64_t>(grace.count()) * 1'000'000u;
    // Only removes what is provably not in use: the name still refers to the
    // inode we examined (a newer segment of the same name is left alone).
    auto unlink_if_same_inode = [&]() -> Result<bool> {
      struct stat now{};
      if (::stat(dev_shm_path(shm_name).c_str(), &now) != 0 || now.st_ino != st.st_ino) return false;
      if (::shm_unlink(shm_name.c_str()) != 0 && errno != ENOENT)
        return system_error(Errc::system, "removing segment /" + shm_name, errno);
      return true;
    };
    if (static_cast<std::uint64_t>(st.st_size) < sizeof(SegmentHeader))
      return old_enough ? unlink_if_same_inode() : Result<bool>(false);
    bip::mapped_region region(object, bip::read_write, 0, sizeof(SegmentHeader));
    auto& h = *static_cast<SegmentHeader*>(region.get_address());
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
  } catch (const bip::interprocess_exception& e) {
    if (e.get_native_error() == ENOENT) return false;
    return from_boost(e, shm_name, "reclaiming");
  }
}

Result<void> Segment::unlink(const std::string& shm_name) {
  if (::shm_unlink(shm_name.c_str()) != 0) {
    const int err = errno;
    if (err == ENOENT) return Error{Errc::not_found, "segment /" + shm_name + " does not exist"};
    return system_error(err == EACCES || err == EPERM ? Errc::permission_denied : Errc::system,
                        "removing segment /" + shm_name, err);
  }
  return Ok{};
}

void Segment::publish() noexcept {
  header().state.store(static_cast<std::uint32_t>(SegmentState::ready), std::memory_order_release);
}

}  // namespace colo::shm
