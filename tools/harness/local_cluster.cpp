#include "local_cluster.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <thread>

#include "app.hpp"  // find_program
#include "colod_client.hpp"

extern char** environ;

namespace colo::cli {
// colo-bench and colo-demo are built in build/tools/bench and build/tools/demo, colod in build/bridge.
std::string find_colod() { return find_program("colod", "COLOD_BIN", {"../../bridge/"}); }

Result<void> LocalCluster::start(const std::string& colod, const std::vector<std::string>& names,
                                 const std::string& prefix, const std::string& objects_toml, double timeout_s) {
  colod_ = colod;
  char tmpl[] = "/tmp/colo-cluster-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) return Error{Errc::system, std::string("mkdtemp: ") + std::strerror(errno)};
  dir_ = tmpl;
  unlink_on_interrupt(dir_);  // removed after the files in it (processes.hpp)
  for (const auto& name : names) {
    Host h;
    h.name = name;
    h.port = free_loopback_port();
    if (h.port < 0) return Error{Errc::system, std::string("cannot find a free port on 127.0.0.1: ") + std::strerror(errno)};
    h.config = dir_ + "/" + name + ".toml";
    h.control = dir_ + "/" + name + ".sock";
    h.log = dir_ + "/" + name + ".log";
    h.scratch = std::make_unique<ScratchNamespace>();
    if (auto opened = h.scratch->open(prefix + name); !opened) return opened;
    hosts_.push_back(std::move(h));
  }
  for (auto& h : hosts_) {
    for (const std::string* path : {&h.config, &h.control, &h.log}) unlink_on_interrupt(*path);
    std::ofstream f(h.config);
    f << "[node]\nname = \"" << h.name << "\"\nnamespace = \"" << h.ns() << "\"\nlisten = \"tcp://127.0.0.1:"
      << h.port << "\"\n[control]\nsocket = \"" << h.control << "\"\n[limits]\nheartbeat_ms = 100\n";
    for (const auto& p : hosts_)
      if (p.name != h.name)
        f << "[[peer]]\nname = \"" << p.name << "\"\nendpoint = \"tcp://127.0.0.1:" << p.port << "\"\n";
    f << objects_toml;
    if (!f) return Error{Errc::system, h.config + ": cannot write"};
  }
  for (auto& h : hosts_)
    if (auto spawned = spawn(h); !spawned) return spawned;
  if (!all_connected(timeout_s)) {
    std::string why = "the colod processes did not all connect within " + std::to_string(timeout_s) + " s";
    for (std::size_t i = 0; i < hosts_.size(); ++i) why += "\n" + hosts_[i].name + ": " + log_tail(i, 3);
    return Error{Errc::timed_out, why};
  }
  return Ok{};
}

Result<void> LocalCluster::spawn(Host& h) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, h.log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  std::vector<std::string> args = {colod_, "--config", h.config};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, colod_.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return Error{Errc::system, "cannot start " + colod_ + ": " + std::strerror(rc)};
  h.pid = pid;
  kill_on_interrupt(pid);  // Ctrl-C must not leave a colod serving a namespace that is gone
  return Ok{};
}

void LocalCluster::kill(std::size_t i, int signal) {
  Host& h = hosts_.at(i);
  if (h.pid == 0) return;
  ::kill(h.pid, signal);
  if (signal == SIGKILL || signal == SIGTERM) {
    for (int waited = 0; waited < 500; ++waited) {  // up to 5 s
      if (::waitpid(h.pid, nullptr, WNOHANG) == h.pid) {
        forget_kill_on_interrupt(h.pid);
        h.pid = 0;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ::kill(h.pid, SIGKILL);
    ::waitpid(h.pid, nullptr, 0);
    forget_kill_on_interrupt(h.pid);
    h.pid = 0;
  }
}

Result<void> LocalCluster::restart(std::size_t i) {
  Host& h = hosts_.at(i);
  if (h.pid != 0) return Error{Errc::already_exists, h.name + "'s colod is running"};
  return spawn(h);
}

bool LocalCluster::all_connected(double timeout_s) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (std::chrono::steady_clock::now() < deadline) {
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
  for (const auto& l : last) out += (out.empty() ? "" : "\n") + l;
  return out;
}

std::vector<std::string> LocalCluster::stop() {
  std::vector<std::string> leftovers;
  for (std::size_t i = 0; i < hosts_.size(); ++i) kill(i, SIGTERM);
  for (auto& h : hosts_) {
    for (const std::string* path : {&h.config, &h.control, &h.log}) forget_on_interrupt(*path);
    if (!h.scratch) continue;
    for (auto& seg : h.scratch->remove_all()) leftovers.push_back(std::move(seg));
  }
  hosts_.clear();
  if (!dir_.empty()) {
    // Our own files only: configs, logs, control sockets.
    if (DIR* d = ::opendir(dir_.c_str())) {
      while (dirent* e = ::readdir(d))
        if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
          ::unlink((dir_ + "/" + e->d_name).c_str());
      ::closedir(d);
    }
    ::rmdir(dir_.c_str());
    forget_on_interrupt(dir_);
    dir_.clear();
  }
  return leftovers;
}

}  // namespace colo::cli
