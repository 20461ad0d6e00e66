// PLACEHOLDER: replaced by the demo implementation.
#include "cli.hpp"
namespace colo::cli {
void register_demo(CLI::App&, Context&) {}
}  // namespace colo::cli
