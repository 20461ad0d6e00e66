#include "format.hpp"

#include <sys/utsname.h>  // kernel release for machine_json
#include <unistd.h>       // sysconf

#include <algorithm>
#include <ctime>
#include <fstream>

namespace colo::cli {

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

std::string with_commas(std::uint64_t value) {
  std::string digits = std::to_string(value);
  std::string out;
  const std::size_t n = digits.size();
  for (std::size_t i = 0; i < n; ++i) {
    if (i > 0 && (n - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string human_rate(double per_second) {
  char buf[32];
  if (per_second >= 1e9) std::snprintf(buf, sizeof buf, "%.2f G", per_second / 1e9);
  else if (per_second >= 1e6) std::snprintf(buf, sizeof buf, "%.2f M", per_second / 1e6);
  else if (per_second >= 1e3) std::snprintf(buf, sizeof buf, "%.1f k", per_second / 1e3);
  else std::snprintf(buf, sizeof buf, "%.0f", per_second);
  return buf;
}

std::string seconds_text(double seconds) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.3f", seconds);
  std::string out = buf;
  // 3 decimals at most, without trailing zeros: "2", "0.25", "1.235".
  if (out.find('.') != std::string::npos) {
    while (out.back() == '0') out.pop_back();
    if (out.back() == '.') out.pop_back();
  }
  return out + " s";
}

Spread spread_of(std::vector<double> samples) {
  if (samples.empty()) return {};
  std::sort(samples.begin(), samples.end());
  const std::size_t n = samples.size();
  const double median = n % 2 == 1 ? samples[n / 2] : (samples[n / 2 - 1] + samples[n / 2]) / 2;
  return {median, samples.front(), samples.back()};
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

}  // namespace colo::cli
