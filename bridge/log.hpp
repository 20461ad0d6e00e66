// bridge/log.hpp — colod's log: one line per event on stderr,
//   2026-11-27T01:02:03.456Z colod[alpha] info: peer beta connected
// at or above the configured level. configure() before any thread starts;
// write() may then be called from any thread (one stdio call per line).
#pragma once

#include <cstdarg>
#include <string>

#include "config.hpp"

namespace colo::bridge {

class Log {
 public:
  void configure(std::string node, LogLevel level) {
    node_ = std::move(node);
    level_ = level;
  }
  bool enabled(LogLevel level) const noexcept { return level >= level_; }
  __attribute__((format(printf, 3, 4))) void write(LogLevel level, const char* format, ...) const;

 private:
  std::string node_ = "-";
  LogLevel level_ = LogLevel::info;
};

}  // namespace colo::bridge
