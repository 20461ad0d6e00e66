// tools/demo_federation.hpp — the "federation" part of `colo demo`: three
// colod on this machine, each with its own namespace standing for a host,
// a cluster topic and a cluster queue across them (demo_federation.cpp).
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace colo::cli {

struct FederationDemoOptions {
  std::int64_t topic_messages = 20'000;  // per publisher (2 publishers)
  std::int64_t queue_messages = 30'000;  // in all (2 producers)
};

// Runs the part; prints progress through `line`; appends what went wrong
// to `failures`; returns its figures (for --json).
nlohmann::json run_federation_demo(const FederationDemoOptions& options,
                                   const std::function<void(const std::string&)>& line,
                                   std::vector<std::string>& failures);

}  // namespace colo::cli
