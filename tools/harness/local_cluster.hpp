// tools/harness/local_cluster.hpp — several colod on this machine, each with
// its own scratch namespace standing for a host, all peers of each other over
// 127.0.0.1: what `colo demo` (its federation part) and `colo bench
// cluster-lock` need to run colo across "hosts" without a second machine.
//
// Each colod runs with a config written into a private temporary directory
// (also its control socket and its log), heartbeat 100 ms. stop() (and the
// destructor) sends SIGTERM, waits, SIGKILLs what is left, and removes the
// namespaces' segments and the directory.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "processes.hpp"  // ScratchNamespace
#include "colo/error.hpp"

namespace colo::cli {

// The colod program (find_program: $COLOD_BIN, beside this program, in
// ../../bridge/ of a build tree, or on $PATH); "" if none.
std::string find_colod();

class LocalCluster {
 public:
  struct Host {
    std::string name;     // node name: alpha, beta, ...
    int port = 0;         // listen port on 127.0.0.1
    std::string config, control, log;  // files in the cluster's directory
    std::unique_ptr<ScratchNamespace> scratch;
    pid_t pid = 0;        // colod; 0 when not running
    const std::string& ns() const { return scratch->ns(); }
  };

  // Starts one colod per name (namespaces `<prefix><name><pid>`), with
  // `objects_toml` ([[topic]] and [[queue]] tables) in every config, and
  // waits until every colod reports every peer connected.
  Result<void> start(const std::string& colod, const std::vector<std::string>& names, const std::string& prefix,
                     const std::string& objects_toml, double timeout_s);

  std::vector<Host>& hosts() { return hosts_; }
  Host& host(std::size_t i) { return hosts_.at(i); }

  void kill(std::size_t i, int signal);    // and reaps it if the signal ends it
  Result<void> restart(std::size_t i);     // a killed colod started again (same config)
  bool all_connected(double timeout_s);    // waits until every colod sees every peer
  std::string log_tail(std::size_t i, int lines) const;

  // Stops every colod and removes the namespaces and files; returns the
  // shared memory segments it could not remove.
  std::vector<std::string> stop();

  LocalCluster() = default;
  LocalCluster(const LocalCluster&) = delete;
  LocalCluster& operator=(const LocalCluster&) = delete;
  ~LocalCluster() { (void)stop(); }

 private:
  Result<void> spawn(Host& h);
  std::string colod_, dir_;
  std::vector<Host> hosts_;
};

}  // namespace colo::cli
