// tools/common/app.hpp — what the three programs (colo, colo-bench,
// colo-demo) share on their command line: exit codes, error messages, the
// version, how a parse ends, and where the other programs are.
#pragma once

#include <CLI/CLI.hpp>  // argument parsing, --help with defaults

#include <string>
#include <vector>

#include "colo/error.hpp"

namespace colo::cli {

// Exit codes (sysexits-style where one fits).
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;     // the operation failed; message on stderr
inline constexpr int kExitUsage = 2;       // bad command line
inline constexpr int kExitTimeout = 75;    // EX_TEMPFAIL: `colo lock --timeout` ran out

// The project's version (meson.build), as every program's --version prints it.
inline constexpr const char* kVersion = COLO_VERSION;

// Prints "colo: <message>" to stderr and returns kExitFailure.
int fail(const std::string& message);
int fail(const Error& error);

// The name a program shows in its usage lines: `front` ("colo bench") when
// `colo` started it under that name (argv[0], see exec_program), else the
// file name it was started by ("colo-bench").
std::string shown_name(const char* argv0, const std::string& front);

// Parses the command line into `app` and so runs the callback of the
// command given. --help and --version print and return 0; a bad command line
// prints "colo: <what>" and "(run `<help_command> --help` for usage)" on
// stderr and returns kExitUsage. Otherwise returns `exit_code` as the
// callback left it.
int parse_and_run(CLI::App& app, int argc, char** argv, const int& exit_code, const std::string& help_command);

// A check for an option that takes a real number (seconds, a rate): the
// text must be a finite number from `min` to `max`. CLI11's own Range lets
// NaN through (every comparison with NaN is false) and shows a refused
// 1e300 as 300 digits; this one quotes what was typed, and the bounds as
// they read ("0.01", "60"). `unit`: appended to the bounds ("seconds").
CLI::Validator number_in(double min, double max, const std::string& unit);

// The most seconds any timeout or interval option takes: about 31 years,
// far below where nanoseconds overflow 64 bits (292 years).
inline constexpr double kMaxSeconds = 1e9;

// Where another colo program is: $<env_var> if one is named, set and
// non-empty (taken as given); else the file of that name beside this
// program (installed together in one bindir), then in each of
// `build_tree_dirs` relative to this program's directory (a Meson build
// tree: build/tools/colo, build/tools/bench/colo-bench, build/bridge/colod),
// if executable; else the first executable match on $PATH. "" if none.
std::string find_program(const std::string& name, const char* env_var, const std::vector<std::string>& build_tree_dirs);

// The directory of the running program, with a trailing '/' ("" if unknown).
std::string own_directory();

}  // namespace colo::cli
