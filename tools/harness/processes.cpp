#include "processes.hpp"

#include <arpa/inet.h>   // htonl, ntohs
#include <dirent.h>     // listing /dev/shm
#include <netinet/in.h>  // sockaddr_in
#include <sys/socket.h>  // free_loopback_port
#include <sys/mman.h>   // mmap, shm_unlink
#include <sys/prctl.h>  // PR_SET_PDEATHSIG
#include <sys/wait.h>   // waitpid
#include <unistd.h>     // fork, _exit, unlink

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <thread>  // sleep_for in bounded waits

namespace colo::cli {
namespace {

// ---------------------------------------------------------------- signals
//
// What an interrupted run must undo, in tables a signal handler can read:
// fixed arrays, no allocation, only async-signal-safe calls (kill, unlink, rmdir).

constexpr std::size_t kMaxCleanupPaths = 32;
constexpr std::size_t kMaxCleanupPath = 300;
constexpr std::size_t kMaxCleanupChildren = 256;

char g_paths[kMaxCleanupPaths][kMaxCleanupPath];
std::atomic<pid_t> g_children[kMaxCleanupChildren];
volatile std::sig_atomic_t g_handler_installed = 0;

void on_fatal_signal(int sig) {
  for (auto& child : g_children) {
    const pid_t pid = child.load(std::memory_order_relaxed);
    if (pid > 0) ::kill(pid, SIGKILL);
  }
  for (auto& path : g_paths)
    if (path[0] != '\0') ::unlink(path);
  // Directories once the files in them are gone (rmdir fails on a file or a
  // directory that is not empty, harmlessly).
  for (auto& path : g_paths)
    if (path[0] != '\0') ::rmdir(path);
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

constexpr int kCleanupSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE};

void install_handler() {
  if (g_handler_installed) return;
  struct sigaction sa{};
  sa.sa_handler = on_fatal_signal;
  ::sigemptyset(&sa.sa_mask);
  for (int sig : kCleanupSignals) ::sigaddset(&sa.sa_mask, sig);
  for (int sig : kCleanupSignals) ::sigaction(sig, &sa, nullptr);
  g_handler_installed = 1;
}

// Blocks the cleanup signals while the tables change, so the handler never
// sees a half-written path.
class SignalsBlocked {
 public:
  SignalsBlocked() {
    sigset_t set;
    ::sigemptyset(&set);
    for (int sig : kCleanupSignals) ::sigaddset(&set, sig);
    ::sigprocmask(SIG_BLOCK, &set, &saved_);
  }
  ~SignalsBlocked() { ::sigprocmask(SIG_SETMASK, &saved_, nullptr); }
  SignalsBlocked(const SignalsBlocked&) = delete;
  SignalsBlocked& operator=(const SignalsBlocked&) = delete;

 private:
  sigset_t saved_;
};

void remember_path(const std::string& path) {
  if (path.size() >= kMaxCleanupPath) return;
  SignalsBlocked blocked;
  install_handler();
  for (auto& slot : g_paths)
    if (path == slot) return;
  for (auto& slot : g_paths)
    if (slot[0] == '\0') {
      std::memcpy(slot, path.c_str(), path.size() + 1);
      return;
    }
}

void forget_path(const std::string& path) {
  SignalsBlocked blocked;
  for (auto& slot : g_paths)
    if (path == slot) slot[0] = '\0';
}

void remember_child(pid_t pid) {
  install_handler();
  for (auto& slot : g_children) {
    pid_t expected = 0;
    if (slot.compare_exchange_strong(expected, pid)) return;
  }
}

void forget_child(pid_t pid) {
  for (auto& slot : g_children) {
    pid_t expected = pid;
    if (slot.compare_exchange_strong(expected, 0)) return;
  }
}

std::string shm_path(const std::string& shm_name) { return "/dev/shm/" + shm_name; }

}  // namespace

void unlink_on_interrupt(const std::string& path) { remember_path(path); }
void forget_on_interrupt(const std::string& path) { forget_path(path); }
void kill_on_interrupt(pid_t pid) { remember_child(pid); }
void forget_kill_on_interrupt(pid_t pid) { forget_child(pid); }

// ------------------------------------------------------------ shared memory

void* map_shared_anonymous(std::size_t bytes) noexcept {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}

void unmap_shared(void* address, std::size_t bytes) noexcept { ::munmap(address, bytes); }

// --------------------------------------------------------------- children

std::string ChildExit::text() const {
  switch (how) {
    case How::running: return "still running";
    case How::exited: return "exit " + std::to_string(code);
    case How::signaled: {
      const char* name = ::sigabbrev_np(code);
      return std::string("killed by ") + (name != nullptr ? std::string("SIG") + name : std::to_string(code));
    }
    case How::timed_out: return "did not finish in time (killed)";
  }
  return "?";
}

pid_t Children::spawn(const std::function<int()>& body) {
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    for (int sig : kCleanupSignals) ::signal(sig, SIG_DFL);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(71);  // the parent is already gone
    int rc = 70;
    try {
      rc = body();
    } catch (...) {
      rc = 70;
    }
    ::_exit(rc);
  }
  remember_child(pid);
  // The kernel recycles pids (pid_max may be 32768): a long run that starts
  // thousands of children meets a pid again. The entry of the earlier child,
  // reaped, goes, so that find() sees the new one; else poll() would report
  // the old exit for the running child, and kill() would skip it.
  std::erase_if(entries_, [pid](const Entry& e) { return e.pid == pid && e.exit.how != ChildExit::How::running; });
  entries_.push_back({pid, {}});
  return pid;
}

Children::Entry* Children::find(pid_t pid) {
  for (auto& e : entries_)
    if (e.pid == pid) return &e;
  return nullptr;
}

const Children::Entry* Children::find(pid_t pid) const {
  for (const auto& e : entries_)
    if (e.pid == pid) return &e;
  return nullptr;
}

void Children::record(Entry& entry, int status) {
  if (entry.exit.how != ChildExit::How::timed_out) {
    if (WIFEXITED(status)) entry.exit = {ChildExit::How::exited, WEXITSTATUS(status)};
    else if (WIFSIGNALED(status)) entry.exit = {ChildExit::How::signaled, WTERMSIG(status)};
  }
  forget_child(entry.pid);
}

std::optional<ChildExit> Children::poll(pid_t pid) {
  Entry* e = find(pid);
  if (e == nullptr) return std::nullopt;
  if (e->exit.how != ChildExit::How::running) return e->exit;
  int status = 0;
  const pid_t rc = ::waitpid(pid, &status, WNOHANG);
  if (rc == pid) {
    record(*e, status);
    return e->exit;
  }
  if (rc < 0 && errno == ECHILD) {  // reaped elsewhere: should not happen
    e->exit = {ChildExit::How::exited, -1};
    forget_child(pid);
    return e->exit;
  }
  return std::nullopt;
}

ChildExit Children::wait(pid_t pid, SteadyClock::time_point deadline) {
  Entry* e = find(pid);
  if (e == nullptr) return {ChildExit::How::exited, -1};
  // Poll with a short sleep: waitpid has no timeout, and a child stuck in a
  // lock must not stall the parent.
  auto pause = std::chrono::microseconds(50);
  while (true) {
    if (auto done = poll(pid)) return *done;
    if (SteadyClock::now() >= deadline) break;
    std::this_thread::sleep_for(pause);
    pause = std::min<std::chrono::microseconds>(pause * 2, std::chrono::milliseconds(5));
  }
  ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  e->exit = {ChildExit::How::timed_out, SIGKILL};
  forget_child(pid);
  return e->exit;
}

bool Children::wait_all(SteadyClock::time_point deadline) {
  bool all = true;
  for (auto& e : entries_)
    if (e.exit.how == ChildExit::How::running && wait(e.pid, deadline).how == ChildExit::How::timed_out) all = false;
  return all;
}

void Children::kill(pid_t pid, int signal) {
  const Entry* e = find(pid);
  if (e != nullptr && e->exit.how == ChildExit::How::running) ::kill(pid, signal);
}

ChildExit Children::status(pid_t pid) const {
  const Entry* e = find(pid);
  return e != nullptr ? e->exit : ChildExit{ChildExit::How::exited, -1};
}

Children::~Children() {
  for (auto& e : entries_) {
    if (e.exit.how != ChildExit::How::running) continue;
    ::kill(e.pid, SIGKILL);
    int status = 0;
    while (::waitpid(e.pid, &status, 0) < 0 && errno == EINTR) {
    }
    forget_child(e.pid);
  }
}

// ------------------------------------------------------- scratch namespaces

int free_loopback_port() noexcept {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  const int saved = errno;
  ::close(fd);
  errno = saved;
  return ok ? ntohs(addr.sin_port) : -1;
}

std::vector<std::string> shm_segments_with_prefix(const std::string& prefix) {
  std::vector<std::string> out;
  DIR* dir = ::opendir("/dev/shm");
  if (dir == nullptr) return out;
  while (const dirent* entry = ::readdir(dir)) {
    const std::string name = entry->d_name;
    if (name.rfind(prefix, 0) == 0) out.push_back(name);
  }
  ::closedir(dir);
  std::sort(out.begin(), out.end());
  return out;
}

Result<void> ScratchNamespace::open(const std::string& prefix) {
  ns_ = prefix + std::to_string(::getpid());
  const std::string registry = "colo." + ns_ + ".registry";
  remember_path(shm_path(registry));
  for (const auto& stale : shm_segments_with_prefix("colo." + ns_ + ".")) ::shm_unlink(("/" + stale).c_str());
  NodeOptions options;
  options.ns = ns_;
  auto node = Node::open(options);
  if (!node) return std::move(node).error();
  node_.emplace(std::move(node).value());
  removed_ = false;
  return {};
}

void ScratchNamespace::track(const std::string& object_name) {
  if (node_) remember_path(shm_path(node_->shm_name_of(object_name)));
}

Result<Lock> ScratchNamespace::create_lock(const std::string& name) {
  if (!node_) return Error{Errc::invalid_argument, "scratch namespace not open"};
  track(name);
  return node_->lock(name, OpenMode::create);
}

std::vector<std::string> ScratchNamespace::remove_all() {
  if (ns_.empty() || removed_) return {};
  removed_ = true;
  if (node_) {
    if (auto objects = node_->list())
      for (const auto& o : *objects) {
        (void)node_->remove(o.name);
        forget_path(shm_path(o.shm_name));
      }
  }
  const std::string prefix = "colo." + ns_ + ".";
  ::shm_unlink(("/" + prefix + "registry").c_str());
  forget_path(shm_path(prefix + "registry"));
  // Anything else of the namespace (an object the registry did not list).
  for (const auto& left : shm_segments_with_prefix(prefix)) {
    ::shm_unlink(("/" + left).c_str());
    forget_path(shm_path(left));
  }
  return shm_segments_with_prefix(prefix);
}

ScratchNamespace::~ScratchNamespace() { (void)remove_all(); }

}  // namespace colo::cli
