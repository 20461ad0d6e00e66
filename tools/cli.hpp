// tools/cli.hpp — what every `colo` command shares: the global options and
// the JSON form of an object; exit codes and formatting come from tools/common.
//
// Each command lives in its own cmd_*.cpp and registers itself with
// `register_<command>(app, context)`; main.cpp calls them all.
#pragma once

#include <CLI/CLI.hpp>            // argument parsing, --help with defaults
#include <nlohmann/json.hpp>      // --json output

#include <string>

#include "app.hpp"     // exit codes, fail(), find_program (tools/common)
#include "colo/error.hpp"
#include "colo/node.hpp"
#include "format.hpp"  // human_bytes, with_commas, machine_line ... (tools/common)

namespace colo::cli {

struct Context {
  std::string ns;       // --ns or COLO_NS or "default"
  int exit_code = kExitOk;
};

// Opens the context's namespace or prints why not.
Result<Node> open_node(const Context& ctx);

nlohmann::json to_json(const ObjectInfo& info);  // as `colo ls --json` and `colo stat --json` show it

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
// `colo bench` and `colo demo` run the programs colo-bench and colo-demo (cmd_forward.cpp).
void register_demo(CLI::App& app, Context& ctx);
void register_bench(CLI::App& app, Context& ctx);
void register_peers(CLI::App& app, Context& ctx);
void register_federate(CLI::App& app, Context& ctx);
void register_links(CLI::App& app, Context& ctx);

}  // namespace colo::cli
