// tests/bridge/link_support.cpp — see link_support.hpp.
#include "link_support.hpp"

#include <fstream>
#include <random>

#include "colo/node.hpp"

namespace colo::test {

using nlohmann::json;

std::string text_message(std::uint32_t publisher, std::uint32_t index, std::size_t size) {
  std::string m = "p" + std::to_string(publisher) + " i" + std::to_string(index) + " ";
  if (m.size() < size) m.append(size - m.size(), '.');
  return m;
}

bool parse_text_message(const std::string& text, std::uint32_t& publisher, std::uint32_t& index) {
  unsigned p = 0, i = 0;
  if (std::sscanf(text.c_str(), "p%u i%u ", &p, &i) != 2) return false;
  publisher = p;
  index = i;
  return true;
}

void LinkHosts::append_config(const Host& h, const std::string& toml) {
  std::ofstream(h.config_path, std::ios::app) << toml;
}

json LinkHosts::links(const Host& h) {
  const auto r = run({colo_path(), "--ns", h.ns, "links", "--json", "--socket", h.control, "--timeout", "1"});
  if (!r.exited || r.exit_code != 0) return json();
  try {
    return json::parse(r.out);
  } catch (const json::exception&) {
    return json();
  }
}

json LinkHosts::link(const Host& h, const std::string& name) {
  const json j = links(h);
  if (!j.is_object()) return json();
  for (const auto& l : j["links"])
    if (l["name"] == name) return l;
  return json();
}

bool LinkHosts::wait_link(const Host& h, const std::string& name, const std::function<bool(const json&)>& ok,
                           std::chrono::seconds timeout, json* last) {
  json seen;
  const bool done = wait_until(
      [&] {
        seen = link(h, name);
        return seen.is_object() && ok(seen);
      },
      timeout, 100ms);
  if (last != nullptr) *last = seen;
  return done;
}

void LinkHosts::kill_and_restart(Host& h) {
  ASSERT_TRUE(h.colod.has_value());
  h.colod->kill(SIGKILL);
  h.colod->wait_for(5s);
  const std::string log = h.colod->err();  // kept: the new process's file starts empty
  std::ofstream(dir_ + "/" + h.name + ".killed.log", std::ios::app) << log;
  h.colod.reset();
  start(h);
}

RunResult LinkHosts::services(const std::vector<std::string>& args, std::chrono::seconds timeout) {
  const char* script = std::getenv("COLO_SERVICES_SH");
  std::vector<std::string> argv{script != nullptr ? script : "services.sh"};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, timeout);
}

std::thread text_publisher(const std::string& ns, const std::string& topic, std::uint32_t id, std::uint32_t count,
                           std::size_t max_size, std::chrono::microseconds pause, std::uint32_t every,
                           std::chrono::milliseconds timeout, std::atomic<std::uint64_t>& timeouts,
                           const std::atomic<bool>& stop, std::atomic<std::uint32_t>* progress) {
  return std::thread([=, &timeouts, &stop] {
    auto node = Node::open(node_options(ns)).value();
    auto t = node.topic(topic, OpenMode::open).value();
    auto pub = t.publisher().value();
    std::mt19937 rng(id);
    for (std::uint32_t i = 0; i < count && !stop.load(); ++i) {
      const std::string m = text_message(id, i, 20 + rng() % (max_size - 19));
      const auto bytes = std::as_bytes(std::span(m.data(), m.size()));
      while (pub.publish(bytes, timeout) != SendStatus::ok) {
        ++timeouts;
        if (stop.load()) return;
      }
      if (progress != nullptr) progress->store(i + 1);
      if (every != 0 && pause.count() > 0 && (i + 1) % every == 0) std::this_thread::sleep_for(pause);
    }
  });
}

}  // namespace colo::test
