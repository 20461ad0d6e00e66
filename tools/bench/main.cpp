// colo-bench: benchmarks, one subcommand per kind of object; run as
// `colo bench ...` (tools/cmd_forward.cpp) or by itself.
//
// Each benchmark measures colo against its baselines in the same run, on the
// same machine, and prints the machine next to the figures:
//   lock    colo's lock vs a bare robust mutex, flock(2), Boost named_mutex, a
//           POSIX semaphore (lock.cpp);
//   queue   colo's Queue and Topic vs ZeroMQ ipc://, a Unix socket, a pipe,
//   topic   POSIX and Boost message queues (queue_topic.cpp, over msg_bench.hpp);
//   bridge  a cluster topic through two colod on loopback (two namespaces as
//           two hosts) vs raw ZeroMQ PUSH/PULL over the same loopback TCP:
//           msg/s and one-way latency at 64 B and 4 KiB, with the goals
//           (bridge.cpp, over the same harness as queue|topic);
//   cluster-lock  a cluster-scope lock through colod's cohorting vs each
//           process taking the ZooKeeper, etcd or Redis lock directly with
//           the same client: contended grants/s with 8 processes and
//           uncontended latency, with the goals (cluster_lock.cpp);
//   lock-table  per-key locking: a lock table's random-key pair vs a named
//           lock, striped mutexes, flock per key, Redis per key; scaling
//           over processes on distinct keys; --cluster: colod's cost by
//           locks kept and in use (lock_table.cpp, colod_cost.cpp);
//   python  colo from Python (the colo module) vs redis-py, flock,
//           multiprocessing, pyzmq, a Unix socket: lock pairs and queue
//           msg/s between Python processes (python.cpp runs python_bench.py).
//   kafka   colod's Kafka mirror and source vs librdkafka's own producer and
//           consumer on the same broker, and the local publish call with the
//           mirror on and off (kafka.cpp).
//   rabbitmq  colod's RabbitMQ mirror and source vs rabbitmq-c's own
//           publisher (same confirm window) and consumer (same prefetch) on
//           the same server (rabbitmq.cpp).
#include "app.hpp"
#include "commands.hpp"

int main(int argc, char** argv) {
  using namespace colo::cli;
  int exit_code = kExitOk;
  const std::string name = shown_name(argv[0], "colo bench");
  CLI::App app{"Benchmark colo against baselines on this machine (lock, lock-table, queue, topic, bridge, "
               "cluster-lock, kafka, rabbitmq, python)",
               name};
  app.require_subcommand(1);
  app.set_version_flag("--version", name + " (colo) " + kVersion);
  app.footer("Exit codes: 0 ok, 1 a measurement or a check failed, 2 usage error. Run `" + name +
             " COMMAND --help` for details.");
  register_bench_lock(app, exit_code);
  register_bench_msg(app, exit_code);
  register_bench_bridge(app, exit_code);
  register_bench_cluster_lock(app, exit_code);
  register_bench_lock_table(app, exit_code);
  register_bench_python(app, exit_code);
  register_bench_kafka(app, exit_code);
  register_bench_rabbitmq(app, exit_code);
  return parse_and_run(app, argc, argv, exit_code, name);
}
