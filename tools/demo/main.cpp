// colo-demo: what colo is for, shown in a few seconds with real processes;
// run as `colo demo` (tools/cmd_forward.cpp) or by itself.
//
// The demo runs a sequence of parts, each a small scenario with forked
// processes in a private namespace `demo<pid>` that is removed at the end,
// even on failure or Ctrl-C. Each part checks exact outcomes and says OK or
// FAILED with the reason; the demo ends with `demo: OK` (exit 0) or
// `demo: FAILED: <why>` (exit 1). Parts (demo.hpp): "locks" (locks.cpp),
// "queues and topics" (channels.hpp: topic.cpp, queue.cpp), "federation"
// (federation.cpp: three colod on this machine standing for hosts).
#include <chrono>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "app.hpp"
#include "demo.hpp"
#include "format.hpp"

namespace colo::cli {

std::string plural(std::uint64_t n, const char* one, const char* many) {
  return with_commas(n) + " " + (n == 1 ? one : many);
}

namespace {

struct Part {
  const char* name;
  PartOutcome (*run)(const DemoOptions&, ScratchNamespace&, Reporter&);
};

constexpr Part kParts[] = {
    {"locks", run_locks_part},
    {"queues and topics", run_channels_part},
    {"federation", run_federation_part},
};

std::string join(const std::vector<std::string>& items, const char* sep) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : sep) + s;
  return out;
}

int run_demo(const DemoOptions& opt) {
  if (opt.increments < opt.workers) {
    std::cerr << "colo: demo: --increments (" << opt.increments << ") must be at least --workers (" << opt.workers
              << "): every worker needs an increment to do\n";
    return kExitUsage;
  }
  Reporter out(opt.json);
  const auto t0 = SteadyClock::now();
  std::vector<std::string> failures;
  nlohmann::json parts = nlohmann::json::array();
  std::string ns;
  std::vector<std::string> leftovers;
  {
    ScratchNamespace scratch;
    if (auto opened = scratch.open("demo"); !opened) {
      failures.push_back(opened.error().message);
    } else {
      ns = scratch.ns();
      out.line("colo demo: processes sharing state under a colo lock, publishing on a topic and sharing a queue;");
      out.line("           in each part one of them is killed mid-work, and the others carry on exactly;");
      out.line("           then three colod stand for three hosts sharing a cluster topic and a cluster queue");
      out.line(machine_line());
      out.line("namespace '" + ns + "' (temporary, removed at the end)");
      out.line("");
      for (const Part& part : kParts) {
        PartOutcome outcome = part.run(opt, scratch, out);
        const bool ok = outcome.failures.empty();
        out.line(std::string("  ") + part.name + ": " + (ok ? "OK" : "FAILED: " + join(outcome.failures, "; ")));
        out.line("");
        nlohmann::json j = {{"name", part.name}, {"ok", ok}, {"failures", outcome.failures}};
        j.update(outcome.detail);
        parts.push_back(j);
        for (const auto& f : outcome.failures) failures.push_back(std::string(part.name) + ": " + f);
      }
    }
    leftovers = scratch.remove_all();
  }
  if (!leftovers.empty()) failures.push_back("segments left in /dev/shm: " + join(leftovers, ", "));
  const double wall_ns = std::chrono::duration<double, std::nano>(SteadyClock::now() - t0).count();
  const bool ok = failures.empty();
  if (opt.json) {
    nlohmann::json j = {{"demo", "colo"},
                        {"machine", machine_json()},
                        {"namespace", ns},
                        {"workers", opt.workers},
                        {"increments", opt.increments},
                        {"topic_messages", opt.topic_messages},
                        {"queue_messages", opt.queue_messages},
                        {"parts", parts},
                        {"wall_ns", wall_ns},
                        {"leftovers", leftovers},
                        {"ok", ok},
                        {"failures", failures}};
    std::cout << j.dump(2) << '\n';
  } else {
    out.line("namespace '" + ns + "' removed; total " + human_duration_ns(wall_ns));
    out.line(ok ? "demo: OK" : "demo: FAILED: " + join(failures, "; "));
  }
  return ok ? kExitOk : kExitFailure;
}

}  // namespace

}  // namespace colo::cli

int main(int argc, char** argv) {
  using namespace colo::cli;
  int exit_code = kExitOk;
  const std::string name = shown_name(argv[0], "colo demo");
  CLI::App app{"Start here: a colo lock, a topic and a queue shared by processes, some of them killed mid-work",
               name};
  app.set_version_flag("--version", name + " (colo) " + kVersion);
  app.footer(
      "Part \"locks\": forks --workers processes that add --increments to a counter in shared memory under one "
      "colo lock. One is killed (SIGKILL) in the middle of an update, holding the lock; the next holder is told the "
      "owner died and rolls the half-done update back; a restarted worker finishes the share. Checks that fencing "
      "tokens only grow and that the counter ends exact.\n"
      "Part \"queues and topics\": 2 publisher processes write --topic-messages each on a topic with zero-copy "
      "loans; 2 blocking subscribers must get every message in order (one-way latency is measured), a slow lossy "
      "one counts what it missed. Then 2 producers and 3 consumers share --queue-messages on a queue with acks; "
      "one consumer is killed holding an unacknowledged message, which is redelivered to another. Checks that "
      "every message is acknowledged exactly once.\n"
      "Part \"federation\": three colod on 127.0.0.1 stand for hosts alpha, beta and gamma (a namespace each). A "
      "cluster topic with a subscriber on each host and publishers on alpha and beta (gamma's colod is killed and "
      "restarted halfway: every subscriber still gets every message exactly once, in order); a cluster queue (home "
      "alpha) with a consumer on each host and producers on beta and gamma: every job consumed exactly once in the "
      "cluster. colod is found through COLOD_BIN, beside colo-demo, in ../../bridge/ of a build tree, or on $PATH.\n"
      "Ends with `demo: OK` (exit 0) or `demo: FAILED: <why>` (exit 1). Runs in a private namespace demo<pid>, "
      "removed at the end (--ns is ignored).\n"
      "Exit codes: 0 ok, 1 a part failed, 2 usage error.");
  auto opt = std::make_shared<DemoOptions>();
  app.add_option("--workers", opt->workers, "worker processes")
      ->capture_default_str()
      ->check(CLI::Range(1, kMaxWorkers));
  app.add_option("--increments", opt->increments, "increments of the counter in total, split between the workers")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1'000'000}));
  app.add_option("--topic-messages", opt->topic_messages, "messages per topic publisher (2 publishers)")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{1'000}, std::int64_t{2'000'000}));
  app.add_option("--queue-messages", opt->queue_messages, "queue messages in total (2 producers, 3 consumers)")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{1'000}, std::int64_t{1'000'000}));
  app.add_option("--cluster-topic-messages", opt->federation.topic_messages,
                  "federation part: messages per cluster topic publisher (2 publishers)")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{100}, std::int64_t{1'000'000}));
  app.add_option("--cluster-queue-messages", opt->federation.queue_messages,
                  "federation part: cluster queue jobs in total (2 producers)")
      ->capture_default_str()
      ->check(CLI::Range(std::int64_t{100}, std::int64_t{1'000'000}));
  app.add_flag("--json", opt->json, "print JSON instead of text");
  app.callback([opt, &exit_code] { exit_code = run_demo(*opt); });
  return parse_and_run(app, argc, argv, exit_code, name);
}
