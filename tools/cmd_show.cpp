// `colo ls` and `colo stat`: read-only views of a namespace.
#include <cstdio>
#include <iostream>

#include "cli.hpp"

namespace colo::cli {
namespace {

std::string creator_text(const ObjectInfo& info) {
  if (info.creator_pid == 0) return "-";
  return std::to_string(info.creator_pid) + (info.creator_alive ? "" : " (exited)");
}

int run_ls(const Context& ctx, bool json) {
  auto node = open_node(ctx);
  if (!node) return fail(node.error());
  auto objects = node->list();
  if (!objects) return fail(objects.error());
  if (json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& o : *objects) out.push_back(to_json(o));
    std::cout << nlohmann::json{{"namespace", ctx.ns}, {"objects", out}}.dump(2) << '\n';
    return kExitOk;
  }
  if (objects->empty()) {
    std::cout << "namespace '" << ctx.ns << "' has no objects\n";
    return kExitOk;
  }
  std::printf("%-8s %-32s %-8s %10s %-16s %s\n", "KIND", "NAME", "SCOPE", "SIZE", "CREATOR", "STATE");
  for (const auto& o : *objects)
    std::printf("%-8s %-32s %-8s %10s %-16s %s\n", o.kind.empty() ? "?" : o.kind.c_str(), o.name.c_str(),
                scope_name(o.scope), human_bytes(o.size_bytes).c_str(), creator_text(o).c_str(), o.state.c_str());
  return kExitOk;
}

void print_lock(const LockStats& s) {
  std::printf("fencing epoch:    %llu\n", static_cast<unsigned long long>(s.fencing_epoch));
  if (s.holder.pid == 0) {
    std::printf("holder:           none\n");
  } else {
    std::printf("holder:           pid %u tid %u, held for %s, %s\n", s.holder.pid, s.holder.tid,
                human_duration_ns(s.holder.held_for_ns).c_str(),
                s.holder.alive ? "alive" : "DEAD (the next acquirer is told owner_died)");
  }
  std::printf("waiters:          %u\n", s.waiters);
  std::printf("grants:           %llu\n", static_cast<unsigned long long>(s.grants));
  std::printf("contended grants: %llu\n", static_cast<unsigned long long>(s.contended_grants));
  std::printf("recoveries:       %llu (grants that found the previous owner dead)\n",
              static_cast<unsigned long long>(s.recoveries));
  std::printf("timeouts:         %llu\n", static_cast<unsigned long long>(s.timeouts));
  std::printf("hold time total:  %s", human_duration_ns(s.hold_ns_total).c_str());
  const std::uint64_t completed = s.grants - (s.holder.pid != 0 ? 1 : 0);
  if (completed > 0) std::printf(" (mean %s)", human_duration_ns(s.hold_ns_total / static_cast<double>(completed)).c_str());
  std::printf("\n");
}

int run_stat(const Context& ctx, const std::string& name, bool json) {
  auto node = open_node(ctx);
  if (!node) return fail(node.error());
  auto info = node->info(name);
  if (!info) return fail(info.error());
  if (json) {
    std::cout << to_json(*info).dump(2) << '\n';
    return kExitOk;
  }
  const ObjectInfo& o = *info;
  std::printf("name:             %s\n", o.name.c_str());
  std::printf("kind:             %s\n", o.kind.c_str());
  std::printf("scope:            %s\n", scope_name(o.scope));
  std::printf("state:            %s\n", o.state.c_str());
  std::printf("segment:          /dev/shm/%s (%s)\n", o.shm_name.c_str(), human_bytes(o.size_bytes).c_str());
  std::printf("creator:          %s, created %s\n", creator_text(o).c_str(), format_realtime(o.created_realtime_ns).c_str());
  if (o.lock) print_lock(*o.lock);
  return kExitOk;
}

}  // namespace

void register_ls(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("ls", "List every object of the namespace: kind, name, scope, size, creator, state");
  auto json = std::make_shared<bool>(false);
  cmd->add_flag("--json", *json, "print JSON instead of a table");
  cmd->callback([&ctx, json] { ctx.exit_code = run_ls(ctx, *json); });
}

void register_stat(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("stat", "Show an object's counters and, for a lock, its holder and waiters");
  auto name = std::make_shared<std::string>();
  cmd->add_option("NAME", *name, "object name")->required();
  auto json = std::make_shared<bool>(false);
  cmd->add_flag("--json", *json, "print JSON");
  cmd->callback([&ctx, name, json] { ctx.exit_code = run_stat(ctx, *name, *json); });
}

}  // namespace colo::cli
