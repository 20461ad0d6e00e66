// `colo top`: a live table of every object of the namespace.
//
// Refreshes every --interval seconds: rates (messages/s and grants/s since
// the previous refresh), depth, lag and lock holders; and when the
// namespace's colod answers, each cluster object's traffic with other hosts,
// a table of its peers and one of its links (Kafka, RabbitMQ). Quits on `q` (when
// stdin is a terminal) or after --iterations refreshes.
#include <poll.h>
#include <termios.h>
#include <unistd.h>

#include <cstdio>
#include <map>

#include "cli.hpp"
#include "colod_client.hpp"

namespace colo::cli {
namespace {

// Puts the terminal in non-canonical mode for single-key input; restores it.
class RawTerminal {
 public:
  RawTerminal() {
    if (::isatty(STDIN_FILENO) && ::tcgetattr(STDIN_FILENO, &saved_) == 0) {
      termios raw = saved_;
      raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO);
      active_ = ::tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
    }
  }
  ~RawTerminal() {
    if (active_) ::tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
  }
  RawTerminal(const RawTerminal&) = delete;
  RawTerminal& operator=(const RawTerminal&) = delete;
  // Waits up to `ms` for a key; true if it was 'q'.
  bool quit_within(int ms) const {
    if (!active_) {
      ::usleep(static_cast<useconds_t>(ms) * 1000);
      return false;
    }
    pollfd p{STDIN_FILENO, POLLIN, 0};
    if (::poll(&p, 1, ms) > 0) {
      char c = 0;
      if (::read(STDIN_FILENO, &c, 1) == 1 && (c == 'q' || c == 'Q')) return true;
    }
    return false;
  }

 private:
  termios saved_{};
  bool active_ = false;
};

std::uint64_t activity(const ObjectInfo& o) {
  if (o.lock) return o.lock->grants;
  if (o.channel) return o.channel->published;
  return 0;
}

int run_top(const Context& ctx, std::uint64_t iterations, double interval_s, const std::string& socket) {
  auto node = open_node(ctx);
  if (!node) return fail(node.error());
  RawTerminal terminal;
  std::map<std::string, std::uint64_t> previous;
  std::map<std::string, std::uint64_t> previous_remote;  // "peer/in", "object/out", ...: colod's counters
  for (std::uint64_t i = 0; iterations == 0 || i < iterations; ++i) {
    auto objects = node->list();
    if (!objects) return fail(objects.error());
    if (::isatty(STDOUT_FILENO)) std::printf("\033[H\033[2J");
    std::printf("colo top — namespace '%s' — %zu objects — refresh %.1fs — q quits\n", ctx.ns.c_str(),
                objects->size(), interval_s);
    std::printf("%-6s %-28s %12s %10s %10s  %s\n", "KIND", "NAME", "TOTAL", "RATE/s", "DEPTH/LAG", "DETAIL");
    // The namespace's colod, if one answers: cluster traffic and peers.
    auto colod = colod_status(ctx.ns, socket, 0.2);
    auto remote_rate = [&](const std::string& key, std::uint64_t total) {
      const auto found = previous_remote.find(key);
      const double rate = found != previous_remote.end() && total >= found->second
                              ? static_cast<double>(total - found->second) / interval_s
                              : 0.0;
      previous_remote[key] = total;
      return rate;
    };
    for (const auto& o : *objects) {
      const std::uint64_t total = activity(o);
      const auto found = previous.find(o.name);
      const double rate = found != previous.end() && i > 0 && total >= found->second
                              ? static_cast<double>(total - found->second) / interval_s
                              : 0.0;
      previous[o.name] = total;
      std::string depth = "-";
      std::string detail = state_text(o);
      if (o.lock) {
        const auto& l = *o.lock;
        detail = l.holder.pid != 0 ? "held by pid " + std::to_string(l.holder.pid) + " for " + (l.holder.held_for_exact ? "" : ">=") +
                                         human_duration_ns(l.holder.held_for_ns) + (l.holder.alive ? "" : " (DEAD)")
                                   : "free";
        detail += ", " + std::to_string(l.waiters) + " waiting, epoch " + std::to_string(l.fencing_epoch);
      } else if (o.channel) {
        const auto& c = *o.channel;
        std::uint64_t max_lag = 0;
        for (const auto& r : c.readers) max_lag = std::max(max_lag, r.lag);
        depth = std::to_string(c.kind == ObjectKind::queue ? c.depth : max_lag);
        detail = std::to_string(c.publishers.size()) + " pub, " + std::to_string(c.readers.size()) +
                 (c.kind == ObjectKind::queue ? " cons" : " sub") + ", " + human_bytes(c.used_bytes) + "/" +
                 human_bytes(c.capacity) + " used";
        if (const ColodObject* r = colod ? colod->object(o.name) : nullptr) {
          char remote[160];
          std::snprintf(remote, sizeof remote, "; cluster: in %.0f/s, out %.0f/s%s",
                        remote_rate(o.name + "/in", r->messages_in), remote_rate(o.name + "/out", r->messages_out),
                        r->kind == "queue" ? (", home " + r->home).c_str() : "");
          detail += remote;
        }
      }
      std::printf("%-6s %-28.28s %12llu %10.0f %10s  %s\n", o.kind ? to_string(*o.kind) : "", o.name.c_str(),
                  static_cast<unsigned long long>(total), rate, depth.c_str(), detail.c_str());
    }
    if (colod) {
      std::printf("\ncolod node %s — %zu peer(s)\n%-16s %-10s %12s %12s %10s %10s %8s\n", colod->node.c_str(),
                  colod->peers.size(), "PEER", "STATE", "MSGS IN", "MSGS OUT", "IN/s", "OUT/s", "LOST");
      for (const auto& p : colod->peers)
        std::printf("%-16s %-10s %12llu %12llu %10.0f %10.0f %8llu\n", p.name.c_str(), p.connected ? "connected" : "DOWN",
                    static_cast<unsigned long long>(p.messages_in), static_cast<unsigned long long>(p.messages_out),
                    remote_rate("peer/" + p.name + "/in", p.messages_in),
                    remote_rate("peer/" + p.name + "/out", p.messages_out), static_cast<unsigned long long>(p.lost));
      if (!colod->links.empty())
        std::printf("\n%-24s %-7s %-20s %-9s %12s %10s %10s %8s %8s\n", "LINK", "MODE", "OBJECT", "STATE", "PRODUCED",
                    "RATE/s", "LAG", "LOST", "ERRORS");
      for (const auto& l : colod->links)
        std::printf("%-24.24s %-7s %-20.20s %-9s %12llu %10.0f %10llu %8llu %8llu\n", l.name.c_str(), l.mode.c_str(),
                    l.object.c_str(), l.state.c_str(), static_cast<unsigned long long>(l.produced),
                    remote_rate("link/" + l.name, l.produced), static_cast<unsigned long long>(l.lag_messages),
                    static_cast<unsigned long long>(l.lost), static_cast<unsigned long long>(l.errors));
    }
    std::fflush(stdout);
    if (iterations != 0 && i + 1 == iterations) break;
    if (terminal.quit_within(static_cast<int>(interval_s * 1000))) break;
  }
  return kExitOk;
}

}  // namespace

void register_top(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("top", "Live view of every object: rates, depth, lag, lock holders (q quits)");
  cmd->footer(
      "One row per object: its total and rate (messages or grants per second), a queue's depth or the slowest "
      "subscriber's lag, a lock's holder. With the namespace's colod answering, also each object's traffic with "
      "other hosts and a table of colod's peers.\n"
      "Examples:\n"
      "  colo top\n"
      "  colo top --iterations 1    # one frame, then exit (for scripts)");
  auto iterations = std::make_shared<std::uint64_t>(0);
  auto interval = std::make_shared<double>(1.0);
  cmd->add_option("--iterations", *iterations, "refresh this many times, then exit (0: until q)")->capture_default_str();
  cmd->add_option("--interval", *interval, "seconds between refreshes")
      ->capture_default_str()
      ->check(number_in(0.05, 3600, "seconds"));
  auto socket = std::make_shared<std::string>();
  cmd->add_option("--socket", *socket, "colod's control socket (default: derived from the namespace)");
  cmd->callback([&ctx, iterations, interval, socket] {
    ctx.exit_code = run_top(ctx, *iterations, *interval, *socket);
  });
}

}  // namespace colo::cli
