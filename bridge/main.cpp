// colod: the per-host bridge daemon. See daemon.hpp for what it does and
// docs/colod.md for how to run it.
//
//   colod --config FILE            run in the foreground (logs on stderr)
//   colod --check-config FILE      validate a config and exit (0: valid)
//   colod --keygen [--out PREFIX]  make a CURVE key pair (PREFIX.key 0600 + PREFIX.pub, or print both)
//
// Exit status: 0 clean stop (SIGTERM/SIGINT), 1 failure, 2 usage or bad config.
#include <CLI/CLI.hpp>
#include <sys/stat.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>

#include "config.hpp"
#include "daemon.hpp"

// The project's version (meson.build's), for --version and colod(8).
#ifndef COLO_VERSION
#define COLO_VERSION "0.1.0"
#endif

namespace {

std::atomic<bool> g_stop{false};
extern "C" void on_stop_signal(int) { g_stop.store(true); }

int keygen(const std::string& prefix) {
  auto pair = colo::bridge::generate_keypair();
  if (!pair) {
    std::cerr << "colod: " << pair.error().message << '\n';
    return 1;
  }
  if (prefix.empty()) {
    std::cout << "public_key = \"" << pair->public_key << "\"\nsecret_key = \"" << pair->secret_key << "\"\n";
    return 0;
  }
  const std::string secret_path = prefix + ".key", public_path = prefix + ".pub";
  const mode_t old = ::umask(077);  // the secret key file is born 0600
  std::ofstream secret(secret_path, std::ios::trunc);
  secret << pair->secret_key << '\n';
  secret.close();
  ::umask(old);
  std::ofstream pub(public_path, std::ios::trunc);
  pub << pair->public_key << '\n';
  pub.close();
  if (!secret || !pub) {
    std::cerr << "colod: cannot write " << secret_path << " / " << public_path << '\n';
    return 1;
  }
  std::cout << "wrote " << secret_path << " (secret, mode 0600) and " << public_path << ": public key "
            << pair->public_key << '\n';
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"colod: the colo bridge daemon, one per host and namespace: federates cluster topics and queues "
               "with the colod of other hosts over ZeroMQ (CURVE when keys are configured) and serves cluster locks",
               "colod"};
  std::string config_path, check_path, out_prefix;
  bool keygen_flag = false;
  auto* config_opt =
      app.add_option("--config", config_path, "run with this TOML config, in the foreground (logs on stderr)")
          ->type_name("FILE");
  auto* check_opt =
      app.add_option("--check-config", check_path, "validate this config file and exit")->type_name("FILE");
  auto* keygen_opt = app.add_flag("--keygen", keygen_flag, "make a CURVE key pair and exit");
  app.add_option("--out", out_prefix,
                 "with --keygen: write PREFIX.key (mode 0600) and PREFIX.pub instead of printing both")
      ->type_name("PREFIX")
      ->needs(keygen_opt);
  app.set_version_flag("--version", std::string("colod ") + COLO_VERSION);
  config_opt->excludes(check_opt)->excludes(keygen_opt);
  check_opt->excludes(keygen_opt);
  app.footer(
      "Signals: SIGTERM or SIGINT stop it cleanly.\n"
      "Exit status: 0 stopped cleanly or config valid, 1 failure, 2 usage error or invalid config.\n"
      "Examples:\n"
      "  colod --check-config /etc/colo/colod.toml\n"
      "  colod --config /etc/colo/colod.toml\n"
      "  colod --keygen --out /etc/colo/host-a");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (keygen_flag) return keygen(out_prefix);
  if (!check_path.empty()) {
    auto config = colo::bridge::load_config(check_path);
    if (!config) {
      std::cerr << "colod: " << config.error().message << '\n';
      return 2;
    }
    std::cout << check_path << ": valid (node " << config->node_name << ", namespace " << config->ns << ", "
              << config->peers.size() << " peer(s), " << config->topics.size() << " topic(s), "
              << config->queues.size() << " queue(s)"
              << (config->links.empty() ? std::string()
                                        : ", " + std::to_string(config->kafka_clusters.size()) + " kafka cluster(s), " +
                                              std::to_string(config->rabbitmq_servers.size()) + " rabbitmq server(s), " +
                                              std::to_string(config->links.size()) + " link(s)")
              << ")\n";
    return 0;
  }
  if (config_path.empty()) {
    std::cerr << "colod: give --config FILE (or --check-config FILE, or --keygen); see --help\n";
    return 2;
  }
  auto config = colo::bridge::load_config(config_path);
  if (!config) {
    std::cerr << "colod: " << config.error().message << '\n';
    return 2;
  }
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  ::sigemptyset(&sa.sa_mask);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  colo::bridge::Daemon daemon(std::move(config).value());
  if (auto started = daemon.start(); !started) {
    std::cerr << "colod: " << started.error().message << '\n';
    return 1;
  }
  return daemon.run(g_stop);
}
