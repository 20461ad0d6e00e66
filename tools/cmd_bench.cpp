// `colo bench`: benchmarks, one subcommand per kind of object.
//
// Each benchmark measures colo against its baselines in the same run, on the
// same machine, and prints the machine next to the figures. Today: `lock`.
// `queue`, `topic`, `bridge` and `cluster-lock` register here beside it, each
// from its own bench_*.cpp.
#include "bench_lock.hpp"
#include "cli.hpp"

namespace colo::cli {

void register_bench(CLI::App& app, Context& ctx) {
  auto* bench = app.add_subcommand("bench", "Benchmark colo against baselines on this machine (see `colo bench lock`)");
  bench->require_subcommand(1);
  register_bench_lock(*bench, ctx);
}

}  // namespace colo::cli
