// tools/bench/link_bench.hpp — what the benchmarks of colod's links to other
// systems (`colo bench kafka`, `colo bench rabbitmq`) share: a ring sized
// for a run, a local publisher as fast as the ring takes messages, and a
// link's counters read over colod's control socket.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include <sys/types.h>

#include "colo/node.hpp"
#include "local_cluster.hpp"

namespace colo::cli {

// How often a link's counters are read (each ask costs colod a little).
constexpr std::chrono::milliseconds kLinkPoll{5};
// wait_counter()'s longest pause: far from the end it reads less often, as
// each read costs colod's control thread CPU that the link competes for
// (perf, colod during a 64 B RabbitMQ mirror cell polled every 5 ms: its
// ZeroMQ I/O thread had more samples than the link's own thread).
constexpr std::chrono::milliseconds kLinkPollMax{50};

// CPU time (user + system) a live process has used so far, in seconds; -1
// if unknown. Read while it runs: once reaped, /proc has nothing left.
double cpu_seconds(pid_t pid);

// The local process listening on TCP `port` (a broker named by
// `host:port`, loopback or this host's address), found through
// /proc/net/tcp{,6} and the processes' open sockets: 0 if none is (a broker
// on another host) or it cannot be told (another user's process, /proc
// hidden). For the broker's share of a run's CPU.
pid_t tcp_listener_pid(std::uint16_t port);

// The port of the first `host:port` of a bootstrap list; 0 if it has none.
std::uint16_t first_bootstrap_port(const std::string& bootstrap);

// A ring's capacity that holds `messages` of `size` bytes twice over: a
// power of two from 1 MiB to 1 GiB.
std::uint64_t ring_for(std::uint32_t messages, std::uint32_t size);

// Publishes `n` messages of `size` bytes into topic `object` of `node`, in
// batches of 256, as fast as the ring takes them: "" or what failed.
std::string publish_all(Node& node, const std::string& object, std::uint32_t n, std::uint32_t size);

// Link `link`'s counter `produced` (else `acknowledged`), from colod's
// control socket: -1 if colod did not answer or has no such link, -2 if the
// link lost or skipped messages.
std::int64_t link_counter(const LocalCluster::Host& h, const std::string& link, bool produced);

// Polls the counter (up to 300 s) until it reaches n, every kLinkPoll near
// the end (and until it first moves), else after half the time the rest
// should take at the rate so far (at most kLinkPollMax): the
// times it first was above 0 (and, in *at_first, its value then) and
// reached n. false with `error` set if it did not, or the link lost or
// skipped messages.
bool wait_counter(const LocalCluster::Host& h, const std::string& link, bool produced, std::uint64_t n,
                  std::uint64_t& first_ns, std::uint64_t& done_ns, std::string& error, std::uint64_t* at_first = nullptr);

}  // namespace colo::cli
