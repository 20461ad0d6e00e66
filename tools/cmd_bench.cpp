// `colo bench`: benchmarks, one subcommand per kind of object.
//
// Each benchmark measures colo against its baselines in the same run, on the
// same machine, and prints the machine next to the figures:
//   lock    colo's lock vs a bare robust mutex, flock(2), Boost named_mutex, a
//           POSIX semaphore (bench_lock.cpp);
//   queue   colo's Queue and Topic vs ZeroMQ ipc://, a Unix socket, a pipe,
//   topic   POSIX and Boost message queues (bench_msg.cpp, over tools/bench);
//   bridge  a cluster topic through two colod on loopback (two namespaces as
//           two hosts) vs raw ZeroMQ PUSH/PULL over the same loopback TCP:
//           msg/s and one-way latency at 64 B and 4 KiB, with the issue's
//           goals (bench_bridge.cpp, over the same harness as queue|topic);
//   cluster-lock  a cluster-scope lock through colod's cohorting vs each
//           process taking the ZooKeeper, etcd or Redis lock directly with
//           the same client: contended grants/s with 8 processes and
//           uncontended latency, with the goals (bench_cluster_lock.cpp).
#include "bench_bridge.hpp"
#include "bench_cluster_lock.hpp"
#include "bench_lock.hpp"
#include "bench_msg.hpp"
#include "cli.hpp"

namespace colo::cli {

void register_bench(CLI::App& app, Context& ctx) {
  auto* bench =
      app.add_subcommand("bench", "Benchmark colo against baselines on this machine (lock, queue, topic, bridge, "
                                  "cluster-lock)");
  bench->require_subcommand(1);
  register_bench_lock(*bench, ctx);
  register_bench_msg(*bench, ctx);
  register_bench_bridge(*bench, ctx);
  register_bench_cluster_lock(*bench, ctx);
}

}  // namespace colo::cli
