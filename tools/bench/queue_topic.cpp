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
  std::unique_ptr<TransportFactory> (*make)(std::size_t batch);
  bool queue;
};

// The goals, 64-byte messages, as ratios measured in one run: throughput of
// the batch API against ZeroMQ and the floor, of the per-message API against
// ZeroMQ; a queue's 4->4 with acks, a topic's 1->4 deliveries; busy-reader
// p50 against the ping-pong floor; blocking-reader p50 against a Unix
// socket's (run with --load 1 and 2 as well: an oversubscribed host).
std::vector<bench::GoalSpec> local_goals(bool queue) {
  using bench::Measure;
  using bench::Pattern;
  using bench::ReaderMode;
  const std::string single = queue ? "colo-queue" : "colo-topic";
  const std::string batch = single + "-batch";
  std::vector<bench::GoalSpec> goals = {
      {"64 B 1->1 throughput, batch API, at least 10x zmq-ipc-pushpull's", Measure::throughput, 64,
       ReaderMode::blocking, "zmq-ipc-pushpull", 10, true, batch},
      {"64 B 1->1 throughput, batch API, at least 30% of floor-spsc's", Measure::throughput, 64, ReaderMode::blocking,
       "floor-spsc", 0.3, true, batch},
      {"64 B 1->1 throughput, per-message API, at least 3x zmq-ipc-pushpull's", Measure::throughput, 64,
       ReaderMode::blocking, "zmq-ipc-pushpull", 3, true, single},
  };
  if (queue)
    goals.push_back({"64 B 4->4 throughput with acks, batch API, at least 5x zmq-ipc-pushpull 4->4", Measure::throughput,
                     64, ReaderMode::blocking, "zmq-ipc-pushpull", 5, true, batch, Pattern::many_to_many});
  else
    goals.push_back({"64 B 1->4 deliveries/s, batch API, at least 10x zmq-ipc-pubsub's", Measure::throughput, 64,
                     ReaderMode::blocking, "zmq-ipc-pubsub", 10, true, batch, Pattern::one_to_many});
  goals.push_back({"64 B 1->1 one-way p50, busy reader, at most 2x the ping-pong floor", Measure::latency, 64,
                   ReaderMode::busy, "pingpong", 2, false, single});
  goals.push_back({"64 B 1->1 one-way p50, blocking reader, at most 1/2 of unix-stream's", Measure::latency, 64,
                   ReaderMode::blocking, "unix-stream", 0.5, false, single});
  return goals;
}

void register_variant(CLI::App& bench_group, int& exit_code, const Variant& v) {
  auto* cmd = bench_group.add_subcommand(v.command, v.summary);
  cmd->footer(
      "One run, one harness: every cell (pattern x size x reader) forks its senders and receivers, runs each "
      "transport in turn, writes and checks every payload byte. Throughput cells run as fast as the channel takes "
      "messages; latency cells send at a fixed rate with the intended send time in each message (stalls count). "
      "Every figure is compared, in the same cell, with floor-spsc (the hardware floor), ZeroMQ and a Unix socket; "
      "busy-reader latency also with a cache-line ping-pong measured first. --load N runs N busy processes alongside "
      "every cell. The goals at the end are ratios from the same run. colo's objects live in a private namespace "
      "msgbench-<pid>, removed at the end (--ns is ignored). Exit status 1 only if a cell failed; goals are "
      "reported, not enforced.\n"
      "Examples:\n"
      "  colo bench " + std::string(v.command) + " --quick\n"
      "  colo bench " + v.command + " --sizes 64 --patterns 1-1 --load 1\n"
      "  colo bench " + v.command + " --sizes 64 --measure latency --json");
  auto cli = std::make_shared<bench::MsgBenchCli>();
  cli->options.title = std::string("colo bench ") + v.command;
  cli->options.subject = v.subject;
  cli->options.goals = local_goals(v.queue);
  bench::add_msg_bench_options(*cmd, *cli);
  auto list = std::make_shared<bool>(false);
  cmd->add_flag("--list", *list, "list the transports and exit");
  const Variant variant = v;
  cmd->callback([cli, list, variant, &exit_code] {
    std::vector<std::unique_ptr<TransportFactory>> transports;
    transports.push_back(variant.make(1));
    transports.push_back(variant.make(cli->options.batch));
    for (auto& t : bench::baseline_transports()) transports.push_back(std::move(t));
    try {
      if (auto peer = bench::iceoryx2_transport()) {
        // The side-by-side peer, where built: colo at least its equal.
        const std::string single = variant.queue ? "colo-queue" : "colo-topic";
        cli->options.goals.push_back({"64 B 1->1 throughput, per-message API, at least iceoryx2's",
                                      bench::Measure::throughput, 64, bench::ReaderMode::blocking, "iceoryx2", 1,
                                      true, single});
        cli->options.goals.push_back({"64 B 1->1 one-way p50, busy reader, at most iceoryx2's",
                                      bench::Measure::latency, 64, bench::ReaderMode::busy, "iceoryx2", 1, false,
                                      single});
        transports.push_back(std::move(peer));
      }
    } catch (const bench::TransportError& e) {
      std::cerr << "colo bench " << variant.command << ": " << e.what() << '\n';
      exit_code = kExitUsage;
      return;
    }
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
                    "colo Queue (per message and batches) vs the floor (bare SPSC ring), ZeroMQ ipc:// PUSH/PULL and "
                    "PUB/SUB, Unix socket, pipe, POSIX and Boost message queues: throughput (1->1, n->1, 1->n, n->n) "
                    "and one-way latency percentiles",
                    &bench::colo_queue_transport, true});
  register_variant(bench_group, exit_code,
                   {"topic", "colo-topic",
                    "colo Topic vs the same baselines (1->n: every subscriber gets every message)",
                    &bench::colo_topic_transport, false});
}

}  // namespace colo::cli
