// bridge/uring_wait.hpp — colod's event loop sleeps on its sockets and on
// the rings of its cluster topics at once.
//
// A publisher's commit wakes sleeping readers through a futex word in the
// ring's shared memory; colod's sockets are file descriptors. poll(2) and
// epoll cannot wait on a futex, so without this a thread per topic sleeps
// on the ring and writes an eventfd the loop polls (daemon.cpp, Waker): one
// more wake-up, 15-20 us on a VM, for every message that finds colod asleep.
// io_uring's FUTEX_WAIT (Linux 6.7) sleeps on the word next to POLL_ADD
// requests on the descriptors, in one io_uring_enter. Where the kernel lacks
// it (or io_uring is disabled), colod keeps the waker threads.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "colo/error.hpp"

namespace colo::bridge {

class UringWait {
 public:
  struct FutexWord {
    std::atomic<std::uint32_t>* word;  // a shared (not process-private) futex
    std::uint32_t value;               // sleep while the word holds it
  };

  // An io_uring whose FUTEX_WAIT works here (checked: a wait on a word that
  // no longer holds the value must end at once with EAGAIN, as futex(2)'s
  // does), or why not.
  static Result<std::unique_ptr<UringWait>> open();
  ~UringWait();
  UringWait(const UringWait&) = delete;
  UringWait& operator=(const UringWait&) = delete;

  // Sleeps until one of `fds` is readable, one of `words` is woken or holds
  // another value, or `timeout_ms` passed; says which came first, and puts
  // in `readable` (when given) the index in `fds` of each descriptor found
  // readable by the time the sleep ended. `failed`: io_uring failed, do
  // not use this object again (the caller sleeps some other way from then
  // on). No request outlives the call.
  enum class Woken { timeout, descriptor, futex, failed };
  Woken wait(std::span<const int> fds, std::span<const FutexWord> words, int timeout_ms,
             std::vector<std::size_t>* readable = nullptr);

 private:
  struct Impl;
  explicit UringWait(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace colo::bridge
