#include "log.hpp"

#include <cstdio>
#include <ctime>

namespace colo::bridge {

void Log::write(LogLevel level, const char* format, ...) const {
  if (!enabled(level)) return;
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  tm utc{};
  ::gmtime_r(&now.tv_sec, &utc);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &utc);
  char text[2048];
  va_list args;
  va_start(args, format);
  std::vsnprintf(text, sizeof text, format, args);
  va_end(args);
  // One fprintf per line, so lines of concurrent daemons sharing a terminal do not interleave.
  std::fprintf(stderr, "%s.%03ldZ colod[%s] %s: %s\n", stamp, now.tv_nsec / 1'000'000, node_.c_str(),
               log_level_name(level), text);
}

}  // namespace colo::bridge
