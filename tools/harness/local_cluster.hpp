// tools/harness/local_cluster.hpp — several colod on this machine, each with
// its own scratch namespace standing for a host, all peers of each other over
// 127.0.0.1: what `colo demo` (its federation part), `colo bench bridge` and
// `colo bench cluster-lock` need to run colo across "hosts" without a second
// machine.
//
// Each colod runs with a config written into a private temporary directory
// (also its control socket and its log: $TMPDIR if short enough for a Unix
// socket path, else /tmp). The colod are children of this process (Children:
// they die with it, and are killed if the run is interrupted), started with
// stdin from /dev/null and stdout and stderr to their log. stop() (and the
// destructor) sends SIGTERM, waits, SIGKILLs what is left, and removes the
// namespaces' segments and the directory.
//
// Contract: used by one thread, the one that started it (colod's
// PR_SET_PDEATHSIG follows that thread). Other threads may use the
// namespaces meanwhile.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "colo/error.hpp"
#include "processes.hpp"  // Children, ScratchNamespace

namespace colo::cli {

// The colod program (find_program: $COLOD_BIN, beside this program, in
// ../../bridge/ of a build tree, or on $PATH); "" if none.
std::string find_colod();

class LocalCluster {
 public:
  // One host: its node name, and its namespace `<ns_prefix><pid of this process>`.
  // By default its colod listens on a free port of 127.0.0.1; a host in a
  // network namespace (netns.hpp) gives its address there, a fixed port and
  // the launcher that runs colod inside it (`ip netns exec NAME`).
  struct HostSpec {
    HostSpec(std::string host_name, std::string prefix) : name(std::move(host_name)), ns_prefix(std::move(prefix)) {}
    std::string name;
    std::string ns_prefix;
    std::string address = "127.0.0.1";
    int port = 0;                       // 0: a free port on 127.0.0.1
    std::vector<std::string> launcher;  // put before colod's command line
  };
  struct Settings {
    std::string colod;                                 // the program
    std::string limits_toml = "heartbeat_ms = 100\n";  // the lines of [limits]
    std::string extra_toml;  // appended to every config: [[topic]], [[queue]], [locks], [log] ...
    std::vector<std::string> objects;  // what colod creates in every namespace: removed even after Ctrl-C
    double start_timeout_s = 20;       // until every colod reports every peer connected
  };
  struct Host {
    std::string name;     // node name: alpha, beta, ...
    std::string address;  // where it listens, and where its peers reach it
    int port = 0;         // its listen port
    std::vector<std::string> launcher;  // HostSpec::launcher
    std::string config, control, log;  // files in the cluster's directory
    std::unique_ptr<ScratchNamespace> scratch;
    pid_t pid = 0;        // its colod; 0 when not running
    ChildExit exit;       // how its last colod ended, once it has
    std::string log_tail;  // the last lines of its log, kept by stop() before the file goes
    const std::string& ns() const { return scratch->ns(); }
    std::string endpoint() const { return "tcp://" + address + ":" + std::to_string(port); }
  };

  // Starts one colod per host and waits until every colod reports every
  // peer connected. The error says which colod ended or did not connect,
  // with the last lines of the logs.
  Result<void> start(const Settings& settings, const std::vector<HostSpec>& hosts);
  // The same with the defaults: hosts `names`, namespaces `<prefix><name><pid>`,
  // `objects_toml` ([[topic]] and [[queue]] tables) in every config.
  Result<void> start(const std::string& colod, const std::vector<std::string>& names, const std::string& prefix,
                     const std::string& objects_toml, double timeout_s);

  std::vector<Host>& hosts() { return hosts_; }
  Host& host(std::size_t i) { return hosts_.at(i); }

  // "" while every colod that was started runs; else the first that ended:
  // "colod <name> has ended (<how>); last lines of its log: ...".
  std::string ended();
  void kill(std::size_t i, int signal);    // and reaps it if the signal ends it (SIGKILL after 5 s)
  Result<void> restart(std::size_t i);     // a killed colod started again (same config)
  bool all_connected(double timeout_s);    // waits until every colod sees every peer
  std::string log_tail(std::size_t i, int lines) const;

  // Stops every colod (SIGTERM, SIGKILL after 5 s), keeping how each ended
  // and its log's last lines in hosts(), and removes the namespaces and the
  // files. Returns what it could not remove: segment names (in /dev/shm)
  // and, if it stayed, the directory's path. Idempotent.
  std::vector<std::string> stop();

  LocalCluster() = default;
  LocalCluster(const LocalCluster&) = delete;
  LocalCluster& operator=(const LocalCluster&) = delete;
  ~LocalCluster() { (void)stop(); }

 private:
  Result<void> write_config(const Host& h) const;
  Result<void> spawn(Host& h);
  Settings settings_;
  std::string dir_;
  std::vector<Host> hosts_;
  Children children_;
  bool stopped_ = false;
};

}  // namespace colo::cli
