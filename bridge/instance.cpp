#include "instance.hpp"

#include <fcntl.h>       // open
#include <sys/file.h>    // flock
#include <sys/socket.h>  // connect: is a colod listening on the socket?
#include <sys/stat.h>    // lstat, mkdir
#include <sys/un.h>      // sockaddr_un
#include <unistd.h>      // close, getpid, unlink

#include <cerrno>
#include <cstring>
#include <utility>

#include "colo/internal/text.hpp"         // errno_text, escaped
#include "colo/internal/trusted_dir.hpp"  // check_trusted_directory

namespace colo::bridge {
namespace {

std::string quoted(const std::string& path) { return "'" + internal::escaped(path, 200) + "'"; }

std::string directory_of(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == 0 ? "/" : path.substr(0, slash);
}

// Does a process accept connections on the Unix socket at `path`?
bool someone_listens(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  const bool listening = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return listening;
}

}  // namespace

Result<NamespaceLock> NamespaceLock::take(const std::string& shm_dir, const std::string& ns) {
  const std::string path = shm_dir + "/colo." + ns + ".colod";
  // The holder removes the file when it stops (holding the lock), so a file
  // we opened may be gone once we hold its lock: then we try again with the
  // new one. Bounded: each round sees a holder come or go.
  for (int attempt = 0;; ++attempt) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
      const int err = errno;
      return Error{err == EACCES ? Errc::permission_denied : Errc::system,
                   internal::errno_text("namespace '" + ns + "': cannot open its colod lock " + quoted(path)) +
                       (err == EACCES ? " (another user's colod serves it?)" : "")};
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      char pid[32] = {};
      const ssize_t n = ::pread(fd, pid, sizeof pid - 1, 0);
      ::close(fd);
      if (err != EWOULDBLOCK) return Error{Errc::system, "namespace '" + ns + "': flock " + quoted(path) + ": " + std::strerror(err)};
      std::string holder = n > 0 ? std::string(pid, static_cast<std::size_t>(n)) : "";
      while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
      return Error{Errc::busy, "namespace '" + ns + "' is already served by a colod" +
                                   (holder.empty() ? std::string() : " (pid " + internal::escaped(holder, 20) + ")") +
                                   ", which holds " + quoted(path) + ": one colod per namespace; stop that one first"};
    }
    struct stat held {}, named {};
    if (::fstat(fd, &held) != 0 || ::lstat(path.c_str(), &named) != 0 || held.st_ino != named.st_ino ||
        held.st_dev != named.st_dev) {
      ::close(fd);  // removed by the colod that stopped: its successor's file is the lock now
      if (attempt < 8) continue;
      return Error{Errc::busy, "namespace '" + ns + "': its colod lock " + quoted(path) +
                                   " keeps being replaced (colods starting and stopping?); try again"};
    }
    // The pid is only for the second colod's message: the lock holds without it.
    const std::string me = std::to_string(::getpid()) + "\n";
    if (::ftruncate(fd, 0) == 0) (void)!::pwrite(fd, me.data(), me.size(), 0);
    return NamespaceLock(fd, path);
  }
}

NamespaceLock::NamespaceLock(NamespaceLock&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), path_(std::move(other.path_)) {}

NamespaceLock::~NamespaceLock() {
  if (fd_ < 0) return;
  ::unlink(path_.c_str());  // while we hold it: whoever opened this file before sees it gone (take())
  ::close(fd_);             // releases the flock
}

Result<void> prepare_control_socket(const std::string& path) {
  const std::string dir = directory_of(path);
  // Missing directories are made ours, closed to others.
  for (std::size_t slash = path.find('/', 1); slash != std::string::npos; slash = path.find('/', slash + 1)) {
    if (::mkdir(path.substr(0, slash).c_str(), 0700) != 0 && errno != EEXIST)
      return Error{Errc::system, internal::errno_text("control socket: cannot make " + quoted(path.substr(0, slash)))};
  }
  if (auto trusted =
          internal::check_trusted_directory(dir, internal::DirectoryRule::private_to_me, "control socket directory");
      !trusted)
    return Error{trusted.error().code, trusted.error().message + " (see [control] socket in the config)"};
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Ok{};
    return Error{Errc::system, internal::errno_text("control socket " + quoted(path))};
  }
  if (!S_ISSOCK(st.st_mode))
    return Error{Errc::already_exists,
                 "control socket " + quoted(path) + " exists and is not a socket: colod never replaces another file"};
  if (someone_listens(path))
    return Error{Errc::busy, "control socket " + quoted(path) +
                                 " is in use: another colod listens on it (one colod per control socket)"};
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)  // left by a colod that died
    return Error{Errc::system, internal::errno_text("control socket: cannot remove the stale " + quoted(path))};
  return Ok{};
}

}  // namespace colo::bridge
