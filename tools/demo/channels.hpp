// tools/demo/channels.hpp — what the "queues and topics" part of the demo
// shares between its topic (topic.cpp) and its queue (queue.cpp) scenarios:
// the objects' sizes, the message layout, the shared records, and the
// helpers of the processes that write and read.
//
// Topic 'demo/ticks': 3 subscriber processes (2 blocking, 1 lossy and slow)
// subscribe, then 2 publisher processes write --topic-messages each, 64 bytes,
// filled in place in the ring (loan_for + commit), stamped with their
// publisher, index and send time (CLOCK_MONOTONIC). The blocking subscribers
// must see every message once, in order per publisher; they record one-way
// latency (receive time - send time) into sample arrays in shared memory. The
// lossy one pauses 1 ms every 100 messages, so the publishers lap it instead
// of waiting for it: what it received plus Reader::missed() must be the total.
//
// Queue 'demo/jobs' with acks (max deliveries 3): 2 producer processes, 3
// consumer processes, --queue-messages in total. Consumer 3 takes a message,
// says so in shared memory, and stalls without acknowledging it; the parent
// SIGKILLs it. Another consumer gets the message again with deliveries() == 2.
// Per-message counters in shared memory then show every message acknowledged
// exactly once and delivered once, except the killed consumer's: twice.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>  // construct_at
#include <span>
#include <string>

#include "colo/channel.hpp"
#include "colo/internal/clock.hpp"  // monotonic_ns
#include "colo/node.hpp"
#include "demo.hpp"
#include "format.hpp"
#include "scenario.hpp"

namespace colo::cli {

inline constexpr const char* kTopicName = "demo/ticks";
inline constexpr const char* kQueueName = "demo/jobs";
inline constexpr std::uint64_t kRingBytes = 1 << 20;  // 1 MiB
inline constexpr std::uint32_t kMaxMessage = 1024;    // 1 KiB
inline constexpr std::uint32_t kMessageBytes = 64;
inline constexpr int kPublishers = 2;
inline constexpr int kSubscribers = 3;  // 0 and 1 blocking, 2 lossy
inline constexpr int kLossySubscriber = 2;
inline constexpr int kProducers = 2;
inline constexpr int kConsumers = 3;  // the last one is killed holding a message
inline constexpr int kVictimConsumer = kConsumers - 1;
inline constexpr std::uint32_t kMaxDeliveries = 3;
inline constexpr int kLossyBurst = 100;                               // the lossy reader pauses 1 ms after this many
inline constexpr std::uint32_t kMessageMagic = 0x4f4c4f43;            // "COLO"
// Bounds on every wait. A normal run of either phase takes well under a second
// on 2 cores, even with other demos running; a hang costs about kPhaseLimit.
inline constexpr auto kSendTimeout = std::chrono::seconds(2);  // loan_for: space within this
inline constexpr auto kChildLimit = std::chrono::seconds(4);   // a child gives up (and says why) this long after go
inline constexpr auto kPhaseLimit = std::chrono::seconds(5);   // the parent kills what still runs this long after go
inline constexpr auto kReadyLimit = std::chrono::seconds(3);   // children open the object and say ready

// "4 s"
std::string secs(std::chrono::seconds s);

// The 64 bytes of every message of this part.
struct Payload {
  std::uint32_t magic;
  std::uint32_t source;   // publisher or producer, from 0
  std::uint64_t index;    // per source, from 0
  std::uint64_t send_ns;  // CLOCK_MONOTONIC, taken just before commit()
  std::uint64_t check;    // mix of source, index and send_ns
  std::uint64_t fill[4];  // derived from check: the whole message is verified
};
static_assert(sizeof(Payload) == kMessageBytes, "a demo message is 64 bytes");

void seal(Payload& p) noexcept;
// Copies a received message out of the ring and checks it: nullptr if intact.
const char* unseal(std::span<const std::byte> data, Payload& p, int sources) noexcept;

// One forked process's figures: written by that process, read by the parent
// once it ended (or while it stalls: the victim). Its pid, readiness and
// failure are in the scenario's RoleStatus.
struct alignas(64) ChannelProcess {
  std::atomic<std::uint64_t> count;  // published / received / acknowledged
  std::atomic<std::uint64_t> per_source[2];
  std::atomic<std::uint64_t> missed;  // lossy subscriber: Reader::missed() at the end
  std::atomic<std::uint64_t> start_ns, end_ns;  // writers: first loan, last commit; readers: last receive / ack
};

struct ChannelShared {
  alignas(64) std::atomic<int> publishers_done;  // topic: every publisher has exited
  alignas(64) std::atomic<std::uint64_t> acked_total;  // queue: acknowledgements, all consumers
  // The victim consumer: it holds message victim_id, not acknowledged.
  alignas(64) std::atomic<int> victim_holding;
  std::atomic<int> victim_gone;  // the parent saw the victim end before holding its message
  std::atomic<std::uint64_t> victim_id;
  std::atomic<std::uint64_t> victim_seq;
  std::atomic<std::uint32_t> victim_deliveries;
  // Receives with deliveries() > 1; the first one is described.
  alignas(64) std::atomic<std::uint32_t> redeliveries;
  std::atomic<int> redelivery_recorded;
  std::atomic<std::uint64_t> redelivered_id;
  std::atomic<std::uint64_t> redelivered_seq;
  std::atomic<std::uint32_t> redelivered_pid;
  std::atomic<std::uint32_t> redelivered_deliveries;
  std::atomic<std::uint32_t> redelivered_consumer;
  ChannelProcess writers[kPublishers > kProducers ? kPublishers : kProducers];
  ChannelProcess readers[kSubscribers > kConsumers ? kSubscribers : kConsumers];
};

struct ChannelPlan {
  std::string ns;
  int index = 0;             // in writers[] or readers[]
  std::uint64_t count = 0;   // writer: messages to write; blocking subscriber: messages to expect
  std::uint64_t total = 0;   // queue: messages in all
  std::uint64_t base[2] = {0, 0};   // queue: id of each producer's first message
  std::uint64_t share[2] = {0, 0};  // messages per source
  bool lossy = false;
  std::uint64_t stall_at = 0;       // the victim consumer: stall at this message taken (0: never)
  std::uint64_t gate = 0;           // other consumers: past this many acknowledged, wait for the victim to stall
  std::uint64_t* samples = nullptr;  // blocking subscriber: latency of message i
  std::atomic<std::uint32_t>* receives = nullptr;  // queue: deliveries seen per message id
  std::atomic<std::uint32_t>* acks = nullptr;      // queue: acknowledgements per message id
};

const char* send_status_text(SendStatus status);
Result<Node> open_child_node(const std::string& ns);

// Writes plan.count messages, each filled in place in a loan (zero copy).
template <typename Channel>
int write_messages(const ChannelPlan& plan, ChannelShared& sh, Role& role, Channel& channel,
                   Result<Publisher> (Channel::*open)()) {
  ChannelProcess& me = sh.writers[plan.index];
  auto writer = (channel.*open)();
  if (!writer) return role.fail(writer.error().message, 2);
  role.ready();
  if (!role.wait_for_go(kChildLimit)) return 3;
  me.start_ns.store(internal::monotonic_ns(), std::memory_order_relaxed);
  std::uint64_t sent = 0;
  for (; sent < plan.count; ++sent) {
    auto loan = writer->loan_for(kMessageBytes, kSendTimeout);
    if (!loan) {
      role.fail("loan_for(64 bytes, " + secs(kSendTimeout) + ") failed after " + with_commas(sent) + " messages: " +
                    send_status_text(writer->last_status()),
                4);
      break;
    }
    // The message is built where the readers will read it. Records start
    // 16-byte aligned, so the payload is aligned for Payload.
    Payload* p = std::construct_at(reinterpret_cast<Payload*>(loan->data().data()));
    p->source = static_cast<std::uint32_t>(plan.index);
    p->index = sent;
    p->send_ns = internal::monotonic_ns();
    seal(*p);
    loan->commit();
    if ((sent & 4095) == 0) me.count.store(sent, std::memory_order_relaxed);  // progress, should it be killed
  }
  me.end_ns.store(internal::monotonic_ns(), std::memory_order_relaxed);
  me.count.store(sent, std::memory_order_relaxed);
  return sent == plan.count ? 0 : 4;
}

// "1.23 M msg/s, 78.9 MB/s" of `messages` 64-byte messages in `ns`.
std::string rate_text(std::uint64_t messages, std::uint64_t ns);
nlohmann::json rate_json(std::uint64_t messages, std::uint64_t ns);

struct Latency {
  std::uint64_t n = 0, p50 = 0, p99 = 0, p999 = 0, max = 0;
};
// Nearest-rank percentiles of n samples.
Latency latency_of(const std::uint64_t* samples, std::size_t n);

// /dev/shm/<the segment of `object`>: unlinked if the demo is interrupted.
std::string shm_file(ScratchNamespace& scratch, const std::string& object);

// The two scenarios of the part; each appends to `result`.
void run_topic(const DemoOptions& opt, ScratchNamespace& scratch, Reporter& out, PartOutcome& result);
void run_queue(const DemoOptions& opt, ScratchNamespace& scratch, Reporter& out, PartOutcome& result);

}  // namespace colo::cli
