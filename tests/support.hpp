// tests/support.hpp — what every colo test shares: unique namespaces and their
// cleanup, fork/exec of helper processes with bounded waits, the shared-state
// file, and small helpers to look at and damage segment files.
#pragma once

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <chrono>
#include <csignal>
#include <deque>
#include <cstdint>
#include <functional>
#include <ostream>
#include <optional>
#include <string>
#include <vector>

#include "colo/error.hpp"
#include "colo/node.hpp"
#include "segment.hpp"
#include "shared_state.hpp"

namespace colo {
// gtest prints an Errc by name in failure messages.
inline void PrintTo(Errc code, std::ostream* os) { *os << "Errc::" << errc_name(code); }
}  // namespace colo

namespace colo::test {

using namespace std::chrono_literals;

// A namespace no other test (in this or a concurrently running test binary)
// uses: "t<pid>_<counter>".
std::string unique_namespace();

// Names of every file of the namespace in /dev/shm (colo.<ns>.*), and their removal.
std::vector<std::string> namespace_files(const std::string& ns);
void remove_namespace_files(const std::string& ns);

bool file_exists(const std::string& path);
struct stat stat_of(const std::string& path);  // fails the test (ADD_FAILURE) if missing
std::string dev_shm(const std::string& shm_name);  // "/dev/shm/" + shm_name

// Options of a Node in namespace `ns` (defaults otherwise).
NodeOptions node_options(const std::string& ns);

// Paths of the binaries under test, passed by meson through the environment.
std::string worker_path();  // COLO_TEST_WORKER
std::string colo_path();    // COLO_BIN

// Polls `pred` until true or `timeout`; true if it became true.
bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout,
                std::chrono::microseconds poll = 200us);

bool running_as_root();
// uid/gid of `nobody`/`nogroup` (65534 if the databases lack them).
uid_t nobody_uid();
gid_t nogroup_gid();

// True if `pid` is gone: no such process, or a zombie.
bool process_gone(pid_t pid);

struct SpawnOptions {
  std::optional<uid_t> uid;          // setuid in the child before exec (with gid and no supplementary groups)
  std::optional<gid_t> gid;
  std::vector<std::string> env;      // "NAME=VALUE" added to (or replacing in) our environment
  bool own_process_group = false;    // setpgid(0, 0): kill() then signals the whole group
  bool die_with_parent = true;       // PR_SET_PDEATHSIG(SIGKILL): no orphans if the test dies
};

// A child process made by fork + exec, stdout and stderr captured in files.
// The destructor kills (SIGKILL) and reaps it if it is still running.
class Process {
 public:
  static Process spawn(const std::vector<std::string>& argv, const SpawnOptions& options = {});

  pid_t pid() const noexcept { return pid_; }
  // Waits up to `timeout` for the process to end; its wait status, or
  // nullopt if still running at the deadline.
  std::optional<int> wait_for(std::chrono::milliseconds timeout);
  bool reaped() const noexcept { return status_.has_value(); }
  std::optional<int> status() const noexcept { return status_; }
  void kill(int sig = SIGKILL);
  std::string out() const;
  std::string err() const;

  Process(Process&& other) noexcept;
  Process& operator=(Process&&) = delete;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process();

 private:
  Process() = default;
  pid_t pid_ = -1;
  bool group_ = false;
  std::optional<int> status_;
  std::string out_path_, err_path_;
};

// The worker as another user may run it (uid/gid in `options`): a copy,
// with the libcolo it links, in a directory this process made for it (mode
// 0755), wherever the build tree is; a checkout in root's home (mode 0700)
// is closed to other users. Adds to `options` the environment the copy
// needs (LD_LIBRARY_PATH). The copy is made once and removed at exit.
std::string worker_for_any_user(SpawnOptions& options);

// Result of running a process to completion.
struct RunResult {
  bool timed_out = false;
  bool exited = false;  // normal exit (else killed by a signal, or timed out)
  int exit_code = -1;
  int signal = 0;
  std::string out, err;
  pid_t pid = -1;
};
RunResult run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout = 30s,
              const SpawnOptions& options = {});
std::string describe(const RunResult& r);  // for assertion messages

// `colo --ns NS ARGS...`, the real binary.
RunResult run_colo(const std::string& ns, const std::vector<std::string>& args, std::chrono::milliseconds timeout = 30s);

// The shared-state file of a test (see shared_state.hpp), created by the test.
class SharedStateFile {
 public:
  explicit SharedStateFile(const std::string& ns, std::uint64_t log_capacity = 0);
  ~SharedStateFile();
  SharedStateFile(const SharedStateFile&) = delete;
  SharedStateFile& operator=(const SharedStateFile&) = delete;
  SharedState* operator->() const noexcept { return state_; }
  SharedState* get() const noexcept { return state_; }
  const std::string& path() const noexcept { return path_; }
  const GrantRecord* log() const noexcept { return grant_log(state_); }

 private:
  std::string path_;
  std::size_t size_ = 0;
  SharedState* state_ = nullptr;
};

// Maps /dev/shm/<shm_name> read-write and hands its header to `edit` (to
// corrupt it on purpose). The file must be at least a header long.
void edit_header(const std::string& shm_name, const std::function<void(shm::SegmentHeader&)>& edit);
void truncate_file(const std::string& shm_name, off_t size);
void chmod_file(const std::string& shm_name, mode_t mode);
void chown_file(const std::string& shm_name, uid_t uid, gid_t gid);
// Creates /dev/shm/<shm_name> of `size` zero bytes with mode 0600 (what a
// creator killed before writing anything leaves behind).
void create_raw_file(const std::string& shm_name, off_t size);

// Fixture for anything that touches shared memory: a fresh namespace, whose
// files are all removed in TearDown; child processes registered with
// `adopt` are killed and reaped there too.
class NamespaceTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;
  Process& adopt(Process p);

  std::string ns;
  std::deque<Process> children;  // deque: adopt() hands out stable references
};

}  // namespace colo::test
