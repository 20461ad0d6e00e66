// tools/bench_bridge.hpp — `colo bench bridge`: a cluster topic carried by two
// colod daemons on loopback, against raw ZeroMQ PUSH/PULL over the same
// loopback TCP, measured in one run.
#pragma once

#include "cli.hpp"

namespace colo::cli {

// Adds `bridge` to the `colo bench` group.
void register_bench_bridge(CLI::App& bench, Context& ctx);

}  // namespace colo::cli
