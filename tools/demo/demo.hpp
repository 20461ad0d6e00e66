// tools/demo/demo.hpp — what the parts of the demo share: the options, the
// reporter that prints their progress, and what each part returns.
//
// Parts, in order (main.cpp runs them): "locks" (locks.cpp), "queues and
// topics" (topic.cpp, then queue.cpp, over channels.hpp), "federation"
// (federation.cpp: three colod on this machine standing for hosts). Each is
// a small scenario of forked processes (scenario.hpp) that checks exact
// outcomes and says OK or FAILED with the reasons.
#pragma once

#include <nlohmann/json.hpp>  // PartOutcome::detail, for --json

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "processes.hpp"  // ScratchNamespace

namespace colo::cli {

struct FederationDemoOptions {
  std::int64_t topic_messages = 20'000;  // per publisher (2 publishers)
  std::int64_t queue_messages = 30'000;  // in all (2 producers)
};

struct DemoOptions {
  int workers = 4;
  std::int64_t increments = 25'000;
  std::int64_t topic_messages = 200'000;  // per publisher
  std::int64_t queue_messages = 100'000;  // in all
  FederationDemoOptions federation;
  bool json = false;
};

inline constexpr int kMaxWorkers = 64;  // --workers

// Prints progress as it happens (text mode); silent with --json.
class Reporter {
 public:
  explicit Reporter(bool json) : json_(json) {}
  bool json() const noexcept { return json_; }
  void line(const std::string& text) {
    if (json_) return;
    std::printf("%s\n", text.c_str());
    std::fflush(stdout);
  }

 private:
  bool json_;
};

// What a part reports: OK or why not, and its figures for --json.
struct PartOutcome {
  std::string name;
  std::vector<std::string> failures;  // empty: OK
  nlohmann::json detail = nlohmann::json::object();
};

// The parts. Each runs in `scratch`, the demo's private namespace.
PartOutcome run_locks_part(const DemoOptions& opt, ScratchNamespace& scratch, Reporter& out);
PartOutcome run_channels_part(const DemoOptions& opt, ScratchNamespace& scratch, Reporter& out);
PartOutcome run_federation_part(const DemoOptions& opt, ScratchNamespace& scratch, Reporter& out);

// "1 worker" / "25,000 increments".
std::string plural(std::uint64_t n, const char* one, const char* many);

}  // namespace colo::cli
