#include "namespace_files.hpp"

#include <dirent.h>     // opendir: the objects of a namespace
#include <sys/vfs.h>    // statfs: a tmpfs?

#include <algorithm>
#include <vector>

#include <linux/magic.h>  // TMPFS_MAGIC, RAMFS_MAGIC

#include "colo/internal/text.hpp"         // errno_text, escaped
#include "colo/internal/trusted_dir.hpp"  // who may change the directory
#include "segment.hpp"             // kDefaultShmDir

namespace colo::detail {
namespace {

// '/' cannot appear in a file name; '^' cannot appear in an object name.
std::string encode(std::string_view object_name) {
  std::string out(object_name);
  std::replace(out.begin(), out.end(), '/', '^');
  return out;
}

std::string decode(std::string_view file_suffix) {
  std::string out(file_suffix);
  std::replace(out.begin(), out.end(), '^', '/');
  return out;
}

}  // namespace

std::string normalised_dir(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return dir;
}

NamespaceFiles::NamespaceFiles(std::string dir, std::string ns)
    : dir_(normalised_dir(std::move(dir))), ns_(std::move(ns)), in_dev_shm_(dir_ == shm::kDefaultShmDir) {}

std::string NamespaceFiles::prefix() const { return (in_dev_shm_ ? "" : dir_ + "/") + "colo." + ns_ + "."; }
std::string NamespaceFiles::registry() const { return prefix() + "registry"; }
std::string NamespaceFiles::object(std::string_view name) const { return prefix() + "obj." + encode(name); }

std::vector<std::string> NamespaceFiles::objects() const {
  std::vector<std::string> out;
  const std::string file_prefix = "colo." + ns_ + ".obj.";
  DIR* dir = ::opendir(dir_.c_str());
  if (dir == nullptr) return out;
  while (const dirent* d = ::readdir(dir)) {
    const std::string_view file = d->d_name;
    if (file.size() > file_prefix.size() && file.starts_with(file_prefix))
      out.push_back(decode(file.substr(file_prefix.size())));
  }
  ::closedir(dir);
  std::sort(out.begin(), out.end());
  return out;
}

Result<void> check_namespace_dir(const std::string& given) {
  const std::string dir = normalised_dir(given);
  if (dir == shm::kDefaultShmDir) return Ok{};
  const std::string shown = "namespace directory '" + internal::escaped(dir, 200) + "'";
  if (dir.empty() || dir.front() != '/' || dir.size() > 200)
    return Error{Errc::invalid_argument, shown + " is not an absolute path of at most 200 bytes"};
  if (auto trusted = internal::check_trusted_directory(dir, internal::DirectoryRule::owner_or_group, "namespace directory");
      !trusted) {
    if (trusted.error().code != Errc::not_found) return trusted;
    return Error{Errc::not_found, trusted.error().message + " (create it on a tmpfs, owned by the namespace's user, "
                                                            "mode 0700 or 0770 with a group)"};
  }
  struct statfs fs{};
  if (::statfs(dir.c_str(), &fs) != 0) return Error{Errc::system, internal::errno_text(shown)};
  if (fs.f_type != TMPFS_MAGIC && fs.f_type != RAMFS_MAGIC)
    return Error{Errc::invalid_argument, shown + " is not on a tmpfs: segments must live in memory "
                                                 "(a directory under /dev/shm, or a tmpfs mounted for it)"};
  return Ok{};
}

}  // namespace colo::detail
