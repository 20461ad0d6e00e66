#include "checks.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <regex>
#include <unordered_map>

#include "workers.hpp"  // StoreWrite

namespace colo::chaos {
namespace {

template <typename Record>
bool read_records(const std::string& path, std::vector<Record>& out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  out.resize(bytes.size() / sizeof(Record));
  std::memcpy(out.data(), bytes.data(), out.size() * sizeof(Record));
  return bytes.size() % sizeof(Record) == 0;
}

unsigned long long ull(std::uint64_t v) { return static_cast<unsigned long long>(v); }

}  // namespace

void check_topic_witness(SharedRecords& r, const WriterSet& writers) {
  for (std::uint32_t w : writers.ids) {
    const std::uint64_t committed = r.committed[w].load();
    const std::uint64_t got = r.witness_next[0][w].load();
    const bool killed = r.writer_killed[w].load() != 0;
    if (got == committed || (killed && got == committed + 1)) continue;
    report_violation(r, Check::topic_complete, "writer %u%s committed %llu message(s), the witness got %llu", w,
                     killed ? " (killed)" : "", ull(committed), ull(got));
  }
}

std::uint64_t check_federated_witness(SharedRecords& r, const WriterSet& writers, std::uint64_t counted_lost) {
  std::uint64_t missed = r.witness_gaps[1].load();
  for (std::uint32_t w : writers.ids) {
    const std::uint64_t committed = r.committed[w].load();
    const std::uint64_t got = r.witness_next[1][w].load();
    const bool killed = r.writer_killed[w].load() != 0;
    if (got > committed + (killed ? 1 : 0))
      report_violation(r, Check::fed_complete, "writer %u committed %llu message(s), the witness got up to %llu", w,
                       ull(committed), ull(got));
    else if (got < committed) {
      missed += committed - got;  // the tail it never got
      std::fprintf(stderr, "colo-chaos: federated witness: writer %u%s: messages %llu-%llu never arrived\n", w,
                   killed ? " (killed)" : "", ull(got), ull(committed - 1));
    }
  }
  if (missed > counted_lost)
    report_violation(r, Check::fed_complete, "the witness missed %llu message(s); colod counted %llu lost", ull(missed),
                     ull(counted_lost));
  return missed;
}

long check_queue_log(SharedRecords& r, const WriterSet& writers, const std::string& log_path) {
  std::vector<Consumption> log;
  if (!read_records(log_path, log)) {
    std::fprintf(stderr, "colo-chaos: cannot read the consumption log %s (or it ends in a partial record)\n",
                 log_path.c_str());
    return -1;
  }
  // Deliveries by message (writer, counter), in the order they were logged.
  std::unordered_map<std::uint32_t, std::unordered_map<std::uint64_t, std::vector<const Consumption*>>> by_writer;
  for (const auto& c : log) by_writer[c.writer][c.counter].push_back(&c);

  std::vector<bool> is_writer(kMaxWriters, false);
  for (std::uint32_t w : writers.ids) is_writer[w] = true;
  for (const auto& [w, messages] : by_writer) {
    const bool known = w < kMaxWriters && is_writer[w];
    const std::uint64_t limit = known ? r.committed[w].load() + (r.writer_killed[w].load() ? 1 : 0) : 0;
    for (const auto& [counter, deliveries] : messages) {
      if (counter >= limit) {
        report_violation(r, Check::queue_phantom, "writer %u message %llu consumed; it committed %llu", w, ull(counter),
                         ull(known ? r.committed[w].load() : 0));
        continue;
      }
      if (deliveries.size() < 2) continue;
      // Every delivery but the last must have gone to a consumer that was
      // killed before releasing it; each later one counts a delivery more.
      std::vector<const Consumption*> sorted = deliveries;
      std::stable_sort(sorted.begin(), sorted.end(),
                       [](const Consumption* a, const Consumption* b) { return a->deliveries < b->deliveries; });
      for (std::size_t i = 0; i + 1 < sorted.size(); ++i) {
        const Consumption& first = *sorted[i];
        const bool died = first.consumer < kMaxConsumers && r.consumer_killed[first.consumer].load() != 0;
        if (!died || sorted[i + 1]->deliveries <= first.deliveries)
          report_violation(r, Check::queue_duplicate,
                           "writer %u message %llu consumed by consumer %u (delivery %u, %s) and again by %u "
                           "(delivery %u)",
                           w, ull(counter), first.consumer, first.deliveries, died ? "killed" : "not killed",
                           sorted[i + 1]->consumer, sorted[i + 1]->deliveries);
      }
    }
  }
  for (std::uint32_t w : writers.ids) {
    const std::uint64_t committed = r.committed[w].load();
    auto found = by_writer.find(w);
    std::uint64_t lost = 0, first_lost = 0;
    for (std::uint64_t c = 0; c < committed; ++c)
      if (found == by_writer.end() || !found->second.contains(c)) {
        if (lost++ == 0) first_lost = c;
      }
    if (lost > 0)
      report_violation(r, Check::queue_lost, "writer %u: %llu of its %llu committed message(s) never consumed (first: %llu)",
                       w, ull(lost), ull(committed), ull(first_lost));
  }
  return static_cast<long>(log.size());
}

long check_store_log(SharedRecords& r, const std::string& store_path, const std::string& lock,
                     std::uint64_t* host_changes) {
  std::vector<StoreWrite> log;
  if (!read_records(store_path, log)) {
    std::fprintf(stderr, "colo-chaos: cannot read the fenced store %s (or it ends in a partial record)\n",
                 store_path.c_str());
    return -1;
  }
  for (std::size_t i = 1; i < log.size(); ++i) {
    const StoreWrite& a = log[i - 1];
    const StoreWrite& b = log[i];
    if (b.token < a.token)
      report_violation(r, Check::lock_stale_accepted, "%s: write %zu: token %llu accepted after token %llu",
                       lock.c_str(), i, ull(b.token), ull(a.token));
    else if (b.token == a.token && b.holder != a.holder)
      report_violation(r, Check::lock_stale_accepted,
                       "%s: write %zu: token %llu written by two holders (pid %llu and %llu)", lock.c_str(), i,
                       ull(b.token), ull(a.holder >> 32), ull(b.holder >> 32));
    if (host_changes != nullptr && static_cast<std::uint32_t>(a.holder) != static_cast<std::uint32_t>(b.holder))
      ++*host_changes;
  }
  return static_cast<long>(log.size());
}

std::uint64_t lost_in_colod_log(const std::string& log_path, const std::string& peer) {
  std::ifstream in(log_path);
  const std::regex line_re("([0-9]+) message\\(s\\) from " + peer + " no longer retained there");
  std::uint64_t lost = 0;
  std::smatch m;
  for (std::string line; std::getline(in, line);)
    if (std::regex_search(line, m, line_re)) lost += std::stoull(m[1].str());
  return lost;
}

}  // namespace colo::chaos
