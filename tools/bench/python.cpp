// `colo bench python`: colo from Python against what Python processes use
// today (redis-py's Lock and SET NX PX, fcntl.flock, multiprocessing.Lock and
// Queue, pyzmq ipc://, a Unix socket). The benchmark is a Python program,
// python_bench.py beside this file, since what it measures is colo as a
// Python process sees it; this command finds it, the interpreter and the
// colo module of this build, and replaces itself with it (execv), so that
// signals and the exit status are the script's own.
#include <sys/stat.h>
#include <unistd.h>  // execv, access

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "app.hpp"
#include "commands.hpp"

#ifndef COLO_DATADIR
#error "COLO_DATADIR must be defined by the build (where python_bench.py is installed)"
#endif

namespace colo::cli {
namespace {

bool exists(const std::string& path) {
  struct stat st{};
  return ::stat(path.c_str(), &st) == 0;
}

// $COLO_PYTHON, else Debian's /usr/bin/python3 (the one that sees
// python3-zmq and python3-redis), else python3 on $PATH.
std::string python_interpreter() {
  if (const char* given = std::getenv("COLO_PYTHON"); given != nullptr && *given != '\0') return given;
  if (::access("/usr/bin/python3", X_OK) == 0) return "/usr/bin/python3";
  return find_program("python3", nullptr, {});
}

int run_python_bench(const std::vector<std::string>& args, const std::string& shown) {
  const std::string dir = own_directory();
  // Beside colo-bench in the build tree (Meson copies it there), else where
  // `meson install` put it.
  std::string script = dir + "python_bench.py";
  if (!exists(script)) script = std::string(COLO_DATADIR) + "/python_bench.py";
  if (!exists(script)) return fail("cannot find python_bench.py beside " + dir + " or in " + COLO_DATADIR);
  const std::string python = python_interpreter();
  if (python.empty()) return fail("cannot find python3 (set COLO_PYTHON)");
  // The build tree's colo module (build/broker/python) if this colo-bench
  // runs from a build tree; installed, python3 finds the installed one.
  const std::string build_module = dir + "../../broker/python";
  if (exists(build_module + "/colo/__init__.py")) {
    const char* old = std::getenv("PYTHONPATH");
    const std::string path = build_module + (old != nullptr && *old != '\0' ? ":" + std::string(old) : "");
    ::setenv("PYTHONPATH", path.c_str(), 1);
  }
  ::setenv("COLO_BENCH_NAME", shown.c_str(), 1);  // the script's usage lines say `colo bench python`
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(python.c_str()));
  argv.push_back(const_cast<char*>(script.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::fflush(nullptr);
  ::execv(python.c_str(), argv.data());
  return fail("cannot run " + python + ": " + std::strerror(errno));
}

}  // namespace

void register_bench_python(CLI::App& bench, int& exit_code) {
  auto* cmd = bench.add_subcommand(
      "python", "colo from Python vs redis-py Lock and SET NX PX, fcntl.flock, multiprocessing.Lock/Queue, pyzmq "
                "ipc://, a Unix socket: lock and table-key pairs/s and queue msg/s between two Python processes, "
                "with the goals");
  // Every argument, --help included, is the script's.
  cmd->prefix_command();
  cmd->set_help_flag();
  cmd->allow_extras();
  const std::string shown = bench.get_name() + " python";
  cmd->callback([cmd, shown, &exit_code] { exit_code = run_python_bench(cmd->remaining(), shown); });
}

}  // namespace colo::cli
