// tools/bench/transports.cpp — the IPC baselines of the message benchmark.
//
//   floor-spsc        the hardware floor: 64-byte slots in shared 1->1 only
//                     memory, one writer, one reader, cached
//                     indices, one release store per message
//   zmq-ipc-pushpull  ZeroMQ PUSH -> PULL over ipc://          1->N: share (round-robin)
//   zmq-ipc-pubsub    ZeroMQ PUB -> SUB over ipc://, no drops   1->N: broadcast
//   zmq-tcp-pushpull  ZeroMQ PUSH -> PULL over tcp://127.0.0.1  1->N: share; only in `colo bench bridge`
//   unix-stream       AF_UNIX SOCK_STREAM, length-prefixed       1->N: broadcast (one write per reader)
//   pipe              pipe(2) per sender/receiver pair, framed   1->N: broadcast (one write per reader)
//   posix-mq          one POSIX message queue                    1->N: share (competing consumers)
//   boost-mq          one boost::interprocess::message_queue     1->N: share (competing consumers)
//
// Each is written the way a competent user would write it, not tuned beyond
// that: ZeroMQ uses its in-place message API (zmq_msg_init_size / zmq_msg_recv,
// no extra copy), the stream transports one writev per message and a 64 KiB
// read-ahead buffer, the queues their timed calls. Buffering follows
// Config::depth where the mechanism has a depth (ZeroMQ high-water marks, the
// two message queues); sockets and pipes keep the kernel's default buffers.
//
// Stream framing (unix-stream, pipe):
//
//    0        4                       4+len
//   +--------+------------------------+--------+----
//   | len u32| payload (len bytes)    | len u32| ...      host byte order
//   +--------+------------------------+--------+----
//
// A frame once started is always finished (a reader cannot skip half a
// frame): the timeout of send() applies only before the first byte, and the
// rest waits at most kStallLimit for the peer before it is an error.
#include "transport.hpp"

#include <fcntl.h>         // O_* flags
#include <sys/mman.h>      // floor-spsc's shared slots
#include <mqueue.h>        // mq_open
#include <poll.h>          // ppoll
#include <sys/resource.h>  // RLIMIT_MSGQUEUE
#include <sys/socket.h>    // AF_UNIX sockets
#include <sys/uio.h>       // writev
#include <sys/un.h>        // sockaddr_un
#include <unistd.h>
#include <zmq.h>           // ZeroMQ C API (cppzmq adds nothing we need here)

#include <boost/date_time/posix_time/posix_time_types.hpp>  // message_queue timeouts
#include <boost/interprocess/ipc/message_queue.hpp>
#include <boost/interprocess/permissions.hpp>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <fstream>
#include <vector>

#include "colo/internal/clock.hpp"
#include "colo/internal/text.hpp"  // errno_text
#include "processes.hpp"  // unlink_on_interrupt (names removed if the run is interrupted), free_loopback_port

namespace colo::bench {
namespace {

namespace bip = boost::interprocess;
using cli::forget_on_interrupt;
using cli::unlink_on_interrupt;

// How long a peer may stall in the middle of a frame before it is an error.
constexpr Nanos kStallLimit = std::chrono::seconds(10);
// Stream readers read ahead this much per connection.
constexpr std::size_t kReadAhead = 64 * 1024;

[[noreturn]] void throw_errno(const std::string& what) {
  throw TransportError(internal::errno_text(what));
}

// Signed: the waits below subtract instants and compare the remainder with 0.
std::int64_t monotonic_ns() { return static_cast<std::int64_t>(internal::monotonic_ns()); }

timespec to_timespec(std::int64_t ns) {
  if (ns < 0) ns = 0;
  return {static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
}

// Absolute CLOCK_REALTIME deadline `timeout` from now, for mq_timed*.
timespec realtime_deadline(Nanos timeout) {
  return to_timespec(static_cast<std::int64_t>(internal::realtime_ns()) + timeout.count());
}

// Waits up to `ns` for `events` on any of `fds`. Returns the poll result
// (0: timed out); EINTR counts as "nothing yet".
int wait_fds(std::vector<pollfd>& fds, std::int64_t ns) {
  const timespec ts = to_timespec(ns);
  const int rc = ::ppoll(fds.data(), fds.size(), &ts, nullptr);
  if (rc < 0 && errno != EINTR) throw_errno("ppoll");
  return rc < 0 ? 0 : rc;
}

int wait_fd(int fd, short events, std::int64_t ns) {
  std::vector<pollfd> fds{{fd, events, 0}};
  return wait_fds(fds, ns);
}

void set_nonblocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) throw_errno("fcntl O_NONBLOCK");
}

void close_fd(int& fd) noexcept {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

// ------------------------------------------------------- framed byte streams

// Writes each message as a frame to every fd in turn (one fd: 1->1, n->1;
// several: 1->n broadcast). Non-blocking fds, waits in ppoll.
class FdStreamSender final : public Sender {
 public:
  explicit FdStreamSender(std::vector<int> fds) : fds_(std::move(fds)) {}
  ~FdStreamSender() override {
    for (int& fd : fds_) close_fd(fd);
  }
  FdStreamSender(const FdStreamSender&) = delete;
  FdStreamSender& operator=(const FdStreamSender&) = delete;

  bool send(std::span<const std::byte> message, Nanos timeout) override {
    if (message.size() > UINT32_MAX) throw TransportError("message longer than a 32-bit frame length");
    for (std::size_t i = 0; i < fds_.size(); ++i) {
      // Only the first copy may give up: once one reader has the message,
      // every other reader must get it too.
      if (!write_frame(fds_[i], message, i == 0 ? timeout : kStallLimit)) {
        if (i == 0) return false;
        throw TransportError("reader " + std::to_string(i) + " stopped reading for " +
                             std::to_string(kStallLimit.count() / 1'000'000'000) + " s");
      }
    }
    return true;
  }

 private:
  // False if not a byte could be written within `timeout`.
  static bool write_frame(int fd, std::span<const std::byte> message, Nanos timeout) {
    const std::uint32_t len = static_cast<std::uint32_t>(message.size());
    const std::size_t total = sizeof len + message.size();
    std::size_t done = 0;
    const std::int64_t start = monotonic_ns();
    const std::int64_t give_up = start + timeout.count();
    const std::int64_t stall_limit = start + kStallLimit.count();
    while (done < total) {
      iovec iov[2];
      int count = 0;
      if (done < sizeof len) {
        iov[count++] = {const_cast<char*>(reinterpret_cast<const char*>(&len)) + done, sizeof len - done};
        iov[count++] = {const_cast<std::byte*>(message.data()), message.size()};
      } else {
        iov[count++] = {const_cast<std::byte*>(message.data()) + (done - sizeof len), total - done};
      }
      const ssize_t n = ::writev(fd, iov, count);
      if (n > 0) {
        done += static_cast<std::size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno != EAGAIN) throw_errno("writev");
      const std::int64_t now = monotonic_ns();
      if (done == 0) {
        if (timeout == kNoWait || now >= give_up) return false;
        (void)wait_fd(fd, POLLOUT, give_up - now);
      } else {
        if (now >= stall_limit) throw TransportError("the reader stopped reading in the middle of a frame");
        (void)wait_fd(fd, POLLOUT, stall_limit - now);
      }
    }
    return true;
  }

  std::vector<int> fds_;
};

// Reads frames from one or more fds (n->1: one per sender), round-robin.
class FdStreamReceiver final : public Receiver {
 public:
  explicit FdStreamReceiver(const std::vector<int>& fds) {
    for (int fd : fds) conns_.push_back(Conn{fd, std::make_unique<std::byte[]>(kReadAhead), 0, 0});
    for (const auto& c : conns_) pollfds_.push_back({c.fd, POLLIN, 0});
  }
  ~FdStreamReceiver() override {
    for (auto& c : conns_) close_fd(c.fd);
  }
  FdStreamReceiver(const FdStreamReceiver&) = delete;
  FdStreamReceiver& operator=(const FdStreamReceiver&) = delete;

  std::optional<std::size_t> receive(std::span<std::byte> buffer, Nanos timeout) override {
    const std::int64_t give_up = timeout == kNoWait ? 0 : monotonic_ns() + timeout.count();
    for (;;) {
      // A frame whose length is already here: take it.
      for (std::size_t k = 0; k < conns_.size(); ++k) {
        const std::size_t i = (next_ + k) % conns_.size();
        if (conns_[i].end - conns_[i].begin >= sizeof(std::uint32_t)) {
          next_ = (i + 1) % conns_.size();
          return take(conns_[i], buffer);
        }
      }
      bool any = false;
      for (auto& c : conns_) any |= fill(c);
      if (any) continue;
      if (timeout == kNoWait) return std::nullopt;
      const std::int64_t now = monotonic_ns();
      if (now >= give_up) return std::nullopt;
      for (auto& p : pollfds_) p.revents = 0;
      (void)wait_fds(pollfds_, give_up - now);
    }
  }

 private:
  struct Conn {
    int fd;
    std::unique_ptr<std::byte[]> buf;
    std::size_t begin;
    std::size_t end;
  };

  // Reads what is available into the read-ahead buffer. True if it got bytes.
  static bool fill(Conn& c) {
    if (c.begin == c.end) {
      c.begin = c.end = 0;
    } else if (c.begin > kReadAhead / 2) {  // keep room for at least half a buffer
      std::memmove(c.buf.get(), c.buf.get() + c.begin, c.end - c.begin);
      c.end -= c.begin;
      c.begin = 0;
    }
    if (c.end == kReadAhead) return false;
    for (;;) {
      const ssize_t n = ::read(c.fd, c.buf.get() + c.end, kReadAhead - c.end);
      if (n > 0) {
        c.end += static_cast<std::size_t>(n);
        return true;
      }
      if (n == 0) throw TransportError("the sender closed its end");
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return false;
      throw_errno("read");
    }
  }

  // Copies the frame at c.begin out; reads its tail straight into `out`.
  static std::size_t take(Conn& c, std::span<std::byte> out) {
    std::uint32_t len = 0;
    std::memcpy(&len, c.buf.get() + c.begin, sizeof len);
    if (len > out.size())
      throw TransportError("a " + std::to_string(len) + "-byte frame does not fit the " + std::to_string(out.size()) +
                           "-byte buffer (stream out of step?)");
    const std::size_t have = c.end - c.begin - sizeof len;
    if (have >= len) {
      std::memcpy(out.data(), c.buf.get() + c.begin + sizeof len, len);
      c.begin += sizeof len + len;
      return len;
    }
    std::memcpy(out.data(), c.buf.get() + c.begin + sizeof len, have);
    c.begin = c.end = 0;
    std::size_t got = have;
    const std::int64_t stall_limit = monotonic_ns() + kStallLimit.count();
    while (got < len) {
      const ssize_t n = ::read(c.fd, out.data() + got, len - got);
      if (n > 0) {
        got += static_cast<std::size_t>(n);
        continue;
      }
      if (n == 0) throw TransportError("the sender closed its end in the middle of a frame");
      if (errno == EINTR) continue;
      if (errno != EAGAIN) throw_errno("read");
      const std::int64_t now = monotonic_ns();
      if (now >= stall_limit) throw TransportError("the sender stalled in the middle of a frame");
      (void)wait_fd(c.fd, POLLIN, stall_limit - now);
    }
    return len;
  }

  std::vector<Conn> conns_;
  std::vector<pollfd> pollfds_;
  std::size_t next_ = 0;
};

// ------------------------------------------------------------- unix-stream

// The single side of the pattern accepts a connection from each process of
// the other side: the receiver in 1->1 and n->1, the sender in 1->n. The
// listening socket is made by the parent, so a child may connect before the
// acceptor runs (the backlog holds it).
class UnixStreamFactory final : public TransportFactory {
 public:
  std::string name() const override { return "unix-stream"; }
  std::string description() const override {
    return "AF_UNIX SOCK_STREAM, 4-byte length prefix, one writev per message (per reader for 1->n), 64 KiB "
           "read-ahead; kernel default socket buffers";
  }
  // One listening side: n->n would need a socket per pair.
  bool supports(Pattern p) const override { return p != Pattern::many_to_many; }
  Fanout fanout() const override { return Fanout::broadcast; }

  std::string setup(const Config& config) override {
    config_ = config;
    path_ = config.tmp_dir + "/" + config.tag + ".sock";
    sockaddr_un addr = address();
    unlink_on_interrupt(path_);
    ::unlink(path_.c_str());
    listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (listen_fd_ < 0) throw_errno("socket");
    if (::bind(listen_fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) throw_errno("bind " + path_);
    if (::listen(listen_fd_, 64) != 0) throw_errno("listen");
    return {};
  }
  std::unique_ptr<Sender> open_sender(int) override {
    return std::make_unique<FdStreamSender>(sender_accepts() ? accept_n(config_.receivers) : connect_one());
  }
  std::unique_ptr<Receiver> open_receiver(int) override {
    return std::make_unique<FdStreamReceiver>(sender_accepts() ? connect_one() : accept_n(config_.senders));
  }
  void connected() override { ::unlink(path_.c_str()); }
  void teardown() noexcept override {
    close_fd(listen_fd_);
    if (!path_.empty()) {
      ::unlink(path_.c_str());
      forget_on_interrupt(path_);
      path_.clear();
    }
  }

 private:
  bool sender_accepts() const { return config_.senders == 1 && config_.receivers > 1; }

  sockaddr_un address() const {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path_.size() >= sizeof addr.sun_path) throw TransportError("socket path too long: " + path_);
    std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
    return addr;
  }

  std::vector<int> connect_one() {
    close_fd(listen_fd_);  // the parent's; this child does not accept
    const sockaddr_un addr = address();
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw_errno("socket");
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
      const int e = errno;
      ::close(fd);
      errno = e;
      throw_errno("connect " + path_);
    }
    set_nonblocking(fd);
    return {fd};
  }

  std::vector<int> accept_n(int n) {
    std::vector<int> fds;
    const std::int64_t give_up = monotonic_ns() + std::int64_t{10'000'000'000};
    while (static_cast<int>(fds.size()) < n) {
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd >= 0) {
        fds.push_back(fd);
        continue;
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN) throw_errno("accept");
      const std::int64_t now = monotonic_ns();
      if (now >= give_up) {
        for (int f : fds) ::close(f);
        throw TransportError("only " + std::to_string(fds.size()) + " of " + std::to_string(n) +
                             " peers connected within 10 s");
      }
      (void)wait_fd(listen_fd_, POLLIN, give_up - now);
    }
    close_fd(listen_fd_);
    return fds;
  }

  Config config_;
  std::string path_;
  int listen_fd_ = -1;
};

// -------------------------------------------------------------------- pipe

// One pipe per sender (n->1) or per receiver (1->n), made by the parent and
// inherited. Every child inherits every end; that is harmless here because
// nothing relies on EOF.
class PipeFactory final : public TransportFactory {
 public:
  std::string name() const override { return "pipe"; }
  std::string description() const override {
    return "pipe(2) per sender/receiver pair, 4-byte length prefix, one writev per message (per reader for 1->n); "
           "default 64 KiB pipe buffer";
  }
  bool supports(Pattern p) const override { return p != Pattern::many_to_many; }
  Fanout fanout() const override { return Fanout::broadcast; }

  std::string setup(const Config& config) override {
    config_ = config;
    const int n = std::max(config.senders, config.receivers);
    for (int i = 0; i < n; ++i) {
      int fds[2];
      if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) throw_errno("pipe2");
      pipes_.push_back({fds[0], fds[1]});
    }
    return {};
  }
  std::unique_ptr<Sender> open_sender(int index) override {
    std::vector<int> fds;
    if (config_.receivers > 1)
      for (auto& p : pipes_) fds.push_back(take(p.write));
    else
      fds.push_back(take(pipes_.at(static_cast<std::size_t>(index)).write));
    return std::make_unique<FdStreamSender>(fds);
  }
  std::unique_ptr<Receiver> open_receiver(int index) override {
    std::vector<int> fds;
    if (config_.senders > 1)
      for (auto& p : pipes_) fds.push_back(take(p.read));
    else
      fds.push_back(take(pipes_.at(static_cast<std::size_t>(index)).read));
    return std::make_unique<FdStreamReceiver>(fds);
  }
  void teardown() noexcept override {
    for (auto& p : pipes_) {
      close_fd(p.read);
      close_fd(p.write);
    }
    pipes_.clear();
  }

 private:
  struct Pipe {
    int read;
    int write;
  };
  // The child's Sender/Receiver owns (and closes) the fd from now on.
  static int take(int& fd) {
    const int out = fd;
    fd = -1;
    return out;
  }
  Config config_;
  std::vector<Pipe> pipes_;
};

// ------------------------------------------------------------------ ZeroMQ

// One context and one socket per process, made in the child (a ZeroMQ
// context does not survive fork). The single side binds, the others connect.
class ZmqEnd {
 public:
  // Binds `endpoints[0]`, or connects to every one of `endpoints`.
  ZmqEnd(int type, const std::vector<std::string>& endpoints, bool bind, std::size_t depth) {
    ctx_ = ::zmq_ctx_new();
    if (ctx_ == nullptr) throw_errno("zmq_ctx_new");
    socket_ = ::zmq_socket(ctx_, type);
    if (socket_ == nullptr) throw_zmq("zmq_socket");
    const int linger = 0;  // the harness closes only once everything was delivered
    const int hwm = static_cast<int>(std::min<std::size_t>(depth, INT32_MAX));
    const int reconnect_ms = 10;
    set(ZMQ_LINGER, linger);
    set(ZMQ_SNDHWM, hwm);
    set(ZMQ_RCVHWM, hwm);
    set(ZMQ_RECONNECT_IVL, reconnect_ms);
    if (type == ZMQ_PUB) set(ZMQ_XPUB_NODROP, 1);  // block at the high-water mark instead of dropping
    if (type == ZMQ_SUB && ::zmq_setsockopt(socket_, ZMQ_SUBSCRIBE, "", 0) != 0) throw_zmq("ZMQ_SUBSCRIBE");
    for (const auto& endpoint : endpoints) {
      if ((bind ? ::zmq_bind(socket_, endpoint.c_str()) : ::zmq_connect(socket_, endpoint.c_str())) != 0)
        throw_zmq(std::string(bind ? "zmq_bind " : "zmq_connect ") + endpoint);
      if (bind) break;
    }
  }
  ~ZmqEnd() {
    if (socket_ != nullptr) ::zmq_close(socket_);
    if (ctx_ != nullptr) ::zmq_ctx_term(ctx_);
  }
  ZmqEnd(const ZmqEnd&) = delete;
  ZmqEnd& operator=(const ZmqEnd&) = delete;

  [[noreturn]] static void throw_zmq(const std::string& what) {
    throw TransportError(what + ": " + ::zmq_strerror(::zmq_errno()));
  }

  // Flags for one call with `timeout`; sets the socket's timeout if it changed.
  int flags_for(int option, int& cached_ms, Nanos timeout) {
    if (timeout == kNoWait) return ZMQ_DONTWAIT;
    const auto ms = std::max<std::int64_t>(1, (timeout.count() + 999'999) / 1'000'000);
    const int value = static_cast<int>(std::min<std::int64_t>(ms, INT32_MAX));
    if (value != cached_ms) {
      set(option, value);
      cached_ms = value;
    }
    return 0;
  }

  void* socket() const noexcept { return socket_; }

 private:
  void set(int option, int value) {
    if (::zmq_setsockopt(socket_, option, &value, sizeof value) != 0) throw_zmq("zmq_setsockopt");
  }
  void* ctx_ = nullptr;
  void* socket_ = nullptr;
};

class ZmqSender final : public Sender {
 public:
  ZmqSender(int type, const std::vector<std::string>& endpoints, bool bind, std::size_t depth)
      : end_(type, endpoints, bind, depth) {}
  ~ZmqSender() override {
    if (loaned_) ::zmq_msg_close(&loan_);
  }

  bool send(std::span<const std::byte> message, Nanos timeout) override {
    const int flags = end_.flags_for(ZMQ_SNDTIMEO, timeout_ms_, timeout);
    for (;;) {
      if (::zmq_send(end_.socket(), message.data(), message.size(), flags) >= 0) return true;
      if (::zmq_errno() == EAGAIN) return false;
      if (::zmq_errno() != EINTR) ZmqEnd::throw_zmq("zmq_send");
    }
  }

  // zmq_msg_init_size allocates the message; we fill it and zmq_msg_send
  // hands it over without a copy.
  bool zero_copy() const noexcept override { return true; }
  std::span<std::byte> loan(std::size_t size, Nanos) override {
    if (loaned_) ::zmq_msg_close(&loan_);
    loaned_ = false;
    if (::zmq_msg_init_size(&loan_, size) != 0) ZmqEnd::throw_zmq("zmq_msg_init_size");
    loaned_ = true;
    return {static_cast<std::byte*>(::zmq_msg_data(&loan_)), size};
  }
  bool commit(Nanos timeout) override {
    if (!loaned_) throw TransportError("commit without a loan");
    const int flags = end_.flags_for(ZMQ_SNDTIMEO, timeout_ms_, timeout);
    for (;;) {
      if (::zmq_msg_send(&loan_, end_.socket(), flags) >= 0) {
        loaned_ = false;  // zmq_msg_send took the content
        return true;
      }
      if (::zmq_errno() == EAGAIN) return false;
      if (::zmq_errno() != EINTR) ZmqEnd::throw_zmq("zmq_msg_send");
    }
  }

 private:
  ZmqEnd end_;
  int timeout_ms_ = -1;
  zmq_msg_t loan_{};
  bool loaned_ = false;
};

class ZmqReceiver final : public Receiver {
 public:
  ZmqReceiver(int type, const std::vector<std::string>& endpoints, bool bind, std::size_t depth)
      : end_(type, endpoints, bind, depth) {
    ::zmq_msg_init(&in_);
  }
  ~ZmqReceiver() override { ::zmq_msg_close(&in_); }

  std::optional<std::size_t> receive(std::span<std::byte> buffer, Nanos timeout) override {
    const int flags = end_.flags_for(ZMQ_RCVTIMEO, timeout_ms_, timeout);
    for (;;) {
      const int n = ::zmq_recv(end_.socket(), buffer.data(), buffer.size(), flags);
      if (n >= 0) {
        if (static_cast<std::size_t>(n) > buffer.size())
          throw TransportError("a " + std::to_string(n) + "-byte message does not fit the buffer");
        return static_cast<std::size_t>(n);
      }
      if (::zmq_errno() == EAGAIN) return std::nullopt;
      if (::zmq_errno() != EINTR) ZmqEnd::throw_zmq("zmq_recv");
    }
  }

  bool zero_copy() const noexcept override { return true; }
  std::optional<std::span<const std::byte>> view(Nanos timeout) override {
    const int flags = end_.flags_for(ZMQ_RCVTIMEO, timeout_ms_, timeout);
    for (;;) {
      const int n = ::zmq_msg_recv(&in_, end_.socket(), flags);
      if (n >= 0) return std::span<const std::byte>(static_cast<const std::byte*>(::zmq_msg_data(&in_)), n);
      if (::zmq_errno() == EAGAIN) return std::nullopt;
      if (::zmq_errno() != EINTR) ZmqEnd::throw_zmq("zmq_msg_recv");
    }
  }
  void release() noexcept override {
    ::zmq_msg_close(&in_);
    ::zmq_msg_init(&in_);
  }

 private:
  ZmqEnd end_;
  int timeout_ms_ = -1;
  zmq_msg_t in_{};
};

class ZmqFactory final : public TransportFactory {
 public:
  enum class Kind {
    ipc_pushpull,  // PUSH -> PULL over ipc://; the single side binds
    ipc_pubsub,    // PUB -> SUB over ipc://; the single side binds
    tcp_pushpull,  // PUSH -> PULL over tcp://127.0.0.1; the receiving side binds unless there are several receivers
  };
  explicit ZmqFactory(Kind kind) : kind_(kind) {}
  std::string name() const override {
    switch (kind_) {
      case Kind::ipc_pushpull: return "zmq-ipc-pushpull";
      case Kind::ipc_pubsub: return "zmq-ipc-pubsub";
      case Kind::tcp_pushpull: return "zmq-tcp-pushpull";
    }
    return "?";
  }
  std::string description() const override {
    switch (kind_) {
      case Kind::ipc_pushpull:
        return "ZeroMQ PUSH->PULL over ipc://, HWM = depth each side, in-place zmq_msg API; 1->n: round-robin";
      case Kind::ipc_pubsub:
        return "ZeroMQ PUB->SUB over ipc://, ZMQ_XPUB_NODROP (a full subscriber blocks the publisher), "
               "HWM = depth each side, in-place zmq_msg API";
      case Kind::tcp_pushpull:
        return "ZeroMQ PUSH (connect) -> PULL (bind) over tcp://127.0.0.1 (TCP_NODELAY, libzmq's default), "
               "HWM = depth each side, in-place zmq_msg API; 1->n: round-robin";
    }
    return "?";
  }
  bool supports(Pattern) const override { return true; }
  Fanout fanout() const override { return kind_ == Kind::ipc_pubsub ? Fanout::broadcast : Fanout::share; }

  // n->n: every receiver binds an endpoint of its own and every sender
  // connects to all of them (PUSH round-robins over its connections).
  std::string setup(const Config& config) override {
    config_ = config;
    endpoints_.clear();
    paths_.clear();
    if (kind_ == Kind::tcp_pushpull) {
      const int n = config.pattern == Pattern::many_to_many ? config.receivers : 1;
      for (int i = 0; i < n; ++i) {
        const int port = cli::free_loopback_port();
        if (port < 0) throw_errno("a free port on 127.0.0.1");
        endpoints_.push_back("tcp://127.0.0.1:" + std::to_string(port));
      }
      receiver_binds_ = config.receivers == 1 || config.pattern == Pattern::many_to_many;
      return {};
    }
    const int n = config.pattern == Pattern::many_to_many ? config.receivers : 1;
    for (int i = 0; i < n; ++i) {
      const std::string path = config.tmp_dir + "/" + config.tag + ".zmq" + (n > 1 ? "." + std::to_string(i) : "");
      paths_.push_back(path);
      endpoints_.push_back("ipc://" + path);
      unlink_on_interrupt(path);
      ::unlink(path.c_str());
    }
    receiver_binds_ = config.senders > 1;
    return {};
  }
  std::unique_ptr<Sender> open_sender(int) override {
    return std::make_unique<ZmqSender>(kind_ == Kind::ipc_pubsub ? ZMQ_PUB : ZMQ_PUSH, endpoints_, !receiver_binds_,
                                       config_.depth);
  }
  std::unique_ptr<Receiver> open_receiver(int index) override {
    const bool own = config_.pattern == Pattern::many_to_many;
    std::vector<std::string> mine = own ? std::vector<std::string>{endpoints_[static_cast<std::size_t>(index)]}
                                        : endpoints_;
    return std::make_unique<ZmqReceiver>(kind_ == Kind::ipc_pubsub ? ZMQ_SUB : ZMQ_PULL, mine, receiver_binds_,
                                         config_.depth);
  }
  void connected() override {
    for (const auto& path : paths_) ::unlink(path.c_str());
  }
  void teardown() noexcept override {
    endpoints_.clear();
    for (const auto& path : paths_) {
      ::unlink(path.c_str());
      forget_on_interrupt(path);
    }
    paths_.clear();
  }

 private:
  Kind kind_;
  Config config_;
  std::vector<std::string> paths_;      // ipc: the socket files
  std::vector<std::string> endpoints_;  // what the ends bind or connect to
  bool receiver_binds_ = false;
};

// -------------------------------------------------------------- floor-spsc

// The floor: what one writer and one reader in two processes can do over
// shared memory on this machine with nothing of a real channel (no
// variable sizes, no crash safety, no waiting). The writer fills the next
// 64-byte aligned slot in place and publishes it with one release store of
// its index; the reader reads the slot in place and hands it back with one
// release store of its own index; each side reloads the other's index only
// when its cached copy says "full" or "empty" (cached indices).
//
//   line 0: writer index (written by the writer only)
//   line 1: reader index (written by the reader only)
//   then depth slots of align64(size) bytes
class FloorSpsc final : public TransportFactory {
 public:
  std::string name() const override { return "floor-spsc"; }
  std::string description() const override {
    return "the floor: fixed 64-byte aligned slots in shared memory, one writer, one reader, cached indices, one "
           "release store per message, nothing else (always spins)";
  }
  bool supports(Pattern p) const override { return p == Pattern::one_to_one; }
  Fanout fanout() const override { return Fanout::share; }

  std::string setup(const Config& config) override {
    size_ = config.message_size;
    slot_ = (config.message_size + 63) & ~std::size_t{63};
    depth_ = std::bit_ceil(std::max<std::size_t>(config.depth, 2));
    bytes_ = 128 + slot_ * depth_;
    memory_ = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (memory_ == MAP_FAILED) {
      memory_ = nullptr;
      throw_errno("mmap");
    }
    return "depth " + std::to_string(depth_) + " slots of " + std::to_string(slot_) + " B";
  }
  std::unique_ptr<Sender> open_sender(int) override { return std::make_unique<Writer>(*this); }
  std::unique_ptr<Receiver> open_receiver(int) override { return std::make_unique<Reader>(*this); }
  void teardown() noexcept override {
    if (memory_ != nullptr) ::munmap(memory_, bytes_);
    memory_ = nullptr;
  }

 private:
  std::atomic<std::uint64_t>& writer_index() const { return *static_cast<std::atomic<std::uint64_t>*>(memory_); }
  std::atomic<std::uint64_t>& reader_index() const {
    return *reinterpret_cast<std::atomic<std::uint64_t>*>(static_cast<std::byte*>(memory_) + 64);
  }
  std::byte* slot(std::uint64_t index) const {
    return static_cast<std::byte*>(memory_) + 128 + (index & (depth_ - 1)) * slot_;
  }
  class Writer final : public Sender {
   public:
    explicit Writer(const FloorSpsc& f) : f_(f) {}
    bool send(std::span<const std::byte> message, Nanos timeout) override {
      auto region = loan(message.size(), timeout);
      if (region.empty()) return false;
      std::memcpy(region.data(), message.data(), message.size());
      return commit(timeout);
    }
    bool zero_copy() const noexcept override { return true; }
    std::span<std::byte> loan(std::size_t size, Nanos timeout) override {
      const bool room = spin_until_ready(
          [&] {
            if (next_ - cached_reader_ < f_.depth_) return true;
            cached_reader_ = f_.reader_index().load(std::memory_order_acquire);
            return next_ - cached_reader_ < f_.depth_;
          },
          timeout);
      if (!room) return {};
      return {f_.slot(next_), size};
    }
    bool commit(Nanos) override {
      f_.writer_index().store(++next_, std::memory_order_release);  // the one store per message
      return true;
    }

   private:
    const FloorSpsc& f_;
    std::uint64_t next_ = 0;
    std::uint64_t cached_reader_ = 0;
  };

  class Reader final : public Receiver {
   public:
    explicit Reader(const FloorSpsc& f) : f_(f) {}
    std::optional<std::size_t> receive(std::span<std::byte> buffer, Nanos timeout) override {
      auto message = view(timeout);
      if (!message) return std::nullopt;
      std::memcpy(buffer.data(), message->data(), std::min(buffer.size(), message->size()));
      release();
      return message->size();
    }
    bool zero_copy() const noexcept override { return true; }
    std::optional<std::span<const std::byte>> view(Nanos timeout) override {
      const bool some = spin_until_ready(
          [&] {
            if (cached_writer_ > next_) return true;
            cached_writer_ = f_.writer_index().load(std::memory_order_acquire);
            return cached_writer_ > next_;
          },
          timeout);
      if (!some) return std::nullopt;
      return std::span<const std::byte>(f_.slot(next_), f_.size_);
    }
    void release() noexcept override { f_.reader_index().store(++next_, std::memory_order_release); }

   private:
    const FloorSpsc& f_;
    std::uint64_t next_ = 0;
    std::uint64_t cached_writer_ = 0;
  };

  void* memory_ = nullptr;
  std::size_t bytes_ = 0;
  std::size_t size_ = 64;  // message bytes
  std::size_t slot_ = 64;
  std::size_t depth_ = 2;
};

// ------------------------------------------------------- POSIX message queue

long read_long(const char* path) {
  std::ifstream in(path);
  long v = -1;
  in >> v;
  return in ? v : -1;
}

bool write_long(const char* path, long value) {
  std::ofstream out(path);
  out << value << '\n';
  out.flush();
  return static_cast<bool>(out);
}

// One queue; every sender mq_sends to it, every receiver competes for it.
// Two descriptors per process: a blocking one for timed calls and an
// O_NONBLOCK one for polling (mq_setattr per call would cost a syscall).
class PosixMqEnd final : public Sender, public Receiver {
 public:
  PosixMqEnd(const std::string& name, int access) {
    block_ = ::mq_open(name.c_str(), access | O_CLOEXEC);
    if (block_ == static_cast<mqd_t>(-1)) throw_errno("mq_open " + name);
    poll_ = ::mq_open(name.c_str(), access | O_CLOEXEC | O_NONBLOCK);
    if (poll_ == static_cast<mqd_t>(-1)) {
      const int e = errno;
      ::mq_close(block_);
      errno = e;
      throw_errno("mq_open " + name);
    }
  }
  ~PosixMqEnd() override {
    ::mq_close(block_);
    ::mq_close(poll_);
  }
  PosixMqEnd(const PosixMqEnd&) = delete;
  PosixMqEnd& operator=(const PosixMqEnd&) = delete;

  bool send(std::span<const std::byte> message, Nanos timeout) override {
    const char* data = reinterpret_cast<const char*>(message.data());
    for (;;) {
      int rc;
      if (timeout == kNoWait) {
        rc = ::mq_send(poll_, data, message.size(), 0);
      } else {
        const timespec deadline = realtime_deadline(timeout);
        rc = ::mq_timedsend(block_, data, message.size(), 0, &deadline);
      }
      if (rc == 0) return true;
      if (errno == EAGAIN || errno == ETIMEDOUT) return false;
      if (errno != EINTR) throw_errno("mq_send");
    }
  }

  std::optional<std::size_t> receive(std::span<std::byte> buffer, Nanos timeout) override {
    char* data = reinterpret_cast<char*>(buffer.data());
    for (;;) {
      ssize_t n;
      if (timeout == kNoWait) {
        n = ::mq_receive(poll_, data, buffer.size(), nullptr);
      } else {
        const timespec deadline = realtime_deadline(timeout);
        n = ::mq_timedreceive(block_, data, buffer.size(), nullptr, &deadline);
      }
      if (n >= 0) return static_cast<std::size_t>(n);
      if (errno == EAGAIN || errno == ETIMEDOUT) return std::nullopt;
      if (errno != EINTR) throw_errno("mq_receive");
    }
  }

 private:
  mqd_t block_;
  mqd_t poll_;
};

class PosixMqFactory final : public TransportFactory {
 public:
  std::string name() const override { return "posix-mq"; }
  std::string description() const override {
    return "POSIX message queue (mq_timedsend/mq_timedreceive), one queue, competing consumers for 1->n; depth "
           "bounded by RLIMIT_MSGQUEUE";
  }
  bool supports(Pattern) const override { return true; }
  Fanout fanout() const override { return Fanout::share; }

  std::string setup(const Config& config) override {
    name_ = "/" + config.tag;
    std::string note;
    // The kernel charges each queue about depth * (size + ~100 bytes) against
    // RLIMIT_MSGQUEUE (default 819200 bytes per user, and raising the hard
    // limit needs CAP_SYS_RESOURCE). Stay within 90% of it.
    rlimit limit{};
    ::getrlimit(RLIMIT_MSGQUEUE, &limit);
    if (limit.rlim_cur < limit.rlim_max) {  // the soft limit may go up to the hard one
      limit.rlim_cur = limit.rlim_max;
      ::setrlimit(RLIMIT_MSGQUEUE, &limit);
    }
    const std::uint64_t budget =
        limit.rlim_cur == RLIM_INFINITY ? UINT64_MAX : static_cast<std::uint64_t>(limit.rlim_cur) * 9 / 10;
    const std::uint64_t per_message = config.message_size + kKernelOverhead;
    std::uint64_t depth = std::min<std::uint64_t>({config.depth, budget / per_message, kHardMsgMax});
    if (depth == 0)
      throw Unsupported("one " + std::to_string(config.message_size) + "-byte message exceeds RLIMIT_MSGQUEUE (" +
                        std::to_string(limit.rlim_cur) + " bytes per user; raising it needs CAP_SYS_RESOURCE)");
    if (depth < config.depth) note = "depth " + std::to_string(depth) + " (RLIMIT_MSGQUEUE)";

    // Above fs.mqueue.msg_max / msgsize_max mq_open fails with EINVAL unless
    // the caller has CAP_SYS_RESOURCE. The ceilings count only when a queue is
    // created, so raise them for the one mq_open and put them back at once.
    const long msg_max = read_long(kMsgMaxPath);
    const long msgsize_max = read_long(kMsgSizeMaxPath);
    mq_attr attr{};
    attr.mq_msgsize = static_cast<long>(config.message_size);
    for (;;) {
      attr.mq_maxmsg = static_cast<long>(depth);
      const bool raise_count = msg_max >= 0 && attr.mq_maxmsg > msg_max;
      const bool raise_size = msgsize_max >= 0 && attr.mq_msgsize > msgsize_max;
      bool raised_count = false;
      bool raised_size = false;
      if (raise_count) raised_count = write_long(kMsgMaxPath, attr.mq_maxmsg);
      if (raise_size) raised_size = write_long(kMsgSizeMaxPath, attr.mq_msgsize);
      const mqd_t q = ::mq_open(name_.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600, &attr);
      const int e = errno;
      if (raised_count) (void)write_long(kMsgMaxPath, msg_max);
      if (raised_size) (void)write_long(kMsgSizeMaxPath, msgsize_max);
      if (q != static_cast<mqd_t>(-1)) {
        ::mq_close(q);
        created_ = true;
        if (raised_count || raised_size) {
          if (!note.empty()) note += "; ";
          note += "fs.mqueue ceilings raised for mq_open only";
        }
        return note;
      }
      if (e == EMFILE && depth > 1) {  // other queues of this user use part of the budget
        depth /= 2;
        note = "depth " + std::to_string(depth) + " (RLIMIT_MSGQUEUE)";
        continue;
      }
      if (e == EINVAL && ((raise_count && !raised_count) || (raise_size && !raised_size)))
        throw Unsupported("depth " + std::to_string(depth) + " x " + std::to_string(config.message_size) +
                          " bytes exceeds fs.mqueue.msg_max=" + std::to_string(msg_max) +
                          " / msgsize_max=" + std::to_string(msgsize_max) +
                          " and they cannot be raised here (run as root, or sysctl them)");
      errno = e;
      throw_errno("mq_open " + name_);
    }
  }
  std::unique_ptr<Sender> open_sender(int) override { return std::make_unique<PosixMqEnd>(name_, O_WRONLY); }
  std::unique_ptr<Receiver> open_receiver(int) override { return std::make_unique<PosixMqEnd>(name_, O_RDONLY); }
  void connected() override { unlink(); }
  void teardown() noexcept override { unlink(); }

 private:
  // Not under /dev/mqueue (often not mounted), so the interrupt handler cannot
  // remove it: connected() unlinks it as early as possible instead.
  void unlink() noexcept {
    if (created_) ::mq_unlink(name_.c_str());
    created_ = false;
  }
  static constexpr const char* kMsgMaxPath = "/proc/sys/fs/mqueue/msg_max";
  static constexpr const char* kMsgSizeMaxPath = "/proc/sys/fs/mqueue/msgsize_max";
  static constexpr std::uint64_t kKernelOverhead = 128;  // struct msg_msg + tree node, rounded up
  static constexpr std::uint64_t kHardMsgMax = 65536;    // HARD_MSGMAX
  std::string name_;
  bool created_ = false;
};

// ------------------------------------------------ Boost.Interprocess queue

class BoostMqSender final : public Sender {
 public:
  explicit BoostMqSender(const std::string& name) : queue_(bip::open_only, name.c_str()) {}
  bool send(std::span<const std::byte> message, Nanos timeout) override {
    try {
      if (timeout == kNoWait) return queue_.try_send(message.data(), message.size(), 0);
      const auto deadline = boost::posix_time::microsec_clock::universal_time() +
                            boost::posix_time::microseconds((timeout.count() + 999) / 1000);
      return queue_.timed_send(message.data(), message.size(), 0, deadline);
    } catch (const bip::interprocess_exception& e) {
      throw TransportError(std::string("message_queue send: ") + e.what());
    }
  }

 private:
  bip::message_queue queue_;
};

class BoostMqReceiver final : public Receiver {
 public:
  explicit BoostMqReceiver(const std::string& name) : queue_(bip::open_only, name.c_str()) {}
  std::optional<std::size_t> receive(std::span<std::byte> buffer, Nanos timeout) override {
    bip::message_queue::size_type got = 0;
    unsigned int priority = 0;
    try {
      bool ok;
      if (timeout == kNoWait) {
        ok = queue_.try_receive(buffer.data(), buffer.size(), got, priority);
      } else {
        const auto deadline = boost::posix_time::microsec_clock::universal_time() +
                              boost::posix_time::microseconds((timeout.count() + 999) / 1000);
        ok = queue_.timed_receive(buffer.data(), buffer.size(), got, priority, deadline);
      }
      if (!ok) return std::nullopt;
      return static_cast<std::size_t>(got);
    } catch (const bip::interprocess_exception& e) {
      throw TransportError(std::string("message_queue receive: ") + e.what());
    }
  }

 private:
  bip::message_queue queue_;
};

class BoostMqFactory final : public TransportFactory {
 public:
  std::string name() const override { return "boost-mq"; }
  std::string description() const override {
    return "boost::interprocess::message_queue in /dev/shm (process-shared mutex + condition variables), one "
           "queue, competing consumers for 1->n";
  }
  bool supports(Pattern) const override { return true; }
  Fanout fanout() const override { return Fanout::share; }

  std::string setup(const Config& config) override {
    name_ = config.tag + "-bmq";
    unlink_on_interrupt("/dev/shm/" + name_);
    bip::message_queue::remove(name_.c_str());
    try {
      queue_ = std::make_unique<bip::message_queue>(bip::create_only, name_.c_str(), config.depth,
                                                    config.message_size, bip::permissions(0600));
    } catch (const bip::interprocess_exception& e) {
      throw TransportError(std::string("message_queue create: ") + e.what());
    }
    return {};
  }
  std::unique_ptr<Sender> open_sender(int) override {
    queue_.release();  // the parent's mapping: not this child's to unmap (it is reclaimed at exit)
    try {
      return std::make_unique<BoostMqSender>(name_);
    } catch (const bip::interprocess_exception& e) {
      throw TransportError(std::string("message_queue open: ") + e.what());
    }
  }
  std::unique_ptr<Receiver> open_receiver(int) override {
    queue_.release();
    try {
      return std::make_unique<BoostMqReceiver>(name_);
    } catch (const bip::interprocess_exception& e) {
      throw TransportError(std::string("message_queue open: ") + e.what());
    }
  }
  void connected() override { bip::message_queue::remove(name_.c_str()); }
  void teardown() noexcept override {
    queue_.reset();
    if (name_.empty()) return;
    bip::message_queue::remove(name_.c_str());
    forget_on_interrupt("/dev/shm/" + name_);
    name_.clear();
  }

 private:
  std::string name_;
  std::unique_ptr<bip::message_queue> queue_;
};

}  // namespace

std::vector<std::unique_ptr<TransportFactory>> baseline_transports() {
  std::vector<std::unique_ptr<TransportFactory>> out;
  out.push_back(std::make_unique<FloorSpsc>());
  out.push_back(std::make_unique<ZmqFactory>(ZmqFactory::Kind::ipc_pushpull));
  out.push_back(std::make_unique<ZmqFactory>(ZmqFactory::Kind::ipc_pubsub));
  out.push_back(std::make_unique<UnixStreamFactory>());
  out.push_back(std::make_unique<PipeFactory>());
  out.push_back(std::make_unique<PosixMqFactory>());
  out.push_back(std::make_unique<BoostMqFactory>());
  return out;
}

std::unique_ptr<TransportFactory> floor_spsc_transport() { return std::make_unique<FloorSpsc>(); }

std::unique_ptr<TransportFactory> zmq_tcp_transport() {
  return std::make_unique<ZmqFactory>(ZmqFactory::Kind::tcp_pushpull);
}

}  // namespace colo::bench
