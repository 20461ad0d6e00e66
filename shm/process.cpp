#include "process.hpp"

#include "clock.hpp"  // monotonic_ns: the age of a liveness reading

#include <fcntl.h>      // open
#include <signal.h>     // kill(pid, 0)
#include <pthread.h>    // pthread_atfork
#include <sys/syscall.h>
#include <unistd.h>     // read, close, getpid, gettid

#include <array>        // liveness_recent's readings
#include <atomic>
#include <cerrno>
#include <cstdio>       // snprintf
#include <cstring>      // strrchr

namespace colo::shm {
namespace {

// Reads a small file into buf (NUL-terminated); returns bytes read or -1.
ssize_t read_small_file(const char* path, char* buf, size_t size) noexcept {
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t total = 0;
  while (static_cast<size_t>(total) + 1 < size) {
    ssize_t n = ::read(fd, buf + total, size - 1 - static_cast<size_t>(total));
    if (n < 0) { ::close(fd); return -1; }
    if (n == 0) break;
    total += n;
  }
  ::close(fd);
  buf[total] = '\0';
  return total;
}

// Parses /proc/<pid>/stat: state (field 3) and starttime (field 22). The comm
// field (2) may hold spaces and ')' so parsing starts after the last ')'.
bool read_stat(pid_t pid, char* state, std::uint64_t* start_time) noexcept {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  char buf[1024];
  if (read_small_file(path, buf, sizeof buf) <= 0) return false;
  const char* p = std::strrchr(buf, ')');
  if (p == nullptr || p[1] != ' ') return false;
  p += 2;  // now at field 3
  *state = *p;
  for (int field = 3; field < 22; ++field) {
    while (*p != ' ' && *p != '\0') ++p;
    if (*p == '\0') return false;
    ++p;
  }
  std::uint64_t value = 0;
  if (*p < '0' || *p > '9') return false;
  while (*p >= '0' && *p <= '9') value = value * 10 + static_cast<std::uint64_t>(*p++ - '0');
  *start_time = value;
  return true;
}

void reset_after_fork() noexcept {
  using detail::g_self_pid;
  using detail::t_tid;
  // The child has a new pid and its only thread a new tid.
  g_self_pid.store(0, std::memory_order_relaxed);
  t_tid = 0;
  detail::t_owner_word = 0;
}

struct ForkHandlerInstaller {
  ForkHandlerInstaller() { ::pthread_atfork(nullptr, nullptr, &reset_after_fork); }
} g_fork_handler;

}  // namespace

namespace detail {

std::atomic<std::uint32_t> g_self_pid{0};
std::atomic<std::uint64_t> g_self_start{0};
thread_local constinit std::uint32_t t_tid __attribute__((tls_model("initial-exec"))) = 0;
thread_local constinit std::uint64_t t_owner_word __attribute__((tls_model("initial-exec"))) = 0;

ProcessRef self_slow() noexcept {
  const pid_t real = ::getpid();
  char state = 0;
  std::uint64_t start = 0;
  read_stat(real, &state, &start);
  g_self_start.store(start, std::memory_order_relaxed);
  g_self_pid.store(static_cast<std::uint32_t>(real), std::memory_order_relaxed);
  return {static_cast<std::uint32_t>(real), start};
}

std::uint32_t self_tid_slow() noexcept {
  t_tid = static_cast<std::uint32_t>(::syscall(SYS_gettid));
  return t_tid;
}

}  // namespace detail

const BootId& boot_id() noexcept {
  static const BootId id = [] {
    BootId out{};
    char buf[64];
    if (read_small_file("/proc/sys/kernel/random/boot_id", buf, sizeof buf) <= 0) return out;
    // Format: 8-4-4-4-12 hex digits.
    size_t n = 0;
    auto hex = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    int high = -1;
    for (const char* p = buf; *p != '\0' && n < out.size(); ++p) {
      int v = hex(*p);
      if (v < 0) continue;
      if (high < 0) { high = v; continue; }
      out[n++] = static_cast<std::uint8_t>(high << 4 | v);
      high = -1;
    }
    return out;
  }();
  return id;
}

std::optional<std::uint64_t> start_time_of(pid_t pid) noexcept {
  char state = 0;
  std::uint64_t start = 0;
  if (pid <= 0 || !read_stat(pid, &state, &start)) return std::nullopt;
  if (state == 'Z' || state == 'X' || state == 'x') return std::nullopt;
  return start;
}

Liveness liveness(ProcessRef ref) noexcept {
  if (ref.pid == 0) return Liveness::dead;
  auto start = start_time_of(static_cast<pid_t>(ref.pid));
  return start && *start == ref.start_time ? Liveness::alive : Liveness::dead;
}

namespace {
// A process this thread read as alive from /proc, and when.
struct AliveReading {
  std::uint32_t pid = 0;
  std::uint64_t start_time = 0;
  std::uint64_t at_ns = 0;
};
// Per thread, so no lock; a few entries: the readers of the rings this
// thread writes to. The oldest reading gives way.
thread_local constinit std::array<AliveReading, 8> t_alive_readings{};
}  // namespace

Liveness liveness_recent(ProcessRef ref) noexcept {
  if (ref.pid == 0) return Liveness::dead;
  // EPERM: the process exists (another user's).
  if (::kill(static_cast<pid_t>(ref.pid), 0) != 0 && errno == ESRCH) return Liveness::dead;
  const std::uint64_t now = monotonic_ns();
  AliveReading* oldest = &t_alive_readings[0];
  for (auto& r : t_alive_readings) {
    if (r.pid == ref.pid && r.start_time == ref.start_time && now - r.at_ns < kRecheckLivenessNs)
      return Liveness::alive;
    if (r.at_ns < oldest->at_ns) oldest = &r;
  }
  const Liveness read = liveness(ref);
  if (read == Liveness::alive) *oldest = {ref.pid, ref.start_time, now};
  return read;
}

}  // namespace colo::shm
