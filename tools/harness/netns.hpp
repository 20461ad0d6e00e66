// tools/harness/netns.hpp — two network namespaces joined by a veth pair,
// for running two colod "hosts" across a real link that can fail: what the
// bridge-netns test and the chaos run (tests/chaos/) take down and up.
//
// a's end 10.231.0.1/30 (link colo-va), b's end 10.231.0.2/30 (colo-vb).
// The addresses exist only inside the two namespaces (the veth is created
// in one and its peer in the other, never in the host's), so they cannot
// meet anything else, nor another pair of a concurrent run. The namespaces
// are named colo-a-<pid>-<n> and colo-b-<pid>-<n>; the destructor deletes
// both (which deletes the veth pair), and create() first deletes those of
// a process that is gone (killed before its destructor ran).
//
// Needs root and iproute2's `ip`. /dev/shm and Unix sockets are shared by
// all network namespaces (`ip netns exec` remounts /sys only), so processes
// outside still reach the colo namespaces and control sockets of both.
//
// Contract: used by one thread; runs `ip` as a child (bounded to 10 s).
#pragma once

#include <string>
#include <vector>

namespace colo::cli {

class VethPair {
 public:
  static constexpr const char* kPrefixA = "colo-a-";
  static constexpr const char* kPrefixB = "colo-b-";
  static constexpr const char* kLinkA = "colo-va";
  static constexpr const char* kLinkB = "colo-vb";
  static constexpr const char* kAddressA = "10.231.0.1";
  static constexpr const char* kAddressB = "10.231.0.2";

  VethPair() = default;
  VethPair(const VethPair&) = delete;
  VethPair& operator=(const VethPair&) = delete;
  ~VethPair();

  // Deletes stale pairs, then makes this one. "" on success, else why not
  // (no root, no `ip`, the kernel refuses: callers skip what needs it).
  std::string create();

  // `ip -n A link set colo-va up|down`: A's end of the link, so the link
  // loses carrier on both sides. "" on success, else what `ip` said.
  std::string set_link_a(bool up);

  // What to put before a command to run it inside a namespace: `ip netns exec NETNS`.
  std::vector<std::string> launcher(const std::string& netns) const { return {ip_, "netns", "exec", netns}; }

  std::string netns_a, netns_b;  // empty until made

 private:
  // Runs `ip args...`: "" if it exited 0, else the command, its status and its output.
  std::string ip(const std::vector<std::string>& args) const;
  void delete_stale() const;
  std::string ip_;
};

}  // namespace colo::cli
