// `colo top`: a live table of every object of the namespace.
//
// Refreshes every --interval seconds: rates (messages/s and grants/s since
// the previous refresh), depth, lag and lock holders. Quits on `q` (when
// stdin is a terminal) or after --iterations refreshes.
#include <poll.h>
#include <termios.h>
#include <unistd.h>

#include <cstdio>
#include <map>

#include "cli.hpp"

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

int run_top(const Context& ctx, std::uint64_t iterations, double interval_s) {
  auto node = open_node(ctx);
  if (!node) return fail(node.error());
  RawTerminal terminal;
  std::map<std::string, std::uint64_t> previous;
  for (std::uint64_t i = 0; iterations == 0 || i < iterations; ++i) {
    auto objects = node->list();
    if (!objects) return fail(objects.error());
    if (::isatty(STDOUT_FILENO)) std::printf("\033[H\033[2J");
    std::printf("colo top — namespace '%s' — %zu objects — refresh %.1fs — q quits\n", ctx.ns.c_str(),
                objects->size(), interval_s);
    std::printf("%-6s %-28s %12s %10s %10s  %s\n", "KIND", "NAME", "TOTAL", "RATE/s", "DEPTH/LAG", "DETAIL");
    for (const auto& o : *objects) {
      const std::uint64_t total = activity(o);
      const auto found = previous.find(o.name);
      const double rate = found != previous.end() && i > 0 && total >= found->second
                              ? static_cast<double>(total - found->second) / interval_s
                              : 0.0;
      previous[o.name] = total;
      std::string depth = "-";
      std::string detail = o.state;
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
        depth = std::to_string(c.kind == "queue" ? c.depth : max_lag);
        detail = std::to_string(c.publishers.size()) + " pub, " + std::to_string(c.readers.size()) +
                 (c.kind == "queue" ? " cons" : " sub") + ", " + human_bytes(c.used_bytes) + "/" +
                 human_bytes(c.capacity) + " used";
      }
      std::printf("%-6s %-28.28s %12llu %10.0f %10s  %s\n", o.kind.c_str(), o.name.c_str(),
                  static_cast<unsigned long long>(total), rate, depth.c_str(), detail.c_str());
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
  auto iterations = std::make_shared<std::uint64_t>(0);
  auto interval = std::make_shared<double>(1.0);
  cmd->add_option("--iterations", *iterations, "refresh this many times, then exit (0: until q)")->capture_default_str();
  cmd->add_option("--interval", *interval, "seconds between refreshes")
      ->capture_default_str()
      ->check(CLI::Range(0.05, 3600.0));
  cmd->callback([&ctx, iterations, interval] { ctx.exit_code = run_top(ctx, *iterations, *interval); });
}

}  // namespace colo::cli
