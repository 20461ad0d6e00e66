#include "app.hpp"

#include <unistd.h>  // access, readlink

#include <cmath>    // isfinite
#include <cstdio>   // snprintf
#include <cstdlib>  // getenv, realpath, free, strtod
#include <iostream>

#include "colo/internal/text.hpp"  // escaped: what was typed, in a message

namespace colo::cli {

int fail(const std::string& message) {
  std::cerr << "colo: " << message << '\n';
  return kExitFailure;
}

int fail(const Error& error) { return fail(error.message); }

std::string shown_name(const char* argv0, const std::string& front) {
  const std::string given = argv0 != nullptr ? argv0 : "";
  if (given == front) return front;
  const std::size_t slash = given.rfind('/');
  return slash == std::string::npos ? given : given.substr(slash + 1);
}

int parse_and_run(CLI::App& app, int argc, char** argv, const int& exit_code, const std::string& help_command) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "colo: " << e.what() << "\n(run `" << help_command << " --help` for usage)\n";
    return kExitUsage;
  }
  return exit_code;
}

namespace {
// A bound as a person writes it: "0.01", "60", "1000000000".
std::string bound_text(double value) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.15g", value);
  return buf;
}
}  // namespace

CLI::Validator number_in(double min, double max, const std::string& unit) {
  const std::string range = bound_text(min) + " to " + bound_text(max) + (unit.empty() ? "" : " " + unit);
  return CLI::Validator(
      [min, max, range](std::string& text) -> std::string {
        const std::string shown = "'" + internal::escaped(text, 40) + "'";
        const char* begin = text.c_str();
        char* end = nullptr;
        const double value = std::strtod(begin, &end);
        if (text.empty() || end != begin + text.size() || !std::isfinite(value))
          return shown + " is not a number (expected " + range + ")";
        if (value < min || value > max) return shown + " is out of range (expected " + range + ")";
        return {};
      },
      "NUMBER in [" + bound_text(min) + ", " + bound_text(max) + "]", "number_in");
}

std::string own_directory() {
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return {};
  const std::string exe(self, static_cast<std::size_t>(n));
  return exe.substr(0, exe.rfind('/') + 1);
}

std::string find_program(const std::string& name, const char* env_var, const std::vector<std::string>& build_tree_dirs) {
  if (env_var != nullptr)
    if (const char* given = std::getenv(env_var); given != nullptr && *given != '\0') return given;
  auto executable = [](const std::string& path) { return ::access(path.c_str(), X_OK) == 0; };
  if (const std::string dir = own_directory(); !dir.empty()) {
    std::vector<std::string> candidates = {dir + name};
    for (const auto& sub : build_tree_dirs) candidates.push_back(dir + sub + name);
    for (const std::string& candidate : candidates)
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
