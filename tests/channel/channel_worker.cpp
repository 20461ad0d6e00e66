// colo-channel-worker: a process the channel tests fork/exec to publish,
// subscribe, consume, die mid-message or scribble over a ring.
//
// Every message it publishes is self-checking:
//   u32 publisher id | u32 index | u32 FNV-1a of the rest | u32 payload size | payload
// Subcommands (NS NAME first):
//   publish ID COUNT SEED MAXSIZE           random sizes 16..MAXSIZE
//   publish-batch ID COUNT SEED MAXSIZE BATCH
//                                           the batch API: alternately publish_batch (random
//                                           sizes) and a LoanBatch (one random size), up to BATCH
//   subscribe EXPECT TIMEOUT_MS [lossy|batch]  prints "ready", then a summary line
//   consume OUT_FILE IDLE_MS [ack] [batch]  appends "G id" on receipt, "A id" after ack
//                                           (batch: takes up to 64 at once, acks them together)
//   batch-and-hang COUNT SIZE PUBLISHED     loans COUNT messages, writes them all, publishes the
//                                           first PUBLISHED, prints "claimed", hangs
//   consume-forever-noack                   takes one message and hangs (killed by the test)
//   claim-and-hang SIZE                     claims a loan, writes half, prints "claimed", hangs
//   hostile SECONDS SEED                    writes random bytes over the ring's control block and data
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <span>
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

// Writes a self-checking message of `size` bytes (>= 16) into `p`.
void fill(std::byte* p, std::uint32_t size, std::uint32_t id, std::uint32_t index, std::mt19937_64& rng) {
  for (std::uint32_t b = 16; b < size; ++b) p[b] = static_cast<std::byte>(rng());
  const std::uint32_t sum = fnv1a(p + 16, size - 16);
  std::memcpy(p, &id, 4);
  std::memcpy(p + 4, &index, 4);
  std::memcpy(p + 8, &sum, 4);
  std::memcpy(p + 12, &size, 4);
}

int publish_batch(colo::Node& node, const char* name, std::uint32_t id, std::uint64_t count, std::uint64_t seed,
                  std::uint32_t max_size, std::uint32_t batch) {
  auto channel = open_channel(node, name);
  auto publisher = channel.topic ? channel.topic->publisher() : channel.queue->producer();
  if (!publisher) die(publisher.error().message);
  std::mt19937_64 rng(seed);
  std::vector<std::vector<std::byte>> storage(batch);
  std::vector<std::span<const std::byte>> spans;
  bool copying = true;
  for (std::uint64_t i = 0; i < count;) {
    const auto n = static_cast<std::uint32_t>(std::min<std::uint64_t>(1 + rng() % batch, count - i));
    if (copying) {
      spans.clear();
      for (std::uint32_t k = 0; k < n; ++k) {
        const std::uint32_t size = 16 + static_cast<std::uint32_t>(rng() % (max_size - 15));
        storage[k].resize(size);
        fill(storage[k].data(), size, id, static_cast<std::uint32_t>(i + k), rng);
        spans.emplace_back(storage[k].data(), size);
      }
      const std::size_t done = publisher->publish_batch(spans, 5s);
      if (done != n) die("publish_batch timed out at message " + std::to_string(i + done));
      i += n;
    } else {
      const std::uint32_t size = 16 + static_cast<std::uint32_t>(rng() % (max_size - 15));
      auto loans = publisher->loan_batch_for(n, size, 5s);
      if (!loans) die("loan_batch timed out at message " + std::to_string(i));
      for (std::uint32_t k = 0; k < loans->size(); ++k)
        fill((*loans)[k].data(), size, id, static_cast<std::uint32_t>(i + k), rng);
      i += loans->size();  // may be fewer than asked at the ring's end
      loans->commit();
    }
    copying = !copying;
  }
  return 0;
}

int batch_and_hang(colo::Node& node, const char* name, std::uint32_t count, std::uint32_t size,
                   std::uint32_t published) {
  auto channel = open_channel(node, name);
  auto publisher = channel.topic ? channel.topic->publisher() : channel.queue->producer();
  if (!publisher) die(publisher.error().message);
  auto loans = publisher->loan_batch_for(count, size, 10s);
  if (!loans || loans->size() != count) die("loan_batch failed");
  std::mt19937_64 rng(7);
  for (std::uint32_t k = 0; k < count; ++k) fill((*loans)[k].data(), size, 9, k, rng);
  loans->commit(published);
  std::printf("claimed\n");
  std::fflush(stdout);
  for (;;) ::pause();
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

int subscribe(colo::Node& node, const char* name, std::uint64_t expect, int timeout_ms, bool lossy, bool batch) {
  auto channel = open_channel(node, name);
  if (!channel.topic) die("subscribe needs a topic");
  auto sub = channel.topic->subscribe({lossy ? colo::Backpressure::lossy : colo::Backpressure::block, 0, std::nullopt});
  if (!sub) die(sub.error().message);
  std::printf("ready\n");
  std::fflush(stdout);
  std::vector<std::uint32_t> next(64, 0);
  std::uint64_t received = 0, bad = 0, order = 0;
  auto take = [&](std::span<const std::byte> data) {
    auto ids = check(data);
    if (!ids || ids->first >= next.size()) {
      ++bad;
    } else {
      if (ids->second != next[ids->first]) ++order;
      next[ids->first] = ids->second + 1;
    }
    ++received;
  };
  while (received < expect) {
    if (batch) {
      auto got = sub->receive_batch_for(256, std::chrono::milliseconds(timeout_ms));
      if (got.empty()) break;
      for (const auto& m : got) take(m.data());
      continue;
    }
    auto m = sub->receive_for(std::chrono::milliseconds(timeout_ms));
    if (!m) break;
    take(m->data());
  }
  std::printf("received=%llu bad=%llu order=%llu missed=%llu\n", static_cast<unsigned long long>(received),
              static_cast<unsigned long long>(bad), static_cast<unsigned long long>(order),
              static_cast<unsigned long long>(sub->missed()));
  return 0;
}

int consume(colo::Node& node, const char* name, const char* out_path, int idle_ms, bool ack_log, bool batch) {
  auto channel = open_channel(node, name);
  if (!channel.queue) die("consume needs a queue");
  auto consumer = channel.queue->consumer();
  if (!consumer) die(consumer.error().message);
  const int out = ::open(out_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (out < 0) die("cannot open output file");
  std::printf("ready\n");
  std::fflush(stdout);
  // One write(2) per line: a SIGKILL leaves whole lines only.
  auto log = [&](char kind, std::span<const std::byte> data, std::uint32_t deliveries) {
    auto ids = check(data);
    const std::uint64_t id = ids ? (std::uint64_t{ids->first} << 32 | ids->second) : ~std::uint64_t{0};
    char line[64];
    const int n = kind == 'G' ? std::snprintf(line, sizeof line, "G %llu %u\n", static_cast<unsigned long long>(id),
                                              deliveries)
                              : std::snprintf(line, sizeof line, "A %llu\n", static_cast<unsigned long long>(id));
    if (::write(out, line, static_cast<std::size_t>(n)) != n) die("write failed");
  };
  std::vector<std::vector<std::byte>> copies;  // a batch's messages, logged as acked after the release
  for (;;) {
    if (batch) {
      auto got = consumer->receive_batch_for(64, std::chrono::milliseconds(idle_ms));
      if (got.empty()) break;
      copies.clear();
      for (const auto& m : got) {
        log('G', m.data(), m.deliveries());
        copies.emplace_back(m.data().begin(), m.data().end());
      }
      got.release();  // the acknowledgement of all of them
      if (ack_log)
        for (const auto& c : copies) log('A', c, 0);
      continue;
    }
    auto m = consumer->receive_for(std::chrono::milliseconds(idle_ms));
    if (!m) break;
    log('G', m->data(), m->deliveries());
    std::vector<std::byte> copy(m->data().begin(), m->data().end());
    m->release();
    if (ack_log) log('A', copy, 0);
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
  auto flag = [&](const char* word) {
    for (int i = 6; i < argc; ++i)
      if (std::string(argv[i]) == word) return true;
    return false;
  };
  if (cmd == "publish-batch" && argc >= 9)
    return publish_batch(node, name, static_cast<std::uint32_t>(std::atoi(argv[4])), std::strtoull(argv[5], nullptr, 10),
                         std::strtoull(argv[6], nullptr, 10), static_cast<std::uint32_t>(std::atoi(argv[7])),
                         static_cast<std::uint32_t>(std::max(1, std::atoi(argv[8]))));
  if (cmd == "batch-and-hang" && argc >= 7)
    return batch_and_hang(node, name, static_cast<std::uint32_t>(std::atoi(argv[4])),
                          static_cast<std::uint32_t>(std::atoi(argv[5])), static_cast<std::uint32_t>(std::atoi(argv[6])));
  if (cmd == "subscribe" && argc >= 6)
    return subscribe(node, name, std::strtoull(argv[4], nullptr, 10), std::atoi(argv[5]), flag("lossy"), flag("batch"));
  if (cmd == "consume" && argc >= 6)
    return consume(node, name, argv[4], std::atoi(argv[5]), flag("ack"), flag("batch"));
  if (cmd == "consume-forever-noack") return consume_forever_noack(node, name);
  if (cmd == "claim-and-hang" && argc >= 5) return claim_and_hang(node, name, static_cast<std::uint32_t>(std::atoi(argv[4])));
  die("unknown command or missing arguments: " + cmd);
}
