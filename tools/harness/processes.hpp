// tools/harness/processes.hpp — what colo-bench and colo-demo need to run
// several processes safely: shared anonymous memory, forked children with
// bounded waits, and a scratch namespace that is removed at the end, even when
// the run fails or is interrupted.
//
// Contract: single-threaded parent. Children are forked (not exec'd), run a
// function and leave with _exit() (never exit(): no atexit handlers, no
// flushing of the parent's stdio buffers). Every wait is bounded; a child
// still running at its deadline is SIGKILLed and reported as timed out. A
// child also gets SIGKILL if the parent dies (PR_SET_PDEATHSIG), so nothing
// outlives a crashed or killed colo-bench or colo-demo.
#pragma once

#include <sys/types.h>  // pid_t

#include <chrono>      // deadlines
#include <cstddef>     // size_t
#include <functional>  // child bodies
#include <new>         // placement new into the mapping
#include <optional>    // Node before open()
#include <type_traits> // SharedArray
#include <string>
#include <vector>

#include "colo/error.hpp"
#include "colo/node.hpp"

namespace colo::cli {

using SteadyClock = std::chrono::steady_clock;

// ------------------------------------------------------------ shared memory

// Maps `bytes` of zeroed MAP_SHARED|MAP_ANONYMOUS memory, inherited by
// children forked afterwards. Returns nullptr (errno set) on failure.
void* map_shared_anonymous(std::size_t bytes) noexcept;
void unmap_shared(void* address, std::size_t bytes) noexcept;

// A T constructed in shared anonymous memory, visible to children forked
// after construction. T must be usable from several processes at once, i.e.
// hold only atomics and plain data (no pointers, no heap-owning members).
template <typename T>
class SharedBlock {
 public:
  SharedBlock() {
    void* p = map_shared_anonymous(sizeof(T));
    if (p != nullptr) object_ = new (p) T{};
  }
  ~SharedBlock() {
    if (object_ == nullptr) return;
    object_->~T();
    unmap_shared(object_, sizeof(T));
  }
  SharedBlock(const SharedBlock&) = delete;
  SharedBlock& operator=(const SharedBlock&) = delete;

  explicit operator bool() const noexcept { return object_ != nullptr; }
  T& operator*() noexcept { return *object_; }
  T* operator->() noexcept { return object_; }
  const T& operator*() const noexcept { return *object_; }
  const T* operator->() const noexcept { return object_; }

 private:
  T* object_ = nullptr;
};

// An array of n T in shared anonymous memory (zeroed), visible to children
// forked after construction. T: atomics or plain data.
template <typename T>
class SharedArray {
  static_assert(std::is_trivially_destructible_v<T>, "shared arrays hold plain data or atomics");

 public:
  explicit SharedArray(std::size_t n) : n_(n) {
    if (n == 0) return;
    void* p = map_shared_anonymous(n * sizeof(T));
    if (p == nullptr) return;
    data_ = static_cast<T*>(p);
    if constexpr (!std::is_trivially_default_constructible_v<T>)
      for (std::size_t i = 0; i < n; ++i) new (&data_[i]) T{};
  }
  ~SharedArray() {
    if (data_ != nullptr) unmap_shared(data_, n_ * sizeof(T));
  }
  SharedArray(const SharedArray&) = delete;
  SharedArray& operator=(const SharedArray&) = delete;
  explicit operator bool() const noexcept { return data_ != nullptr; }
  T* data() noexcept { return data_; }
  T& operator[](std::size_t i) noexcept { return data_[i]; }

 private:
  std::size_t n_;
  T* data_ = nullptr;
};


// --------------------------------------------------------------- children

// How a child ended.
struct ChildExit {
  enum class How { running, exited, signaled, timed_out };
  How how = How::running;
  int code = 0;    // exit status (exited) or signal number (signaled, timed_out: SIGKILL)
  std::string text() const;  // "exit 0", "killed by SIGKILL", "timed out (killed)"
};

// The children of one run. Destruction kills (SIGKILL) and reaps any child
// still running, so an early return never leaves a process behind.
class Children {
 public:
  // Forks a child that runs `body` and _exits with its return value (70 if it
  // throws). In the child, termination signals are reset to their defaults
  // and the child dies with the parent. Flushes stdout/stderr first. Returns
  // the pid, or -1 (errno set) if fork failed.
  pid_t spawn(const std::function<int()>& body);

  // Waits until `pid` ends or `deadline` passes; then SIGKILLs and reaps it.
  ChildExit wait(pid_t pid, SteadyClock::time_point deadline);
  // Reaps `pid` if it has ended, without blocking.
  std::optional<ChildExit> poll(pid_t pid);
  // Waits for every child still running, each bounded by `deadline`.
  // Returns true if all of them ended before it.
  bool wait_all(SteadyClock::time_point deadline);

  // Sends `signal` to a running child (no-op for a reaped one).
  void kill(pid_t pid, int signal);
  // Status of a child of this set (How::running if not reaped yet).
  ChildExit status(pid_t pid) const;

  Children() = default;
  Children(const Children&) = delete;
  Children& operator=(const Children&) = delete;
  ~Children();

 private:
  struct Entry {
    pid_t pid;
    ChildExit exit;
  };
  Entry* find(pid_t pid);
  const Entry* find(pid_t pid) const;
  void record(Entry& entry, int status);
  std::vector<Entry> entries_;
};

// ------------------------------------------------------- scratch namespaces

// A private namespace `<prefix><pid>` for one run, with every segment of it
// removed at the end: by remove_all(), by the destructor, or — if the run is
// interrupted by SIGINT, SIGTERM, SIGHUP, SIGQUIT or SIGPIPE (output piped
// into `head`) — by a signal handler that kills the children and unlinks the
// segments it was told about, then re-raises. (SIGKILL cannot be caught:
// after one, remove /dev/shm/colo.<ns>.* by hand.)
class ScratchNamespace {
 public:
  // Opens (creates) the namespace's registry. Segments left by an earlier run
  // that had the same pid are removed first: these names belong to colo's
  // own tools.
  Result<void> open(const std::string& prefix);

  Node& node() { return *node_; }
  const std::string& ns() const noexcept { return ns_; }

  // Creates a lock in the namespace (it must not exist).
  Result<Lock> create_lock(const std::string& name);
  // Has the segment of an object about to be created here removed if the run
  // is interrupted (create_lock does it for locks).
  void track(const std::string& object_name);

  // Removes every object (Node::remove), the registry segment, and any other
  // /dev/shm/colo.<ns>.* left over. Returns the segments it could not
  // remove (empty: nothing is left). Idempotent.
  std::vector<std::string> remove_all();

  ScratchNamespace() = default;
  ScratchNamespace(const ScratchNamespace&) = delete;
  ScratchNamespace& operator=(const ScratchNamespace&) = delete;
  ~ScratchNamespace();

 private:
  std::string ns_;
  std::optional<Node> node_;
  bool removed_ = false;
};

// Files to unlink if the run is interrupted by SIGINT/SIGTERM/SIGHUP/SIGQUIT/SIGPIPE
// (a flock file, a named semaphore's /dev/shm/sem.NAME), or directories to
// remove once those files are gone (a scratch directory). Forget them once
// removed normally.
void unlink_on_interrupt(const std::string& path);
void forget_on_interrupt(const std::string& path);

// A process started otherwise than by Children (posix_spawn: a colod of
// LocalCluster) to SIGKILL if the run is interrupted; forget it once reaped,
// so that a recycled pid is never hit.
void kill_on_interrupt(pid_t pid);
void forget_kill_on_interrupt(pid_t pid);

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, read
// back, released): another process may take it before it is bound again,
// which is rare enough for a benchmark. -1 (errno set) on failure.
int free_loopback_port() noexcept;

// Segments (names without the leading '/') in /dev/shm starting with `prefix`.
std::vector<std::string> shm_segments_with_prefix(const std::string& prefix);

}  // namespace colo::cli
