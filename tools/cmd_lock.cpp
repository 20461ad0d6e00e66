// `colo lock NAME [--timeout S] -- CMD [ARG...]`: flock(1), with a colo lock.
//
// Runs CMD while holding the lock and exits with CMD's status (128+N if a
// signal N ended it). CMD's environment gets COLO_FENCING_TOKEN (decimal) and,
// if the previous holder died holding the lock, COLO_OWNER_DIED=1.
//
// Unlike flock(1), the lock is held by this process, not by a file
// descriptor CMD inherits: if `colo lock` dies, the lock passes to the next
// holder (told owner_died). CMD then gets SIGTERM (PR_SET_PDEATHSIG) so it
// does not go on working unprotected; fencing tokens guard the rest.
//
// --cluster: the lock excludes holders on every host (through the
// namespace's colod). If the cluster hold is lost while CMD runs (colod's
// session or lease gone), CMD gets --on-lease-loss (default SIGTERM) at once
// and `colo lock` says so on stderr; it then exits with CMD's status.
#include <sys/prctl.h>  // PR_SET_PDEATHSIG
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <iostream>

#include "cli.hpp"
#include "colo/internal/text.hpp"  // errno_text

namespace colo::cli {
namespace {

volatile sig_atomic_t g_child_pid = 0;

// Forwards termination signals to CMD; we keep waiting and exit with its status.
void forward_signal(int sig) {
  if (g_child_pid > 0) ::kill(static_cast<pid_t>(g_child_pid), sig);
}

struct LockCommand {
  std::string name;
  double timeout_s = -1;
  bool cluster = false;
  std::string on_lease_loss = "TERM";
  std::vector<std::string> command;
};

// "TERM", "SIGTERM", "15" -> 15; "none" -> 0; else -1.
int parse_signal(const std::string& text) {
  if (text == "none") return 0;
  static const std::pair<const char*, int> kNames[] = {
      {"TERM", SIGTERM}, {"INT", SIGINT}, {"KILL", SIGKILL}, {"HUP", SIGHUP},   {"QUIT", SIGQUIT},
      {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"ALRM", SIGALRM}, {"STOP", SIGSTOP}};
  std::string bare = text.rfind("SIG", 0) == 0 ? text.substr(3) : text;
  for (const auto& [n, sig] : kNames)
    if (bare == n) return sig;
  if (!bare.empty() && bare.size() <= 2 && std::all_of(bare.begin(), bare.end(), ::isdigit)) {
    const int sig = std::stoi(bare);
    if (sig >= 1 && sig < NSIG) return sig;
  }
  return -1;
}

int run_lock(const Context& ctx, const LockCommand& o) {
  const std::string& name = o.name;
  const double timeout_s = o.timeout_s;
  const std::vector<std::string>& command = o.command;
  if (command.empty()) return fail("colo lock: no command given (usage: colo lock NAME -- CMD [ARG...])");
  const int loss_signal = parse_signal(o.on_lease_loss);
  if (loss_signal < 0)
    return fail("colo lock: --on-lease-loss " + o.on_lease_loss + ": not a signal (TERM, INT, KILL, USR1, a number, or none)");
  auto node = open_node(ctx);
  if (!node) return fail(node.error());
  auto lock = node->lock(name, OpenMode::create_or_open, {.scope = o.cluster ? Scope::cluster : Scope::host});
  if (!lock) return fail(lock.error());

  std::optional<LockGuard> guard;
  if (timeout_s >= 0) {
    guard = lock->try_acquire_for(std::chrono::nanoseconds(static_cast<std::int64_t>(timeout_s * 1e9)));
    if (!guard) {
      const LockStats s = lock->stats();
      std::string holder = s.holder.pid != 0 ? " (held by pid " + std::to_string(s.holder.pid) + ")" : "";
      if (s.cluster && !s.cluster->keeper_alive) holder += " (no colod serves this namespace's cluster locks)";
      std::cerr << "colo: timed out after " << seconds_text(timeout_s) << " waiting for lock '" << name << "'" << holder << '\n';
      return kExitTimeout;
    }
  } else {
    auto acquired = lock->acquire();
    if (!acquired) return fail(acquired.error());
    guard.emplace(std::move(acquired).value());
  }

  const std::string token = std::to_string(guard->fencing_token());
  const pid_t parent = ::getpid();
  const pid_t child = ::fork();
  if (child < 0) return fail(internal::errno_text("cannot fork"));
  if (child == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(kExitFailure);  // parent already gone
    ::setenv("COLO_FENCING_TOKEN", token.c_str(), 1);
    if (guard->owner_died()) ::setenv("COLO_OWNER_DIED", "1", 1);
    else ::unsetenv("COLO_OWNER_DIED");
    std::vector<char*> argv;
    for (const auto& arg : command) argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    const int err = errno;
    std::cerr << "colo: cannot run '" << command[0] << "': " << std::strerror(err) << '\n';
    ::_exit(err == ENOENT ? 127 : 126);
  }
  g_child_pid = child;
  if (o.cluster) {
    guard->on_lease_lost([child, loss_signal, name] {
      std::cerr << "colo: lease of cluster lock '" << name << "' lost"
                << (loss_signal != 0 ? std::string("; sending SIG") + ::sigabbrev_np(loss_signal) + " to the command" : "")
                << '\n';
      if (loss_signal != 0) ::kill(child, loss_signal);
    });
  }
  struct sigaction sa{};
  sa.sa_handler = forward_signal;
  ::sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) ::sigaction(sig, &sa, nullptr);

  int status = 0;
  while (::waitpid(child, &status, 0) < 0) {
    if (errno != EINTR) {
      status = 0;
      return fail(internal::errno_text("waiting for the command"));
    }
  }
  guard->unlock();
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return kExitFailure;
}

}  // namespace

void register_lock(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("lock", "Run a command while holding a colo lock, like flock(1)");
  cmd->footer(
      "The lock is created if missing. The command gets COLO_FENCING_TOKEN (greater than every earlier holder's) "
      "and, if the previous holder died holding the lock, COLO_OWNER_DIED=1. Exits with the command's status, or "
      "75 if --timeout ran out first.\n"
      "Examples:\n"
      "  colo lock nightly-report -- ./make-report.sh\n"
      "  colo lock --timeout 5 db-migrate -- ./migrate.sh\n"
      "  colo lock --cluster deploy -- ./deploy.sh");
  auto o = std::make_shared<LockCommand>();
  cmd->add_option("NAME", o->name, "lock name")->required();
  cmd->add_option("--timeout", o->timeout_s, "give up after SECONDS (exit 75); default: wait forever")
      ->check(number_in(0, kMaxSeconds, "seconds"));
  cmd->add_flag("--cluster", o->cluster,
                "a cluster-scope lock: excludes holders on every host (needs the namespace's colod "
                "with a [[lock_backend]])");
  cmd->add_option("--on-lease-loss", o->on_lease_loss,
                  "--cluster: signal sent to CMD if the cluster hold is lost while it runs (TERM, INT, KILL, USR1, "
                  "a number, or none)")
      ->default_str("TERM");
  cmd->add_option("CMD", o->command, "command and arguments, after --")->required();
  cmd->callback([&ctx, o] { ctx.exit_code = run_lock(ctx, *o); });
}

}  // namespace colo::cli
