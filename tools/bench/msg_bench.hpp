// tools/bench/msg_bench.hpp — the message-passing benchmark harness: runs
// every transport (transport.hpp) through the same cells and reports
// throughput and one-way latency next to the machine they ran on.
//
// Used by `colo bench queue|topic` (queue_topic.cpp): register the
// options with add_msg_bench_options(), then resolve_msg_bench_options() and
// run_msg_bench() with colo's factory (colo_transports.cpp) in front of
// baseline_transports(), `subject` set to its name and the goals set. `colo
// bench bridge` (bridge.cpp) runs the same harness over two
// colod daemons against ZeroMQ over TCP, with its own defaults and goals.
//
// A cell is one transport x pattern x message size (x reader mode for
// latency). Each cell forks its senders and receivers, which open their ends
// (Sender/Receiver), warm up until every receiver has heard from every
// sender, then run from a common start time t0 fixed by the parent:
// - throughput: senders send as fast as the transport takes messages for
//   --seconds (or --messages); msg/s counts what receivers got, from t0 to
//   the last message received.
// - latency: senders send at a fixed rate below saturation, message i at
//   t0 + i/rate, carrying that INTENDED time; the receiver records
//   receive time - intended time (CLOCK_MONOTONIC), so a stalled sender or
//   channel shows up in the figures instead of delaying the schedule
//   (coordinated omission). Readers either busy-poll (receive with kNoWait
//   in a loop) or block (receive with a timeout).
// Every payload byte is written by the sender and read by the receiver,
// which checks a sum over the whole message; a corrupt, missing or extra
// message fails the cell.
//
// Processes are not pinned by default: a cell has up to fan+1 processes (and
// ZeroMQ adds an I/O thread to each) on what may be 2 CPUs, so pinning would
// only choose which of them share a CPU. --pin does it round-robin for runs on
// bigger machines. The report prints the load average before and after, since
// other work on the machine moves every figure (busy-poll latency most).
//
// Nothing hangs: every wait of the parent is bounded, a stage that overruns
// its bound (or --cell-timeout) gets its processes SIGKILLed and the cell is
// reported as failed with the stage and the reason; the run goes on.
#pragma once

#include <CLI/CLI.hpp>          // option registration shared by the driver and `colo bench`
#include <nlohmann/json.hpp>    // ReportContext::json

#include <cstddef>
#include <cstdint>
#include <functional>  // MsgBenchOptions::context
#include <memory>
#include <string>
#include <vector>

#include "transport.hpp"

namespace colo::bench {

enum class ReaderMode {
  busy,      // non-blocking receive in a spin loop
  blocking,  // receive that waits in the kernel or the library (with a timeout)
};

enum class Measure { throughput, latency };

// A goal: a ratio of two figures of the same run. `subject` (a transport;
// "" = MsgBenchOptions::subject) against `baseline` (a transport, or
// "pingpong" for the cache-line ping-pong floor of busy-reader latency),
// both in the cell of `pattern` and `size`: msg/s (throughput) or p50
// (latency, with that reader). Not measured when a cell did not run or failed.
struct GoalSpec {
  std::string text;      // how the report states it: "64 B 1->1 throughput at least 10x zmq-ipc-pushpull's"
  Measure measure = Measure::throughput;
  std::size_t size = 64;
  ReaderMode reader = ReaderMode::blocking;  // latency goals only
  std::string baseline;  // transport compared with, or "pingpong"
  double target = 1;     // subject / baseline
  bool at_least = true;  // met if the ratio >= target (else <= target)
  std::string subject;   // "": the run's subject
  Pattern pattern = Pattern::one_to_one;
};

// The cache-line ping-pong between two processes of this machine: a round
// trip of one 64-byte line and back; half of it is the one-way floor of a
// busy-polling reader.
struct PingPong {
  std::uint64_t round_trips = 0;
  std::uint64_t one_way_p50_ns = 0, one_way_p99_ns = 0;
};
PingPong measure_pingpong(std::uint64_t round_trips = 200'000);

// What the caller adds to the report, gathered after the cells ran (the
// bridge bench: its daemons, their counters and exit statuses).
struct ReportContext {
  std::vector<std::string> lines;  // printed under the header
  nlohmann::json json;             // under "setup" in JSON (null: left out)
  bool failed = false;             // makes the exit status 1 (a daemon died, counted losses)
};

struct MsgBenchOptions {
  std::string title = "colo bench";     // names the run in tables, progress and errors
  std::string headline = "message passing between processes";  // after the title, first line
  std::string json_name = "msg";        // "benchmark" in JSON
  // The transport the run is about ("colo-queue"): its goals against the
  // baselines are printed at the end (and under "goals" in JSON). "": none.
  std::string subject;
  std::vector<GoalSpec> goals;
  // Called once after the last cell, before the report. Unset: nothing added.
  std::function<ReportContext()> context;
  std::vector<std::string> transports;  // names to run, in registry order; empty: all
  std::string reference = "zmq-ipc-pushpull";  // ratios are this transport's figure / the reference's
  std::vector<std::size_t> sizes = {8, 64, 1024, 64 * 1024, 1024 * 1024};
  std::vector<Measure> measures = {Measure::throughput, Measure::latency};
  int fan = 4;  // "many" in n->1 and 1->n

  // throughput
  std::vector<Pattern> patterns = {Pattern::one_to_one, Pattern::many_to_one, Pattern::one_to_many,
                                   Pattern::many_to_many};
  double seconds = 0.3;        // per cell
  std::uint64_t messages = 0;  // > 0: this many per cell instead of --seconds
  ReaderMode throughput_reader = ReaderMode::blocking;

  // latency
  std::vector<Pattern> latency_patterns = {Pattern::one_to_one};
  std::vector<ReaderMode> readers = {ReaderMode::busy, ReaderMode::blocking};
  double latency_seconds = 0.5;     // per cell, at least min_samples messages
  std::uint64_t min_samples = 1000;
  double rate = 100'000;            // msg/s ...
  double rate_bytes = 500e6;        // ... but at most this many bytes/s (big messages go slower)

  std::size_t buffer_bytes = 4 << 20;  // depth = clamp(buffer_bytes / size, 16, 4096) messages
  std::size_t batch = 64;              // batch transports: messages per loan, and readers take up to 4x
  int load = 0;                        // busy-looping processes running alongside every cell
  bool pingpong = true;                // measure the ping-pong floor first
  double cell_timeout = 30;            // watchdog, seconds, on top of the cell's run time
  bool pin = false;                    // pin the processes of a cell to CPUs, round-robin
  bool copy_only = false;              // never use the zero-copy paths
  bool json = false;
  std::string json_out;                // also write the JSON here
  bool verbose = false;                // one stderr line per cell
};

// The command-line form: raw texts, parsed by resolve_msg_bench_options().
struct MsgBenchCli {
  MsgBenchOptions options;
  std::string transports, sizes, measures, patterns, latency_patterns, readers, throughput_reader;
  std::string rate_bytes, buffer_bytes;
  bool quick = false;
  bool no_pingpong = false;
  // What --quick sets, for each option not given explicitly (0 or "": left
  // as it is). Set before add_msg_bench_options, which describes it in --help.
  struct Quick {
    std::string sizes = "64,64K";
    double seconds = 0.15;
    std::uint64_t messages = 0;
    double latency_seconds = 0.2;
    std::uint64_t min_samples = 500;
    double rate = 0;
  } quick_profile;
  // Set by add_msg_bench_options: which options were given (for --quick).
  CLI::Option* sizes_opt = nullptr;
  CLI::Option* patterns_opt = nullptr;
  CLI::Option* seconds_opt = nullptr;
  CLI::Option* messages_opt = nullptr;
  CLI::Option* latency_seconds_opt = nullptr;
  CLI::Option* min_samples_opt = nullptr;
  CLI::Option* rate_opt = nullptr;
  CLI::Option* reference_opt = nullptr;
};

// Registers the options; their --help shows the defaults in `cli.options`
// and `cli.quick_profile` as they are when this is called.
void add_msg_bench_options(CLI::App& app, MsgBenchCli& cli);

// Applies --quick, parses the lists and checks them against `transports`.
// Returns "" or what is wrong (for a usage error, exit status 2).
std::string resolve_msg_bench_options(MsgBenchCli& cli,
                                      const std::vector<std::unique_ptr<TransportFactory>>& transports);

// Runs the matrix and prints tables (or JSON) on stdout. Returns 0 if every
// cell ran or was skipped for a stated reason, 1 if any failed.
int run_msg_bench(const MsgBenchOptions& options, std::vector<std::unique_ptr<TransportFactory>>& transports);

}  // namespace colo::bench
