#include "local_cluster.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <thread>

#include "app.hpp"  // find_program
#include "colo/internal/text.hpp"  // errno_text
#include "colod_client.hpp"

namespace colo::cli {
namespace {

constexpr int kLogTailLines = 8;  // shown when a colod failed

using internal::errno_text;

// The directory of the configs, logs and control sockets. A Unix socket path
// has at most 107 bytes: a long $TMPDIR falls back to /tmp.
std::string scratch_base() {
  const char* tmp = std::getenv("TMPDIR");
  return tmp != nullptr && *tmp != '\0' && std::strlen(tmp) <= 60 ? tmp : "/tmp";
}

}  // namespace

// colo-bench and colo-demo are built in build/tools/bench and build/tools/demo, colod in build/bridge.
std::string find_colod() { return find_program("colod", "COLOD_BIN", {"../../bridge/"}); }

Result<void> LocalCluster::start(const std::string& colod, const std::vector<std::string>& names,
                                 const std::string& prefix, const std::string& objects_toml, double timeout_s) {
  Settings settings;
  settings.colod = colod;
  settings.extra_toml = objects_toml;
  settings.start_timeout_s = timeout_s;
  std::vector<HostSpec> hosts;
  for (const auto& name : names) hosts.push_back({name, prefix + name});
  return start(settings, hosts);
}

Result<void> LocalCluster::start(const Settings& settings, const std::vector<HostSpec>& specs) {
  settings_ = settings;
  stopped_ = false;
  std::string dir = scratch_base() + "/colo-cluster-XXXXXX";
  if (::mkdtemp(dir.data()) == nullptr) return Error{Errc::system, errno_text("mkdtemp " + dir)};
  dir_ = dir;
  unlink_on_interrupt(dir_);  // removed after the files in it (processes.hpp)
  for (const auto& spec : specs) {
    Host h;
    h.name = spec.name;
    h.address = spec.address;
    h.launcher = spec.launcher;
    h.port = spec.port != 0 ? spec.port : free_loopback_port();
    if (h.port < 0) return Error{Errc::system, errno_text("cannot find a free port on 127.0.0.1")};
    h.config = dir_ + "/" + h.name + ".toml";
    h.control = dir_ + "/" + h.name + ".sock";
    h.log = dir_ + "/" + h.name + ".log";
    for (const std::string* path : {&h.config, &h.control, &h.log}) unlink_on_interrupt(*path);
    h.scratch = std::make_unique<ScratchNamespace>();
    if (auto opened = h.scratch->open(spec.ns_prefix); !opened)
      return Error{Errc::system, "namespace " + spec.ns_prefix + ": " + opened.error().message};
    for (const auto& object : settings_.objects) h.scratch->track(object);
    // The lock a colod holds on its namespace (bridge/instance.hpp): removed
    // by colod when it stops, left behind when it is killed with the run.
    unlink_on_interrupt("/dev/shm/colo." + h.ns() + ".colod");
    hosts_.push_back(std::move(h));
  }
  for (const auto& h : hosts_)
    if (auto written = write_config(h); !written) return written;
  for (auto& h : hosts_)
    if (auto spawned = spawn(h); !spawned) return spawned;
  if (!all_connected(settings_.start_timeout_s)) {
    if (std::string e = ended(); !e.empty()) return Error{Errc::system, e};
    char limit[32];
    std::snprintf(limit, sizeof limit, "%g s", settings_.start_timeout_s);
    std::string why = "the colod processes did not all report every peer connected within " + std::string(limit);
    for (std::size_t i = 0; i < hosts_.size(); ++i)
      why += "\n  colod " + hosts_[i].name + ", last lines of its log:\n" + log_tail(i, kLogTailLines);
    return Error{Errc::timed_out, why};
  }
  return Ok{};
}

Result<void> LocalCluster::write_config(const Host& h) const {
  std::ofstream f(h.config);
  f << "[node]\nname = \"" << h.name << "\"\nnamespace = \"" << h.ns() << "\"\nlisten = \"" << h.endpoint()
    << "\"\n[control]\nsocket = \"" << h.control << "\"\n[limits]\n"
    << settings_.limits_toml;
  for (const auto& p : hosts_)
    if (p.name != h.name) f << "[[peer]]\nname = \"" << p.name << "\"\nendpoint = \"" << p.endpoint() << "\"\n";
  f << settings_.extra_toml;
  f.close();
  if (!f) return Error{Errc::system, errno_text("cannot write " + h.config)};
  return Ok{};
}

Result<void> LocalCluster::spawn(Host& h) {
  // Everything the child needs is made before fork: it only opens, dup2s and
  // execs (another thread of this process may hold the allocator's lock).
  std::vector<std::string> args = h.launcher;
  for (const auto& a : {settings_.colod, std::string("--config"), h.config}) args.push_back(a);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const char* log = h.log.c_str();
  const pid_t pid = children_.spawn([&argv, log] {
    const int in = ::open("/dev/null", O_RDONLY);
    const int out = ::open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (in >= 0) ::dup2(in, STDIN_FILENO);
    if (out >= 0) {
      ::dup2(out, STDOUT_FILENO);
      ::dup2(out, STDERR_FILENO);
    }
    if (in > STDERR_FILENO) ::close(in);
    if (out > STDERR_FILENO) ::close(out);
    ::execv(argv[0], argv.data());
    ::dprintf(STDERR_FILENO, "cannot run %s: %s\n", argv[0], std::strerror(errno));
    return 127;
  });
  if (pid < 0) return Error{Errc::system, errno_text("cannot start " + settings_.colod + ": fork")};
  h.pid = pid;
  h.exit = {};
  return Ok{};
}

std::string LocalCluster::ended() {
  for (std::size_t i = 0; i < hosts_.size(); ++i) {
    Host& h = hosts_[i];
    if (h.pid <= 0) continue;
    if (auto exit = children_.poll(h.pid)) {
      h.exit = *exit;
      return "colod " + h.name + " has ended (" + exit->text() + "); last lines of its log:\n" +
             log_tail(i, kLogTailLines);
    }
  }
  return {};
}

void LocalCluster::kill(std::size_t i, int signal) {
  Host& h = hosts_.at(i);
  if (h.pid == 0) return;
  children_.kill(h.pid, signal);
  if (signal == SIGKILL || signal == SIGTERM) {
    h.exit = children_.wait(h.pid, SteadyClock::now() + std::chrono::seconds(5));  // then SIGKILL
    h.pid = 0;
  }
}

Result<void> LocalCluster::restart(std::size_t i) {
  Host& h = hosts_.at(i);
  if (h.pid != 0) return Error{Errc::already_exists, h.name + "'s colod is running"};
  return spawn(h);
}

bool LocalCluster::all_connected(double timeout_s) {
  const auto deadline = SteadyClock::now() + std::chrono::duration_cast<SteadyClock::duration>(
                                                 std::chrono::duration<double>(timeout_s));
  while (SteadyClock::now() < deadline) {
    bool all = true;
    for (auto& h : hosts_) {
      auto status = colod_status(h.ns(), h.control, 0.5);
      if (!status || status->peers.size() + 1 != hosts_.size()) {
        all = false;
        break;
      }
      for (const auto& p : status->peers) all = all && p.connected;
      if (!all) break;
    }
    if (all) return true;
    // A colod that ended will not connect: no need to wait for the deadline.
    for (const auto& h : hosts_)
      if (h.pid > 0 && children_.poll(h.pid)) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

std::string LocalCluster::log_tail(std::size_t i, int lines) const {
  std::ifstream in(hosts_.at(i).log);
  std::deque<std::string> last;
  for (std::string line; std::getline(in, line);) {
    last.push_back(line);
    if (static_cast<int>(last.size()) > lines) last.pop_front();
  }
  std::string out;
  for (const auto& l : last) out += (out.empty() ? "    " : "\n    ") + l;
  return out.empty() ? "    (its log is empty)" : out;
}

std::vector<std::string> LocalCluster::stop() {
  std::vector<std::string> leftovers;
  if (stopped_) return leftovers;
  stopped_ = true;
  for (auto& h : hosts_)
    if (h.pid > 0) children_.kill(h.pid, SIGTERM);
  const auto deadline = SteadyClock::now() + std::chrono::seconds(5);
  for (std::size_t i = 0; i < hosts_.size(); ++i) {
    Host& h = hosts_[i];
    if (h.pid > 0) h.exit = children_.wait(h.pid, deadline);  // SIGKILL at the deadline
    h.pid = 0;
    h.log_tail = log_tail(i, kLogTailLines);
  }
  // The colod are gone: nothing maps the segments any more.
  for (auto& h : hosts_) {
    for (const std::string* path : {&h.config, &h.control, &h.log}) {
      ::unlink(path->c_str());  // the socket is normally gone already: colod unlinks it when it stops
      forget_on_interrupt(*path);
    }
    if (!h.scratch) continue;
    for (auto& seg : h.scratch->remove_all()) leftovers.push_back(std::move(seg));
  }
  if (!dir_.empty()) {
    // Our own files only: configs, logs, control sockets, and whatever else colod put there.
    if (DIR* d = ::opendir(dir_.c_str())) {
      while (dirent* e = ::readdir(d))
        if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
          ::unlink((dir_ + "/" + e->d_name).c_str());
      ::closedir(d);
    }
    if (::rmdir(dir_.c_str()) != 0 && errno != ENOENT) leftovers.push_back(dir_);
    forget_on_interrupt(dir_);
    dir_.clear();
  }
  return leftovers;
}

}  // namespace colo::cli
