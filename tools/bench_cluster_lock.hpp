// tools/bench_cluster_lock.hpp — `colo bench cluster-lock`: a cluster-scope
// lock taken through colod's cohorting against each process taking the
// backend lock (ZooKeeper, etcd, Redis) directly, measured in one run.
#pragma once

#include "cli.hpp"

namespace colo::cli {

// Adds `cluster-lock` to the `colo bench` group.
void register_bench_cluster_lock(CLI::App& bench, Context& ctx);

}  // namespace colo::cli
