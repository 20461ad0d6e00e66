#include "scenario.hpp"

#include <csignal>
#include <cstdio>
#include <thread>

namespace colo::cli {

void Role::ready() { status_.ready.store(1, std::memory_order_release); }

bool Role::wait_for_go(SteadyClock::duration limit) {
  const auto give_up = SteadyClock::now() + limit;
  while (shared_.go.load(std::memory_order_acquire) == 0) {
    if (SteadyClock::now() > give_up) {
      fail("never told to start", 3);
      return false;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  return true;
}

int Role::fail(const std::string& why, int rc) {
  std::snprintf(status_.error, sizeof status_.error, "%s", why.c_str());
  status_.failed.store(1, std::memory_order_release);
  return rc;
}

bool Scenario::start(const std::string& label, const std::function<int(Role&)>& body) {
  const std::size_t index = roles_.size();
  if (!shared_ || index >= static_cast<std::size_t>(kMaxRoles)) {
    failures_.push_back("cannot fork " + label + ": too many roles");
    return false;
  }
  ScenarioShared& shared = *shared_;
  const pid_t pid = children_.spawn([&shared, index, &body] {
    RoleStatus& status = shared.roles[index];
    status.pid.store(static_cast<std::uint32_t>(::getpid()), std::memory_order_release);
    Role role(shared, status);
    return body(role);
  });
  if (pid < 0) {
    failures_.push_back("cannot fork " + label);
    return false;
  }
  roles_.push_back({pid, label});
  return true;
}

bool Scenario::wait_ready(SteadyClock::duration limit) {
  const auto give_up = SteadyClock::now() + limit;
  for (; ready_checked_ < roles_.size(); ++ready_checked_) {
    const std::size_t i = ready_checked_;
    while (shared_->roles[i].ready.load(std::memory_order_acquire) == 0) {
      if (auto ended = children_.poll(pid(i))) {
        failures_.push_back(who(i) + " ended (" + ended->text() + ")" + error_suffix(i) + " before it was ready");
        return false;
      }
      if (SteadyClock::now() > give_up) {
        failures_.push_back(who(i) + " was not ready within " +
                            std::to_string(std::chrono::duration_cast<std::chrono::seconds>(limit).count()) + " s");
        return false;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
  return true;
}

Scenario::Reached Scenario::wait_until(std::size_t i, const std::function<bool()>& reached,
                                       SteadyClock::time_point deadline) {
  for (;;) {
    if (reached()) return {true, std::nullopt};
    if (auto ended = children_.poll(pid(i))) return {false, ended};
    if (SteadyClock::now() > deadline) return {};
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

ChildExit Scenario::kill(std::size_t i, SteadyClock::duration limit) {
  children_.kill(pid(i), SIGKILL);
  return children_.wait(pid(i), SteadyClock::now() + limit);
}

ChildExit Scenario::wait(std::size_t i, SteadyClock::time_point deadline) {
  return children_.wait(pid(i), deadline);
}

bool Scenario::wait_all(SteadyClock::time_point deadline) { return children_.wait_all(deadline); }

std::set<pid_t> Scenario::collect(pid_t killed) {
  std::set<pid_t> clean;
  for (std::size_t i = 0; i < roles_.size(); ++i) {
    if (pid(i) == killed) continue;  // checked where it is killed or found gone
    const ChildExit exit = exit_of(i);
    if (shared_->roles[i].failed.load(std::memory_order_acquire) != 0)
      failures_.push_back(who(i) + error_suffix(i));
    else if (exit.how == ChildExit::How::timed_out)
      failures_.push_back(who(i) + " " + exit.text());
    else if (exit.how != ChildExit::How::exited || exit.code != 0)
      failures_.push_back(who(i) + " ended with " + exit.text());
    else
      clean.insert(pid(i));
  }
  return clean;
}

std::string Scenario::pids(std::size_t from, std::size_t to) const {
  std::vector<pid_t> out;
  for (std::size_t i = from; i < to && i < roles_.size(); ++i) out.push_back(pid(i));
  return pid_list(out);
}

std::string Scenario::who(std::size_t i) const { return label(i) + " (pid " + std::to_string(pid(i)) + ")"; }

std::string Scenario::error_suffix(std::size_t i) const {
  const RoleStatus& s = shared_->roles[i];
  return s.failed.load(std::memory_order_acquire) != 0 ? std::string(": ") + s.error : std::string();
}

std::string pid_list(const std::vector<pid_t>& pids) {
  std::string out = pids.size() == 1 ? "pid" : "pids";
  for (std::size_t i = 0; i < pids.size(); ++i) {
    if (pids.size() > 8 && i == 3) {
      out += " ...";
      i = pids.size() - 1;
    }
    out += " " + std::to_string(pids[i]);
  }
  return out;
}

}  // namespace colo::cli
