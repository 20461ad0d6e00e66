// tools/common/format.hpp — how colo, colo-bench and colo-demo write numbers,
// times and the machine they ran on, so that their tables read alike.
#pragma once

#include <unistd.h>  // isatty

#include <nlohmann/json.hpp>  // machine_json

#include <cmath>    // ratio_text
#include <cstdint>
#include <cstdio>   // Progress
#include <string>
#include <vector>

namespace colo::cli {

std::string human_bytes(std::uint64_t bytes);           // 1536 -> "1.5 KiB"
std::string human_duration_ns(double ns);               // 1234 -> "1.2 us"
std::string format_realtime(std::uint64_t realtime_ns);  // local ISO-8601 time, seconds; 0 -> "-"
std::string with_commas(std::uint64_t value);           // 25000 -> "25,000"
std::string human_rate(double per_second);              // 12345678.9 -> "12.35 M", for rates
std::string seconds_text(double seconds);               // 2 -> "2 s", 0.25 -> "0.25 s", 1.23456 -> "1.235 s"

// A ratio for a table: "512x", "32.6x", "0.58x"; "-" when not a number.
inline std::string ratio_text(double r) {
  if (!std::isfinite(r)) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, r >= 100 ? "%.0fx" : r >= 10 ? "%.1fx" : "%.2fx", r);
  return buf;
}

// Median, min and max of a set of samples (all 0 when empty).
struct Spread {
  double median = 0;
  double min = 0;
  double max = 0;
};
Spread spread_of(std::vector<double> samples);

// The machine a figure was measured on: printed next to every benchmark.
nlohmann::json machine_json();  // nproc, CPU model, kernel
std::string machine_line();     // the same, one line for tables
double load_average();          // 1-minute load average, -1 if unknown

// One status line on stderr while a run goes on (only on a terminal),
// rewritten in place and erased at the end.
class Progress {
 public:
  explicit Progress(bool enabled) : enabled_(enabled && ::isatty(STDERR_FILENO) != 0) {}
  void show(const std::string& text) {
    if (!enabled_) return;
    std::fprintf(stderr, "\r\033[K%s", text.c_str());
    std::fflush(stderr);
  }
  ~Progress() {
    if (enabled_) std::fprintf(stderr, "\r\033[K");
  }
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

 private:
  bool enabled_;
};

}  // namespace colo::cli
