// Fuzz target: colod's TOML config, what `colod --config` and
// `colod --check-config` read.
// Feeds: the input as the whole config file to load_config (the code behind
// --check-config). Checks: no crash, no sanitizer report, no hang; a config
// it refuses gets one error that names the file ("PATH: ..." or
// "PATH:LINE: ..."). Seeds: the example config and small variants,
// tests/fuzz/corpus/config/.
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>

#include "config.hpp"
#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string path = colo::fuzz::private_dir() + "/colod.toml";
  colo::fuzz::write_file(path, std::span(data, size));
  const auto config = colo::bridge::load_config(path);
  if (!config && config.error().message.rfind(path, 0) != 0) std::abort();
  return 0;
}
