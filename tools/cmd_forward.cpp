// `colo bench` and `colo demo`: run the programs colo-bench (tools/bench/)
// and colo-demo (tools/demo/).
//
// The benchmarks and the demo are programs of their own, so that `colo`
// links only what inspecting and driving objects needs (no backend clients,
// no Boost baselines). These two commands keep `colo bench ...` and `colo
// demo ...` working as one tool: the program is looked for beside `colo`
// (installed together in one bindir), then in bench/ or demo/ below colo's
// directory (the Meson build tree), then on $PATH; it replaces this process
// (execv), so that signals, the exit status and the pid (which names the
// benchmarks' scratch namespaces) are the program's own. Every argument
// after the command is passed through unchanged; argv[0] is "colo bench" or
// "colo demo", which the program shows in its usage lines.
#include <unistd.h>  // execv

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>

#include "cli.hpp"

namespace colo::cli {
namespace {

struct Forwarded {
  const char* command;    // "bench"
  const char* program;    // "colo-bench"
  const char* build_dir;  // where Meson builds it, relative to colo's directory: "bench/"
  const char* summary;    // the line of `colo --help`
};

// Only returns if the program could not be started.
int run_program(const Forwarded& f, const std::vector<std::string>& args) {
  const std::string path = find_program(f.program, nullptr, {f.build_dir});
  if (path.empty())
    return fail(std::string("cannot find ") + f.program + ", the program behind `colo " + f.command +
                "`: it is looked for beside colo (" + own_directory() + "), in " + own_directory() + f.build_dir +
                " and on $PATH. It is built with colo (ninja -C BUILD) and installed beside it (meson install -C "
                "BUILD)");
  const std::string shown = std::string("colo ") + f.command;
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(shown.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::cout.flush();
  std::fflush(nullptr);
  ::execv(path.c_str(), argv.data());
  return fail("cannot run " + path + ": " + std::strerror(errno));
}

void register_forwarded(CLI::App& app, Context& ctx, const Forwarded& f) {
  auto* cmd = app.add_subcommand(f.command, f.summary);
  // Everything after the command, --help included, is the program's.
  cmd->prefix_command();
  cmd->set_help_flag();
  cmd->allow_extras();
  cmd->callback([cmd, f, &ctx] { ctx.exit_code = run_program(f, cmd->remaining()); });
}

}  // namespace

void register_demo(CLI::App& app, Context& ctx) {
  register_forwarded(app, ctx,
                     {"demo", "colo-demo", "demo/",
                      "Start here: a colo lock, a topic and a queue shared by processes, some of them killed "
                      "mid-work"});
}

void register_bench(CLI::App& app, Context& ctx) {
  register_forwarded(app, ctx,
                     {"bench", "colo-bench", "bench/",
                      "Benchmark colo against baselines on this machine (lock, queue, topic, bridge, cluster-lock, "
                      "kafka, rabbitmq, python)"});
}

}  // namespace colo::cli
