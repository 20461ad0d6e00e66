// tools/bench/link_bench.cpp — see link_bench.hpp.
#include "link_bench.hpp"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <sstream>
#include <span>
#include <thread>
#include <vector>

#include "colo/internal/clock.hpp"
#include "colod_client.hpp"

namespace colo::cli {

using namespace std::chrono_literals;
using internal::monotonic_ns;

std::int64_t link_counter(const LocalCluster::Host& h, const std::string& link, bool produced) {
  auto status = colod_status(h.ns(), h.control, 0.5);
  if (!status) return -1;
  for (const auto& l : status->links)
    if (l.name == link) {
      if (l.lost != 0 || l.skipped != 0) return -2;
      return static_cast<std::int64_t>(produced ? l.produced : l.acknowledged);
    }
  return -1;
}

bool wait_counter(const LocalCluster::Host& h, const std::string& link, bool produced, std::uint64_t n,
                  std::uint64_t& first_ns, std::uint64_t& done_ns, std::string& error, std::uint64_t* at_first) {
  const std::uint64_t deadline = monotonic_ns() + 300'000'000'000ull;
  first_ns = 0;
  std::int64_t start_v = -1;  // the first value read, and when
  std::uint64_t start_ns = 0;
  while (monotonic_ns() < deadline) {
    const std::int64_t v = link_counter(h, link, produced);
    const std::uint64_t now = monotonic_ns();
    if (start_v < 0 && v >= 0) start_v = v, start_ns = now;
    if (v == -2) {
      error = "link " + link + " lost or skipped messages";
      return false;
    }
    if (v > 0 && first_ns == 0) {
      first_ns = now;
      if (at_first != nullptr) *at_first = static_cast<std::uint64_t>(v);
    }
    if (v >= static_cast<std::int64_t>(n)) {
      done_ns = now;
      return true;
    }
    std::chrono::nanoseconds pause = kLinkPoll;
    if (first_ns != 0 && v > start_v && now > start_ns) {
      const double per_ns = static_cast<double>(v - start_v) / static_cast<double>(now - start_ns);
      const auto half_rest = std::chrono::nanoseconds(static_cast<std::int64_t>((n - v) / per_ns / 2));
      pause = std::clamp<std::chrono::nanoseconds>(half_rest, kLinkPoll, kLinkPollMax);
    }
    std::this_thread::sleep_for(pause);
  }
  error = "link " + link + " did not reach " + std::to_string(n) + " in 300 s";
  return false;
}

std::uint64_t ring_for(std::uint32_t messages, std::uint32_t size) {
  std::uint64_t need = std::uint64_t{messages} * ((size + 16 + 15) / 16 * 16) * 2;
  std::uint64_t capacity = 1 << 20;
  while (capacity < need && capacity < (1ull << 30)) capacity <<= 1;
  return capacity;
}

std::string publish_all(Node& node, const std::string& object, std::uint32_t n, std::uint32_t size) {
  auto topic = node.topic(object, OpenMode::open);
  if (!topic) return topic.error().message;
  auto pub = topic->publisher();
  if (!pub) return pub.error().message;
  const std::string payload(size, 'm');
  std::vector<std::span<const std::byte>> batch(256, std::as_bytes(std::span(payload.data(), payload.size())));
  for (std::uint32_t done = 0; done < n;) {
    const std::size_t k = std::min<std::size_t>(batch.size(), n - done);
    const std::size_t published = pub->publish_batch(std::span(batch.data(), k), 10s);
    if (published == 0) return "publish: the ring stayed full for 10 s";
    done += static_cast<std::uint32_t>(published);
  }
  return {};
}

double cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return -1;
  const auto paren = line.rfind(')');  // the command may hold spaces and parentheses
  if (paren == std::string::npos) return -1;
  std::istringstream fields(line.substr(paren + 2));
  std::string skip;
  for (int field = 3; field < 14; ++field) fields >> skip;  // state .. cmajflt
  unsigned long long utime = 0, stime = 0;
  if (!(fields >> utime >> stime)) return -1;
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

std::uint16_t first_bootstrap_port(const std::string& bootstrap) {
  const std::string first = bootstrap.substr(0, bootstrap.find(','));
  const auto colon = first.rfind(':');
  if (colon == std::string::npos) return 0;
  unsigned port = 0;
  const char* end = first.data() + first.size();
  const auto [ptr, ec] = std::from_chars(first.data() + colon + 1, end, port);
  return ec == std::errc() && ptr == end && port > 0 && port < 65536 ? static_cast<std::uint16_t>(port) : 0;
}

pid_t tcp_listener_pid(std::uint16_t port) {
  if (port == 0) return 0;
  // Lines of /proc/net/tcp: "sl local_address rem_address st ... inode", the
  // port in hex after the address's ':', st 0A for LISTEN.
  std::string inode;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // the heading
    while (inode.empty() && std::getline(in, line)) {
      std::istringstream f(line);
      std::string sl, local, remote, state, skip, node;
      f >> sl >> local >> remote >> state;
      for (int i = 0; i < 5; ++i) f >> skip;  // tx/rx queues, timer, retransmits, uid, timeout
      f >> node;
      const auto colon = local.rfind(':');
      if (state != "0A" || colon == std::string::npos) continue;
      if (std::strtoul(local.c_str() + colon + 1, nullptr, 16) == port) inode = node;
    }
  }
  if (inode.empty()) return 0;
  const std::string target = "socket:[" + inode + "]";
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return 0;
  pid_t found = 0;
  while (found == 0) {
    const dirent* e = ::readdir(proc);
    if (e == nullptr) break;
    if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
    const std::string fds = std::string("/proc/") + e->d_name + "/fd";
    DIR* dir = ::opendir(fds.c_str());
    if (dir == nullptr) continue;
    while (const dirent* fd = ::readdir(dir)) {
      char link[64];
      const auto n = ::readlink((fds + "/" + fd->d_name).c_str(), link, sizeof link - 1);
      if (n > 0 && std::string_view(link, static_cast<std::size_t>(n)) == target) {
        found = static_cast<pid_t>(std::atoi(e->d_name));
        break;
      }
    }
    ::closedir(dir);
  }
  ::closedir(proc);
  return found;
}

}  // namespace colo::cli
