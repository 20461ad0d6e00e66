// colo — inspect, drive and benchmark the colo objects of a namespace.
#include "cli.hpp"

int main(int argc, char** argv) {
  using namespace colo::cli;
  Context ctx;
  ctx.ns = colo::default_namespace();

  CLI::App app{"colo: inspect, drive and benchmark colo's shared-memory locks, queues and topics", "colo"};
  app.require_subcommand(1);
  app.add_option("--ns", ctx.ns, "namespace (default: $COLO_NS, else 'default')")->capture_default_str();
  app.set_version_flag("--version", std::string("colo ") + kVersion);
  app.footer(
      "Start with `colo demo`. Run `colo COMMAND --help` for a command's options and examples.\n"
      "Exit codes: 0 ok, 1 failure, 2 usage error, 75 lock timeout (or --count not reached).");

  register_ls(app, ctx);
  register_stat(app, ctx);
  register_create(app, ctx);
  register_lock(app, ctx);
  register_pub(app, ctx);
  register_sub(app, ctx);
  register_top(app, ctx);
  register_rm(app, ctx);
  register_gc(app, ctx);
  register_demo(app, ctx);
  register_bench(app, ctx);
  register_peers(app, ctx);
  register_federate(app, ctx);
  register_links(app, ctx);

  return parse_and_run(app, argc, argv, ctx.exit_code, "colo");
}
