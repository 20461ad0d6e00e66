// `colo bench`: benchmarks, one subcommand per kind of object.
//
// Each benchmark measures colo against its baselines in the same run, on the
// same machine, and prints the machine next to the figures: `lock`
// (bench_lock.cpp), `queue` and `topic` (bench_msg.cpp, over tools/bench).
// `bridge` and `cluster-lock` will register here beside them.
#include "bench_lock.hpp"
#include "bench_msg.hpp"
#include "cli.hpp"

namespace colo::cli {

void register_bench(CLI::App& app, Context& ctx) {
  auto* bench = app.add_subcommand("bench", "Benchmark colo against baselines on this machine (lock, queue, topic)");
  bench->require_subcommand(1);
  register_bench_lock(*bench, ctx);
  register_bench_msg(*bench, ctx);
}

}  // namespace colo::cli
