#include "netns.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "processes.hpp"  // Children

namespace colo::cli {
namespace {

// iproute2's `ip`, by full path ("" if none): the child execs without a PATH search.
std::string ip_path() {
  std::string dirs = std::getenv("PATH") != nullptr ? std::getenv("PATH") : "";
  dirs += ":/usr/sbin:/sbin:/usr/bin:/bin";  // root's usual places, in case PATH lacks them
  std::istringstream in(dirs);
  for (std::string dir; std::getline(in, dir, ':');)
    if (!dir.empty() && ::access((dir + "/ip").c_str(), X_OK) == 0) return dir + "/ip";
  return "";
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& a : v) s += (s.empty() ? "" : " ") + a;
  return s;
}

}  // namespace

VethPair::~VethPair() {
  for (const auto* ns : {&netns_a, &netns_b})
    if (!ns->empty()) (void)ip({"netns", "del", *ns});
}

std::string VethPair::create() {
  if (::geteuid() != 0) return "needs root: creates network namespaces and a veth pair";
  ip_ = ip_path();
  if (ip_.empty()) return "no `ip` (iproute2) in PATH, /usr/sbin or /sbin";
  delete_stale();
  static std::atomic<unsigned> counter{0};
  const std::string suffix = std::to_string(::getpid()) + "-" + std::to_string(counter++);
  if (auto e = ip({"netns", "add", kPrefixA + suffix}); !e.empty()) return e;
  netns_a = kPrefixA + suffix;
  if (auto e = ip({"netns", "add", kPrefixB + suffix}); !e.empty()) return e;
  netns_b = kPrefixB + suffix;
  const std::vector<std::vector<std::string>> steps = {
      {"-n", netns_a, "link", "add", kLinkA, "type", "veth", "peer", "name", kLinkB, "netns", netns_b},
      {"-n", netns_a, "addr", "add", std::string(kAddressA) + "/30", "dev", kLinkA},
      {"-n", netns_b, "addr", "add", std::string(kAddressB) + "/30", "dev", kLinkB},
      {"-n", netns_a, "link", "set", "lo", "up"},
      {"-n", netns_b, "link", "set", "lo", "up"},
      {"-n", netns_a, "link", "set", kLinkA, "up"},
      {"-n", netns_b, "link", "set", kLinkB, "up"},
  };
  for (const auto& step : steps)
    if (auto e = ip(step); !e.empty()) return e;
  return "";
}

std::string VethPair::set_link_a(bool up) { return ip({"-n", netns_a, "link", "set", kLinkA, up ? "up" : "down"}); }

std::string VethPair::ip(const std::vector<std::string>& args) const {
  std::vector<std::string> argv = {ip_};
  argv.insert(argv.end(), args.begin(), args.end());
  // Its output goes to a pipe, read once it has ended (a few lines at most:
  // far below the pipe's buffer).
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return "ip " + join(args) + ": pipe failed";
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  Children children;
  const pid_t pid = children.spawn([&] {
    ::dup2(out[1], STDOUT_FILENO);
    ::dup2(out[1], STDERR_FILENO);
    ::execv(cargv[0], cargv.data());
    return 127;
  });
  ::close(out[1]);
  ChildExit exit = pid < 0 ? ChildExit{ChildExit::How::exited, -1}
                           : children.wait(pid, SteadyClock::now() + std::chrono::seconds(10));
  std::string output;
  char buf[512];
  for (ssize_t n; (n = ::read(out[0], buf, sizeof buf)) > 0;) output.append(buf, static_cast<std::size_t>(n));
  ::close(out[0]);
  if (exit.how == ChildExit::How::exited && exit.code == 0) return "";
  while (!output.empty() && output.back() == '\n') output.pop_back();
  return "ip " + join(args) + ": " + exit.text() + (output.empty() ? "" : ": " + output);
}

// Namespaces of ours whose process is gone. A live pid is left alone:
// another run may be using them.
void VethPair::delete_stale() const {
  DIR* dir = ::opendir("/run/netns");
  if (dir == nullptr) return;  // no namespace made yet on this machine
  std::vector<std::string> stale;
  while (const dirent* e = ::readdir(dir)) {
    const std::string name = e->d_name;
    for (const std::string prefix : {kPrefixA, kPrefixB}) {
      if (name.rfind(prefix, 0) != 0) continue;
      const pid_t pid = static_cast<pid_t>(std::atol(name.c_str() + prefix.size()));
      if (pid > 0 && pid != ::getpid() && ::kill(pid, 0) != 0 && errno == ESRCH) stale.push_back(name);
    }
  }
  ::closedir(dir);
  for (const auto& name : stale) {
    std::fprintf(stderr, "deleting stale network namespace %s\n", name.c_str());
    (void)ip({"netns", "del", name});
  }
}

}  // namespace colo::cli
