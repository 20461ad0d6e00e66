// colo/internal/trusted_dir.hpp — may another user change what is in a
// directory? (internal to colo: not installed)
//
// colo keeps files other processes act on in directories: segments in a
// namespace directory, colod's control socket in its own directory. A user
// who may create, remove or rename entries in such a directory (or in one
// above it) could put a file of their own in place of ours. These checks
// tell, with a message naming the directory, its owner and mode, and what
// to do.
#pragma once

#include <string>

#include "colo/error.hpp"

namespace colo::internal {

enum class DirectoryRule {
  // Owned by this user, closed to everyone else (no group or other bits):
  // colod's control socket directory.
  private_to_me,
  // Owned by root or this user, writable by no one else but its group:
  // a namespace directory (its group may share the namespace).
  owner_or_group,
};

// Checks `dir` (which must exist) by `rule`, and every directory above it:
// each must be owned by root or this user and writable by no one else,
// unless it is sticky (as /tmp and /dev/shm are: others may add entries,
// not rename or remove ours). `what` names the directory's role in the
// messages ("control socket directory").
Result<void> check_trusted_directory(const std::string& dir, DirectoryRule rule, const std::string& what);

}  // namespace colo::internal
