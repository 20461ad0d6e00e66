// colo-channel-worker: a process the channel tests fork/exec to publish,
// subscribe, consume, die mid-message or scribble over a ring.
//
// Every message it publishes is self-checking:
//   u32 publisher id | u32 index | u32 FNV-1a of the rest | u32 payload size | payload
// Subcommands (NS NAME first):
//   publish ID COUNT SEED MAXSIZE           random sizes 16..MAXSIZE
//   subscribe EXPECT TIMEOUT_MS [lossy]     prints "ready", then a summary line
//   consume OUT_FILE IDLE_MS [ack]          appends "G id" on receipt, "A id" after ack
//   consume-forever-noack                   takes one message and hangs (killed by the test)
//   claim-and-hang SIZE                     claims a loan, writes half, prints "claimed", hangs
//   hostile SECONDS SEED                    writes random bytes over the ring's control block and data
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "colo/node.hpp"

namespace {

using namespace std::chrono_literals;

std::uint32_t fnv1a(const std::byte* p, std::size_t n) {
  std::uint32_t h = 2166136261u;
  for (std::size_t i = 0; i < n; ++i) h = (h ^ static_cast<std::uint8_t>(p[i])) * 16777619u;
  return h;
}

[[noreturn]] void die(const std::string& why) {
  std::fprintf(stderr, "colo-channel-worker: %s\n", why.c_str());
  std::exit(2);
}

colo::Node open_node(const char* ns) {
  colo::NodeOptions options;
  options.ns = ns;
  auto node = colo::Node::open(options);
  if (!node) die(node.error().message);
  return std::move(node).value();
}

// A topic or a queue, whichever NAME is.
struct Channel {
  std::optional<colo::Topic> topic;
  std::optional<colo::Queue> queue;
};
Channel open_channel(colo::Node& node, const char* name) {
  auto info = node.info(name);
  if (!info) die(info.error().message);
  Channel c;
  if (info->kind == colo::ObjectKind::topic) {
    auto t = node.topic(name, colo::OpenMode::open);
    if (!t) die(t.error().message);
    c.topic.emplace(std::move(t).value());
  } else {
    auto q = node.queue(name, colo::OpenMode::open);
    if (!q) die(q.error().message);
    c.queue.emplace(std::move(q).value());
  }
  return c;
}

int publish(colo::Node& node, const char* name, std::uint32_t id, std::uint64_t count, std::uint64_t seed,
            std::uint32_t max_size) {
  auto channel = open_channel(node, name);
  auto publisher = channel.topic ? channel.topic->publisher() : channel.queue->producer();
  if (!publisher) die(publisher.error().message);
  std::mt19937_64 rng(seed);
  for (std::uint64_t i = 0; i < count; ++i) {
    const std::uint32_t size = 16 + static_cast<std::uint32_t>(rng() % (max_size - 15));
    auto loan = publisher->loan_for(size, 5s);
    if (!loan) die("publish timed out at message " + std::to_string(i));
    std::byte* p = loan->data().data();
    const std::uint32_t index = static_cast<std::uint32_t>(i);
    for (std::uint32_t b = 16; b < size; ++b) p[b] = static_cast<std::byte>(rng());
    const std::uint32_t sum = fnv1a(p + 16, size - 16);
    std::memcpy(p, &id, 4);
    std::memcpy(p + 4, &index, 4);
    std::memcpy(p + 8, &sum, 4);
    std::memcpy(p + 12, &size, 4);
    loan->commit();
  }
  return 0;
}

// Checks a self-checking message; returns {publisher id, index} or nullopt.
std::optional<std::pair<std::uint32_t, std::uint32_t>> check(std::span<const std::byte> data) {
  if (data.size() < 16) return std::nullopt;
  std::uint32_t id, index, sum, size;
  std::memcpy(&id, data.data(), 4);
  std::memcpy(&index, data.data() + 4, 4);
  std::memcpy(&sum, data.data() + 8, 4);
  std::memcpy(&size, data.data() + 12, 4);
  if (size != data.size() || fnv1a(data.data() + 16, data.size() - 16) != sum) return std::nullopt;
  return std::make_pair(id, index);
}

int subscribe(colo::Node& node, const char* name, std::uint64_t expect, int timeout_ms, bool lossy) {
  auto channel = open_channel(node, name);
  if (!channel.topic) die("subscribe needs a topic");
  auto sub = channel.topic->subscribe({lossy ? colo::Backpressure::lossy : colo::Backpressure::block, 0, std::nullopt});
  if (!sub) die(sub.error().message);
  std::printf("ready\n");
  std::fflush(stdout);
  std::vector<std::uint32_t> next(64, 0);
  std::uint64_t received = 0, bad = 0, order = 0;
  while (received < expect) {
    auto m = sub->receive_for(std::chrono::milliseconds(timeout_ms));
    if (!m) break;
    auto ids = check(m->data());
    if (!ids || ids->first >= next.size()) {
      ++bad;
    } else {
      if (ids->second != next[ids->first]) ++order;
      next[ids->first] = ids->second + 1;
    }
    ++received;
  }
  std::printf("received=%llu bad=%llu order=%llu missed=%llu\n", static_cast<unsigned long long>(received),
              static_cast<unsigned long long>(bad), static_cast<unsigned long long>(order),
              static_cast<unsigned long long>(sub->missed()));
  return 0;
}

int consume(colo::Node& node, const char* name, const char* out_path, int idle_ms, bool ack_log) {
  auto channel = open_channel(node, name);
  if (!channel.queue) die("consume needs a queue");
  auto consumer = channel.queue->consumer();
  if (!consumer) die(consumer.error().message);
  const int out = ::open(out_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (out < 0) die("cannot open output file");
  std::printf("ready\n");
  std::fflush(stdout);
  char line[64];
  for (;;) {
    auto m = consumer->receive_for(std::chrono::milliseconds(idle_ms));
    if (!m) break;
    auto ids = check(m->data());
    const std::uint64_t id = ids ? (std::uint64_t{ids->first} << 32 | ids->second) : ~std::uint64_t{0};
    // One write(2) per line: a SIGKILL leaves whole lines only.
    int n = std::snprintf(line, sizeof line, "G %llu %u\n", static_cast<unsigned long long>(id), m->deliveries());
    if (::write(out, line, static_cast<std::size_t>(n)) != n) die("write failed");
    m->release();
    if (ack_log) {
      n = std::snprintf(line, sizeof line, "A %llu\n", static_cast<unsigned long long>(id));
      if (::write(out, line, static_cast<std::size_t>(n)) != n) die("write failed");
    }
  }
  ::close(out);
  return 0;
}

int consume_forever_noack(colo::Node& node, const char* name) {
  auto channel = open_channel(node, name);
  auto consumer = channel.queue->consumer();
  if (!consumer) die(consumer.error().message);
  auto m = consumer->receive_for(10s);
  std::printf(m ? "took %u\n" : "none\n", m ? m->deliveries() : 0);
  std::fflush(stdout);
  for (;;) ::pause();
}

int claim_and_hang(colo::Node& node, const char* name, std::uint32_t size) {
  auto channel = open_channel(node, name);
  auto publisher = channel.topic ? channel.topic->publisher() : channel.queue->producer();
  if (!publisher) die(publisher.error().message);
  auto loan = publisher->loan_for(size, 10s);
  if (!loan) die("claim failed");
  std::memset(loan->data().data(), 0xAB, size / 2);  // a torn message, never to be delivered
  std::printf("claimed\n");
  std::fflush(stdout);
  for (;;) ::pause();
}

int hostile(const char* ns, const char* name, double seconds, std::uint64_t seed) {
  const std::string shm = std::string("/dev/shm/colo.") + ns + ".obj." + name;  // test names have no '/'
  const int fd = ::open(shm.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) die("cannot open " + shm);
  struct stat st{};
  ::fstat(fd, &st);
  const auto size = static_cast<std::size_t>(st.st_size);
  auto* base = static_cast<std::uint8_t*>(::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  if (base == MAP_FAILED) die("mmap failed");
  std::mt19937_64 rng(seed);
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  std::uint64_t writes = 0;
  // Body starts after the 512-byte segment header; the segment header itself
  // is left alone (openers must still find the object), everything after it
  // is fair game: control block, slots, records.
  const std::size_t first = 512 + 64;  // the ring's configuration line is left alone too
  while (std::chrono::steady_clock::now() < end) {
    const std::size_t at = first + rng() % (size - first - 8);
    const std::uint64_t value = rng();
    std::memcpy(base + at, &value, 8);
    ++writes;
    if (writes % 64 == 0) std::this_thread::sleep_for(50us);
  }
  std::printf("writes=%llu\n", static_cast<unsigned long long>(writes));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) die("usage: colo-channel-worker COMMAND NS NAME ...");
  const std::string cmd = argv[1];
  const char* ns = argv[2];
  const char* name = argv[3];
  if (cmd == "hostile" && argc >= 6) return hostile(ns, name, std::atof(argv[4]), std::strtoull(argv[5], nullptr, 10));
  auto node = open_node(ns);
  if (cmd == "publish" && argc >= 8)
    return publish(node, name, static_cast<std::uint32_t>(std::atoi(argv[4])), std::strtoull(argv[5], nullptr, 10),
                   std::strtoull(argv[6], nullptr, 10), static_cast<std::uint32_t>(std::atoi(argv[7])));
  if (cmd == "subscribe" && argc >= 6)
    return subscribe(node, name, std::strtoull(argv[4], nullptr, 10), std::atoi(argv[5]),
                     argc >= 7 && std::string(argv[6]) == "lossy");
  if (cmd == "consume" && argc >= 6)
    return consume(node, name, argv[4], std::atoi(argv[5]), argc >= 7 && std::string(argv[6]) == "ack");
  if (cmd == "consume-forever-noack") return consume_forever_noack(node, name);
  if (cmd == "claim-and-hang" && argc >= 5) return claim_and_hang(node, name, static_cast<std::uint32_t>(std::atoi(argv[4])));
  die("unknown command or missing arguments: " + cmd);
}
