// `colo links` (the local colod's links to other systems: Kafka mirrors,
// sources and spills, RabbitMQ mirrors and sources, with their state,
// traffic and lag) and `colo links
// pause|resume NAME`: requests over colod's control socket (colod_client.hpp).
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli.hpp"
#include "colod_client.hpp"

namespace colo::cli {
namespace {

std::string age_text(std::uint64_t ms) { return human_duration_ns(static_cast<double>(ms) * 1e6); }

// One table row per link, then its remote side and its last error.
void print_links(const std::vector<ColodLink>& links) {
  std::printf("%-24s %-8s %-7s %-6s %-20s %-18s %12s %12s %9s %10s %9s %7s %7s %6s\n", "link", "system", "mode",
              "kind", "object", "state", "produced", "acknowledged", "in flight", "lag msgs", "lag bytes", "lost",
              "skipped", "errors");
  for (const auto& l : links) {
    std::printf("%-24s %-8s %-7s %-6s %-20s %-18s %12s %12s %9s %10s %9s %7llu %7llu %6llu\n", l.name.c_str(),
                l.system.c_str(), l.mode.c_str(), l.object_kind.c_str(), l.object.c_str(),
                (l.state + " " + age_text(l.state_ms)).c_str(), with_commas(l.produced).c_str(),
                with_commas(l.acknowledged).c_str(), with_commas(l.in_flight).c_str(),
                with_commas(l.lag_messages).c_str(), human_bytes(l.lag_bytes).c_str(),
                static_cast<unsigned long long>(l.lost), static_cast<unsigned long long>(l.skipped),
                static_cast<unsigned long long>(l.errors));
  }
  for (const auto& l : links) {
    std::printf("%s: %s", l.name.c_str(), l.remote.c_str());
    if (l.returned != 0 || l.mode == "spill") std::printf("; returned %s", with_commas(l.returned).c_str());
    if (l.duplicates != 0) std::printf("; %s already there at a restart", with_commas(l.duplicates).c_str());
    if (l.redelivered != 0) std::printf("; %s marked redelivered", with_commas(l.redelivered).c_str());
    if (l.outages != 0) std::printf("; %s outage(s)", with_commas(l.outages).c_str());
    if (!l.last_error.empty()) std::printf("; last error %s ago: %s", age_text(l.last_error_ms).c_str(), l.last_error.c_str());
    std::printf("\n");
  }
}

int run_links(const Context& ctx, const std::string& socket_path, double timeout_s, bool json) {
  auto status = colod_status(ctx.ns, socket_path, timeout_s);
  if (!status) return fail(status.error());
  if (json) {
    nlohmann::json links = nlohmann::json::array();
    for (const auto& l : status->links) links.push_back(link_json(l));
    std::cout << nlohmann::json{{"node", status->node}, {"namespace", status->ns}, {"links", links}}.dump(2) << '\n';
    return kExitOk;
  }
  if (status->links.empty()) {
    std::printf("colod node %s (namespace %s) has no links ([[link]] in its config)\n", status->node.c_str(),
                status->ns.c_str());
    return kExitOk;
  }
  print_links(status->links);
  return kExitOk;
}

}  // namespace

void register_links(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("links", "Show the local colod's links to Kafka and RabbitMQ (mirror, source, spill); pause or resume one");
  cmd->footer(
      "For each link: its mode, object and state (starting, running, down, paused, failed), messages produced and "
      "acknowledged, in flight, lag, losses and errors; then where it goes and its last error. "
      "docs/kafka.md and docs/rabbitmq.md say what each counter means per mode.\n"
      "Examples:\n"
      "  colo links\n"
      "  colo links pause mirror:prices\n"
      "  colo links resume mirror:prices");
  auto socket = std::make_shared<std::string>();
  auto timeout = std::make_shared<double>(2.0);
  auto json = std::make_shared<bool>(false);
  auto add_common = [&](CLI::App* c) {
    c->add_option("--socket", *socket, "colod's control socket (default: derived from the namespace)");
    c->add_option("--timeout", *timeout, "seconds to wait for colod's answer")
        ->capture_default_str()
        ->check(number_in(0.01, 60, "seconds"));
  };
  add_common(cmd);
  cmd->add_flag("--json", *json, "print JSON");
  cmd->callback([&ctx, cmd, socket, timeout, json] {
    if (cmd->get_subcommands().empty()) ctx.exit_code = run_links(ctx, *socket, *timeout, *json);
  });
  for (const bool pause : {true, false}) {
    auto* action = cmd->add_subcommand(pause ? "pause" : "resume",
                                       pause ? "Stop a link moving messages (a block mirror then holds writers back "
                                               "once the ring is full; a source stops consuming)"
                                             : "Let a paused link move messages again");
    auto name = std::make_shared<std::string>();
    action->add_option("NAME", *name, "the link's name (colo links lists them)")->required();
    add_common(action);
    action->callback([&ctx, socket, timeout, name, pause] {
      if (auto done = colod_pause_link(ctx.ns, *socket, *timeout, *name, pause); !done) {
        ctx.exit_code = fail(done.error());
        return;
      }
      std::cout << "link " << *name << (pause ? " paused" : " resumed") << '\n';
      ctx.exit_code = kExitOk;
    });
  }
}

}  // namespace colo::cli
