// tests/fuzz/fuzz_daemon.hpp — a started colod (bridge::Daemon) for the
// targets that feed it what peers and control clients send.
//
// It is "alpha" in a namespace of its own, listening on an ipc:// socket,
// with one peer "beta" (its endpoint is never served: the link just stays
// down), and one of each kind of cluster object: topic t (block), topic l
// (lossy), queue q (home alpha), queue r (home beta). Logs only errors.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "daemon.hpp"
#include "fuzz_support.hpp"

namespace colo::fuzz {

// Starts a daemon; `name` tells this one's files from another's of the
// same process. Aborts if it cannot start (the harness failed).
inline std::unique_ptr<bridge::Daemon> start_daemon(const std::string& name) {
  const std::string dir = private_dir() + "/" + name;
  ::mkdir(dir.c_str(), 0700);
  ::mkdir((dir + "/run").c_str(), 0700);
  const std::string ns = "fz" + std::to_string(::getpid()) + "-" + name;
  const std::string text =
      "[node]\nname = \"alpha\"\nnamespace = \"" + ns + "\"\nlisten = \"ipc://" + dir + "/alpha.sock\"\n"
      "[control]\nsocket = \"" + dir + "/run/colod.sock\"\n"
      "[limits]\ncredit = 16\n"
      "[log]\nlevel = \"error\"\n"
      "[[peer]]\nname = \"beta\"\nendpoint = \"ipc://" + dir + "/beta.sock\"\n"
      "[[topic]]\nname = \"t\"\ncapacity = 65536\nmax_message = 4096\n"
      "[[topic]]\nname = \"l\"\ncapacity = 65536\nmax_message = 4096\nbackpressure = \"lossy\"\n"
      "[[queue]]\nname = \"q\"\nhome = \"alpha\"\ncapacity = 65536\nmax_message = 4096\n"
      "[[queue]]\nname = \"r\"\nhome = \"beta\"\ncapacity = 65536\nmax_message = 4096\n";
  const std::string path = dir + "/colod.toml";
  write_file(path, {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()});
  auto config = bridge::load_config(path);
  if (!config) {
    std::fprintf(stderr, "colo fuzz: the daemon's config: %s\n", config.error().message.c_str());
    std::abort();
  }
  auto daemon = std::make_unique<bridge::Daemon>(std::move(config).value());
  if (auto started = daemon->start(); !started) {
    std::fprintf(stderr, "colo fuzz: the daemon did not start: %s\n", started.error().message.c_str());
    std::abort();
  }
  return daemon;
}

}  // namespace colo::fuzz
