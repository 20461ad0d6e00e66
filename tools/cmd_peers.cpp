// `colo peers` (the local colod's view of its peers, cluster objects and links) and
// `colo federate NAME` (make a topic cluster-scoped now): requests over
// colod's control socket (colod_client.hpp).
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli.hpp"
#include "colod_client.hpp"

namespace colo::cli {
namespace {

std::string since_text(std::uint64_t ms) { return human_duration_ns(static_cast<double>(ms) * 1e6); }

// `colo federate NAME`: asks colod to make a topic cluster-scoped now.
int run_federate(const Context& ctx, const std::string& socket_path, double timeout_s, const std::string& name) {
  if (auto ok = validate_object_name(name); !ok) return fail(ok.error());
  if (auto declared = colod_declare_topic(ctx.ns, socket_path, timeout_s, name); !declared) return fail(declared.error());
  std::cout << "topic '" << name << "' is cluster-scoped in colod (namespace '" << ctx.ns
            << "') until it stops; declare it on the other hosts too, and in the config to keep it\n";
  return kExitOk;
}

// Prints colod's status as a table or JSON.
int print_status(const ColodStatus& status, bool json) {
  if (json) {
    nlohmann::json peers = nlohmann::json::array();
    for (const auto& p : status.peers)
      peers.push_back({{"name", p.name},           {"endpoint", p.endpoint},
                       {"connected", p.connected}, {"since_ms", p.since_ms},
                       {"messages_in", p.messages_in}, {"messages_out", p.messages_out},
                       {"bytes_in", p.bytes_in},   {"bytes_out", p.bytes_out},
                       {"gaps_filled", p.gaps_filled}, {"lost", p.lost},
                       {"duplicates", p.duplicates}, {"over_credit", p.over_credit},
                       {"rewinds", p.rewinds}});
    nlohmann::json objects = nlohmann::json::array();
    for (const auto& o : status.objects) objects.push_back(object_json(o));
    nlohmann::json j = {{"node", status.node},
                        {"namespace", status.ns},
                        {"uptime_ms", status.uptime_ms},
                        {"peers", peers},
                        {"topics", status.topics},
                        {"objects", objects},
                        {"bad_frames", status.bad_frames},
                        {"rejected_peers", status.rejected_peers},
                        {"failed_handshakes", status.failed_handshakes},
                        {"dropped_connections", status.dropped_connections},
                        {"early_frames", status.early_frames},
                        {"refused_sessions", status.refused_sessions},
                        {"ring_wait", status.ring_wait},
                        {"ring_wakes", status.ring_wakes}};
    nlohmann::json links = nlohmann::json::array();
    for (const auto& l : status.links) links.push_back(link_json(l));
    j["links"] = links;
    std::cout << j.dump(2) << '\n';
    return kExitOk;
  }
  std::printf("colod node %s, namespace %s, up %s\n", status.node.c_str(), status.ns.c_str(),
              since_text(status.uptime_ms).c_str());
  std::printf("%-16s %-24s %-26s %12s %12s %10s %10s %7s %8s %6s\n", "peer", "endpoint", "state", "msgs in",
              "msgs out", "bytes in", "bytes out", "gaps", "lost", "dups");
  for (const auto& p : status.peers)
    std::printf("%-16s %-24s %-26s %12s %12s %10s %10s %7llu %8llu %6llu\n", p.name.c_str(), p.endpoint.c_str(),
                ((p.connected ? "connected " : "DOWN ") + std::string("for ") + since_text(p.since_ms)).c_str(),
                with_commas(p.messages_in).c_str(), with_commas(p.messages_out).c_str(),
                human_bytes(p.bytes_in).c_str(), human_bytes(p.bytes_out).c_str(),
                static_cast<unsigned long long>(p.gaps_filled), static_cast<unsigned long long>(p.lost),
                static_cast<unsigned long long>(p.duplicates));
  for (const auto& p : status.peers)
    if (p.over_credit != 0)
      std::printf("peer %s sent %s message(s) beyond the credit this colod granted (dropped)\n", p.name.c_str(),
                  with_commas(p.over_credit).c_str());
  for (const auto& p : status.peers)
    if (p.rewinds != 0)
      std::printf("peer %s told this colod %s time(s) that it held sequences of it the peer never sent (forged, or "
                  "its ring is new): resumed lower\n",
                  p.name.c_str(), with_commas(p.rewinds).c_str());
  if (!status.objects.empty()) {
    std::printf("%-16s %-24s %-26s %12s %12s %10s %10s %7s %8s %6s\n", "cluster object", "name", "home",
                "msgs in", "msgs out", "bytes in", "bytes out", "flight", "lost", "dups");
    for (const auto& o : status.objects)
      std::printf("%-16s %-24s %-26s %12s %12s %10s %10s %7llu %8llu %6llu\n", o.kind.c_str(), o.name.c_str(),
                  o.home.empty() ? "-" : o.home.c_str(), with_commas(o.messages_in).c_str(),
                  with_commas(o.messages_out).c_str(), human_bytes(o.bytes_in).c_str(),
                  human_bytes(o.bytes_out).c_str(), static_cast<unsigned long long>(o.in_flight),
                  static_cast<unsigned long long>(o.lost), static_cast<unsigned long long>(o.duplicates));
  }
  for (const auto& l : status.links)
    std::printf("link %-24s %s %s of %s %s: %s for %s, %s produced, %s acknowledged, lag %s%s\n", l.name.c_str(),
                l.system.c_str(), l.mode.c_str(), l.object_kind.c_str(), l.object.c_str(), l.state.c_str(),
                since_text(l.state_ms).c_str(), with_commas(l.produced).c_str(), with_commas(l.acknowledged).c_str(),
                with_commas(l.lag_messages).c_str(), l.last_error.empty() ? "" : (" (last error: " + l.last_error + ")").c_str());
  std::printf("rejected from the network: %llu bad frame(s), %llu unknown key(s), %llu failed handshake(s), "
              "%llu second session(s) of a connected peer; %llu connection(s) dropped; %llu frame(s) of a stream "
              "restarted (sent again)\n",
              static_cast<unsigned long long>(status.bad_frames), static_cast<unsigned long long>(status.rejected_peers),
              static_cast<unsigned long long>(status.failed_handshakes),
              static_cast<unsigned long long>(status.refused_sessions),
              static_cast<unsigned long long>(status.dropped_connections),
              static_cast<unsigned long long>(status.early_frames));
  if (status.ring_wait == "io_uring")
    std::printf("ring wake-ups: io_uring, %llu sleep(s) ended by a publish\n",
                static_cast<unsigned long long>(status.ring_wakes));
  else if (!status.ring_wait.empty())
    std::printf("ring wake-ups: %s\n", status.ring_wait.c_str());
  return kExitOk;
}

int run_peers(const Context& ctx, const std::string& socket_path, double timeout_s, bool json) {
  auto status = colod_status(ctx.ns, socket_path, timeout_s);
  if (!status) return fail(status.error());
  return print_status(*status, json);
}

}  // namespace

void register_peers(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("peers", "Show the local colod's peers, their traffic, and what it rejected");
  cmd->footer(
      "For each peer: connected or not and since when, messages and bytes each way, gaps filled, messages lost; "
      "then each cluster topic and queue with its traffic; then the frames and peers colod refused.\n"
      "Examples:\n"
      "  colo peers\n"
      "  colo --ns prod peers --json");
  auto socket = std::make_shared<std::string>();
  auto timeout = std::make_shared<double>(2.0);
  auto json = std::make_shared<bool>(false);
  cmd->add_option("--socket", *socket, "colod's control socket (default: derived from the namespace)");
  cmd->add_option("--timeout", *timeout, "seconds to wait for colod's answer")
      ->capture_default_str()
      ->check(number_in(0.01, 60, "seconds"));
  cmd->add_flag("--json", *json, "print JSON");
  cmd->callback([&ctx, socket, timeout, json] { ctx.exit_code = run_peers(ctx, *socket, *timeout, *json); });
}

void register_federate(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("federate", "Make a topic cluster-scoped now, through the local colod");
  cmd->footer(
      "Every host must do it. The colod config ([[topic]]) keeps it across restarts of colod; this does not.\n"
      "Example:\n"
      "  colo federate prices");
  auto name = std::make_shared<std::string>();
  auto socket = std::make_shared<std::string>();
  auto timeout = std::make_shared<double>(2.0);
  cmd->add_option("NAME", *name, "topic name")->required();
  cmd->add_option("--socket", *socket, "colod's control socket (default: derived from the namespace)");
  cmd->add_option("--timeout", *timeout, "seconds to wait for colod's answer")
      ->capture_default_str()
      ->check(number_in(0.01, 60, "seconds"));
  cmd->callback([&ctx, name, socket, timeout] { ctx.exit_code = run_federate(ctx, *socket, *timeout, *name); });
}

}  // namespace colo::cli
