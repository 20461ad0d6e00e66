// bridge/instance.hpp — what makes a colod the one colod of its namespace:
// a lock held for its life, and a control socket in a directory that is its
// own.
//
// One colod per namespace: two would both publish peers' messages into the
// same rings (duplicates) and fight over the control socket. The lock is an
// flock(2) on <shm dir>/colo.<ns>.colod, released by the kernel when colod
// dies, however it dies; the file holds the owner's pid for the message the
// second one prints, and is removed when colod stops (a file left by a
// colod that died is simply locked again).
//
// The control socket answers `colo peers`, `colo stat` and takes `colo
// federate`: whoever can replace the socket file can speak for colod to
// those tools. So its directory must belong to colod's user and be closed
// to everyone else (mode 0700), and every directory above it must be
// writable only by root or that user (or be sticky, as /tmp is), else colod
// refuses to start, saying which directory and why. A socket file left by a
// colod that died is removed; a socket some process still listens on, or
// any other kind of file, is never touched.
#pragma once

#include <string>

#include "colo/error.hpp"

namespace colo::bridge {

class NamespaceLock {
 public:
  // Takes the lock of namespace `ns` whose segments are in `shm_dir`.
  // Errc::busy, naming the holder's pid, if another colod has it.
  static Result<NamespaceLock> take(const std::string& shm_dir, const std::string& ns);

  NamespaceLock(NamespaceLock&& other) noexcept;
  NamespaceLock& operator=(NamespaceLock&&) = delete;
  NamespaceLock(const NamespaceLock&) = delete;
  NamespaceLock& operator=(const NamespaceLock&) = delete;
  ~NamespaceLock();  // releases it

  const std::string& path() const noexcept { return path_; }

 private:
  NamespaceLock(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  int fd_;
  std::string path_;
};

// Makes the control socket's directories (missing ones with mode 0700),
// checks them as above, and removes a stale socket file at `path`. After
// it, `path` does not exist and colod may bind there.
Result<void> prepare_control_socket(const std::string& path);

}  // namespace colo::bridge
