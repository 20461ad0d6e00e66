// tests/chaos/backend_link.cpp — see backend_link.hpp.
#include "backend_link.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <list>

namespace colo::chaos {
namespace {

sockaddr_in loopback(std::uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

// One forwarded connection: `in` accepted in the host's namespace, `out`
// connected in ours. Each direction has a buffer of bytes read but not yet
// written; a side is read only while its buffer is empty, so memory stays
// bounded and a stalled side stalls the other (as one TCP path would).
struct Pipe {
  int in = -1, out = -1;
  bool connecting = true;  // `out`'s non-blocking connect is under way
  struct Direction {
    std::array<char, 64 * 1024> bytes;
    std::size_t begin = 0, end = 0;
    bool empty() const { return begin == end; }
  } to_server, to_client;
  bool closed = false;
};

// Moves what `from` has into `buf`, or `buf` into `to`. False: the
// connection ended or failed (both sides are then closed: the lock clients
// need no half-closed connections).
bool pump(int from, int to, Pipe::Direction& buf, short from_events, short to_events) {
  if (buf.empty() && (from_events & (POLLIN | POLLHUP | POLLERR))) {
    const ssize_t n = ::read(from, buf.bytes.data(), buf.bytes.size());
    if (n == 0) return false;
    if (n < 0) return errno == EAGAIN || errno == EINTR;
    buf.begin = 0;
    buf.end = static_cast<std::size_t>(n);
  }
  if (!buf.empty() && (to_events & (POLLOUT | POLLHUP | POLLERR))) {
    const ssize_t n = ::write(to, buf.bytes.data() + buf.begin, buf.end - buf.begin);
    if (n < 0) return errno == EAGAIN || errno == EINTR;
    buf.begin += static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace

int run_backend_link(SharedRecords& records, const std::string& netns, const std::vector<std::uint16_t>& ports) {
  const int own_ns = ::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  const std::string path = "/var/run/netns/" + netns;
  const int host_ns = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (own_ns < 0 || host_ns < 0) {
    std::fprintf(stderr, "colo-chaos: backend link: %s: %s\n", own_ns < 0 ? "/proc/self/ns/net" : path.c_str(),
                 std::strerror(errno));
    return 3;
  }
  if (::setns(host_ns, CLONE_NEWNET) != 0) {
    std::fprintf(stderr, "colo-chaos: backend link: setns %s: %s\n", path.c_str(), std::strerror(errno));
    return 3;
  }
  std::vector<int> listeners;
  for (std::uint16_t port : ports) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    const int one = 1;
    const sockaddr_in a = loopback(port);
    if (fd < 0 || ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        ::bind(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 64) != 0) {
      std::fprintf(stderr, "colo-chaos: backend link: listen on 127.0.0.1:%u in %s: %s\n", port, netns.c_str(),
                   std::strerror(errno));
      return 3;
    }
    listeners.push_back(fd);
  }
  if (::setns(own_ns, CLONE_NEWNET) != 0) {
    std::fprintf(stderr, "colo-chaos: backend link: setns back: %s\n", std::strerror(errno));
    return 3;
  }

  std::list<Pipe> pipes;  // stable addresses: poll entries refer to them by position
  std::vector<pollfd> fds;
  std::vector<Pipe*> owner;  // the pipe of fds[i] (nullptr: a listener)
  while (records.current_phase() != Phase::drain) {
    fds.clear();
    owner.clear();
    for (int fd : listeners) {
      fds.push_back({fd, POLLIN, 0});
      owner.push_back(nullptr);
    }
    for (Pipe& p : pipes) {
      // in: readable when its buffer is free, writable when there is a reply to send.
      fds.push_back({p.in, static_cast<short>((p.to_server.empty() && !p.connecting ? POLLIN : 0) |
                                              (p.to_client.empty() ? 0 : POLLOUT)),
                     0});
      owner.push_back(&p);
      fds.push_back({p.out, static_cast<short>(p.connecting ? POLLOUT
                                                             : ((p.to_client.empty() ? POLLIN : 0) |
                                                                (p.to_server.empty() ? 0 : POLLOUT))),
                     0});
      owner.push_back(&p);
    }
    if (::poll(fds.data(), fds.size(), 100) < 0) {
      if (errno == EINTR) continue;
      std::fprintf(stderr, "colo-chaos: backend link: poll: %s\n", std::strerror(errno));
      return 3;
    }
    for (std::size_t i = 0; i < listeners.size(); ++i) {
      if (!(fds[i].revents & POLLIN)) continue;
      const int in = ::accept4(listeners[i], nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (in < 0) continue;
      const int out = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      const sockaddr_in a = loopback(ports[i]);
      if (out < 0 || (::connect(out, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0 && errno != EINPROGRESS)) {
        ::close(in);  // the server is down: the client sees the connection end, as it would
        if (out >= 0) ::close(out);
        continue;
      }
      const int one = 1;
      (void)::setsockopt(in, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      (void)::setsockopt(out, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      pipes.emplace_back();
      pipes.back().in = in;
      pipes.back().out = out;
    }
    for (std::size_t i = listeners.size(); i + 1 < fds.size(); i += 2) {
      Pipe& p = *owner[i];
      const short in_ev = fds[i].revents, out_ev = fds[i + 1].revents;
      if (p.connecting) {
        if (out_ev == 0) continue;
        int err = 0;
        socklen_t len = sizeof err;
        if (::getsockopt(p.out, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
          p.closed = true;
          continue;
        }
        p.connecting = false;
        continue;
      }
      if (!pump(p.in, p.out, p.to_server, in_ev, out_ev) || !pump(p.out, p.in, p.to_client, out_ev, in_ev))
        p.closed = true;
    }
    for (auto it = pipes.begin(); it != pipes.end();) {
      if (it->closed) {
        ::close(it->in);
        ::close(it->out);
        it = pipes.erase(it);
      } else {
        ++it;
      }
    }
  }
  return 0;
}

}  // namespace colo::chaos
