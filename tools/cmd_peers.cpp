// `colo peers` (the local colod's view of its peers) and `colo federate NAME`
// (make a topic cluster-scoped now): requests over colod's control socket
// (schemas/control.capnp).
#include <chrono>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>

#include "bench_process.hpp"  // human_bytes via cli.hpp, with_commas
#include "cli.hpp"
#include "colo/names.hpp"  // default_control_socket
#include "colod_client.hpp"

namespace colo::cli {
namespace {

std::string since_text(std::uint64_t ms) { return human_duration_ns(static_cast<double>(ms) * 1e6); }

// One request to colod over its control socket (colod_client.hpp); `on_reply`
// runs while the reply is valid and gives the exit status. Failures are printed.
int ask_colod(const Context& ctx, const std::string& socket_path, double timeout_s,
              const std::function<void(wire::ControlRequest::Builder)>& fill,
              const std::function<int(wire::ControlReply::Reader)>& on_reply) {
  const std::string path = socket_path.empty() ? default_control_socket(ctx.ns) : socket_path;
  int status = kExitOk;
  auto asked = request_colod(path, std::chrono::milliseconds(static_cast<long>(timeout_s * 1000)), fill,
                             [&](wire::ControlReply::Reader reply) { status = on_reply(reply); });
  if (asked) return status;
  if (asked.error().code == Errc::timed_out)
    return fail("no answer from colod on " + path + " within " + std::to_string(timeout_s) +
                " s: is colod running for namespace '" + ctx.ns + "'? (start it with colod --config FILE)");
  return fail(asked.error());
}

// `colo federate NAME`: asks colod to make a topic cluster-scoped now.
int run_federate(const Context& ctx, const std::string& socket_path, double timeout_s, const std::string& name) {
  if (auto ok = validate_object_name(name); !ok) return fail(ok.error());
  return ask_colod(
      ctx, socket_path, timeout_s, [&](wire::ControlRequest::Builder request) { request.setDeclareTopic(name); },
      [&](wire::ControlReply::Reader) {
        std::cout << "topic '" << name << "' is cluster-scoped in colod (namespace '" << ctx.ns
                  << "') until it stops; declare it on the other hosts too, and in the config to keep it\n";
        return kExitOk;
      });
}

// Prints colod's status reply as a table or JSON.
int print_status(wire::Status::Reader status, bool json) {
  if (json) {
    nlohmann::json peers = nlohmann::json::array();
    for (auto p : status.getPeers())
      peers.push_back({{"name", p.getName().cStr()},           {"endpoint", p.getEndpoint().cStr()},
                       {"connected", p.getConnected()},        {"since_ms", p.getSinceMs()},
                       {"messages_in", p.getMessagesIn()},     {"messages_out", p.getMessagesOut()},
                       {"bytes_in", p.getBytesIn()},           {"bytes_out", p.getBytesOut()},
                       {"gaps_filled", p.getGapsFilled()},     {"lost", p.getLost()},
                       {"duplicates", p.getDuplicates()}});
    nlohmann::json topics = nlohmann::json::array();
    for (auto t : status.getTopics()) topics.push_back(t.cStr());
    nlohmann::json j = {{"node", status.getNode().cStr()},
                        {"namespace", status.getNamespace().cStr()},
                        {"uptime_ms", status.getUptimeMs()},
                        {"peers", peers},
                        {"topics", topics},
                        {"bad_frames", status.getBadFrames()},
                        {"rejected_peers", status.getRejectedPeers()},
                        {"failed_handshakes", status.getFailedHandshakes()},
                        {"dropped_connections", status.getDroppedConnections()}};
    std::cout << j.dump(2) << '\n';
    return kExitOk;
  }
  std::printf("colod node %s, namespace %s, up %s; cluster topics:", status.getNode().cStr(),
              status.getNamespace().cStr(), since_text(status.getUptimeMs()).c_str());
  for (auto t : status.getTopics()) std::printf(" %s", t.cStr());
  std::printf("\n%-16s %-24s %-26s %12s %12s %10s %10s %7s %8s %6s\n", "peer", "endpoint", "state", "msgs in",
              "msgs out", "bytes in", "bytes out", "gaps", "lost", "dups");
  for (auto p : status.getPeers())
    std::printf("%-16s %-24s %-26s %12s %12s %10s %10s %7llu %8llu %6llu\n", p.getName().cStr(),
                p.getEndpoint().cStr(),
                ((p.getConnected() ? "connected " : "DOWN ") + std::string("for ") + since_text(p.getSinceMs())).c_str(),
                with_commas(p.getMessagesIn()).c_str(), with_commas(p.getMessagesOut()).c_str(),
                human_bytes(p.getBytesIn()).c_str(), human_bytes(p.getBytesOut()).c_str(),
                static_cast<unsigned long long>(p.getGapsFilled()), static_cast<unsigned long long>(p.getLost()),
                static_cast<unsigned long long>(p.getDuplicates()));
  std::printf("rejected from the network: %llu bad frame(s), %llu unknown key(s), %llu failed handshake(s); "
              "%llu connection(s) dropped\n",
              static_cast<unsigned long long>(status.getBadFrames()),
              static_cast<unsigned long long>(status.getRejectedPeers()),
              static_cast<unsigned long long>(status.getFailedHandshakes()),
              static_cast<unsigned long long>(status.getDroppedConnections()));
  return kExitOk;
}

int run_peers(const Context& ctx, const std::string& socket_path, double timeout_s, bool json) {
  return ask_colod(ctx, socket_path, timeout_s, [](wire::ControlRequest::Builder request) { request.setStatus(); },
                   [&](wire::ControlReply::Reader root) { return print_status(root.getStatus(), json); });
}

}  // namespace

void register_peers(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("peers",
                                 "The local colod's peers: connected or not and since when, messages and bytes each "
                                 "way, gaps filled, lost; and what it rejected from the network");
  auto socket = std::make_shared<std::string>();
  auto timeout = std::make_shared<double>(2.0);
  auto json = std::make_shared<bool>(false);
  cmd->add_option("--socket", *socket, "colod's control socket (default: derived from the namespace)");
  cmd->add_option("--timeout", *timeout, "seconds to wait for colod's answer")
      ->capture_default_str()
      ->check(CLI::Range(0.01, 60.0));
  cmd->add_flag("--json", *json, "print JSON");
  cmd->callback([&ctx, socket, timeout, json] { ctx.exit_code = run_peers(ctx, *socket, *timeout, *json); });
}

void register_federate(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("federate",
                                 "Make a topic cluster-scoped now, through the local colod (every host must do it; "
                                 "the colod config keeps it across restarts)");
  auto name = std::make_shared<std::string>();
  auto socket = std::make_shared<std::string>();
  auto timeout = std::make_shared<double>(2.0);
  cmd->add_option("NAME", *name, "topic name")->required();
  cmd->add_option("--socket", *socket, "colod's control socket (default: derived from the namespace)");
  cmd->add_option("--timeout", *timeout, "seconds to wait for colod's answer")
      ->capture_default_str()
      ->check(CLI::Range(0.01, 60.0));
  cmd->callback([&ctx, name, socket, timeout] { ctx.exit_code = run_federate(ctx, *socket, *timeout, *name); });
}

}  // namespace colo::cli
