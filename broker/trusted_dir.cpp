#include "colo/internal/trusted_dir.hpp"

#include <sys/stat.h>  // lstat
#include <unistd.h>    // geteuid

#include <cerrno>
#include <cstdio>  // snprintf

#include "colo/internal/text.hpp"  // errno_text, escaped

namespace colo::internal {
namespace {

std::string mode_text(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

std::string owner_text(uid_t uid) { return uid == 0 ? "root" : "uid " + std::to_string(uid); }

}  // namespace

Result<void> check_trusted_directory(const std::string& dir, DirectoryRule rule, const std::string& what) {
  const uid_t me = ::geteuid();
  const std::string shown = what + " '" + escaped(dir, 200) + "'";
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0)
    return Error{errno == ENOENT ? Errc::not_found : Errc::system, errno_text(shown)};
  if (!S_ISDIR(st.st_mode))
    return Error{Errc::invalid_argument, shown + " is not a directory" +
                                             (S_ISLNK(st.st_mode) ? std::string(" (a symbolic link)") : "")};
  if (rule == DirectoryRule::private_to_me && (st.st_uid != me || (st.st_mode & 077) != 0))
    return Error{Errc::permission_denied,
                 shown + " belongs to " + owner_text(st.st_uid) + " with mode " + mode_text(st.st_mode) +
                     "; it must be this user's (uid " + std::to_string(me) +
                     ") with mode 0700, else another user could put a file of theirs in it (chmod 700 it if it is "
                     "yours; otherwise choose another path)"};
  if (rule == DirectoryRule::owner_or_group) {
    if (st.st_uid != 0 && st.st_uid != me)
      return Error{Errc::permission_denied, shown + " belongs to " + owner_text(st.st_uid) +
                                                ", neither root nor this user (uid " + std::to_string(me) +
                                                "): its owner could replace the files in it"};
    if ((st.st_mode & S_IWOTH) != 0)
      return Error{Errc::permission_denied, shown + " has mode " + mode_text(st.st_mode) +
                                                ": any user may create files in it, so any user could put a file "
                                                "there first (chmod o-w it)"};
  }
  // The directories above: none may let another user rename ours away.
  for (std::string above = dir; above.size() > 1;) {
    above = above.substr(0, above.rfind('/'));
    if (above.empty()) above = "/";
    struct stat up {};
    if (::stat(above.c_str(), &up) != 0) return Error{Errc::system, errno_text("'" + escaped(above, 200) + "'")};
    const bool owner_ok = up.st_uid == 0 || up.st_uid == me;
    const bool others_write = (up.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (up.st_mode & S_ISVTX) == 0;
    if (!owner_ok || others_write)
      return Error{Errc::permission_denied,
                   shown + " lies in '" + escaped(above, 200) + "', which belongs to " + owner_text(up.st_uid) +
                       " with mode " + mode_text(up.st_mode) +
                       ": another user could rename it and put a directory of theirs in its place"};
  }
  return Ok{};
}

}  // namespace colo::internal
