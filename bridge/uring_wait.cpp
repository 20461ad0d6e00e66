#include "uring_wait.hpp"

#include <liburing.h>
#include <poll.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace colo::bridge {
namespace {

// Debian 12's liburing (2.3) predates the futex requests, so the request is
// filled in by hand, as the kernel's ABI has it (include/uapi/linux/
// io_uring.h, Linux 6.7: opcode 51; fd = futex2 flags, addr = the word,
// addr2 = the value, addr3 = the wake bitset mask; the rest zero).
constexpr std::uint8_t kOpFutexWait = 51;
constexpr std::uint32_t kFutex2SizeU32 = 0x02;  // a 32-bit word, shared (FUTEX2_PRIVATE not set)
constexpr std::uint64_t kFutexBitsetMatchAny = 0xffffffff;

constexpr unsigned kEntries = 64;  // a sleep with more requests submits in several goes

// user_data: the kind of request in the low 2 bits, a poll's index in fds above.
enum Tag : std::uint64_t { kPoll = 1, kFutex = 2, kCancel = 3 };
constexpr std::uint64_t kTagBits = 2;
Tag tag_of(const io_uring_cqe* cqe) { return static_cast<Tag>(cqe->user_data & ((1u << kTagBits) - 1)); }

void prep_futex_wait(io_uring_sqe* sqe, std::atomic<std::uint32_t>* word, std::uint32_t value) {
  std::memset(sqe, 0, sizeof *sqe);
  sqe->opcode = kOpFutexWait;
  sqe->fd = static_cast<std::int32_t>(kFutex2SizeU32);
  sqe->addr = reinterpret_cast<std::uint64_t>(word);
  sqe->addr2 = value;
  sqe->addr3 = kFutexBitsetMatchAny;
}

}  // namespace

struct UringWait::Impl {
  io_uring ring{};
  bool ready = false;
  ~Impl() {
    if (ready) io_uring_queue_exit(&ring);
  }

  // A free submission entry, submitting what is queued when the queue is full.
  io_uring_sqe* next_sqe() {
    if (auto* sqe = io_uring_get_sqe(&ring)) return sqe;
    if (io_uring_submit(&ring) < 0) return nullptr;
    return io_uring_get_sqe(&ring);
  }

  // Notes a readable descriptor's completion in `readable`.
  static void note(const io_uring_cqe* cqe, std::vector<std::size_t>* readable) {
    if (readable && tag_of(cqe) == kPoll && cqe->res > 0) readable->push_back(cqe->user_data >> kTagBits);
  }

  // Takes completions until `requests` of ours and `cancels` have come; false
  // if they do not within a second (a cancelled request ends at once).
  bool reap(std::size_t requests, std::size_t cancels, std::vector<std::size_t>* readable = nullptr) {
    __kernel_timespec bound{1, 0};
    while (requests > 0 || cancels > 0) {
      io_uring_cqe* cqe = nullptr;
      const int rc = io_uring_wait_cqe_timeout(&ring, &cqe, &bound);
      if (rc == -EINTR) continue;
      if (rc < 0) return false;
      (tag_of(cqe) == kCancel ? cancels : requests) -= 1;
      note(cqe, readable);
      io_uring_cqe_seen(&ring, cqe);
    }
    return true;
  }
};

UringWait::UringWait(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
UringWait::~UringWait() = default;

Result<std::unique_ptr<UringWait>> UringWait::open() {
  auto impl = std::make_unique<Impl>();
  if (const int rc = io_uring_queue_init(kEntries, &impl->ring, 0); rc < 0)
    return Error{Errc::not_supported, std::string("io_uring: ") + std::strerror(-rc)};
  impl->ready = true;
  io_uring_probe* probe = io_uring_get_probe_ring(&impl->ring);
  const bool listed = probe && io_uring_opcode_supported(probe, kOpFutexWait);
  if (probe) io_uring_free_probe(probe);
  if (!listed) return Error{Errc::not_supported, "io_uring has no FUTEX_WAIT (Linux 6.7 or later)"};
  // The same opcode number could mean something else to another kernel:
  // a wait on a word that does not hold the value must end with EAGAIN.
  std::atomic<std::uint32_t> word{1};
  io_uring_sqe* sqe = io_uring_get_sqe(&impl->ring);
  prep_futex_wait(sqe, &word, 0);
  sqe->user_data = kFutex;
  io_uring_cqe* cqe = nullptr;
  if (io_uring_submit_and_wait(&impl->ring, 1) < 0 || io_uring_wait_cqe(&impl->ring, &cqe) < 0)
    return Error{Errc::not_supported, "io_uring: the FUTEX_WAIT check did not complete"};
  const int res = cqe->res;
  io_uring_cqe_seen(&impl->ring, cqe);
  if (res != -EAGAIN)
    return Error{Errc::not_supported, "io_uring: FUTEX_WAIT on a changed word gave " + std::to_string(res) +
                                        " instead of EAGAIN"};
  return std::unique_ptr<UringWait>(new UringWait(std::move(impl)));
}

UringWait::Woken UringWait::wait(std::span<const int> fds, std::span<const FutexWord> words, int timeout_ms,
                                 std::vector<std::size_t>* readable) {
  if (readable) {
    readable->clear();
    readable->reserve(fds.size());  // note() then never allocates
  }
  auto& ring = impl_->ring;
  std::size_t pending = 0;  // requests submitted (or queued) whose completion we have not taken
  auto give_up = [&] {  // after a failure: end what was submitted, if we can
    io_uring_sqe* cancel = io_uring_get_sqe(&ring);
    if (cancel) {
      io_uring_prep_cancel64(cancel, 0, IORING_ASYNC_CANCEL_ANY);
      cancel->user_data = kCancel;
    }
    (void)io_uring_submit(&ring);
    (void)impl_->reap(pending, cancel ? 1 : 0);
    return Woken::failed;
  };
  for (std::size_t i = 0; i < fds.size(); ++i) {
    io_uring_sqe* sqe = impl_->next_sqe();
    if (!sqe) return give_up();
    io_uring_prep_poll_add(sqe, fds[i], POLLIN);
    sqe->user_data = (std::uint64_t{i} << kTagBits) | kPoll;
    ++pending;
  }
  for (const auto& futex : words) {
    io_uring_sqe* sqe = impl_->next_sqe();
    if (!sqe) return give_up();
    prep_futex_wait(sqe, futex.word, futex.value);
    sqe->user_data = kFutex;
    ++pending;
  }
  // One completion ends the sleep (or the timeout does); the other requests
  // are then cancelled and their completions taken, so that none outlives
  // this call (a futex word may go away with its ring afterwards).
  __kernel_timespec timeout{timeout_ms / 1000, static_cast<long long>(timeout_ms % 1000) * 1'000'000};
  io_uring_cqe* first = nullptr;
  // liburing 2.3 returns the number submitted, and no completion on a
  // timeout; later versions return -ETIME then.
  int rc = io_uring_submit_and_wait_timeout(&ring, &first, 1, &timeout, nullptr);
  while (rc == -EINTR) rc = io_uring_wait_cqe_timeout(&ring, &first, &timeout);
  Woken woken = Woken::timeout;
  if (rc >= 0 && first) {
    if (tag_of(first) != kCancel) {
      --pending;
      woken = tag_of(first) == kFutex ? Woken::futex : Woken::descriptor;
      Impl::note(first, readable);
    }
    io_uring_cqe_seen(&ring, first);
  } else if (rc < 0 && rc != -ETIME) {
    return give_up();
  }
  if (pending == 0) return woken;
  io_uring_sqe* cancel = impl_->next_sqe();
  if (!cancel) return give_up();
  io_uring_prep_cancel64(cancel, 0, IORING_ASYNC_CANCEL_ANY);
  cancel->user_data = kCancel;
  if (io_uring_submit(&ring) < 0) return give_up();
  return impl_->reap(pending, 1, readable) ? woken : Woken::failed;
}

}  // namespace colo::bridge
