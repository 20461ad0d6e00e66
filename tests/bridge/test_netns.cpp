// Federation over a real network link that fails (suite `bridge`, root only):
// two network namespaces joined by a veth pair (tools/harness/netns.hpp), made with
// iproute2, a colod in each (`ip netns exec`), listening on its end of the
// link. /dev/shm is the same in every network namespace (`ip netns exec`
// remounts /sys only), so this process publishes into host A's colo
// namespace and subscribes to host B's through libcolo, as
// test_federation.cpp does, and reads both colods' counters with
// `colo peers --json` over their control sockets (Unix sockets reached by
// path, which network namespaces do not separate).
//
// Mid-run the link is taken down (`ip -n A link set colo-va down`) for
// longer than colod's heartbeat timeout, so both colods see the peer go,
// then brought up again. Same expectations as the colod restart test of
// test_federation.cpp: the subscriber gets every message A still retains
// exactly once, in A's order; what A no longer retains is counted as lost
// by colod B, and nothing is delivered twice.
//
//   linkDownAndUpWithARing...  the ring holds the whole run: nothing lost
//   linkDownLongerThanTheRing  A laps what B has not received: counted as lost, the rest arrives
//
// Without root, without `ip`, or if the kernel refuses network namespaces,
// the tests skip and say why. The namespaces are named colo-a-<pid>-<n> and
// colo-b-<pid>-<n>; they are deleted at the end, and ones left by a test
// process that died (SIGKILL, a meson timeout) are deleted by the next run.
#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "federation_support.hpp"
#include "netns.hpp"

namespace colo {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using test::Host;
using test::RunResult;
using test::Seen;

using cli::VethPair;  // tools/harness/netns.hpp

class NetnsFederation : public test::Federation {
 protected:
  static constexpr std::uint32_t kCount = 50'000;
  static constexpr auto kOutage = 2500ms;  // 8 times colod's heartbeat timeout (3 x 100 ms)

  void SetUp() override {
    if (!test::running_as_root()) GTEST_SKIP() << "needs root: creates network namespaces and a veth pair";
    Federation::SetUp();
    if (HasFatalFailure()) return;
    if (const std::string why = link_.create(); !why.empty()) GTEST_SKIP() << "no network namespaces: " << why;
  }
  // Federation::TearDown kills the colods first; link_ (a member) deletes
  // the namespaces when the fixture is destroyed, after it.

  // Hosts alpha in namespace A and beta in namespace B, each listening on
  // its end of the link (a fixed port: the namespaces are new and empty).
  void add_hosts() {
    auto& a = add_host("alpha");
    a.address = VethPair::kAddressA;
    a.port = 7101;
    a.launcher = link_.launcher(link_.netns_a);
    auto& b = add_host("beta");
    b.address = VethPair::kAddressB;
    b.port = 7102;
    b.launcher = link_.launcher(link_.netns_b);
  }

  // What a run saw.
  struct Outcome {
    Seen seen;
    bool settled = false;
    json b_from_a, a_to_b;  // the peer entries of `colo peers --json`, at the end
    json b_status, a_status;  // the whole replies, at the end
    bool a_down_at_b = false, b_down_at_a = false;  // each colod reported the other disconnected
    bool reconnected = false;
    std::uint64_t received_before_outage = 0;
    std::chrono::milliseconds reconnect_time{0};
  };

  // Publishes kCount messages on alpha at a steady pace (~7 s) while beta
  // subscribes; once a fifth has arrived the link goes down for kOutage,
  // then up. Waits until everything is received or counted as lost.
  Outcome run_with_outage() {
    Outcome o;
    Host& a = hosts_[0];
    Host& b = hosts_[1];
    std::atomic<bool> ready{false}, stop{false};
    auto& sub = subscriber(b, kCount, o.seen, ready, stop);
    EXPECT_TRUE(test::wait_until([&] { return ready.load(); }, 10s));
    auto& pub = publisher(a, 1, kCount, 15ms);  // 15 ms after every 100th message: ~7 s in all
    EXPECT_TRUE(test::wait_until([&] { return o.seen.total >= kCount / 5; }, 60s, 5ms));
    o.received_before_outage = o.seen.total;
    const auto down_at = std::chrono::steady_clock::now();
    EXPECT_EQ(link_.set_link_a(false), "");
    // Both colods notice (3 heartbeats of silence), well within the outage.
    o.a_down_at_b = test::wait_until(
        [&] {
          const json p = peer_of(b, "alpha");
          return p.is_object() && !p["connected"].get<bool>();
        },
        kOutage, 50ms);
    o.b_down_at_a = test::wait_until(
        [&] {
          const json p = peer_of(a, "beta");
          return p.is_object() && !p["connected"].get<bool>();
        },
        kOutage, 50ms);
    std::this_thread::sleep_until(down_at + kOutage);
    const auto up_at = std::chrono::steady_clock::now();
    EXPECT_EQ(link_.set_link_a(true), "");
    o.reconnected = test::wait_until([&] { return all_connected(a) && all_connected(b); }, 20s, 50ms);
    o.reconnect_time = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - up_at);
    pub.join();
    std::uint64_t lost = 0;
    o.settled = test::wait_until(
        [&] {
          const json p = peer_of(b, "alpha");
          if (!p.is_object()) return false;
          lost = p["lost"].get<std::uint64_t>();
          return o.seen.total + lost >= kCount;
        },
        60s, 50ms);
    std::this_thread::sleep_for(500ms);  // anything sent twice would arrive now
    stop = true;
    sub.join();
    o.b_status = peers(b);
    o.a_status = peers(a);
    o.b_from_a = peer_of(b, "alpha");
    o.a_to_b = peer_of(a, "beta");
    std::cout << "received " << o.seen.total << " of " << kCount << " (" << o.received_before_outage
              << " before the outage); reconnected " << o.reconnect_time.count() << " ms after the link came up; "
              << publish_timeouts_.load() << " publish timeout(s) of 100 ms\nbeta's view of alpha: " << o.b_from_a.dump()
              << "\nalpha's view of beta: " << o.a_to_b.dump() << '\n';
    return o;
  }

  // What both tests expect: the outage was seen as one, the link came back,
  // and what did not arrive is exactly what colod B counts as lost.
  void expect_exact_accounting(const Outcome& o) {
    EXPECT_TRUE(o.a_down_at_b) << "beta never reported alpha disconnected: the outage was not seen";
    EXPECT_TRUE(o.b_down_at_a) << "alpha never reported beta disconnected: the outage was not seen";
    EXPECT_TRUE(o.reconnected) << "not connected again 20 s after the link came up";
    ASSERT_TRUE(o.b_from_a.is_object()) << "no answer from beta's colod";
    ASSERT_TRUE(o.a_to_b.is_object()) << "no answer from alpha's colod";
    const std::uint64_t lost = o.b_from_a["lost"].get<std::uint64_t>();
    EXPECT_TRUE(o.settled) << "received " << o.seen.total << ", lost " << lost << ", sent " << kCount;
    EXPECT_EQ(o.seen.corrupt, 0u);
    EXPECT_EQ(o.seen.by_publisher.size(), 1u);  // only alpha's publisher: nothing came back from beta
    const auto it = o.seen.by_publisher.find(1);
    ASSERT_NE(it, o.seen.by_publisher.end());
    std::uint64_t holes = 0;
    ASSERT_TRUE(test::increasing_with_holes(it->second, kCount, holes));  // per-origin order, no duplicate
    EXPECT_EQ(it->second.size() + lost, kCount);
    EXPECT_EQ(holes, lost);  // the only holes are the ones counted as lost
    // Beta resumed alpha's stream by subscribing again after the outage.
    EXPECT_GE(o.b_from_a["gaps_filled"].get<std::uint64_t>(), 1u);
    // Beta published nothing: alpha got nothing from it and can have lost
    // nothing of its. (Beta's ring is full of what it relayed from alpha;
    // those records are never sent back, so lapping them loses nothing:
    // beta's colod knows which ring sequences it relayed.)
    EXPECT_EQ(o.a_to_b["messages_in"], 0);
    EXPECT_EQ(o.a_to_b["lost"], 0) << "alpha counts messages from beta as lost, but beta never published any";
    EXPECT_EQ(o.b_status["bad_frames"], 0);
    EXPECT_EQ(o.a_status["bad_frames"], 0);
  }

  VethPair link_;
};

TEST_F(NetnsFederation, linkDownAndUpWithARingHoldingTheRunLosesNothingAndDuplicatesNothing) {
  add_hosts();
  // ~190 bytes a record on average: 32 MiB holds all 50,000 messages, so
  // everything published during the outage is still there when beta is back.
  write_configs({"prices"}, false, "capacity = 33554432\n");
  for (auto& h : hosts_) start(h);
  ASSERT_TRUE(all_hosts_connected());
  const Outcome o = run_with_outage();
  expect_exact_accounting(o);
  EXPECT_EQ(o.b_from_a["lost"], 0);
  const auto it = o.seen.by_publisher.find(1);
  ASSERT_NE(it, o.seen.by_publisher.end());
  EXPECT_TRUE(test::exactly_in_order(it->second, kCount));
}

TEST_F(NetnsFederation, linkDownLongerThanTheRingHoldsCountsWhatWasLappedAsLostAndDeliversTheRest) {
  add_hosts();
  // 1 MiB holds ~5,000 messages, under a second of publishing: a
  // disconnected peer holds no writer back, so alpha laps what beta has
  // not received during the outage and tells it so when it is back.
  write_configs({"prices"}, false, "capacity = 1048576\n");
  for (auto& h : hosts_) start(h);
  ASSERT_TRUE(all_hosts_connected());
  const Outcome o = run_with_outage();
  expect_exact_accounting(o);
  EXPECT_GT(o.b_from_a["lost"].get<std::uint64_t>(), 0u) << "the outage was too short to lap the ring";
}

// Cluster queue "jobs" (home alpha, where nothing consumes): every job
// crosses the link to beta's consumer. The link goes down for kOutage
// mid-run: what alpha had sent and beta had not confirmed is sent again
// when the link is back, beta drops what it already had, and every job is
// consumed exactly once.
TEST_F(NetnsFederation, queueAcrossALinkTakenDownAndUpConsumesEveryJobExactlyOnce) {
  add_hosts();
  write_configs({}, false);
  add_queue_to_configs("alpha");
  for (auto& h : hosts_) start(h);
  ASSERT_TRUE(all_hosts_connected());
  Host& a = hosts_[0];
  Host& b = hosts_[1];
  constexpr std::uint32_t kJobs = 20'000;
  std::atomic<std::uint64_t> consumed{0};
  Seen seen;
  std::atomic<int> ready{0};
  queue_consumer(b, seen, consumed, kJobs, ready);
  ASSERT_TRUE(test::wait_until([&] { return ready.load() == 1; }, 10s));
  std::this_thread::sleep_for(300ms);  // beta's colod asks alpha for work
  queue_producer(a, 1, kJobs);
  ASSERT_TRUE(test::wait_until([&] { return consumed.load() >= kJobs / 5; }, 60s, 2ms));
  const std::uint64_t before = consumed.load();
  ASSERT_EQ(link_.set_link_a(false), "");
  std::this_thread::sleep_for(kOutage);
  ASSERT_EQ(link_.set_link_a(true), "");
  const bool all = test::wait_until([&] { return consumed.load() >= kJobs; }, 60s, 20ms);
  std::this_thread::sleep_for(500ms);  // anything delivered twice would show now
  stop_ = true;
  for (auto& t : threads_) t.join();
  threads_.clear();
  EXPECT_TRUE(all) << "consumed " << consumed.load() << " of " << kJobs << " (" << before << " before the outage)";
  EXPECT_LT(before, kJobs) << "the outage came after the run";
  EXPECT_EQ(consumed.load(), kJobs);
  EXPECT_EQ(seen.corrupt, 0u);
  std::vector<std::uint32_t> got = seen.by_publisher[1];
  std::sort(got.begin(), got.end());
  EXPECT_TRUE(test::exactly_in_order(got, kJobs)) << "some job lost or consumed twice";
  const json beta_view = peer_of(b, "alpha");
  ASSERT_TRUE(beta_view.is_object());
  EXPECT_GE(beta_view["gaps_filled"].get<std::uint64_t>(), 1u) << "beta did not resume alpha's stream";
  // Every job came in from alpha once (net of any handed back).
  EXPECT_EQ(beta_view["messages_in"].get<std::uint64_t>() - beta_view["messages_out"].get<std::uint64_t>(), kJobs);
  std::cout << "consumed " << consumed.load() << " (" << before << " before the outage); beta's view of alpha: "
            << beta_view.dump() << '\n';
}

}  // namespace
}  // namespace colo
