// `colo bench queue` and `colo bench topic`: colo's Queue / Topic against
// ZeroMQ ipc://, a Unix socket, a pipe, POSIX and Boost message queues,
// through the harness of msg_bench.hpp (colo's side: colo_transports.cpp;
// the baselines: transports.cpp).
#include "commands.hpp"

#include <iostream>
#include <memory>

#include "app.hpp"
#include "msg_bench.hpp"
#include "transport.hpp"

namespace colo::cli {
namespace {

using bench::TransportFactory;

struct Variant {
  const char* command;    // "queue"
  const char* subject;    // "colo-queue"
  const char* summary;    // --help line
  std::unique_ptr<TransportFactory> (*make)();
};

// The goals for colo's queue and topic, 64 B 1->1: throughput against
// ZeroMQ PUSH/PULL and a Unix socket, one-way p50 against the Unix socket's
// with a busy and with a blocking reader.
std::vector<bench::GoalSpec> local_goals() {
  using bench::Measure;
  using bench::ReaderMode;
  return {
      {"64 B 1->1 throughput at least 10x zmq-ipc-pushpull's", Measure::throughput, 64, ReaderMode::blocking,
       "zmq-ipc-pushpull", 10, true},
      {"64 B 1->1 throughput at least 25x unix-stream's", Measure::throughput, 64, ReaderMode::blocking,
       "unix-stream", 25, true},
      {"64 B 1->1 one-way p50, busy reader, at most 1/10 of unix-stream's", Measure::latency, 64, ReaderMode::busy,
       "unix-stream", 0.1, false},
      {"64 B 1->1 one-way p50, blocking reader, at most 1/2 of unix-stream's", Measure::latency, 64,
       ReaderMode::blocking, "unix-stream", 0.5, false},
  };
}

void register_variant(CLI::App& bench_group, int& exit_code, const Variant& v) {
  auto* cmd = bench_group.add_subcommand(v.command, v.summary);
  cmd->footer(
      "One run, one harness: every cell (pattern x size x reader) forks its senders and receivers, runs each "
      "transport in turn, writes and checks every payload byte. Throughput cells run as fast as the channel takes "
      "messages; latency cells send at a fixed rate with the intended send time in each message (stalls count). "
      "Ratios compare with --reference in the same cell; the goals at the end compare colo with ZeroMQ PUSH/PULL and "
      "a Unix socket. colo's objects live in a private namespace msgbench-<pid>, removed at the end (--ns is "
      "ignored). Exit status 1 only if a cell failed; goals are reported, not enforced.\n"
      "Examples:\n"
      "  colo bench " + std::string(v.command) + " --quick\n"
      "  colo bench " + v.command + " --sizes 64 --measure latency --json");
  auto cli = std::make_shared<bench::MsgBenchCli>();
  cli->options.title = std::string("colo bench ") + v.command;
  cli->options.subject = v.subject;
  cli->options.goals = local_goals();
  bench::add_msg_bench_options(*cmd, *cli);
  auto list = std::make_shared<bool>(false);
  cmd->add_flag("--list", *list, "list the transports and exit");
  const Variant variant = v;
  cmd->callback([cli, list, variant, &exit_code] {
    std::vector<std::unique_ptr<TransportFactory>> transports;
    transports.push_back(variant.make());
    for (auto& t : bench::baseline_transports()) transports.push_back(std::move(t));
    if (*list) {
      for (const auto& t : transports)
        std::printf("%-17s %-9s %s\n", t->name().c_str(), bench::fanout_name(t->fanout()), t->description().c_str());
      exit_code = kExitOk;
      return;
    }
    if (const std::string error = bench::resolve_msg_bench_options(*cli, transports); !error.empty()) {
      std::cerr << "colo bench " << variant.command << ": " << error << '\n';
      exit_code = kExitUsage;
      return;
    }
    exit_code = bench::run_msg_bench(cli->options, transports);
  });
}

}  // namespace

void register_bench_msg(CLI::App& bench_group, int& exit_code) {
  register_variant(bench_group, exit_code,
                   {"queue", "colo-queue",
                    "colo Queue vs ZeroMQ ipc:// PUSH/PULL and PUB/SUB, Unix socket, pipe, POSIX and Boost message "
                    "queues: throughput (1->1, n->1, 1->n) and one-way latency percentiles",
                    &bench::colo_queue_transport});
  register_variant(bench_group, exit_code,
                   {"topic", "colo-topic",
                    "colo Topic vs the same baselines (1->n: every subscriber gets every message)",
                    &bench::colo_topic_transport});
}

}  // namespace colo::cli
