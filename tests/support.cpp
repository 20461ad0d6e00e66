#include "support.hpp"

#include <dirent.h>
#include <dlfcn.h>  // dladdr: where libcolo was loaded from
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

extern char** environ;

namespace colo::test {

std::string unique_namespace() {
  static std::atomic<unsigned> counter{0};
  return "t" + std::to_string(::getpid()) + "_" + std::to_string(counter.fetch_add(1));
}

std::vector<std::string> namespace_files(const std::string& ns) {
  std::vector<std::string> out;
  const std::string prefix = "colo." + ns + ".";
  DIR* dir = ::opendir("/dev/shm");
  if (dir == nullptr) return out;
  while (const dirent* d = ::readdir(dir)) {
    const std::string name = d->d_name;
    if (name.rfind(prefix, 0) == 0) out.push_back(name);
  }
  ::closedir(dir);
  return out;
}

void remove_namespace_files(const std::string& ns) {
  for (const auto& name : namespace_files(ns)) ::unlink(("/dev/shm/" + name).c_str());
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

struct stat stat_of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) ADD_FAILURE() << "stat " << path << ": " << std::strerror(errno);
  return st;
}

std::string dev_shm(const std::string& shm_name) { return "/dev/shm/" + shm_name; }

NodeOptions node_options(const std::string& ns) {
  NodeOptions o;
  o.ns = ns;
  return o;
}

namespace {
std::string required_env(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') {
    ADD_FAILURE() << name << " is not set: run the tests through `meson test`";
    return "/nonexistent";
  }
  return v;
}
}  // namespace

std::string worker_path() { return required_env("COLO_TEST_WORKER"); }
std::string colo_path() { return required_env("COLO_BIN"); }

bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout, std::chrono::microseconds poll) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return pred();
    std::this_thread::sleep_for(poll);
  }
}

bool running_as_root() { return ::geteuid() == 0; }

uid_t nobody_uid() {
  const passwd* pw = ::getpwnam("nobody");
  return pw != nullptr ? pw->pw_uid : 65534;
}

gid_t nogroup_gid() {
  const group* gr = ::getgrnam("nogroup");
  return gr != nullptr ? gr->gr_gid : 65534;
}

bool process_gone(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  if (!in) return true;
  std::string line;
  std::getline(in, line);
  const auto paren = line.rfind(')');
  if (paren == std::string::npos || paren + 2 >= line.size()) return true;
  const char state = line[paren + 2];
  return state == 'Z' || state == 'X' || state == 'x';
}

// ------------------------------------------------------------------ Process

namespace {
std::string temp_file(const char* what) {
  std::string tmpl = std::string("/tmp/colo-test-") + what + "-XXXXXX";
  const int fd = ::mkstemp(tmpl.data());
  if (fd < 0) {
    ADD_FAILURE() << "mkstemp: " << std::strerror(errno);
    return "/dev/null";
  }
  ::close(fd);
  return tmpl;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}
}  // namespace

Process Process::spawn(const std::vector<std::string>& argv, const SpawnOptions& options) {
  Process p;
  p.group_ = options.own_process_group;
  p.out_path_ = temp_file("out");
  p.err_path_ = temp_file("err");

  // Everything the child needs is prepared before fork: after it, only
  // async-signal-safe calls.
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    const std::string key = entry.substr(0, entry.find('='));
    bool replaced = false;
    for (const auto& add : options.env)
      if (add.substr(0, add.find('=')) == key) replaced = true;
    if (!replaced) env_strings.push_back(entry);
  }
  for (const auto& add : options.env) env_strings.push_back(add);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = argv;
  std::vector<char*> argvp;
  for (auto& s : args) argvp.push_back(s.data());
  argvp.push_back(nullptr);

  const int out_fd = ::open(p.out_path_.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
  const int err_fd = ::open(p.err_path_.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    ADD_FAILURE() << "fork: " << std::strerror(errno);
  } else if (pid == 0) {
    if (options.own_process_group) ::setpgid(0, 0);
    ::dup2(null_fd, 0);
    ::dup2(out_fd, 1);
    ::dup2(err_fd, 2);
    if (options.gid) {
      if (::setgroups(0, nullptr) != 0 || ::setgid(*options.gid) != 0) ::_exit(120);
    }
    if (options.uid && ::setuid(*options.uid) != 0) ::_exit(121);
    // After the credential change: changing credentials clears the death signal.
    if (options.die_with_parent) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(122);
    }
    ::execve(argvp[0], argvp.data(), envp.data());
    const char msg[] = "colo-test: execve failed\n";
    (void)!::write(2, msg, sizeof msg - 1);
    ::_exit(127);
  }
  ::close(out_fd);
  ::close(err_fd);
  ::close(null_fd);
  p.pid_ = pid;
  return p;
}

std::optional<int> Process::wait_for(std::chrono::milliseconds timeout) {
  if (status_) return status_;
  if (pid_ <= 0) return std::nullopt;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  long sleep_us = 50;
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      status_ = status;
      return status_;
    }
    if (r < 0 && errno != EINTR) {
      ADD_FAILURE() << "waitpid " << pid_ << ": " << std::strerror(errno);
      status_ = -1;
      return status_;
    }
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::microseconds(sleep_us));
    sleep_us = std::min<long>(sleep_us * 2, 2000);
  }
}

void Process::kill(int sig) {
  if (pid_ <= 0 || status_) return;
  if (group_) ::kill(-pid_, sig);
  ::kill(pid_, sig);
}

std::string Process::out() const { return slurp(out_path_); }
std::string Process::err() const { return slurp(err_path_); }

Process::Process(Process&& other) noexcept
    : pid_(other.pid_),
      group_(other.group_),
      status_(other.status_),
      out_path_(std::move(other.out_path_)),
      err_path_(std::move(other.err_path_)) {
  other.pid_ = -1;
  other.out_path_.clear();
  other.err_path_.clear();
}

Process::~Process() {
  if (pid_ > 0) {
    if (group_) ::kill(-pid_, SIGKILL);  // also what it left running in its group
    if (!status_) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
    }
  }
  if (!out_path_.empty()) ::unlink(out_path_.c_str());
  if (!err_path_.empty()) ::unlink(err_path_.c_str());
}

namespace {
// Copies a file, with `mode`.
bool copy_file(const std::string& from, const std::string& to, mode_t mode) {
  std::ifstream in(from, std::ios::binary);
  std::ofstream out(to, std::ios::binary | std::ios::trunc);
  out << in.rdbuf();
  out.close();
  return in && out && ::chmod(to.c_str(), mode) == 0;
}

// A directory removed when the test program exits.
struct ScratchDir {
  std::string path;
  ~ScratchDir() {
    if (!path.empty()) (void)std::system(("rm -rf '" + path + "'").c_str());
  }
};
}  // namespace

std::string worker_for_any_user(SpawnOptions& options) {
  static ScratchDir dir;
  static const std::string copy = [] {
    char tmpl[] = "/tmp/colo-test-worker-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr || ::chmod(tmpl, 0755) != 0) {
      ADD_FAILURE() << "mkdtemp: " << std::strerror(errno);
      return worker_path();
    }
    dir.path = tmpl;
    Dl_info lib{};
    if (::dladdr(reinterpret_cast<const void*>(&colo::Node::open), &lib) == 0 || lib.dli_fname == nullptr) {
      ADD_FAILURE() << "dladdr: cannot tell where libcolo was loaded from";
      return worker_path();
    }
    const std::string lib_path = lib.dli_fname;
    const std::string worker = dir.path + "/colo-test-worker";
    if (!copy_file(worker_path(), worker, 0755) ||
        !copy_file(lib_path, dir.path + "/" + lib_path.substr(lib_path.rfind('/') + 1), 0755))
      ADD_FAILURE() << "cannot copy the worker and " << lib_path << " into " << dir.path;
    return worker;
  }();
  options.env.push_back("LD_LIBRARY_PATH=" + dir.path);
  return copy;
}

RunResult run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout, const SpawnOptions& options) {
  RunResult r;
  Process p = Process::spawn(argv, options);
  r.pid = p.pid();
  const auto status = p.wait_for(timeout);
  if (!status) {
    r.timed_out = true;
    p.kill(SIGKILL);
    p.wait_for(5s);
  } else if (WIFEXITED(*status)) {
    r.exited = true;
    r.exit_code = WEXITSTATUS(*status);
  } else if (WIFSIGNALED(*status)) {
    r.signal = WTERMSIG(*status);
  }
  r.out = p.out();
  r.err = p.err();
  return r;
}

std::string describe(const RunResult& r) {
  std::ostringstream s;
  if (r.timed_out) s << "TIMED OUT";
  else if (r.exited) s << "exit " << r.exit_code;
  else s << "killed by signal " << r.signal;
  s << "\n--- stdout ---\n" << r.out << "\n--- stderr ---\n" << r.err;
  return s.str();
}

RunResult run_colo(const std::string& ns, const std::vector<std::string>& args, std::chrono::milliseconds timeout) {
  std::vector<std::string> argv{colo_path(), "--ns", ns};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, timeout);
}

// ------------------------------------------------------------ shared state

SharedStateFile::SharedStateFile(const std::string& ns, std::uint64_t log_capacity)
    : path_(shared_state_path(ns)), size_(shared_state_bytes(log_capacity)) {
  const int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0) {
    ADD_FAILURE() << "creating " << path_ << ": " << std::strerror(errno);
    return;
  }
  ::fchmod(fd, 0666);  // workers may run as another user
  if (::ftruncate(fd, static_cast<off_t>(size_)) != 0) ADD_FAILURE() << "ftruncate: " << std::strerror(errno);
  void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) {
    ADD_FAILURE() << "mmap " << path_ << ": " << std::strerror(errno);
    return;
  }
  state_ = static_cast<SharedState*>(p);
  state_->log_capacity = log_capacity;
}

SharedStateFile::~SharedStateFile() {
  if (state_ != nullptr) ::munmap(state_, size_);
  ::unlink(path_.c_str());
}

// ---------------------------------------------------------- damaging files

void edit_header(const std::string& shm_name, const std::function<void(shm::SegmentHeader&)>& edit) {
  const std::string path = dev_shm(shm_name);
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0) << path << ": " << std::strerror(errno);
  void* p = ::mmap(nullptr, sizeof(shm::SegmentHeader), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  ASSERT_NE(p, MAP_FAILED) << std::strerror(errno);
  edit(*static_cast<shm::SegmentHeader*>(p));
  ::munmap(p, sizeof(shm::SegmentHeader));
}

void truncate_file(const std::string& shm_name, off_t size) {
  ASSERT_EQ(::truncate(dev_shm(shm_name).c_str(), size), 0) << std::strerror(errno);
}

void chmod_file(const std::string& shm_name, mode_t mode) {
  ASSERT_EQ(::chmod(dev_shm(shm_name).c_str(), mode), 0) << std::strerror(errno);
}

void chown_file(const std::string& shm_name, uid_t uid, gid_t gid) {
  ASSERT_EQ(::chown(dev_shm(shm_name).c_str(), uid, gid), 0) << std::strerror(errno);
}

void create_raw_file(const std::string& shm_name, off_t size) {
  const int fd = ::open(dev_shm(shm_name).c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  ::fchmod(fd, 0600);
  EXPECT_EQ(::ftruncate(fd, size), 0);
  ::close(fd);
}

// ----------------------------------------------------------------- fixture

void NamespaceTest::SetUp() { ns = unique_namespace(); }

void NamespaceTest::TearDown() {
  children.clear();  // kills and reaps what is still running
  remove_namespace_files(ns);
}

Process& NamespaceTest::adopt(Process p) {
  children.push_back(std::move(p));
  return children.back();
}

}  // namespace colo::test
