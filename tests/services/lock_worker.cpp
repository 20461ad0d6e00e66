// tests/services/lock_worker.cpp — a process of one "host" of the services
// tests: uses a cluster-scope lock through libcolo, as an application would.
//
//   colo-test-lock-worker MODE --ns NS --name LOCK --host H [options]
//
//   increment --count N --counter FILE --log FILE
//       N times: acquire; read FILE's number, write it + 1; append
//       "TOKEN HOST PID" to the log (O_APPEND); release. A grant whose lease
//       is already lost writes nothing and is retried.
//   hold [--hold-ms MS]
//       acquire, print "acquired TOKEN OWNER_DIED(0|1)", hold until SIGTERM or
//       MS; on lease loss print "lease-lost" (callback). Then release,
//       print "released".
//   try --timeout-ms MS
//       print "acquired TOKEN" (and release) or "busy".
//   table-increment --keys K1,K2,... --count N --counter-dir DIR --log FILE [--offset I]
//       with the cluster-scope lock table LOCK (created if missing, capacity
//       64): N times, key K[(i + I) mod number of keys]: acquire it; read
//       DIR/KEY's number, write it + 1; append "KEY TOKEN HOST PID" to the
//       log; release. A grant whose lease is already lost is retried.
//   fenced --resource FILE --for-ms MS [--unchecked-after-loss]
//       for MS: acquire, then every 5 ms while !lease_lost(): fenced write
//       of the token to FILE; on loss print "lease-lost" and, with
//       --unchecked-after-loss, make one write anyway (the resource must
//       refuse it); release and acquire again.
//
// Each printed line is flushed. A fenced write: under flock(FILE), accepted
// iff TOKEN >= the highest token the resource has seen (FILE.max); every
// attempt appends "TOKEN HOST accepted|rejected" to FILE.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>
#include <algorithm>
#include <thread>

#include "colo/node.hpp"

namespace {

std::atomic<bool> g_stop{false};
void on_term(int) { g_stop = true; }

struct Options {
  std::string mode, ns, name, host, counter, log, resource, keys, counter_dir;
  long count = 0, hold_ms = -1, timeout_ms = 0, for_ms = 0, offset = 0;
  bool unchecked_after_loss = false;
};

[[noreturn]] void die(const std::string& why) {
  std::fprintf(stderr, "lock-worker: %s\n", why.c_str());
  std::exit(2);
}

void say(const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

long read_number(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return 0;
  long v = 0;
  if (std::fscanf(f, "%ld", &v) != 1) v = 0;
  std::fclose(f);
  return v;
}

void write_number(const std::string& path, long v) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) die("cannot write " + path);
  std::fprintf(f, "%ld\n", v);
  std::fclose(f);
}

void append_line(const std::string& path, const std::string& line) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd < 0) die("cannot open " + path);
  const std::string text = line + "\n";
  if (::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) die("short write to " + path);
  ::close(fd);
}

// The fencing-checking resource (see the header).
bool fenced_write(const std::string& path, std::uint64_t token, const std::string& host) {
  const int fd = ::open((path + ".flock").c_str(), O_RDWR | O_CREAT, 0644);
  if (fd < 0 || ::flock(fd, LOCK_EX) != 0) die("cannot lock " + path);
  const auto highest = static_cast<std::uint64_t>(read_number(path + ".max"));
  const bool accepted = token >= highest;
  if (accepted) write_number(path + ".max", static_cast<long>(token));
  append_line(path, std::to_string(token) + " " + host + (accepted ? " accepted" : " rejected"));
  ::close(fd);
  return accepted;
}

colo::LockGuard acquire(colo::Lock& lock) {
  auto guard = lock.acquire();
  if (!guard) die("acquire: " + guard.error().message);
  return std::move(guard).value();
}

int run_table_increment(colo::Node& node, const Options& o) {
  auto table = node.lock_table(o.name, colo::OpenMode::create_or_open, {.scope = colo::Scope::cluster, .capacity = 64});
  if (!table) die(table.error().message);
  std::vector<std::string> keys;
  for (std::size_t start = 0; start <= o.keys.size();) {
    const std::size_t end = std::min(o.keys.find(',', start), o.keys.size());
    keys.push_back(o.keys.substr(start, end - start));
    start = end + 1;
  }
  for (long done = 0; done < o.count;) {
    const std::string& key = keys[static_cast<std::size_t>(done + o.offset) % keys.size()];
    auto guard = table->acquire(key);
    if (!guard) die("acquire " + key + ": " + guard.error().message);
    if (guard->lease_lost()) continue;  // granted on a hold that is already gone: not ours to use
    const std::string counter = o.counter_dir + "/" + key;
    write_number(counter, read_number(counter) + 1);
    append_line(o.log, key + " " + std::to_string(guard->fencing_token()) + " " + o.host + " " + std::to_string(::getpid()));
    ++done;
  }
  say("done " + std::to_string(o.count));
  return 0;
}

int run(const Options& o) {
  colo::NodeOptions node_options;
  node_options.ns = o.ns;
  auto node = colo::Node::open(node_options);
  if (!node) die(node.error().message);
  if (o.mode == "table-increment") return run_table_increment(*node, o);
  auto lock = node->lock(o.name, colo::OpenMode::create_or_open, {.scope = colo::Scope::cluster});
  if (!lock) die(lock.error().message);

  if (o.mode == "increment") {
    for (long done = 0; done < o.count;) {
      auto guard = acquire(*lock);
      if (guard.lease_lost()) continue;  // granted on a hold that is already gone: not ours to use
      write_number(o.counter, read_number(o.counter) + 1);
      append_line(o.log, std::to_string(guard.fencing_token()) + " " + o.host + " " + std::to_string(::getpid()));
      ++done;
    }
    say("done " + std::to_string(o.count));
    return 0;
  }
  if (o.mode == "hold") {
    auto guard = acquire(*lock);
    std::atomic<bool> lost{false};
    guard.on_lease_lost([&lost] {
      lost = true;
      say("lease-lost");
    });
    say("acquired " + std::to_string(guard.fencing_token()) + " " + (guard.owner_died() ? "1" : "0"));
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(o.hold_ms < 0 ? 3'600'000 : o.hold_ms);
    while (!g_stop && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    guard.unlock();
    say("released");
    return 0;
  }
  if (o.mode == "try") {
    auto guard = lock->try_acquire_for(std::chrono::milliseconds(o.timeout_ms));
    say(guard ? "acquired " + std::to_string(guard->fencing_token()) : std::string("busy"));
    return 0;
  }
  if (o.mode == "fenced") {
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(o.for_ms);
    while (!g_stop && std::chrono::steady_clock::now() < until) {
      auto guard = acquire(*lock);
      const std::uint64_t token = guard.fencing_token();
      while (!g_stop && std::chrono::steady_clock::now() < until && !guard.lease_lost()) {
        fenced_write(o.resource, token, o.host);
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      if (guard.lease_lost()) {
        say("lease-lost " + std::to_string(token));
        if (o.unchecked_after_loss) {
          // Wait until someone else may hold it, then write anyway: what a
          // process that ignores lease_lost() would do. Fencing must refuse it.
          std::this_thread::sleep_for(std::chrono::milliseconds(o.hold_ms < 0 ? 0 : o.hold_ms));
          say(fenced_write(o.resource, token, o.host) ? "unchecked-accepted" : "unchecked-rejected");
        }
      }
    }
    say("done");
    return 0;
  }
  die("unknown mode " + o.mode);
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGTERM, on_term);
  std::signal(SIGINT, on_term);
  if (argc < 2) die("usage: colo-test-lock-worker MODE --ns NS --name LOCK --host H [options]");
  Options o;
  o.mode = argv[1];
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) die(a + " needs a value");
      return argv[++i];
    };
    if (a == "--ns") o.ns = value();
    else if (a == "--name") o.name = value();
    else if (a == "--host") o.host = value();
    else if (a == "--counter") o.counter = value();
    else if (a == "--log") o.log = value();
    else if (a == "--resource") o.resource = value();
    else if (a == "--count") o.count = std::stol(value());
    else if (a == "--hold-ms") o.hold_ms = std::stol(value());
    else if (a == "--timeout-ms") o.timeout_ms = std::stol(value());
    else if (a == "--for-ms") o.for_ms = std::stol(value());
    else if (a == "--unchecked-after-loss") o.unchecked_after_loss = true;
    else if (a == "--keys") o.keys = value();
    else if (a == "--counter-dir") o.counter_dir = value();
    else if (a == "--offset") o.offset = std::stol(value());
    else die("unknown option " + a);
  }
  return run(o);
}
