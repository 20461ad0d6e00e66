// The federation part of the demo (demo.hpp).
//
// Hosts alpha, beta and gamma are three colod on 127.0.0.1 (LocalCluster),
// each federating namespace demofed<host><pid>. Threads of this process play
// the applications of each host, through libcolo on that host's namespace.
//
//   topic demo/prices: a subscriber on every host; publishers on alpha and
//     beta. Halfway, gamma's colod is killed (SIGKILL) and started again:
//     it resumes both streams from its own ring. Every subscriber must get
//     every message exactly once, in order per publisher.
//   queue demo/jobs (home alpha): a consumer on every host; producers on
//     beta and gamma. Every message must be consumed exactly once in the
//     whole cluster; gamma's consumer gets work only through the bridge.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <thread>

#include "colo/channel.hpp"
#include "colod_client.hpp"
#include "demo.hpp"
#include "format.hpp"         // with_commas, human_rate
#include "local_cluster.hpp"

namespace colo::cli {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kMessageBytes = 64;  // [publisher u32][index u32][filler]

std::array<std::byte, kMessageBytes> message(std::uint32_t publisher, std::uint32_t index) {
  std::array<std::byte, kMessageBytes> m{};
  std::memcpy(m.data(), &publisher, 4);
  std::memcpy(m.data() + 4, &index, 4);
  for (std::size_t i = 8; i < m.size(); ++i) m[i] = static_cast<std::byte>((index + i) & 0xff);
  return m;
}

bool parse(std::span<const std::byte> d, std::uint32_t& publisher, std::uint32_t& index) {
  if (d.size() != kMessageBytes) return false;
  std::memcpy(&publisher, d.data(), 4);
  std::memcpy(&index, d.data() + 4, 4);
  for (std::size_t i = 8; i < d.size(); ++i)
    if (d[i] != static_cast<std::byte>((index + i) & 0xff)) return false;
  return true;
}

Node open_ns(const std::string& ns) {
  NodeOptions options;
  options.ns = ns;
  return Node::open(options).value();  // the namespace exists: LocalCluster opened it
}

// What one host's application saw: per publisher, the indexes in order of arrival.
struct Seen {
  std::map<std::uint32_t, std::vector<std::uint32_t>> by_publisher;
  std::atomic<std::uint64_t> total{0};
  std::uint64_t corrupt = 0;
};

std::string ratio_text(double part, double whole) {
  return whole > 0 ? std::to_string(static_cast<int>(100.0 * part / whole + 0.5)) + "%" : "-";
}

void topic_scenario(LocalCluster& cluster, const FederationDemoOptions& opt,
                    const std::function<void(const std::string&)>& line, std::vector<std::string>& failures,
                    nlohmann::json& detail) {
  const auto per_publisher = static_cast<std::uint32_t>(opt.topic_messages);
  const std::uint64_t expected = 2ull * per_publisher;
  std::vector<Seen> seen(cluster.hosts().size());
  std::atomic<bool> stop{false};
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < cluster.hosts().size(); ++i)
    threads.emplace_back([&, i, ns = cluster.host(i).ns()] {
      auto node = open_ns(ns);
      auto topic = node.topic("demo/prices", OpenMode::open).value();
      auto sub = topic.subscribe().value();
      ++ready;
      auto& s = seen[i];
      while (s.total.load() < expected && !stop.load()) {
        auto m = sub.receive_for(20ms);
        if (!m) continue;
        std::uint32_t publisher = 0, index = 0;
        if (!parse(m->data(), publisher, index)) {
          ++s.corrupt;
          continue;
        }
        s.by_publisher[publisher].push_back(index);
        ++s.total;
      }
    });
  while (ready.load() < 3) std::this_thread::sleep_for(1ms);
  const auto t0 = Clock::now();
  for (std::uint32_t p : {0u, 1u})  // publisher p on host p: alpha and beta
    threads.emplace_back([&, p, ns = cluster.host(p).ns()] {
      auto node = open_ns(ns);
      auto topic = node.topic("demo/prices", OpenMode::open).value();
      auto pub = topic.publisher().value();
      for (std::uint32_t i = 0; i < per_publisher && !stop.load(); ++i) {
        const auto m = message(p + 1, i);
        while (pub.publish(m, 100ms) != SendStatus::ok && !stop.load()) {
        }
        if (i % 200 == 199) std::this_thread::sleep_for(1ms);  // a steady stream, not one burst
      }
    });
  // Halfway through (as gamma's subscriber sees it), gamma's colod dies.
  const auto deadline = Clock::now() + 60s;
  while (seen[2].total.load() < expected / 2 && Clock::now() < deadline) std::this_thread::sleep_for(1ms);
  const std::uint64_t at_kill = seen[2].total.load();
  cluster.kill(2, SIGKILL);
  line("  gamma's colod killed (SIGKILL) after its subscriber had " + with_commas(at_kill) + " messages; restarting");
  std::this_thread::sleep_for(300ms);
  if (auto restarted = cluster.restart(2); !restarted) failures.push_back("topic: " + restarted.error().message);
  bool all = false;
  while (Clock::now() < deadline && !all) {
    all = true;
    for (auto& s : seen) all = all && s.total.load() >= expected;
    if (!all) std::this_thread::sleep_for(5ms);
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  stop = true;
  for (auto& t : threads) t.join();

  nlohmann::json per_host = nlohmann::json::object();
  for (std::size_t i = 0; i < seen.size(); ++i) {
    const auto& host = cluster.host(i).name;
    const auto& s = seen[i];
    per_host[host] = s.total.load();
    if (s.corrupt != 0) failures.push_back("topic: " + host + " got " + std::to_string(s.corrupt) + " corrupt message(s)");
    for (std::uint32_t publisher : {1u, 2u}) {
      const auto it = s.by_publisher.find(publisher);
      const std::size_t got = it == s.by_publisher.end() ? 0 : it->second.size();
      bool in_order = got == per_publisher;
      for (std::size_t k = 0; in_order && k < got; ++k) in_order = it->second[k] == k;
      if (!in_order)
        failures.push_back("topic: " + host + " has " + std::to_string(got) + " of publisher " +
                           cluster.host(publisher - 1).name + "'s " + std::to_string(per_publisher) +
                           " messages, not each exactly once in order");
    }
  }
  auto gamma = colod_status(cluster.host(2).ns(), cluster.host(2).control, 1.0);
  std::uint64_t resumed = 0, lost = 0;
  if (gamma)
    for (const auto& p : gamma->peers) {
      resumed += p.gaps_filled;
      lost += p.lost;
    }
  line("  topic demo/prices: publishers on alpha and beta, " + with_commas(expected) +
       " messages of 64 B; each of alpha, beta, gamma received " + with_commas(seen[0].total.load()) + ", " +
       with_commas(seen[1].total.load()) + ", " + with_commas(seen[2].total.load()) +
       " (each publisher's in order, none twice) in " + human_duration_ns(seconds * 1e9) + " (" +
       human_rate(static_cast<double>(expected) / seconds) + " msg/s per subscriber)");
  line("  gamma's new colod resumed " + std::to_string(resumed) + " stream(s) from its ring; lost " +
       std::to_string(lost));
  if (lost != 0) failures.push_back("topic: gamma's colod counted " + std::to_string(lost) + " lost");
  detail["topic"] = {{"messages", expected}, {"received", per_host}, {"seconds", seconds},
                     {"gamma_received_before_kill", at_kill}, {"gamma_streams_resumed", resumed}, {"lost", lost}};
}

void queue_scenario(LocalCluster& cluster, const FederationDemoOptions& opt,
                    const std::function<void(const std::string&)>& line, std::vector<std::string>& failures,
                    nlohmann::json& detail) {
  const auto per_producer = static_cast<std::uint32_t>(opt.queue_messages / 2);
  const std::uint64_t expected = 2ull * per_producer;
  std::vector<Seen> seen(cluster.hosts().size());
  std::atomic<std::uint64_t> consumed{0};
  std::atomic<bool> stop{false};
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < cluster.hosts().size(); ++i)
    threads.emplace_back([&, i, ns = cluster.host(i).ns()] {
      auto node = open_ns(ns);
      auto queue = node.queue("demo/jobs", OpenMode::open).value();
      auto consumer = queue.consumer().value();
      ++ready;
      auto& s = seen[i];
      while (consumed.load() < expected && !stop.load()) {
        auto m = consumer.receive_for(20ms);
        if (!m) continue;
        std::uint32_t producer = 0, index = 0;
        if (!parse(m->data(), producer, index)) ++s.corrupt;
        else s.by_publisher[producer].push_back(index);
        ++s.total;
        ++consumed;
        m->release();
        std::this_thread::sleep_for(20us);  // the work each job stands for
      }
    });
  while (ready.load() < 3) std::this_thread::sleep_for(1ms);
  std::this_thread::sleep_for(200ms);  // every colod sees its host's consumer
  const auto t0 = Clock::now();
  for (std::uint32_t p : {1u, 2u})  // producers on beta and gamma: neither is the home
    threads.emplace_back([&, p, ns = cluster.host(p).ns()] {
      auto node = open_ns(ns);
      auto queue = node.queue("demo/jobs", OpenMode::open).value();
      auto producer = queue.producer().value();
      for (std::uint32_t i = 0; i < per_producer && !stop.load(); ++i) {
        const auto m = message(p, i);
        while (producer.publish(m, 100ms) != SendStatus::ok && !stop.load()) {
        }
      }
    });
  const auto deadline = Clock::now() + 60s;
  while (consumed.load() < expected && Clock::now() < deadline) std::this_thread::sleep_for(2ms);
  std::this_thread::sleep_for(200ms);  // a message consumed twice would show now
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  stop = true;
  for (auto& t : threads) t.join();

  std::map<std::uint32_t, std::vector<std::uint8_t>> times;
  for (std::uint32_t p : {1u, 2u}) times[p].resize(per_producer);
  nlohmann::json per_host = nlohmann::json::object();
  std::uint64_t corrupt = 0, strays = 0;
  for (std::size_t i = 0; i < seen.size(); ++i) {
    per_host[cluster.host(i).name] = seen[i].total.load();
    corrupt += seen[i].corrupt;
    for (const auto& [producer, indexes] : seen[i].by_publisher)
      for (auto index : indexes) {
        if (times.count(producer) == 0 || index >= per_producer) {
          ++strays;
          continue;
        }
        ++times[producer][index];
      }
  }
  std::uint64_t missing = 0, twice = 0;
  for (const auto& [producer, counts] : times)
    for (auto c : counts) {
      missing += c == 0;
      twice += c > 1;
    }
  if (corrupt + strays + missing + twice != 0)
    failures.push_back("queue: " + std::to_string(missing) + " message(s) never consumed, " + std::to_string(twice) +
                       " consumed more than once, " + std::to_string(corrupt + strays) + " corrupt");
  const double total = static_cast<double>(consumed.load());
  line("  queue demo/jobs (home alpha): producers on beta and gamma, " + with_commas(expected) +
       " jobs; consumed on alpha " + with_commas(seen[0].total.load()) + " (" +
       ratio_text(static_cast<double>(seen[0].total.load()), total) + "), beta " + with_commas(seen[1].total.load()) +
       " (" + ratio_text(static_cast<double>(seen[1].total.load()), total) + "), gamma " +
       with_commas(seen[2].total.load()) + " (" + ratio_text(static_cast<double>(seen[2].total.load()), total) +
       "): each exactly once, in " + human_duration_ns(seconds * 1e9));
  detail["queue"] = {{"messages", expected}, {"consumed", per_host}, {"missing", missing}, {"twice", twice},
                     {"seconds", seconds}};
}

// Runs the part; prints progress through `line`; appends what went wrong
// to `failures`; returns its figures (for --json).
nlohmann::json run_federation_demo(const FederationDemoOptions& opt,
                                   const std::function<void(const std::string&)>& line,
                                   std::vector<std::string>& failures) {
  nlohmann::json detail = nlohmann::json::object();
  const std::string colod = find_colod();
  if (colod.empty()) {
    failures.push_back(
        "colod not found (beside colo-demo, in ../../bridge/ of the build tree, or on $PATH; or set COLOD_BIN)");
    return detail;
  }
  LocalCluster cluster;
  const auto t0 = Clock::now();
  const std::string objects =
      "[[topic]]\nname = \"demo/prices\"\ncapacity = 16777216\n"
      "[[queue]]\nname = \"demo/jobs\"\nhome = \"alpha\"\ncapacity = 8388608\n";
  if (auto started = cluster.start(colod, {"alpha", "beta", "gamma"}, "demofed", objects, 20.0); !started) {
    failures.push_back(started.error().message);
    return detail;
  }
  line("federation: three colod on this machine, each federating its own namespace as a host would;");
  line("            a cluster topic and a cluster queue across them, one colod killed mid-run");
  line("  three colod on 127.0.0.1 stand for hosts alpha, beta, gamma (namespaces " + cluster.host(0).ns() + ", " +
       cluster.host(1).ns() + ", " + cluster.host(2).ns() + "), all connected in " +
       human_duration_ns(std::chrono::duration<double, std::nano>(Clock::now() - t0).count()));
  topic_scenario(cluster, opt, line, failures, detail);
  queue_scenario(cluster, opt, line, failures, detail);
  const auto leftovers = cluster.stop();
  if (!leftovers.empty()) failures.push_back("segments left in /dev/shm after the federation part");
  detail["colod"] = colod;
  return detail;
}

}  // namespace

PartOutcome run_federation_part(const DemoOptions& opt, ScratchNamespace&, Reporter& out) {
  PartOutcome result{"federation", {}, nlohmann::json::object()};
  const auto t0 = SteadyClock::now();
  result.detail = run_federation_demo(opt.federation, [&out](const std::string& text) { out.line(text); },
                                      result.failures);
  result.detail["wall_ns"] = std::chrono::duration<double, std::nano>(SteadyClock::now() - t0).count();
  return result;
}

}  // namespace colo::cli
