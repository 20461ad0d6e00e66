// tools/bench_msg.hpp — `colo bench queue` and `colo bench topic`: colo's
// Queue / Topic against ZeroMQ ipc://, a Unix socket, a pipe, POSIX and Boost
// message queues, through the harness of tools/bench (msg_bench.hpp).
#pragma once

#include "cli.hpp"

namespace colo::cli {

// Adds `queue` and `topic` to the `colo bench` group.
void register_bench_msg(CLI::App& bench, Context& ctx);

}  // namespace colo::cli
