#include "cli.hpp"

#include <sys/utsname.h>  // kernel release for machine_json
#include <unistd.h>       // sysconf, access, readlink

#include <cstdlib>  // getenv, realpath, free

#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>

namespace colo::cli {

int fail(const std::string& message) {
  std::cerr << "colo: " << message << '\n';
  return kExitFailure;
}

int fail(const Error& error) { return fail(error.message); }

Result<Node> open_node(const Context& ctx) {
  NodeOptions options;
  options.ns = ctx.ns;
  return Node::open(options);
}

std::string human_bytes(std::uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, unit == 0 ? "%.0f %s" : "%.1f %s", value, units[unit]);
  return buf;
}

std::string human_duration_ns(double ns) {
  char buf[32];
  if (ns < 1e3) std::snprintf(buf, sizeof buf, "%.0f ns", ns);
  else if (ns < 1e6) std::snprintf(buf, sizeof buf, "%.1f us", ns / 1e3);
  else if (ns < 1e9) std::snprintf(buf, sizeof buf, "%.1f ms", ns / 1e6);
  else std::snprintf(buf, sizeof buf, "%.1f s", ns / 1e9);
  return buf;
}

std::string format_realtime(std::uint64_t realtime_ns) {
  if (realtime_ns == 0) return "-";
  const std::time_t secs = static_cast<std::time_t>(realtime_ns / 1'000'000'000u);
  std::tm tm{};
  ::localtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  return buf;
}

nlohmann::json to_json(const ObjectInfo& info) {
  nlohmann::json j = {
      {"name", info.name},
      {"kind", info.kind ? to_string(*info.kind) : ""},
      {"scope", scope_name(info.scope)},
      {"segment", "/" + info.shm_name},
      {"size_bytes", info.size_bytes},
      {"state", state_text(info)},
      {"creator", {{"pid", info.creator_pid}, {"alive", info.creator_alive}}},
      {"created", format_realtime(info.created_realtime_ns)},
  };
  if (info.lock) {
    const LockStats& s = *info.lock;
    nlohmann::json holder = nullptr;
    if (s.holder.pid != 0)
      holder = {{"pid", s.holder.pid},
                {"tid", s.holder.tid},
                {"held_for_ns", static_cast<std::uint64_t>(s.holder.held_for_ns)},
                {"held_for_exact", s.holder.held_for_exact},
                {"alive", s.holder.alive}};
    j["lock"] = {
        {"fencing_epoch", s.fencing_epoch},
        {"grants", s.grants},
        {"contended_grants", s.contended_grants},
        {"recoveries", s.recoveries},
        {"timeouts", s.timeouts},
        {"hold_ns_mean", static_cast<std::uint64_t>(s.hold_ns_mean)},
        {"hold_samples", s.hold_samples},
        {"waiters", s.waiters},
        {"holder", holder},
    };
    if (s.cluster) {
      const ClusterLockStats& c = *s.cluster;
      j["lock"]["cluster"] = {{"lease_state", to_string(c.lease_state)},   {"epoch", c.epoch},
                              {"local_grants", c.local_grants}, {"valid_for_ms", c.valid_for_ms},
                              {"keeper_pid", c.keeper_pid},     {"keeper_alive", c.keeper_alive},
                              {"lease_losses", c.lease_losses}};
    }
  }
  if (info.channel) {
    const ChannelStats& c = *info.channel;
    nlohmann::json publishers = nlohmann::json::array();
    for (const auto& p : c.publishers)
      publishers.push_back({{"pid", p.pid}, {"alive", p.alive}, {"published", p.published}, {"bytes", p.bytes},
                            {"waits", p.waits}, {"abandoned", p.abandoned}});
    nlohmann::json readers = nlohmann::json::array();
    for (const auto& r : c.readers)
      readers.push_back({{"pid", r.pid}, {"alive", r.alive}, {"mode", to_string(r.mode)}, {"delivered", r.delivered},
                         {"bytes", r.bytes}, {"lag", r.lag}, {"missed", r.missed}, {"skipped_bad", r.skipped_bad},
                         {"redelivered", r.redelivered}, {"dead_lettered", r.dead_lettered}, {"waits", r.waits},
                         {"holding", r.holding}});
    j[to_string(c.kind)] = {
        {"capacity", c.capacity},     {"max_message", c.max_message},   {"acks", c.acks},
        {"max_deliveries", c.max_deliveries}, {"history", c.history},
        {"published", c.published},   {"retained", c.retained},         {"depth", c.depth},
        {"used_bytes", c.used_bytes}, {"dead_claims", c.dead_claims},   {"bad_records", c.bad_records},
        {"dead_readers", c.dead_readers}, {"dropped_unacked", c.dropped_unacked},
        {"publishers", publishers},   {"readers", readers},
    };
  }
  return j;
}

namespace {
std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) {
      auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  return "unknown";
}
}  // namespace

nlohmann::json machine_json() {
  utsname u{};
  ::uname(&u);
  return {{"nproc", ::sysconf(_SC_NPROCESSORS_ONLN)}, {"cpu_model", cpu_model()}, {"kernel", u.release}};
}

std::string machine_line() {
  const auto m = machine_json();
  return "machine: " + std::to_string(m["nproc"].get<long>()) + " CPUs, " + m["cpu_model"].get<std::string>() +
         ", Linux " + m["kernel"].get<std::string>();
}

double load_average() {
  double one = -1;
  if (std::FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf", &one) != 1) one = -1;
    std::fclose(f);
  }
  return one;
}

std::string find_program(const std::string& name, const char* env_var) {
  if (const char* given = std::getenv(env_var); given != nullptr && *given != '\0') return given;
  auto executable = [](const std::string& path) { return ::access(path.c_str(), X_OK) == 0; };
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) {
    const std::string exe(self, static_cast<std::size_t>(n));
    const std::string dir = exe.substr(0, exe.rfind('/') + 1);
    for (const std::string& candidate : {dir + name, dir + "../bridge/" + name})
      if (executable(candidate)) {
        char* real = ::realpath(candidate.c_str(), nullptr);  // "build/bridge/colod", not "build/tools/../bridge/colod"
        const std::string out = real != nullptr ? real : candidate;
        std::free(real);
        return out;
      }
  }
  const char* path = std::getenv("PATH");
  std::string rest = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  for (std::size_t start = 0; start <= rest.size();) {
    std::size_t colon = rest.find(':', start);
    if (colon == std::string::npos) colon = rest.size();
    const std::string dir = colon > start ? rest.substr(start, colon - start) : ".";
    if (executable(dir + "/" + name)) return dir + "/" + name;
    start = colon + 1;
  }
  return {};
}

}  // namespace colo::cli
