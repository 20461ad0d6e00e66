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
    std::printf("holder:           pid %u tid %u, held for %s%s, %s\n", s.holder.pid, s.holder.tid,
                s.holder.held_for_exact ? "" : "at least ", human_duration_ns(s.holder.held_for_ns).c_str(),
                s.holder.alive ? "alive" : "DEAD (the next acquirer is told owner_died)");
  }
  std::printf("waiters:          %u\n", s.waiters);
  std::printf("grants:           %llu\n", static_cast<unsigned long long>(s.grants));
  std::printf("contended grants: %llu\n", static_cast<unsigned long long>(s.contended_grants));
  std::printf("recoveries:       %llu (grants that found the previous owner dead)\n",
              static_cast<unsigned long long>(s.recoveries));
  std::printf("timeouts:         %llu\n", static_cast<unsigned long long>(s.timeouts));
  std::printf("mean hold time:   %s (from %llu timed grants: 1 in 16, and every contended one)\n",
              human_duration_ns(s.hold_ns_mean).c_str(), static_cast<unsigned long long>(s.hold_samples));
}

void print_channel(const ChannelStats& c) {
  auto u = [](std::uint64_t v) { return static_cast<unsigned long long>(v); };
  std::printf("capacity:         %s, max message %s%s\n", human_bytes(c.capacity).c_str(),
              human_bytes(c.max_message).c_str(),
              c.acks ? (", acks, max deliveries " + std::to_string(c.max_deliveries)).c_str() : "");
  std::printf("published:        %llu messages\n", u(c.published));
  std::printf("retained:         %llu messages, %s of the ring\n", u(c.retained), human_bytes(c.used_bytes).c_str());
  if (c.kind == "queue") std::printf("depth:            %llu (not yet taken)\n", u(c.depth));
  std::printf("dead claims:      %llu (writers that died mid-message, skipped)\n", u(c.dead_claims));
  std::printf("bad records:      %llu\n", u(c.bad_records));
  if (c.kind == "queue" && !c.acks) std::printf("dropped unacked:  %llu (taken by consumers that died)\n", u(c.dropped_unacked));
  std::printf("publishers:       %zu\n", c.publishers.size());
  for (const auto& p : c.publishers)
    std::printf("  pid %-8u %-5s published %llu (%s), waits %llu, abandoned %llu\n", p.pid, p.alive ? "alive" : "dead",
                u(p.published), human_bytes(p.bytes).c_str(), u(p.waits), u(p.abandoned));
  std::printf("%-18s%zu\n", c.kind == "queue" ? "consumers:" : "subscribers:", c.readers.size());
  for (const auto& r : c.readers)
    std::printf("  pid %-8u %-5s %-8s delivered %llu (%s), lag %llu, missed %llu, skipped %llu, redelivered %llu, "
                "dead-lettered %llu, waits %llu%s\n",
                r.pid, r.alive ? "alive" : "dead", r.mode.c_str(), u(r.delivered), human_bytes(r.bytes).c_str(), u(r.lag),
                u(r.missed), u(r.skipped_bad), u(r.redelivered), u(r.dead_lettered), u(r.waits),
                r.holding ? ", holding a message" : "");
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
  if (o.channel) print_channel(*o.channel);
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
