// tools/bench_lock.hpp — `colo bench lock`: colo's lock against the usual
// ways to exclude processes on one host, measured in one run on one machine.
#pragma once

#include "cli.hpp"

namespace colo::cli {

// Adds `lock` to the `colo bench` group.
void register_bench_lock(CLI::App& bench, Context& ctx);

}  // namespace colo::cli
