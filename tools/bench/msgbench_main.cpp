// colo-msgbench: throughput and one-way latency of message passing between
// processes on this machine, for the IPC baselines (and colo's queue and
// topic once they implement TransportFactory). See msg_bench.hpp.
//
// Exit status: 0 every cell ran (or was skipped for a stated reason),
// 1 a cell failed, 2 bad command line.
#include <cstdio>
#include <iostream>

#include "../cli.hpp"  // exit codes
#include "msg_bench.hpp"
#include "transport.hpp"

int main(int argc, char** argv) {
  using namespace colo::bench;
  CLI::App app{"colo-msgbench: message-passing throughput and one-way latency between processes, for IPC baselines "
               "(ZeroMQ ipc://, Unix sockets, pipes, POSIX and Boost message queues)"};
  app.footer(
      "Each cell forks its senders and receivers; every payload byte is written and checked. Ratios compare each "
      "transport with --reference in the same cell. A cell that fails or overruns its watchdog is reported as "
      "FAILED and the run goes on. Example: colo-msgbench --quick; colo-msgbench --sizes 64 --measure latency.");
  MsgBenchCli cli;
  add_msg_bench_options(app, cli);
  bool list = false;
  app.add_flag("--list", list, "list the transports and exit");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    (void)app.exit(e);  // prints the message
    return colo::cli::kExitUsage;
  }

  auto transports = baseline_transports();
  if (list) {
    for (const auto& t : transports)
      std::printf("%-17s %-9s %s\n", t->name().c_str(), fanout_name(t->fanout()), t->description().c_str());
    return colo::cli::kExitOk;
  }
  if (const std::string error = resolve_msg_bench_options(cli, transports); !error.empty()) {
    std::cerr << "colo-msgbench: " << error << '\n';
    return colo::cli::kExitUsage;
  }
  return run_msg_bench(cli.options, transports);
}
