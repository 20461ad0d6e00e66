// tools/bench/commands.hpp — the benchmarks of colo-bench, one subcommand
// each. Each register_* adds its subcommand to the `bench` app; its callback
// runs the benchmark and leaves the exit status in `exit_code`.
#pragma once

#include <CLI/CLI.hpp>

namespace colo::cli {

void register_bench_lock(CLI::App& bench, int& exit_code);          // lock.cpp
void register_bench_msg(CLI::App& bench, int& exit_code);           // queue_topic.cpp: queue and topic
void register_bench_bridge(CLI::App& bench, int& exit_code);        // bridge.cpp
void register_bench_cluster_lock(CLI::App& bench, int& exit_code);  // cluster_lock.cpp
void register_bench_lock_table(CLI::App& bench, int& exit_code);    // lock_table.cpp
void register_bench_python(CLI::App& bench, int& exit_code);        // python.cpp: runs python_bench.py
void register_bench_kafka(CLI::App& bench, int& exit_code);         // kafka.cpp
void register_bench_rabbitmq(CLI::App& bench, int& exit_code);      // rabbitmq.cpp

}  // namespace colo::cli
