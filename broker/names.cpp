#include "colo/names.hpp"

#include <unistd.h>  // geteuid

#include <cstdio>   // snprintf
#include <cstdlib>  // getenv

#include "colo/internal/text.hpp"

namespace colo {
namespace {

// Names come from users and files: escaped before they reach a message.
std::string printable(std::string_view s) { return internal::escaped(s, 64); }

bool is_name_char(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
         c == '-' || c == '/';
}

}  // namespace

namespace {

// A '/'-separated name of bytes from one set: not empty, not too long, no
// leading or trailing '/', no empty, "." or ".." component.
Result<void> validate_path(std::string_view name, const char* what, const char* rule, bool colon, bool slash,
                           std::size_t max_bytes) {
  auto bad = [&](const std::string& why) {
    return Error{Errc::invalid_argument, std::string("invalid ") + what + " '" + printable(name) + "': " + why + " (" +
                                             rule + ")"};
  };
  if (name.empty()) return bad("it is empty");
  if (name.size() > max_bytes) return bad("it is " + std::to_string(name.size()) + " bytes long");
  for (std::size_t i = 0; i < name.size(); ++i) {
    const auto c = static_cast<unsigned char>(name[i]);
    const bool allowed = (is_name_char(c) && (slash || c != '/')) || (colon && c == ':');
    if (!allowed) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "byte 0x%02x at offset %zu is not allowed", c, i);
      return bad(buf);
    }
  }
  if (name.front() == '/' || name.back() == '/') return bad("it starts or ends with '/'");
  std::size_t start = 0;
  while (start <= name.size()) {
    std::size_t end = name.find('/', start);
    if (end == std::string_view::npos) end = name.size();
    const std::string_view part = name.substr(start, end - start);
    if (part.empty()) return bad("it has an empty path component ('//')");
    if (part == "." || part == "..") return bad("it has a '" + std::string(part) + "' path component");
    start = end + 1;
  }
  return Ok{};
}

}  // namespace

Result<void> validate_object_name(std::string_view name) {
  return validate_path(name, "object name", "names are 1-200 bytes of A-Z a-z 0-9 . _ - /", false, true,
                       kMaxObjectNameBytes);
}

Result<void> validate_cluster_key(std::string_view key) {
  return validate_path(key, "cluster key", "cluster keys are 1-200 bytes of A-Z a-z 0-9 . _ - :", true, false,
                       kMaxObjectNameBytes);
}

Result<void> validate_backend_lock_name(std::string_view name) {
  return validate_path(name, "lock name", "lock names are 1-401 bytes of A-Z a-z 0-9 . _ - : /", true, true,
                       2 * kMaxObjectNameBytes + 1);
}

Result<void> validate_namespace(std::string_view ns) {
  auto bad = [&](const std::string& why) {
    return Error{Errc::invalid_argument,
                 "invalid namespace '" + printable(ns) + "': " + why + " (namespaces are 1-32 bytes of A-Z a-z 0-9 _ -)"};
  };
  if (ns.empty()) return bad("it is empty");
  if (ns.size() > kMaxNamespaceBytes) return bad("it is " + std::to_string(ns.size()) + " bytes long");
  for (unsigned char c : ns) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) return bad("it contains a character outside the allowed set");
  }
  return Ok{};
}

std::string default_namespace() {
  const char* env = std::getenv("COLO_NS");
  return env != nullptr && *env != '\0' ? std::string(env) : std::string("default");
}

std::string default_shm_dir() {
  const char* env = std::getenv("COLO_SHM_DIR");
  return env != nullptr && *env != '\0' ? std::string(env) : std::string("/dev/shm");
}

std::string default_control_socket(const std::string& ns) {
  if (::geteuid() == 0) return "/run/colo/" + ns + "/colod.sock";
  const char* runtime = std::getenv("XDG_RUNTIME_DIR");
  if (runtime != nullptr && *runtime == '/') return std::string(runtime) + "/colo/" + ns + "/colod.sock";
  return "/tmp/colo-" + std::to_string(::geteuid()) + "/" + ns + "/colod.sock";
}

}  // namespace colo
