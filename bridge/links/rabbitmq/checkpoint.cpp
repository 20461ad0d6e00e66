#include "checkpoint.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <utility>

#include "colo/internal/text.hpp"

namespace colo::bridge::rabbitmq {
namespace {

constexpr std::size_t kBytes = 64;
constexpr std::uint64_t kMagic = 0x31306d716f6c6f63ull;  // "colomq01", little-endian
enum Word { magic, epoch, confirmed, published };

}  // namespace

Result<Checkpoint> Checkpoint::open(const std::string& ns, const std::string& link) {
  std::string name = link;
  std::replace(name.begin(), name.end(), '/', '^');  // as object names in segment names
  Checkpoint c;
  c.path_ = "/dev/shm/colo." + ns + ".link." + name;
  const int fd = ::open(c.path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return Error{Errc::system, internal::errno_text(c.path_)};
  struct stat st {};
  if (::fstat(fd, &st) != 0 || (static_cast<std::size_t>(st.st_size) < kBytes && ::ftruncate(fd, kBytes) != 0)) {
    Error e{Errc::system, internal::errno_text(c.path_)};
    ::close(fd);
    return e;
  }
  void* p = ::mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    Error e{Errc::system, internal::errno_text(c.path_ + ": mmap")};
    ::close(fd);
    return e;
  }
  ::close(fd);
  c.words_ = static_cast<std::uint64_t*>(p);
  return c;
}

Checkpoint::Checkpoint(Checkpoint&& other) noexcept
    : words_(std::exchange(other.words_, nullptr)), path_(std::move(other.path_)) {}

Checkpoint& Checkpoint::operator=(Checkpoint&& other) noexcept {
  if (this != &other) {
    if (words_ != nullptr) ::munmap(words_, kBytes);
    words_ = std::exchange(other.words_, nullptr);
    path_ = std::move(other.path_);
  }
  return *this;
}

Checkpoint::~Checkpoint() {
  if (words_ != nullptr) ::munmap(words_, kBytes);
}

std::optional<Checkpoint::Position> Checkpoint::read() const noexcept {
  if (words_ == nullptr) return std::nullopt;
  auto load = [&](Word w) { return std::atomic_ref<std::uint64_t>(words_[w]).load(std::memory_order_relaxed); };
  if (load(magic) != kMagic) return std::nullopt;
  return Position{load(epoch), load(confirmed), load(published)};
}

void Checkpoint::start(std::uint64_t epoch_ns, std::uint64_t at) noexcept {
  if (words_ == nullptr) return;
  auto store = [&](Word w, std::uint64_t v) {
    std::atomic_ref<std::uint64_t>(words_[w]).store(v, std::memory_order_relaxed);
  };
  // The magic last: a crash half-way leaves no checkpoint (a first start
  // again), never positions of one epoch under another.
  store(magic, 0);
  store(epoch, epoch_ns);
  store(confirmed, at);
  store(published, at);
  store(magic, kMagic);
}

void Checkpoint::set_confirmed(std::uint64_t below) noexcept {
  if (words_ != nullptr) std::atomic_ref<std::uint64_t>(words_[confirmed]).store(below, std::memory_order_relaxed);
}

void Checkpoint::set_published(std::uint64_t below) noexcept {
  if (words_ != nullptr) std::atomic_ref<std::uint64_t>(words_[published]).store(below, std::memory_order_relaxed);
}

}  // namespace colo::bridge::rabbitmq
