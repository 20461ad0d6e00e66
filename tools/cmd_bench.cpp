// PLACEHOLDER: replaced by the benchmark implementation.
#include "cli.hpp"
namespace colo::cli {
void register_bench(CLI::App&, Context&) {}
}  // namespace colo::cli
