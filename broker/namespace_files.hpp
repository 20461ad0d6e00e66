// broker/namespace_files.hpp — where a namespace's segments are (private).
//
// A namespace's segments are files in one directory on a tmpfs:
//   /dev/shm (the default)        colo.<ns>.registry, colo.<ns>.obj.<name>
//   a namespace directory D       D/colo.<ns>.registry, D/colo.<ns>.obj.<name>
// ('/' in an object name becomes '^'). Names are given to shm::Segment as it
// takes them: a file name for /dev/shm, an absolute path otherwise.
//
// Why a directory: anyone may create files in /dev/shm (mode 1777), so the
// first user to create a namespace's registry owns the namespace, and may
// lock its rightful owner out ("squatting"). A directory only its owner (and
// the owner's group) may write to cannot be squatted (docs/security.md).
#pragma once

#include <string>
#include <string_view>

#include <vector>

#include "colo/error.hpp"

namespace colo::detail {

class NamespaceFiles {
 public:
  // `dir` as NodeOptions::shm_dir has it (normalised: no trailing '/').
  NamespaceFiles(std::string dir, std::string ns);

  bool in_dev_shm() const noexcept { return in_dev_shm_; }
  const std::string& dir() const noexcept { return dir_; }
  std::string registry() const;                       // the registry's segment name
  std::string object(std::string_view name) const;    // an object's segment name
  // The object names of every object segment found in the directory, sorted.
  std::vector<std::string> objects() const;

 private:
  std::string prefix() const;  // what every segment name of the namespace starts with
  std::string dir_, ns_;
  bool in_dev_shm_;
};

// Checks that `dir` may hold namespaces: an absolute path to a directory on a
// tmpfs, owned by root or by this user, that no other user may write to (its
// group may). /dev/shm itself is always accepted. Errors name the directory,
// what is wrong, and the remedy.
Result<void> check_namespace_dir(const std::string& dir);

// `dir` without trailing '/' ("/" stays "/").
std::string normalised_dir(std::string dir);

}  // namespace colo::detail
