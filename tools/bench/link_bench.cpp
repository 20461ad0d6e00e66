// tools/bench/link_bench.cpp — see link_bench.hpp.
#include "link_bench.hpp"

#include <algorithm>
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

}  // namespace colo::cli
