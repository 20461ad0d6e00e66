// tools/demo/channels.cpp — the "queues and topics" part of the demo:
// message layout, rates, and the part itself (topic.cpp, then queue.cpp).
#include "channels.hpp"

#include <time.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

namespace colo::cli {
namespace {

std::uint64_t mix(std::uint64_t a, std::uint64_t b, std::uint64_t c) noexcept {
  std::uint64_t x = (a + 1) * 0x9E3779B97F4A7C15u ^ b;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9u ^ c;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBu;
  return x ^ (x >> 31);
}

double per_second(std::uint64_t n, std::uint64_t ns) {
  return ns > 0 ? static_cast<double>(n) * 1e9 / static_cast<double>(ns) : 0;
}

}  // namespace

std::string secs(std::chrono::seconds s) { return std::to_string(s.count()) + " s"; }

void seal(Payload& p) noexcept {
  p.magic = kMessageMagic;
  p.check = mix(p.source, p.index, p.send_ns);
  for (std::uint64_t k = 0; k < 4; ++k) p.fill[k] = p.check ^ ((k + 1) * 0x9E3779B97F4A7C15u);
}

// Copies a received message out of the ring and checks it: nullptr if intact.
const char* unseal(std::span<const std::byte> data, Payload& p, int sources) noexcept {
  if (data.size() != sizeof p) return "a message of the wrong size";
  std::memcpy(&p, data.data(), sizeof p);
  if (p.magic != kMessageMagic) return "a message with a bad magic number";
  if (p.source >= static_cast<std::uint32_t>(sources)) return "a message from an unknown source";
  if (p.check != mix(p.source, p.index, p.send_ns)) return "a message whose checksum does not match";
  for (std::uint64_t k = 0; k < 4; ++k)
    if (p.fill[k] != (p.check ^ ((k + 1) * 0x9E3779B97F4A7C15u))) return "a message with corrupted payload bytes";
  return nullptr;
}

const char* send_status_text(SendStatus status) {
  switch (status) {
    case SendStatus::ok: return "ok";
    case SendStatus::timed_out: return "no space in time";
    case SendStatus::too_large: return "too large";
    case SendStatus::corrupt: return "ring state corrupt";
  }
  return "?";
}

Result<Node> open_child_node(const std::string& ns) {
  NodeOptions options;
  options.ns = ns;
  return Node::open(options);
}

std::string rate_text(std::uint64_t messages, std::uint64_t ns) {
  char mb[32];
  std::snprintf(mb, sizeof mb, "%.1f MB/s", per_second(messages * kMessageBytes, ns) / 1e6);
  return human_rate(per_second(messages, ns)) + " msg/s, " + mb;
}

nlohmann::json rate_json(std::uint64_t messages, std::uint64_t ns) {
  return {{"messages", messages},
          {"ns", ns},
          {"messages_per_s", per_second(messages, ns)},
          {"mb_per_s", per_second(messages * kMessageBytes, ns) / 1e6}};
}

Latency latency_of(const std::uint64_t* samples, std::size_t n) {
  Latency l;
  if (n == 0) return l;
  std::vector<std::uint64_t> v(samples, samples + n);
  std::sort(v.begin(), v.end());
  const auto at = [&](double q) {
    auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(n)));
    return v[std::clamp<std::size_t>(rank, 1, n) - 1];
  };
  l.n = n;
  l.p50 = at(0.50);
  l.p99 = at(0.99);
  l.p999 = at(0.999);
  l.max = v.back();
  return l;
}

std::string shm_file(ScratchNamespace& scratch, const std::string& object) {
  return "/dev/shm/" + scratch.node().shm_name_of(object);
}

PartOutcome run_channels_part(const DemoOptions& opt, ScratchNamespace& scratch, Reporter& out) {
  PartOutcome result{"queues and topics", {}, nlohmann::json::object()};
  const auto t0 = SteadyClock::now();
  run_topic(opt, scratch, out, result);
  run_queue(opt, scratch, out, result);
  result.detail["wall_ns"] = std::chrono::duration<double, std::nano>(SteadyClock::now() - t0).count();
  return result;
}

}  // namespace colo::cli
