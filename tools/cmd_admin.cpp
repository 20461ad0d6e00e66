// `colo create`, `colo rm`, `colo gc`: creating and removing objects.
#include <iostream>

#include "cli.hpp"

namespace colo::cli {
namespace {

int run_create(const Context& ctx, const std::string& kind, const std::string& name) {
  if (kind == "queue" || kind == "topic")
    return fail("creating a " + kind + " is not supported by this version of colo yet (locks only)");
  if (kind != "lock") return fail("unknown object kind '" + kind + "' (expected lock, queue or topic)");
  auto node = open_node(ctx);
  if (!node) return fail(node.error());
  auto lock = node->lock(name, OpenMode::create);
  if (!lock) return fail(lock.error());
  std::cout << "created lock '" << name << "' in namespace '" << ctx.ns << "'\n";
  return kExitOk;
}

int run_rm(const Context& ctx, const std::string& name) {
  auto node = open_node(ctx);
  if (!node) return fail(node.error());
  if (auto removed = node->remove(name); !removed) return fail(removed.error());
  std::cout << "removed '" << name << "' from namespace '" << ctx.ns << "'\n";
  return kExitOk;
}

int run_gc(const Context& ctx, bool dry_run) {
  auto node = open_node(ctx);
  if (!node) return fail(node.error());
  auto report = node->gc(dry_run);
  if (!report) return fail(report.error());
  const char* verb = dry_run ? "would remove" : "removed";
  for (const auto& s : report->removed_segments)
    std::cout << verb << " segment /" << s << " (its creator died before it was ready)\n";
  for (const auto& e : report->removed_registry_entries)
    std::cout << verb << " registry entry '" << e << "' (its segment is gone)\n";
  if (report->removed_segments.empty() && report->removed_registry_entries.empty())
    std::cout << "nothing to remove in namespace '" << ctx.ns << "'\n";
  return kExitOk;
}

}  // namespace

void register_create(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("create", "Create an object (fails if it exists): colo create lock NAME");
  auto kind = std::make_shared<std::string>();
  auto name = std::make_shared<std::string>();
  cmd->add_option("KIND", *kind, "lock (queue and topic come with a later version)")->required();
  cmd->add_option("NAME", *name, "object name: 1-200 bytes of A-Z a-z 0-9 . _ - /")->required();
  cmd->callback([&ctx, kind, name] { ctx.exit_code = run_create(ctx, *kind, *name); });
}

void register_rm(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("rm", "Remove an object: its segment and registry entry");
  auto name = std::make_shared<std::string>();
  cmd->add_option("NAME", *name, "object name")->required();
  cmd->callback([&ctx, name] { ctx.exit_code = run_rm(ctx, *name); });
}

void register_gc(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand(
      "gc", "Remove segments whose creator died before they were ready, and registry entries whose segment is gone");
  auto dry = std::make_shared<bool>(false);
  cmd->add_flag("--dry-run", *dry, "print what would be removed, remove nothing");
  cmd->callback([&ctx, dry] { ctx.exit_code = run_gc(ctx, *dry); });
}

}  // namespace colo::cli
