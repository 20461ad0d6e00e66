// tests/bridge/link_support.hpp — what the suites of colod's links to other
// systems (`kafka`, `rabbitmq`) share, on top of the Federation fixture:
// configs with links, `colo links --json`, colod killed and restarted, the
// servers' own script, and text messages that tell their publisher and
// index.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "federation_support.hpp"

namespace colo::test {

// A text message "p<publisher> i<index> " padded with '.' to `size` bytes
// (at least the prefix), and its parse.
std::string text_message(std::uint32_t publisher, std::uint32_t index, std::size_t size);
bool parse_text_message(const std::string& text, std::uint32_t& publisher, std::uint32_t& index);

class LinkHosts : public Federation {
 protected:
  // Appends `toml` to host h's config (after write_configs).
  void append_config(const Host& h, const std::string& toml);
  // `colo links --json` of h, and one link of it (null json if absent).
  nlohmann::json links(const Host& h);
  nlohmann::json link(const Host& h, const std::string& name);
  // Waits until link `name` of h satisfies `ok`; the last json seen.
  bool wait_link(const Host& h, const std::string& name, const std::function<bool(const nlohmann::json&)>& ok,
                 std::chrono::seconds timeout, nlohmann::json* last = nullptr);
  // SIGKILLs h's colod and starts it again; the killed one's stderr is
  // appended to <dir>/<host>.killed.log.
  void kill_and_restart(Host& h);
  // tests/services/services.sh (COLO_SERVICES_SH) with these arguments.
  RunResult services(const std::vector<std::string>& args, std::chrono::seconds timeout = std::chrono::seconds(120));
};

// A thread publishing `count` text messages on h's topic `topic` as
// publisher `id`, sizes 20..`max_size` bytes, pausing `pause` after every
// `every` messages; a publish that times out (`timeout`: writers held back)
// is counted in `timeouts` and tried again. `progress`, if given, counts
// the messages published. Returns the thread.
std::thread text_publisher(const std::string& ns, const std::string& topic, std::uint32_t id, std::uint32_t count,
                           std::size_t max_size, std::chrono::microseconds pause, std::uint32_t every,
                           std::chrono::milliseconds timeout, std::atomic<std::uint64_t>& timeouts,
                           const std::atomic<bool>& stop, std::atomic<std::uint32_t>* progress = nullptr);

}  // namespace colo::test
