// `colo lock NAME [--timeout S] -- CMD [ARG...]`: flock(1), with a colo lock.
// `colo lock --table TABLE KEY ... -- CMD`: the same with one key of a lock
// table (which must exist: `colo create lock-table`).
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
#include <optional>
#include <sstream>

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
  std::string name;   // the lock, or the key with --table
  std::string table;
  double timeout_s = -1;
  bool cluster = false;
  std::string on_lease_loss = "TERM";
  std::vector<std::string> command;
  bool cluster_table = false;           // --table names a cluster-scope table
  std::optional<Lock> open_lock;        // kept open while held: guards point into their mapping
  std::optional<LockTable> open_table;
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

// The named lock NAME (created if missing), acquired.
// A negative timeout waits for ever.
Result<LockGuard> acquire_named(Node& node, LockCommand& o, std::chrono::nanoseconds timeout) {
  auto opened = node.lock(o.name, OpenMode::create_or_open, {.scope = o.cluster ? Scope::cluster : Scope::host});
  if (!opened) return std::move(opened).error();
  auto& lock = o.open_lock.emplace(std::move(opened).value());
  if (timeout.count() < 0) return lock.acquire();
  if (auto guard = lock.try_acquire_for(timeout)) return std::move(*guard);
  const LockStats s = lock.stats();
  std::string holder = s.holder.pid != 0 ? " (held by pid " + std::to_string(s.holder.pid) + ")" : "";
  if (s.cluster && !s.cluster->keeper_alive) holder += " (no colod serves this namespace's cluster locks)";
  return Error{Errc::timed_out, "timed out after " + seconds_text(o.timeout_s) + " waiting for lock '" + o.name +
                                    "'" + holder};
}

// Key NAME of the existing table TABLE, acquired.
Result<LockGuard> acquire_key(Node& node, LockCommand& o, std::chrono::nanoseconds timeout) {
  auto opened = node.lock_table(o.table, OpenMode::open);
  if (!opened) return std::move(opened).error();
  auto& table = o.open_table.emplace(std::move(opened).value());
  o.cluster_table = table.scope() == Scope::cluster;
  auto key = table.lock(o.name);
  if (!key) return std::move(key).error();
  if (timeout.count() < 0) return key->acquire();
  auto got = key->try_acquire_for(timeout);
  if (!got) return std::move(got).error();
  if (*got) return std::move(**got);
  const KeyStats s = key->stats();
  const std::string holder = s.holder.pid != 0 ? " (held by pid " + std::to_string(s.holder.pid) + ")" : "";
  return Error{Errc::timed_out, "timed out after " + seconds_text(o.timeout_s) + " waiting for key '" + o.name +
                                    "' of lock table '" + o.table + "'" + holder};
}

int run_lock(const Context& ctx, LockCommand& o) {
  const std::string& name = o.name;
  const double timeout_s = o.timeout_s;
  const std::vector<std::string>& command = o.command;
  if (command.empty()) return fail("colo lock: no command given (usage: colo lock NAME -- CMD [ARG...])");
  const int loss_signal = parse_signal(o.on_lease_loss);
  if (loss_signal < 0)
    return fail("colo lock: --on-lease-loss " + o.on_lease_loss + ": not a signal (TERM, INT, KILL, USR1, a number, or none)");
  if (o.cluster && !o.table.empty())
    return fail("colo lock: --cluster is for named locks; a lock table's scope is set when it is created "
                "(colo create lock-table --cluster)");
  auto node = open_node(ctx);
  if (!node) return fail(node.error());
  // Negative: wait for ever.
  const std::chrono::nanoseconds timeout(timeout_s >= 0 ? static_cast<std::int64_t>(timeout_s * 1e9) : -1);
  auto got = o.table.empty() ? acquire_named(*node, o, timeout) : acquire_key(*node, o, timeout);
  if (!got) return got.error().code == Errc::timed_out ? (std::cerr << "colo: " << got.error().message << '\n', kExitTimeout)
                                                       : fail(got.error());
  std::optional<LockGuard> guard = std::move(got).value();
  const bool cluster = o.cluster || o.cluster_table;
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
  if (cluster) {
    const std::string what = o.table.empty() ? "cluster lock '" + name + "'"
                                             : "key '" + name + "' of cluster lock table '" + o.table + "'";
    guard->on_lease_lost([child, loss_signal, what] {
      std::cerr << "colo: lease of " << what << " lost"
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
      "The lock is created if missing. With --table, NAME is a key (any bytes, up to the table's max key) of a lock "
      "table, which must exist (colo create lock-table). The command gets COLO_FENCING_TOKEN (greater than every "
      "earlier holder's) and, if the previous holder died holding the lock, COLO_OWNER_DIED=1. Exits with the "
      "command's status, or 75 if --timeout ran out first.\n"
      "Examples:\n"
      "  colo lock nightly-report -- ./make-report.sh\n"
      "  colo lock --timeout 5 db-migrate -- ./migrate.sh\n"
      "  colo lock --cluster deploy -- ./deploy.sh\n"
      "  colo lock --table orders order:42 -- ./ship.sh 42");
  auto o = std::make_shared<LockCommand>();
  cmd->add_option("NAME", o->name, "lock name, or with --table the key")->required();
  cmd->add_option("--table", o->table, "lock the key NAME of this lock table (per-resource locking)");
  cmd->add_option("--timeout", o->timeout_s, "give up after SECONDS (exit 75); default: wait forever")
      ->check(number_in(0, kMaxSeconds, "seconds"));
  cmd->add_flag("--cluster", o->cluster,
                "a cluster-scope lock: excludes holders on every host (needs the namespace's colod "
                "with a [[lock_backend]])");
  cmd->add_option("--on-lease-loss", o->on_lease_loss,
                  "--cluster, or a cluster-scope table: signal sent to CMD if the cluster hold is lost while it runs (TERM, INT, KILL, USR1, "
                  "a number, or none)")
      ->default_str("TERM");
  cmd->add_option("CMD", o->command, "command and arguments, after --")->required();
  cmd->callback([&ctx, o] { ctx.exit_code = run_lock(ctx, *o); });
}

}  // namespace colo::cli
