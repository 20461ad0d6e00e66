// bridge/links/link.hpp — colod's links to other messaging systems: what
// every kind of link shares (Kafka's mirror, source and spill; RabbitMQ's
// mirror and source).
//
// A LINK joins one object of colod's namespace (a topic or a queue) to a
// destination or origin outside colo (a Kafka topic), in one mode
// (LinkMode): mirror (the object's messages out), source (records in),
// spill (a queue's bursts out and back). [[link]] in colod's config declares
// it (config.hpp: the link layer's keys, and a sub-table for the other
// system's); LinkService runs every link of the config.
//
// THREADS: one per link. The link is the only user of its object handles
// and of its client of the other system; other threads (the daemon's loop
// answering `colo links`, the metrics renderer) read its status(), which
// is atomics and a mutex-guarded text, and call pause()/resume().
//
// STATE MACHINE (LinkState; status().state, `colo links`, /metrics)
//
//   starting ──open() ok──▶ running ◀──report_down/report_up──▶ down
//      │  ▲                   │  ▲                                │
//      │  └─ retry after      │  │                     pause()    │
//      │     kRetryAfter      ▼  │ resume()                       ▼
//      └──open() failed──▶ failed   paused ◀───────────────────────┘
//   any state ──stop()──▶ stopped (close(): what is in flight is finished
//                                  or left for the next start, per mode)
//
//   starting: opening the object, connecting, finding where to resume.
//   running: moving messages. down: the other side is unreachable (the
//   link retries by itself; what it holds stays held). paused: `colo link
//   pause NAME`, or `paused = true` in its config from the start: moves
//   nothing (a mirror in block mode then holds local writers back once the
//   ring is full; a source stops consuming). failed: open() said why
//   (last_error); tried again every kRetryAfter.
//
// A NEW KIND OF LINK (another system) derives from Link: open(), step(),
// close() and describe(); LinkService::start() makes it from its
// sub-table of [[link]] (link_service.cpp, make_link). Counters, states,
// pause/resume, `colo links`, /metrics and the control socket come from here.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "../config.hpp"
#include "../log.hpp"
#include "colo/error.hpp"
#include "colo/node.hpp"

namespace colo::bridge {

enum class LinkState { starting, running, down, paused, failed, stopped };
const char* to_string(LinkState state) noexcept;  // "starting", "running", ...

// What a link has done, in messages unless said otherwise. Each mode gives
// them its meaning (docs/kafka.md has the table):
//   mirror: produced = handed to Kafka, acknowledged = confirmed by it;
//   source: produced = published into the object, acknowledged = committed
//           to Kafka (the object took it: in the ring, or a consumer acked it);
//   spill:  produced = moved out, acknowledged = confirmed by Kafka,
//           returned = brought back into the queue.
struct LinkCounters {
  std::uint64_t produced = 0, acknowledged = 0, returned = 0;
  std::uint64_t in_flight = 0;   // produced and not yet acknowledged (a gauge)
  std::uint64_t lag_messages = 0, lag_bytes = 0;  // still to move (a gauge; docs/kafka.md per mode)
  std::uint64_t errors = 0;      // errors reported by the other system or met here
  std::uint64_t lost = 0;        // will never arrive (lossy mirror), logged with their sequences
  std::uint64_t skipped = 0;     // messages the other side cannot take (too large ...), logged
  std::uint64_t duplicates = 0;  // found already moved at a restart, not moved again
  std::uint64_t redelivered = 0;  // moved again after a restart, and marked so
  std::uint64_t outages = 0;      // times the other side became unreachable (running -> down)
};

struct LinkStatus {
  std::string name, system, mode, object, object_kind;
  std::string remote;  // where the other side is: "kafka cluster dc1, topic prices"
  LinkState state = LinkState::starting;
  std::uint64_t state_ms = 0;  // in this state for so long
  std::string last_error;      // "" if none yet
  std::uint64_t last_error_ms = 0;  // so long ago
  LinkCounters counters;
};

// A link's object (topic or queue) and its epoch: the object's creation
// time, which tells its sequences from those of an object of the same name
// deleted and created again.
struct LinkObject {
  std::optional<Node> node;
  std::optional<Topic> topic;  // kind topic
  std::optional<Queue> queue;  // kind queue
  std::uint64_t epoch = 0;
};

class Link {
 public:
  static constexpr std::chrono::seconds kRetryAfter{5};

  Link(LinkConfig config, const Log& log);
  virtual ~Link();  // stops the thread if it runs
  Link(const Link&) = delete;
  Link& operator=(const Link&) = delete;

  const LinkConfig& config() const noexcept { return config_; }
  // Starts the link's thread. Once.
  void start();
  // Asks the thread to stop and joins it (close() bounds how long). A
  // thread still running after kInterruptAfter gets interrupt() every
  // 100 ms until it ends.
  void stop();
  static constexpr std::chrono::seconds kInterruptAfter{10};
  void pause() noexcept { paused_.store(true); }
  void resume() noexcept { paused_.store(false); }
  LinkStatus status() const;

 protected:
  // ---- for the derived link, called in the link's thread only
  // Opens the object and the client, and finds where to resume. An error
  // puts the link in `failed` with the error as last_error; open() is
  // called again after kRetryAfter (after close()).
  virtual Result<void> open() = 0;
  // Moves what there is: a bounded amount of work (about 50 ms at most,
  // so that stop and pause are noticed), waiting briefly if there is
  // nothing to do. Called while running or down.
  virtual void step() = 0;
  // While paused, instead of step(): keep the client alive (a consumer
  // must poll to keep its group membership), move nothing.
  virtual void idle() = 0;
  // Before open() again, and at stop: releases the client and the object's
  // handles, finishing what is in flight if it can within a bound.
  virtual void close() = 0;
  // "kafka cluster NAME, topic T", for status().remote.
  virtual std::string describe() const = 0;
  virtual const char* system() const noexcept = 0;
  // From stop()'s thread, when the link's thread has not ended in
  // kInterruptAfter: break it out of a call into the other system's client
  // that waits on the network (a send to a server that stopped reading).
  virtual void interrupt() noexcept {}

  // open() or step() found the client unusable (a fatal error of the other
  // system's client): the link closes, waits a moment and opens again.
  void report_failed(const std::string& why);
  // The other side became unreachable (down: counted as an outage) or
  // reachable again.
  void report_down(const std::string& why);
  void report_up();
  // An error: counted, kept as last_error, logged (the first ten of a kind,
  // then one in a thousand: a broker that stays down is not a log flood).
  void report_error(const std::string& what);
  // Messages [first, last], `count` of them, that will never reach the
  // other side: counted lost, reported (report_error: one line per loss
  // would be a flood) as "SYSTEM: N message(s), sequences F..L, lost: WHY".
  void report_lost(std::uint64_t first, std::uint64_t last, std::uint64_t count, const char* why);
  // A mirror's gauges: messages in flight, and the lag in messages and bytes.
  void set_gauges(std::uint64_t in_flight, std::uint64_t lag_messages, std::uint64_t lag_bytes) noexcept {
    set(counters_.in_flight, in_flight);
    set(counters_.lag_messages, lag_messages);
    set(counters_.lag_bytes, lag_bytes);
  }
  bool stopping() const noexcept { return stop_.load(std::memory_order_relaxed); }

  // Opens the link's object in namespace `ns` into `object`, created with
  // the config's ring if it does not exist (an existing one is taken as it
  // is). Nothing if `object` is open already: a link opened again after a
  // failure keeps its object (and its readers in it).
  Result<void> open_object(const std::string& ns, LinkObject& object) const;
  // A publisher into `object` (a topic's publisher, a queue's producer).
  static Result<Publisher> publisher_of(LinkObject& object);
  bool pause_requested() const noexcept { return paused_.load(std::memory_order_relaxed); }
  LinkState state() const noexcept { return state_.load(std::memory_order_relaxed); }

  // The counters, written by the link's thread (relaxed atomics: a status
  // read may mix counters a few messages apart).
  struct AtomicCounters {
    std::atomic<std::uint64_t> produced{0}, acknowledged{0}, returned{0}, in_flight{0}, lag_messages{0},
        lag_bytes{0}, errors{0}, lost{0}, skipped{0}, duplicates{0}, redelivered{0}, outages{0};
  };
  AtomicCounters counters_;
  static void add(std::atomic<std::uint64_t>& counter, std::uint64_t n = 1) noexcept {
    counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);  // one writer
  }
  static void set(std::atomic<std::uint64_t>& gauge, std::uint64_t value) noexcept {
    gauge.store(value, std::memory_order_relaxed);
  }

  const LinkConfig config_;
  const Log& log_;

 private:
  void run();
  void set_state(LinkState state);

  std::atomic<bool> stop_{false}, paused_{false}, ended_{false};
  std::atomic<LinkState> state_{LinkState::starting};
  std::atomic<std::uint64_t> state_since_ns_{0};
  mutable std::mutex error_mutex_;
  std::string last_error_;
  std::uint64_t last_error_ns_ = 0;
  std::uint64_t errors_logged_ = 0;
  std::thread thread_;
};

}  // namespace colo::bridge
