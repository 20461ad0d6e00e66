// tools/cli.hpp — what every `colo` command shares: the global options, the
// exit codes, and the output helpers.
//
// Each command lives in its own cmd_*.cpp and registers itself with
// `register_<command>(app, context)`; main.cpp calls them all.
#pragma once

#include <CLI/CLI.hpp>            // argument parsing, --help with defaults
#include <nlohmann/json.hpp>      // --json output

#include <cstdint>
#include <string>

#include "colo/error.hpp"
#include "colo/node.hpp"

namespace colo::cli {

// Exit codes (sysexits-style where one fits).
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;     // the operation failed; message on stderr
inline constexpr int kExitUsage = 2;       // bad command line
inline constexpr int kExitTimeout = 75;    // EX_TEMPFAIL: `colo lock --timeout` ran out

struct Context {
  std::string ns;       // --ns or COLO_NS or "default"
  int exit_code = kExitOk;
};

// Prints "colo: <message>" to stderr and returns kExitFailure.
int fail(const std::string& message);
int fail(const Error& error);

// Opens the context's namespace or prints why not.
Result<Node> open_node(const Context& ctx);

// Formatting helpers shared by ls, stat and the benchmarks.
std::string human_bytes(std::uint64_t bytes);
std::string human_duration_ns(double ns);
std::string format_realtime(std::uint64_t realtime_ns);  // local ISO-8601 time, seconds
nlohmann::json to_json(const ObjectInfo& info);
nlohmann::json machine_json();                           // nproc, CPU model, kernel
std::string machine_line();                              // the same, one line for tables
double load_average();                                   // 1-minute load average, -1 if unknown

// Where another colo program (e.g. "colod") is: $<env_var> if set and
// non-empty (taken as given); else the file of that name beside this `colo`
// (installed together) or in ../bridge/ (a Meson build tree:
// build/tools/colo, build/bridge/colod), if executable; else the first
// executable match on $PATH. "" if none.
std::string find_program(const std::string& name, const char* env_var);

// Command registration; each is defined in its cmd_*.cpp.
void register_ls(CLI::App& app, Context& ctx);
void register_stat(CLI::App& app, Context& ctx);
void register_create(CLI::App& app, Context& ctx);
void register_lock(CLI::App& app, Context& ctx);
void register_pub(CLI::App& app, Context& ctx);
void register_sub(CLI::App& app, Context& ctx);
void register_top(CLI::App& app, Context& ctx);
void register_rm(CLI::App& app, Context& ctx);
void register_gc(CLI::App& app, Context& ctx);
void register_demo(CLI::App& app, Context& ctx);
void register_bench(CLI::App& app, Context& ctx);
void register_peers(CLI::App& app, Context& ctx);
void register_federate(CLI::App& app, Context& ctx);

}  // namespace colo::cli
