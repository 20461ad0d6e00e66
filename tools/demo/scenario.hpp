// tools/demo/scenario.hpp — the one runner under every part of the demo:
// it forks the roles of a scenario (workers, publishers, consumers ...),
// waits until each says it is ready, starts them all at once, waits for them
// (bounded), and turns how each ended into the part's failures.
//
//   parent (Scenario)                        role processes (Role)
//   start(label, body) ── fork ────────────▶ body(role): open what it needs,
//   wait_ready()  ◀──────────────────────── role.ready()
//   go() ───────────────────────────────────▶ role.wait_for_go(): run
//   wait_until(victim, flag) / kill(victim)    (a victim stalls, gets SIGKILL)
//   wait_all(deadline)  ◀─────────────────── exit status; role.fail(why, rc)
//   collect(): failures, and which roles ended cleanly
//
// What the roles share with the parent (ScenarioShared) lives in shared
// anonymous memory mapped before the first fork: a start flag and one
// RoleStatus per role. A part keeps its own figures in a SharedBlock of its
// own. Contract: single-threaded parent; every wait is bounded; roles still
// running when the Scenario goes are SIGKILLed and reaped (Children).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "processes.hpp"  // Children, SharedBlock, SteadyClock

namespace colo::cli {

inline constexpr int kMaxRoles = 80;  // the locks part: up to 64 workers and a restarted one

// One role's state, written by its process only.
struct RoleStatus {
  std::atomic<std::uint32_t> pid;
  std::atomic<int> ready;   // it opened what it needs: the scenario may start
  std::atomic<int> failed;  // `error` says why
  char error[240];
};

struct ScenarioShared {
  alignas(64) std::atomic<int> go;
  RoleStatus roles[kMaxRoles];
};

// What a role's process holds: its own status and the scenario's start.
class Role {
 public:
  Role(ScenarioShared& shared, RoleStatus& status) : shared_(shared), status_(status) {}

  void ready();
  // Waits for go(); false, recorded as "never told to start", after `limit`.
  bool wait_for_go(SteadyClock::duration limit);
  // Records why the role failed (read by the parent); returns `rc`, its exit status.
  int fail(const std::string& why, int rc);

 private:
  ScenarioShared& shared_;
  RoleStatus& status_;
};

class Scenario {
 public:
  // Failures are appended to `failures`, the part's list.
  explicit Scenario(std::vector<std::string>& failures) : failures_(failures) {}
  // False if the shared memory could not be mapped (nothing can start).
  explicit operator bool() const noexcept { return static_cast<bool>(shared_); }

  // Forks a role running `body` (its return value is the exit status). False,
  // with a failure "cannot fork <label>", if that failed.
  bool start(const std::string& label, const std::function<int(Role&)>& body);
  // Waits until every role started so far is ready, at most `limit` in all.
  bool wait_ready(SteadyClock::duration limit);
  // Starts every role (those started later do not wait).
  void go() { shared_->go.store(1, std::memory_order_release); }

  // Waits, polling, until `reached()` holds while role `i` runs, up to
  // `deadline`. Says which of the three happened.
  struct Reached {
    bool reached = false;
    std::optional<ChildExit> ended;  // the role ended first; neither: timed out
  };
  Reached wait_until(std::size_t i, const std::function<bool()>& reached, SteadyClock::time_point deadline);
  // SIGKILLs role `i` and reaps it (bounded by `limit`); how it ended.
  ChildExit kill(std::size_t i, SteadyClock::duration limit);
  // Waits for role `i`, or every role, up to `deadline` (then SIGKILL).
  ChildExit wait(std::size_t i, SteadyClock::time_point deadline);
  bool wait_all(SteadyClock::time_point deadline);

  // A failure for each role (but `killed`, reported where it was killed)
  // that recorded one or did not exit 0; returns the pids of the roles that
  // ended cleanly, whose figures can be checked further.
  std::set<pid_t> collect(pid_t killed = -1);

  std::size_t size() const noexcept { return roles_.size(); }
  pid_t pid(std::size_t i) const { return roles_.at(i).pid; }
  const std::string& label(std::size_t i) const { return roles_.at(i).label; }
  ChildExit exit_of(std::size_t i) const { return children_.status(pid(i)); }
  const RoleStatus& status(std::size_t i) const { return shared_->roles[i]; }
  // "pids 101 102 103" of roles [from, to).
  std::string pids(std::size_t from, std::size_t to) const;
  // "<label> (pid N)", how failures name a role.
  std::string who(std::size_t i) const;
  // ": <its error>" if the role recorded one, else "".
  std::string error_suffix(std::size_t i) const;

 private:
  struct Started {
    pid_t pid;
    std::string label;
  };
  std::vector<std::string>& failures_;
  SharedBlock<ScenarioShared> shared_;
  Children children_;
  std::vector<Started> roles_;
  std::size_t ready_checked_ = 0;  // roles before this one were seen ready
};

// "pid 101" / "pids 101 102 103", or "pids 101 102 103 ... 164" past eight.
std::string pid_list(const std::vector<pid_t>& pids);

}  // namespace colo::cli
